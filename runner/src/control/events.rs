//! Events the runner sends to Kandan (PROTOCOL.md section 4), serialized to
//! the exact JSON of the contract. Bodies are bytes here, base64 on the wire.

use std::net::IpAddr;

use serde::Serialize;

use super::controls::{ActorId, Decision, Opcode};
pub use super::instance_wire::{InstanceEventJson, InstanceWire};
use super::pieces::Pieces;

/// One event, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunnerReady(RunnerReady),
    PortForwardRequest(PortForwardRequest),
    PortForwardClosed(PortForwardClosed),
    PortForwardResolved(PortForwardResolved),
    ForwardHttpResponse(ForwardHttpResponse),
    ForwardHttpResponseChunk(ForwardHttpResponseChunk),
    ForwardWebsocketOpened(ForwardWebsocketOpened),
    ForwardWebsocketMessage(ForwardWebsocketMessage),
    ForwardWebsocketClosed(ForwardWebsocketClosed),
    RunnerConfigApplied(RunnerConfigApplied),
    LocalEditorStarted(LocalEditorStarted),
    LocalEditorStopped(LocalEditorStopped),
    ControlError(ControlErrorEvent),
    /// `instance_started`, `codex_notification`, `approval_request`,
    /// `approval_resolved`, `thread_read`, `instance_stopped`: the event
    /// carries its own `type`.
    #[serde(untagged)]
    Instance(InstanceWire),
}

impl Event {
    /// About the length of this event's JSON: the body in base64 and a
    /// little for the rest, so its text is allocated once, not grown.
    pub fn size_hint(&self) -> usize {
        let body = match self {
            Event::ForwardHttpResponse(e) => e.body.len(),
            Event::ForwardHttpResponseChunk(e) => e.body.len(),
            Event::ForwardWebsocketMessage(e) => e.body.len(),
            _ => 0,
        };
        body.div_ceil(3) * 4 + 1024
    }

    /// Takes the body out of an event that has one, leaving it empty. The
    /// body is the last field of such an event's JSON, so the frame writer
    /// can write the rest with serde and the body's base64 straight after
    /// it (base64 needs no JSON escaping), without a copy or a scan.
    pub(crate) fn take_body(&mut self) -> Option<Pieces> {
        let body = match self {
            Event::ForwardHttpResponse(e) => &mut e.body,
            Event::ForwardHttpResponseChunk(e) => &mut e.body,
            Event::ForwardWebsocketMessage(e) => &mut e.body,
            _ => return None,
        };
        Some(std::mem::take(body))
    }

    /// The wire `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunnerReady(_) => "runner_ready",
            Event::PortForwardRequest(_) => "port_forward_request",
            Event::PortForwardClosed(_) => "port_forward_closed",
            Event::PortForwardResolved(_) => "port_forward_resolved",
            Event::ForwardHttpResponse(_) => "forward_http_response",
            Event::ForwardHttpResponseChunk(_) => "forward_http_response_chunk",
            Event::ForwardWebsocketOpened(_) => "forward_websocket_opened",
            Event::ForwardWebsocketMessage(_) => "forward_websocket_message",
            Event::ForwardWebsocketClosed(_) => "forward_websocket_closed",
            Event::RunnerConfigApplied(_) => "runner_config_applied",
            Event::LocalEditorStarted(_) => "local_editor_started",
            Event::LocalEditorStopped(_) => "local_editor_stopped",
            Event::ControlError(_) => "control_error",
            Event::Instance(wire) => wire.event.kind,
        }
    }
}

/// Sent first after every successful join: the whole current state.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerReady {
    pub runner_id: String,
    pub version: String,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_reason: Option<String>,
    pub config_version: u64,
    pub listeners: Vec<ReadyListener>,
    pub instances: Vec<ReadyInstance>,
    pub editors: Vec<ReadyEditor>,
    pub limits: Limits,
}

/// A running Codex instance in `runner_ready`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyInstance {
    pub instance_id: String,
    pub thread_id: Option<String>,
    pub cwd: String,
    pub state: InstanceState,
    pub last_seq: u64,
    /// The runner-made ids of approvals still waiting for a decision.
    pub pending_approvals: Vec<String>,
}

/// What a Codex instance is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Idle,
    Running,
}

/// A running editor in `runner_ready`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyEditor {
    pub editor_id: String,
    pub cwd: String,
}

/// The sizes the runner refuses past, in bytes, so that Kandan can refuse
/// larger uploads itself instead of sending them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_request_body: usize,
    pub max_response_body: usize,
    /// Per message, either way.
    pub max_web_socket_message: usize,
}

/// A current candidate in `runner_ready`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyListener {
    #[serde(flatten)]
    pub listener: ListenerInfo,
    pub state: ListenerState,
}

/// Approval state of a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerState {
    Pending,
    Approved,
    Denied,
}

/// What Kandan is told about a candidate listener.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub request_id: String,
    pub port: u16,
    pub pid: u32,
    pub command: String,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub addresses: Vec<IpAddr>,
}

/// A candidate opened or changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForwardRequest {
    #[serde(flatten)]
    pub listener: ListenerInfo,
    /// The same command and cwd came back on the same port.
    pub restarted: bool,
    /// Not in the contract's field list (unknown fields are ignored): the
    /// runner's decision so far, so a `restarted` request that is already
    /// approved needs no new prompt.
    pub state: ListenerState,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForwardClosed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub request_id: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForwardResolved {
    pub request_id: String,
    pub port: u16,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_user_id: Option<ActorId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_slug: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardHttpResponse {
    pub request_id: String,
    pub status: u16,
    /// Always pairs on the wire.
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Last, as in every event with a body: see [`Event::take_body`].
    #[serde(rename = "bodyBase64")]
    pub body: Pieces,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardHttpResponseChunk {
    pub request_id: String,
    pub seq: u64,
    pub done: bool,
    #[serde(rename = "bodyBase64")]
    pub body: Pieces,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWebsocketOpened {
    pub socket_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWebsocketMessage {
    pub socket_id: String,
    pub opcode: Opcode,
    #[serde(rename = "bodyBase64")]
    pub body: Pieces,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWebsocketClosed {
    pub socket_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerConfigApplied {
    pub config_version: u64,
    pub allowed_cwds: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEditorStarted {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub editor_id: String,
    pub cwd: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEditorStopped {
    pub editor_id: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A control was refused or failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlErrorEvent {
    /// The control's `type` as received ("" when it could not be read).
    pub control_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub editor_id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

impl ControlErrorEvent {
    /// A refusal of `control_type` with no ids yet (add them with `..`).
    pub fn new(control_type: &str, code: ErrorCode, message: String) -> Self {
        ControlErrorEvent {
            control_type: control_type.to_owned(),
            code,
            message,
            ..ControlErrorEvent::default()
        }
    }

    /// A refusal of a control about the instance `instance_id`.
    pub fn for_instance(
        control_type: &str,
        instance_id: &str,
        code: ErrorCode,
        message: String,
    ) -> Self {
        ControlErrorEvent {
            instance_id: Some(instance_id.to_owned()),
            ..ControlErrorEvent::new(control_type, code, message)
        }
    }
}

/// The `code` of a `control_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A control carried a value that cannot be acted on.
    #[default]
    InvalidControl,
    UnknownControl,
    /// The port has no approval (or lost it).
    PortNotApproved,
    /// No listener of the watched trees holds the port.
    PortNotListening,
    /// The local server refused or dropped the connection.
    UpstreamUnreachable,
    /// The local server did not answer in time.
    UpstreamTimeout,
    /// A body went over its configured limit.
    BodyTooLarge,
    CwdNotAllowed,
    /// A control named a WebSocket that is not open.
    UnknownSocket,
    Unsupported,
    UnknownInstance,
    /// A decision for an approval that is not (or no longer) waiting.
    UnknownRequest,
    UnknownEditor,
    InstanceFailed,
    EditorFailed,
}

impl ErrorCode {
    /// The wire spelling (the same as the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidControl => "invalid_control",
            ErrorCode::UnknownControl => "unknown_control",
            ErrorCode::PortNotApproved => "port_not_approved",
            ErrorCode::PortNotListening => "port_not_listening",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::CwdNotAllowed => "cwd_not_allowed",
            ErrorCode::UnknownSocket => "unknown_socket",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::UnknownInstance => "unknown_instance",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::UnknownEditor => "unknown_editor",
            ErrorCode::InstanceFailed => "instance_failed",
            ErrorCode::EditorFailed => "editor_failed",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{Value, json};

    impl Event {
        fn to_json(&self) -> Value {
            serde_json::to_value(self).unwrap()
        }
    }

    fn listener() -> ListenerInfo {
        ListenerInfo {
            instance_id: None,
            request_id: "req-1".into(),
            port: 5173,
            pid: 4242,
            command: "node vite".into(),
            label: "node".into(),
            cwd: Some("/x".into()),
            addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        }
    }

    #[test]
    fn runner_ready() {
        let event = Event::RunnerReady(RunnerReady {
            runner_id: "r1".into(),
            version: "0.1.0".into(),
            backend: "procfs".into(),
            backend_reason: Some("ebpf unavailable: CAP_BPF missing".into()),
            config_version: 3,
            listeners: vec![ReadyListener {
                listener: listener(),
                state: ListenerState::Approved,
            }],
            instances: vec![ReadyInstance {
                instance_id: "i1".into(),
                thread_id: Some("t1".into()),
                cwd: "/x".into(),
                state: InstanceState::Running,
                last_seq: 9,
                pending_approvals: vec!["a1".into()],
            }],
            editors: vec![ReadyEditor {
                editor_id: "e1".into(),
                cwd: "/x".into(),
            }],
            limits: Limits {
                max_request_body: 1,
                max_response_body: 2,
                max_web_socket_message: 3,
            },
        });
        assert_eq!(
            event.to_json(),
            json!({
                "type": "runner_ready", "runnerId": "r1", "version": "0.1.0", "backend": "procfs",
                "backendReason": "ebpf unavailable: CAP_BPF missing", "configVersion": 3,
                "listeners": [{
                    "requestId": "req-1", "port": 5173, "pid": 4242, "command": "node vite",
                    "label": "node", "cwd": "/x", "addresses": ["127.0.0.1", "::1"], "state": "approved"
                }],
                "instances": [{"instanceId": "i1", "threadId": "t1", "cwd": "/x", "state": "running",
                               "lastSeq": 9, "pendingApprovals": ["a1"]}],
                "editors": [{"editorId": "e1", "cwd": "/x"}],
                "limits": {"maxRequestBody": 1, "maxResponseBody": 2, "maxWebSocketMessage": 3}
            })
        );
    }

    #[test]
    fn runner_ready_without_optionals() {
        let event = Event::RunnerReady(RunnerReady {
            runner_id: "r1".into(),
            version: "0.1.0".into(),
            backend: "ebpf".into(),
            backend_reason: None,
            config_version: 0,
            listeners: vec![],
            instances: vec![],
            editors: vec![],
            limits: Limits {
                max_request_body: 16,
                max_response_body: 16,
                max_web_socket_message: 16,
            },
        });
        assert_eq!(
            event.to_json(),
            json!({"type": "runner_ready", "runnerId": "r1", "version": "0.1.0", "backend": "ebpf",
                   "configVersion": 0, "listeners": [], "instances": [], "editors": [],
                   "limits": {"maxRequestBody": 16, "maxResponseBody": 16, "maxWebSocketMessage": 16}})
        );
    }

    #[test]
    fn port_forward_request() {
        let mut info = listener();
        info.instance_id = Some("i1".into());
        info.cwd = None;
        let event = Event::PortForwardRequest(PortForwardRequest {
            listener: info,
            restarted: true,
            state: ListenerState::Approved,
        });
        assert_eq!(
            event.to_json(),
            json!({"type": "port_forward_request", "instanceId": "i1", "requestId": "req-1",
                   "port": 5173, "pid": 4242, "command": "node vite", "label": "node",
                   "addresses": ["127.0.0.1", "::1"], "restarted": true, "state": "approved"})
        );
    }

    #[test]
    fn port_forward_closed_and_resolved() {
        let closed = Event::PortForwardClosed(PortForwardClosed {
            instance_id: None,
            request_id: "req-1".into(),
            port: 8000,
        });
        assert_eq!(
            closed.to_json(),
            json!({"type": "port_forward_closed", "requestId": "req-1", "port": 8000})
        );
        let resolved = Event::PortForwardResolved(PortForwardResolved {
            request_id: "req-1".into(),
            port: 8000,
            decision: Decision::Deny,
            actor_user_id: Some(ActorId::Int(7)),
            actor_slug: Some("ann".into()),
        });
        assert_eq!(
            resolved.to_json(),
            json!({"type": "port_forward_resolved", "requestId": "req-1", "port": 8000,
                   "decision": "deny", "actorUserId": 7, "actorSlug": "ann"})
        );
    }

    #[test]
    fn http_response_and_chunks() {
        let response = Event::ForwardHttpResponse(ForwardHttpResponse {
            request_id: "h1".into(),
            status: 200,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("set-cookie".into(), "a=1".into()),
            ],
            body: Bytes::from_static(b"hello").into(),
            streaming: Some(true),
        });
        assert_eq!(
            response.to_json(),
            json!({"type": "forward_http_response", "requestId": "h1", "status": 200,
                   "headers": [["content-type", "text/plain"], ["set-cookie", "a=1"]],
                   "bodyBase64": "aGVsbG8=", "streaming": true})
        );
        let chunk = Event::ForwardHttpResponseChunk(ForwardHttpResponseChunk {
            request_id: "h1".into(),
            seq: 2,
            body: Bytes::from_static(&[0, 255]).into(),
            done: false,
        });
        assert_eq!(
            chunk.to_json(),
            json!({"type": "forward_http_response_chunk", "requestId": "h1", "seq": 2,
                   "bodyBase64": "AP8=", "done": false})
        );
    }

    #[test]
    fn websocket_events() {
        let opened = Event::ForwardWebsocketOpened(ForwardWebsocketOpened {
            socket_id: "s1".into(),
            protocol: Some("vite-hmr".into()),
        });
        assert_eq!(
            opened.to_json(),
            json!({"type": "forward_websocket_opened", "socketId": "s1", "protocol": "vite-hmr"})
        );
        let message = Event::ForwardWebsocketMessage(ForwardWebsocketMessage {
            socket_id: "s1".into(),
            opcode: Opcode::Binary,
            body: Bytes::from_static(&[1, 2, 3]).into(),
        });
        assert_eq!(
            message.to_json(),
            json!({"type": "forward_websocket_message", "socketId": "s1", "opcode": "binary",
                   "bodyBase64": "AQID"})
        );
        let closed = Event::ForwardWebsocketClosed(ForwardWebsocketClosed {
            socket_id: "s1".into(),
            code: Some(1000),
            reason: Some("bye".into()),
            error: None,
        });
        assert_eq!(
            closed.to_json(),
            json!({"type": "forward_websocket_closed", "socketId": "s1", "code": 1000, "reason": "bye"})
        );
    }

    #[test]
    fn config_editor_and_error() {
        let applied = Event::RunnerConfigApplied(RunnerConfigApplied {
            config_version: 4,
            allowed_cwds: vec!["/work".into()],
        });
        assert_eq!(
            applied.to_json(),
            json!({"type": "runner_config_applied", "configVersion": 4, "allowedCwds": ["/work"]})
        );
        let editor = Event::LocalEditorStarted(LocalEditorStarted {
            request_id: None,
            instance_id: None,
            editor_id: "e1".into(),
            cwd: "/work".into(),
        });
        assert_eq!(
            editor.to_json(),
            json!({"type": "local_editor_started", "editorId": "e1", "cwd": "/work"})
        );
        let error = Event::ControlError(ControlErrorEvent {
            control_type: "forward_http_request".into(),
            request_id: Some("h1".into()),
            code: ErrorCode::PortNotApproved,
            message: "port 9 is not approved".into(),
            ..ControlErrorEvent::default()
        });
        assert_eq!(
            error.to_json(),
            json!({"type": "control_error", "controlType": "forward_http_request", "requestId": "h1",
                   "code": "port_not_approved", "message": "port 9 is not approved"})
        );
    }

    #[test]
    fn every_error_code_has_its_wire_name() {
        let codes = [
            (ErrorCode::InvalidControl, "invalid_control"),
            (ErrorCode::UnknownControl, "unknown_control"),
            (ErrorCode::PortNotApproved, "port_not_approved"),
            (ErrorCode::PortNotListening, "port_not_listening"),
            (ErrorCode::UpstreamUnreachable, "upstream_unreachable"),
            (ErrorCode::UpstreamTimeout, "upstream_timeout"),
            (ErrorCode::BodyTooLarge, "body_too_large"),
            (ErrorCode::CwdNotAllowed, "cwd_not_allowed"),
            (ErrorCode::UnknownSocket, "unknown_socket"),
            (ErrorCode::Unsupported, "unsupported"),
            (ErrorCode::UnknownInstance, "unknown_instance"),
            (ErrorCode::UnknownRequest, "unknown_request"),
            (ErrorCode::UnknownEditor, "unknown_editor"),
            (ErrorCode::InstanceFailed, "instance_failed"),
            (ErrorCode::EditorFailed, "editor_failed"),
        ];
        for (code, name) in codes {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(name));
            assert_eq!(code.to_string(), name);
        }
    }
}
