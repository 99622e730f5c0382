//! Events the runner sends to Kandan (PROTOCOL.md section 4), serialized to
//! the exact JSON of the contract. Bodies are bytes here, base64 on the wire.

use std::net::IpAddr;

use serde::Serialize;

use super::control_error::ControlErrorEvent;
use super::fields::{ActorId, Decision, Headers, Opcode};
use super::instance_wire::InstanceWire;
use super::names::name_of;
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
    /// About the length of this event's JSON, so its text is allocated
    /// once, not grown: the body in base64, a response's headers, and a
    /// little for the rest. Not more: a buffer of 1 KiB or more is a
    /// large block to glibc, which sorts its free lists (consolidates)
    /// before handing out each one, and the answer to a small GET would
    /// pay for that on every request.
    pub(crate) fn size_hint(&self) -> usize {
        let (body, headers) = match self {
            Event::ForwardHttpResponse(e) => (e.body.len(), e.headers.wire_len()),
            Event::ForwardHttpResponseChunk(e) => (e.body.len(), 0),
            Event::ForwardWebsocketMessage(e) => (e.body.len(), 0),
            _ => return 1024,
        };
        // Type, ids, status and the frame's head: under 256 bytes with
        // Kandan's ids.
        body.div_ceil(3) * 4 + headers + 256
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
    pub(crate) fn kind(&self) -> String {
        match self {
            // Serialized already: its name is kept beside its JSON.
            Event::Instance(wire) => wire.event.kind.to_owned(),
            _ => name_of(self),
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
    pub headers: Headers,
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
    pub reason: EditorStopReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Why an editor stopped (`local_editor_stopped`'s `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EditorStopReason {
    /// `stop_local_editor`.
    Stopped,
    /// It exited by itself (or was killed from outside).
    Exited,
    /// Its cwd is no longer allowed (`update_runner_config`).
    #[serde(rename = "cwd_not_allowed")]
    CwdWithdrawn,
    /// The runner is exiting.
    Shutdown,
}

impl std::fmt::Display for EditorStopReason {
    /// The wire spelling.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&name_of(self))
    }
}
