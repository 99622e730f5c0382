//! Controls Kandan sends to the runner (PROTOCOL.md section 3): one type per
//! control, read by serde straight from the frame's text (`parse.rs`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::control_error::ControlIds;
use super::fields::{
    AbsolutePath, ActorId, ApprovalPolicy, Body, Decision, Headers, Method, Opcode, Port,
    SandboxMode, UrlPath,
};
use super::names::name_of;

/// The `type` of a control: its wire name is its serde name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ControlType {
    ResolvePortForwardRequest,
    ForwardHttpRequest,
    ForwardHttpCancel,
    ForwardWebsocketOpen,
    ForwardWebsocketSend,
    ForwardWebsocketClose,
    UpdateRunnerConfig,
    StartLocalEditor,
    StopLocalEditor,
    StartInstance,
    StartTurn,
    InterruptTurn,
    ResolveApprovalRequest,
    StopInstance,
    ReadThread,
}

impl ControlType {
    /// The wire name.
    pub(crate) fn name(self) -> String {
        name_of(&self)
    }

    /// This control's ids, none set yet.
    pub(crate) fn ids(self) -> ControlIds {
        ControlIds {
            control_type: self.name(),
            ..ControlIds::default()
        }
    }
}

/// One control, typed.
#[derive(Debug, PartialEq)]
pub enum Control {
    ResolvePortForwardRequest(ResolvePortForwardRequest),
    ForwardHttpRequest(ForwardHttpRequest),
    ForwardHttpCancel(ForwardHttpCancel),
    ForwardWebsocketOpen(ForwardWebsocketOpen),
    ForwardWebsocketSend(ForwardWebsocketSend),
    ForwardWebsocketClose(ForwardWebsocketClose),
    UpdateRunnerConfig(UpdateRunnerConfig),
    StartLocalEditor(StartLocalEditor),
    StopLocalEditor(StopLocalEditor),
    StartInstance(StartInstance),
    StartTurn(StartTurn),
    InterruptTurn(InterruptTurn),
    ResolveApprovalRequest(ResolveApprovalRequest),
    StopInstance(StopInstance),
    ReadThread(ReadThread),
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvePortForwardRequest {
    pub instance_id: String,
    pub request_id: String,
    pub decision: Decision,
    pub actor_user_id: Option<ActorId>,
    pub actor_slug: Option<String>,
}

/// Where a forwarded request or socket goes: an approved port, or an
/// editor the runner started (PROTOCOL.md section 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Port(u16),
    Editor(String),
}

impl Default for Target {
    /// Only until [`Control::parse`] sets the real one; port 0 is refused
    /// by the gate anyway.
    fn default() -> Self {
        Target::Port(0)
    }
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardHttpRequest {
    pub request_id: String,
    pub(super) port: Option<Port>,
    pub(super) editor_id: Option<String>,
    pub method: Method,
    pub path: UrlPath,
    pub query_string: Option<String>,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default, rename = "bodyBase64")]
    pub body: Body,
    #[serde(default)]
    pub accept_streaming: bool,
    /// `port` or `editorId`, set by [`Control::parse`].
    #[serde(skip)]
    pub target: Target,
}

/// The person left (a closed tab, a closed `EventSource`): the request's
/// upstream exchange is dropped and nothing more is sent for it.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardHttpCancel {
    pub request_id: String,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWebsocketOpen {
    pub socket_id: String,
    pub(super) port: Option<Port>,
    pub(super) editor_id: Option<String>,
    pub path: UrlPath,
    pub query_string: Option<String>,
    #[serde(default)]
    pub headers: Headers,
    /// `port` or `editorId`, set by [`Control::parse`].
    #[serde(skip)]
    pub target: Target,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWebsocketSend {
    pub socket_id: String,
    pub opcode: Opcode,
    #[serde(rename = "bodyBase64")]
    pub body: Body,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardWebsocketClose {
    pub socket_id: String,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRunnerConfig {
    pub allowed_cwds: Vec<AbsolutePath>,
    pub config_version: Option<u64>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartLocalEditor {
    pub instance_id: Option<String>,
    pub request_id: Option<String>,
    /// Any path: the cwd policy refuses a relative one (`cwd_not_allowed`).
    pub cwd: PathBuf,
    pub browser_base_url: Option<String>,
    /// Section 8: asset paths and the settings for the extension.
    pub collaboration: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopLocalEditor {
    pub editor_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInstance {
    pub instance_id: Option<String>,
    /// Any path: the cwd policy refuses a relative one (`cwd_not_allowed`).
    pub cwd: Option<PathBuf>,
    pub thread_id: Option<String>,
    #[serde(default)]
    pub launch_tui: bool,
    pub model: Option<String>,
    pub reasoning_effort: Option<String>,
    pub approval_policy: Option<ApprovalPolicy>,
    pub sandbox: Option<SandboxMode>,
    #[serde(default)]
    pub fast: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTurn {
    pub instance_id: String,
    pub text: String,
    pub client_turn_id: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterruptTurn {
    pub instance_id: String,
    pub turn_id: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolveApprovalRequest {
    pub instance_id: String,
    pub request_id: String,
    pub decision: Decision,
    #[serde(default)]
    pub for_session: bool,
    pub actor_user_id: Option<ActorId>,
    pub actor_slug: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopInstance {
    pub instance_id: String,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadThread {
    pub instance_id: String,
    pub thread_id: String,
    #[serde(default)]
    pub include_turns: bool,
}

impl Control {
    /// The wire `type`.
    pub(crate) fn kind(&self) -> ControlType {
        match self {
            Control::ResolvePortForwardRequest(_) => ControlType::ResolvePortForwardRequest,
            Control::ForwardHttpRequest(_) => ControlType::ForwardHttpRequest,
            Control::ForwardHttpCancel(_) => ControlType::ForwardHttpCancel,
            Control::ForwardWebsocketOpen(_) => ControlType::ForwardWebsocketOpen,
            Control::ForwardWebsocketSend(_) => ControlType::ForwardWebsocketSend,
            Control::ForwardWebsocketClose(_) => ControlType::ForwardWebsocketClose,
            Control::UpdateRunnerConfig(_) => ControlType::UpdateRunnerConfig,
            Control::StartLocalEditor(_) => ControlType::StartLocalEditor,
            Control::StopLocalEditor(_) => ControlType::StopLocalEditor,
            Control::StartInstance(_) => ControlType::StartInstance,
            Control::StartTurn(_) => ControlType::StartTurn,
            Control::InterruptTurn(_) => ControlType::InterruptTurn,
            Control::ResolveApprovalRequest(_) => ControlType::ResolveApprovalRequest,
            Control::StopInstance(_) => ControlType::StopInstance,
            Control::ReadThread(_) => ControlType::ReadThread,
        }
    }

    /// The type and the ids its `control_error` echoes: the ids this
    /// control's type carries (a `start_instance` without an `instanceId`
    /// gets the fresh one from its handler).
    pub(crate) fn ids(&self) -> ControlIds {
        let some = |id: &String| Some(id.clone());
        let ids = self.kind().ids();
        match self {
            Control::ResolvePortForwardRequest(c) => ControlIds {
                request_id: some(&c.request_id),
                instance_id: some(&c.instance_id),
                ..ids
            },
            Control::ForwardHttpRequest(c) => ControlIds {
                request_id: some(&c.request_id),
                ..ids
            },
            Control::ForwardHttpCancel(c) => ControlIds {
                request_id: some(&c.request_id),
                ..ids
            },
            Control::ForwardWebsocketOpen(c) => ControlIds {
                socket_id: some(&c.socket_id),
                ..ids
            },
            Control::ForwardWebsocketSend(c) => ControlIds {
                socket_id: some(&c.socket_id),
                ..ids
            },
            Control::ForwardWebsocketClose(c) => ControlIds {
                socket_id: some(&c.socket_id),
                ..ids
            },
            Control::UpdateRunnerConfig(_) => ids,
            Control::StartLocalEditor(c) => ControlIds {
                request_id: c.request_id.clone(),
                instance_id: c.instance_id.clone(),
                ..ids
            },
            Control::StopLocalEditor(c) => ControlIds {
                editor_id: some(&c.editor_id),
                ..ids
            },
            Control::StartInstance(c) => ControlIds {
                instance_id: c.instance_id.clone(),
                ..ids
            },
            Control::ResolveApprovalRequest(c) => ControlIds {
                request_id: some(&c.request_id),
                instance_id: some(&c.instance_id),
                ..ids
            },
            Control::StartTurn(StartTurn { instance_id, .. })
            | Control::InterruptTurn(InterruptTurn { instance_id, .. })
            | Control::StopInstance(StopInstance { instance_id })
            | Control::ReadThread(ReadThread { instance_id, .. }) => ControlIds {
                instance_id: some(instance_id),
                ..ids
            },
        }
    }
}
