//! Between the runner's own types and the wire events of PROTOCOL.md
//! section 4: approval outputs and `runner_ready`.

use crate::approval::{ApprovalOutput, ListenerSnapshot};
use crate::cli::ConnectArgs;
use crate::control::Event;
use crate::control::events::{
    Limits, ListenerInfo, PortForwardClosed, PortForwardRequest, PortForwardResolved, ReadyListener,
};
use crate::forward::ForwardConfig;
use crate::redact::redact_command;

/// The wire event for an approval output; `owner_of` names the instance
/// a listener's pid belongs to.
pub(super) fn approval_event(
    output: ApprovalOutput,
    owner_of: impl Fn(u32) -> Option<String>,
) -> Event {
    match output {
        ApprovalOutput::Request {
            listener,
            restarted,
        } => Event::PortForwardRequest(PortForwardRequest {
            state: listener.state,
            listener: listener_info(listener, &owner_of),
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

/// `runner_ready.limits`: the body limits of `connect`'s flags and the
/// WebSocket message limit forwarding enforces.
pub(super) fn ready_limits(args: &ConnectArgs) -> Limits {
    Limits {
        max_request_body: args.max_request_body,
        max_response_body: args.max_response_body,
        max_web_socket_message: ForwardConfig::default().ws_max_message,
    }
}

/// `runner_ready.listeners` from the approval snapshot.
pub(super) fn ready_listeners(
    snapshot: Vec<ListenerSnapshot>,
    owner_of: impl Fn(u32) -> Option<String>,
) -> Vec<ReadyListener> {
    snapshot
        .into_iter()
        .map(|listener| ReadyListener {
            state: listener.state,
            listener: listener_info(listener, &owner_of),
        })
        .collect()
}

/// What Kandan is told about a candidate, in a request or `runner_ready`.
/// The command line is redacted here, at the wire, and nowhere before: the
/// approval identity keeps the real one, so two different tokens stay two
/// identities.
fn listener_info(
    listener: ListenerSnapshot,
    owner_of: impl Fn(u32) -> Option<String>,
) -> ListenerInfo {
    ListenerInfo {
        instance_id: owner_of(listener.pid),
        request_id: listener.request_id.to_string(),
        port: listener.port,
        pid: listener.pid,
        command: redact_command(&listener.command),
        label: listener.label,
        cwd: listener.cwd.map(|cwd| cwd.display().to_string()),
        addresses: listener.addresses,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::RequestId;
    use crate::control::Event;
    use crate::control::events::ListenerState;

    fn snapshot(command: &str) -> ListenerSnapshot {
        ListenerSnapshot {
            request_id: RequestId::generate().unwrap(),
            port: 8888,
            pid: 42,
            command: command.into(),
            label: "jupyter".into(),
            cwd: None,
            addresses: vec![],
            state: ListenerState::Pending,
        }
    }

    #[test]
    fn commands_reach_the_wire_redacted_in_requests_and_ready() {
        let command = "jupyter lab --NotebookApp.token=abc GITHUB_TOKEN=ghp";
        let redacted = "jupyter lab --NotebookApp.token=*** GITHUB_TOKEN=***";
        let request = approval_event(
            ApprovalOutput::Request {
                listener: snapshot(command),
                restarted: false,
            },
            |_| None,
        );
        let Event::PortForwardRequest(request) = request else {
            panic!("not a request: {request:?}");
        };
        assert_eq!(request.listener.command, redacted);
        let ready = ready_listeners(vec![snapshot(command)], |_| None);
        assert_eq!(ready[0].listener.command, redacted);
    }
}
