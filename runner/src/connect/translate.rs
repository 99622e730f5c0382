//! Between the runner's own types and the wire events of PROTOCOL.md
//! section 4: approval outputs, forwarding outputs, `runner_ready`.

use crate::approval::{ApprovalOutput, ListenerState, RequestState};
use crate::control::events::{
    self, ControlErrorEvent, ForwardHttpResponse, ForwardHttpResponseChunk, ForwardWebsocketClosed,
    ForwardWebsocketMessage, ForwardWebsocketOpened, ListenerInfo, PortForwardClosed,
    PortForwardRequest, PortForwardResolved, ReadyListener,
};
use crate::control::{ErrorCode, Event, controls};
use crate::forward::{self, ForwardOutput, WsOpcode};

/// The wire event for an approval output. `actor` is the actor id exactly as
/// Kandan sent it (a number stays a number).
pub fn approval_event(output: ApprovalOutput, actor: Option<&controls::ActorId>) -> Event {
    match output {
        ApprovalOutput::Request {
            request_id,
            port,
            pid,
            command,
            label,
            cwd,
            addresses,
            restarted,
            state: _,
        } => Event::PortForwardRequest(PortForwardRequest {
            listener: ListenerInfo {
                instance_id: None,
                request_id: request_id.to_string(),
                port,
                pid,
                command,
                label,
                cwd: cwd.map(|cwd| cwd.display().to_string()),
                addresses,
            },
            restarted,
        }),
        ApprovalOutput::Closed { request_id, port } => {
            Event::PortForwardClosed(PortForwardClosed {
                instance_id: None,
                request_id: request_id.to_string(),
                port,
            })
        }
        ApprovalOutput::Resolved {
            request_id,
            port,
            decision,
            actor_user_id,
            actor_slug,
        } => Event::PortForwardResolved(PortForwardResolved {
            request_id: request_id.to_string(),
            port,
            decision: match decision {
                crate::approval::Decision::Approve => controls::Decision::Approve,
                crate::approval::Decision::Deny => controls::Decision::Deny,
            },
            actor_user_id: actor
                .cloned()
                .or_else(|| actor_user_id.map(controls::ActorId::Str)),
            actor_slug,
        }),
    }
}

/// `runner_ready.listeners` from the approval snapshot.
pub fn ready_listeners(snapshot: Vec<ListenerState>) -> Vec<ReadyListener> {
    snapshot
        .into_iter()
        .map(|l| ReadyListener {
            listener: ListenerInfo {
                instance_id: None,
                request_id: l.request_id.to_string(),
                port: l.port,
                pid: l.pid,
                command: l.command,
                label: l.label,
                cwd: l.cwd.map(|cwd| cwd.display().to_string()),
                addresses: l.addresses,
            },
            state: match l.state {
                RequestState::Pending => events::ListenerState::Pending,
                RequestState::Approved => events::ListenerState::Approved,
                RequestState::Denied => events::ListenerState::Denied,
            },
        })
        .collect()
}

/// The wire event for a forwarding output.
pub fn forward_event(output: ForwardOutput) -> Event {
    match output {
        ForwardOutput::HttpResponse {
            request_id,
            status,
            headers,
            body,
            streaming,
        } => Event::ForwardHttpResponse(ForwardHttpResponse {
            request_id,
            status,
            headers,
            body: body.to_vec(),
            streaming: streaming.then_some(true),
        }),
        ForwardOutput::HttpChunk {
            request_id,
            seq,
            body,
            done,
        } => Event::ForwardHttpResponseChunk(ForwardHttpResponseChunk {
            request_id,
            seq,
            body: body.to_vec(),
            done,
        }),
        ForwardOutput::HttpError {
            request_id,
            code,
            message,
        } => control_error(
            "forward_http_request",
            Some(request_id),
            None,
            code,
            message,
        ),
        ForwardOutput::WsOpened {
            socket_id,
            protocol,
        } => Event::ForwardWebsocketOpened(ForwardWebsocketOpened {
            socket_id,
            protocol,
        }),
        ForwardOutput::WsMessage {
            socket_id,
            opcode,
            body,
        } => Event::ForwardWebsocketMessage(ForwardWebsocketMessage {
            socket_id,
            opcode: wire_opcode(opcode),
            body: body.to_vec(),
        }),
        ForwardOutput::WsClosed {
            socket_id,
            code,
            reason,
            error,
        } => Event::ForwardWebsocketClosed(ForwardWebsocketClosed {
            socket_id,
            code,
            reason,
            // The code first, so Kandan can tell a refusal from a failure.
            error: error.map(|e| format!("{}: {}", e.code.as_str(), e.message)),
        }),
        ForwardOutput::WsError {
            socket_id,
            code,
            message,
        } => control_error(
            "forward_websocket_send",
            None,
            Some(socket_id),
            code,
            message,
        ),
    }
}

fn control_error(
    control_type: &str,
    request_id: Option<String>,
    socket_id: Option<String>,
    code: forward::ErrorCode,
    message: String,
) -> Event {
    Event::ControlError(ControlErrorEvent {
        control_type: control_type.to_string(),
        request_id,
        socket_id,
        code: wire_code(code),
        message,
    })
}

/// The protocol's error code for a forwarding error.
pub fn wire_code(code: forward::ErrorCode) -> ErrorCode {
    use forward::ErrorCode as F;
    match code {
        F::PortNotApproved => ErrorCode::PortNotApproved,
        F::PortNotListening => ErrorCode::PortNotListening,
        F::UpstreamUnreachable => ErrorCode::UpstreamUnreachable,
        F::UpstreamTimeout => ErrorCode::UpstreamTimeout,
        F::BodyTooLarge => ErrorCode::BodyTooLarge,
        F::UnknownSocket => ErrorCode::UnknownSocket,
        F::InvalidControl => ErrorCode::InvalidControl,
    }
}

pub fn wire_opcode(opcode: WsOpcode) -> controls::Opcode {
    match opcode {
        WsOpcode::Text => controls::Opcode::Text,
        WsOpcode::Binary => controls::Opcode::Binary,
        WsOpcode::Ping => controls::Opcode::Ping,
        WsOpcode::Pong => controls::Opcode::Pong,
    }
}

pub fn local_opcode(opcode: controls::Opcode) -> WsOpcode {
    match opcode {
        controls::Opcode::Text => WsOpcode::Text,
        controls::Opcode::Binary => WsOpcode::Binary,
        controls::Opcode::Ping => WsOpcode::Ping,
        controls::Opcode::Pong => WsOpcode::Pong,
    }
}
