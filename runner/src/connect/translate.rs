//! Between the runner's own types and the wire events of PROTOCOL.md
//! section 4: approval outputs, forwarding outputs, `runner_ready`.

use crate::approval::{ApprovalOutput, ListenerSnapshot};
use crate::control::events::{
    ControlErrorEvent, ForwardHttpResponse, ForwardHttpResponseChunk, ForwardWebsocketClosed,
    ForwardWebsocketMessage, ForwardWebsocketOpened, ListenerInfo, PortForwardClosed,
    PortForwardRequest, PortForwardResolved, ReadyListener,
};
use crate::control::{ErrorCode, Event};
use crate::forward::ForwardOutput;

/// The wire event for an approval output.
pub fn approval_event(output: ApprovalOutput) -> Event {
    match output {
        ApprovalOutput::Request {
            listener,
            restarted,
        } => Event::PortForwardRequest(PortForwardRequest {
            state: listener.state,
            listener: listener_info(listener),
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
            decision,
            actor_user_id,
            actor_slug,
        }),
    }
}

/// `runner_ready.listeners` from the approval snapshot.
pub fn ready_listeners(snapshot: Vec<ListenerSnapshot>) -> Vec<ReadyListener> {
    snapshot
        .into_iter()
        .map(|listener| ReadyListener {
            state: listener.state,
            listener: listener_info(listener),
        })
        .collect()
}

/// What Kandan is told about a candidate, in a request or `runner_ready`.
fn listener_info(listener: ListenerSnapshot) -> ListenerInfo {
    ListenerInfo {
        instance_id: None,
        request_id: listener.request_id.to_string(),
        port: listener.port,
        pid: listener.pid,
        command: listener.command,
        label: listener.label,
        cwd: listener.cwd.map(|cwd| cwd.display().to_string()),
        addresses: listener.addresses,
    }
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
            opcode,
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
    code: ErrorCode,
    message: String,
) -> Event {
    Event::ControlError(ControlErrorEvent {
        control_type: control_type.to_string(),
        request_id,
        socket_id,
        code,
        message,
    })
}
