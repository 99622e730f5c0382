//! Controls Kandan sends to the runner (PROTOCOL.md section 3): one type per
//! control, read by serde straight from the frame's text.
//!
//! The `type` picks the type to read ([`Control::parse`]); the error names
//! the field at fault (`serde_path_to_error`), which an internally tagged
//! serde enum would lose. The ids are read first, leniently ([`Ids`]), so a
//! broken control is still answered with the ids Kandan needs to match the
//! `control_error` to its request. Unknown fields are ignored; a `null`
//! optional field counts as absent.

mod fields;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;

use super::events::{ControlErrorEvent, ErrorCode};

pub use fields::{
    AbsolutePath, ActorId, ApprovalPolicy, Body, Decision, Headers, MAX_HEADER_PAIRS, Method,
    Opcode, Port, SandboxMode, UrlPath,
};

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
    port: Option<Port>,
    editor_id: Option<String>,
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
    port: Option<Port>,
    editor_id: Option<String>,
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

/// The ids of any control, read whatever else is wrong with it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ids {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub control_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub request_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub socket_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub instance_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub editor_id: Option<String>,
}

/// A string, or nothing for any other JSON value.
fn lenient<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Str(String),
        Other(IgnoredAny),
    }
    Ok(match Lenient::deserialize(deserializer)? {
        Lenient::Str(text) => Some(text),
        Lenient::Other(_) => None,
    })
}

/// A control that cannot be acted on; becomes a `control_error`.
#[derive(Debug, thiserror::Error)]
#[error("{:?} control refused: {problem}", ids.control_type.as_deref().unwrap_or(""))]
pub struct ControlRejection {
    pub ids: Ids,
    pub problem: Problem,
}

/// What is wrong with a control.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The payload is not a JSON object.
    #[error("control is not a json object")]
    NotAnObject,
    /// `type` is missing or not a string.
    #[error("control has no string `type`")]
    NoType,
    /// `type` names no control of the contract.
    #[error("unknown control type")]
    UnknownType,
    /// A field is missing or has a wrong type or value: serde's message,
    /// after the field's path.
    #[error("{0}")]
    Invalid(String),
}

impl ControlRejection {
    /// `unknown_control` for unknown types, `invalid_control` otherwise.
    pub fn code(&self) -> ErrorCode {
        match self.problem {
            Problem::UnknownType => ErrorCode::UnknownControl,
            _ => ErrorCode::InvalidControl,
        }
    }

    /// The event to send back.
    pub fn to_event(&self) -> ControlErrorEvent {
        ControlErrorEvent {
            control_type: self.ids.control_type.clone().unwrap_or_default(),
            request_id: self.ids.request_id.clone(),
            socket_id: self.ids.socket_id.clone(),
            instance_id: self.ids.instance_id.clone(),
            editor_id: self.ids.editor_id.clone(),
            code: self.code(),
            message: self.problem.to_string(),
        }
    }
}

impl Control {
    /// Reads the payload of a `control` push.
    pub fn parse(payload: &RawValue) -> Result<Control, Box<ControlRejection>> {
        let text = payload.get();
        // serde would read a struct from an array too.
        let object = text.trim_start().starts_with('{');
        let ids: Ids = match serde_json::from_str(text) {
            Ok(ids) if object => ids,
            _ => {
                let problem = Problem::NotAnObject;
                return Err(Box::new(ControlRejection {
                    ids: Ids::default(),
                    problem,
                }));
            }
        };
        let Some(control_type) = ids.control_type.as_deref() else {
            return Err(Box::new(ControlRejection {
                ids,
                problem: Problem::NoType,
            }));
        };
        let parsed = match control_type {
            "resolve_port_forward_request" => read(text).map(Control::ResolvePortForwardRequest),
            "forward_http_request" => read(text)
                .and_then(|mut req: ForwardHttpRequest| {
                    req.target = target(req.port.take(), req.editor_id.take())?;
                    Ok(req)
                })
                .map(Control::ForwardHttpRequest),
            "forward_http_cancel" => read(text).map(Control::ForwardHttpCancel),
            "forward_websocket_open" => read(text)
                .and_then(|mut open: ForwardWebsocketOpen| {
                    open.target = target(open.port.take(), open.editor_id.take())?;
                    Ok(open)
                })
                .map(Control::ForwardWebsocketOpen),
            "forward_websocket_send" => read(text).map(Control::ForwardWebsocketSend),
            "forward_websocket_close" => read(text).map(Control::ForwardWebsocketClose),
            "update_runner_config" => read(text).map(Control::UpdateRunnerConfig),
            "start_local_editor" => read(text).map(Control::StartLocalEditor),
            "stop_local_editor" => read(text).map(Control::StopLocalEditor),
            "start_instance" => read(text).map(Control::StartInstance),
            "start_turn" => read(text).map(Control::StartTurn),
            "interrupt_turn" => read(text).map(Control::InterruptTurn),
            "resolve_approval_request" => read(text).map(Control::ResolveApprovalRequest),
            "stop_instance" => read(text).map(Control::StopInstance),
            "read_thread" => read(text).map(Control::ReadThread),
            _ => Err(Problem::UnknownType),
        };
        parsed.map_err(|problem| Box::new(ControlRejection { ids, problem }))
    }

    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::ResolvePortForwardRequest(_) => "resolve_port_forward_request",
            Control::ForwardHttpRequest(_) => "forward_http_request",
            Control::ForwardHttpCancel(_) => "forward_http_cancel",
            Control::ForwardWebsocketOpen(_) => "forward_websocket_open",
            Control::ForwardWebsocketSend(_) => "forward_websocket_send",
            Control::ForwardWebsocketClose(_) => "forward_websocket_close",
            Control::UpdateRunnerConfig(_) => "update_runner_config",
            Control::StartLocalEditor(_) => "start_local_editor",
            Control::StopLocalEditor(_) => "stop_local_editor",
            Control::StartInstance(_) => "start_instance",
            Control::StartTurn(_) => "start_turn",
            Control::InterruptTurn(_) => "interrupt_turn",
            Control::ResolveApprovalRequest(_) => "resolve_approval_request",
            Control::StopInstance(_) => "stop_instance",
            Control::ReadThread(_) => "read_thread",
        }
    }
}

/// Reads one control type, naming the field at fault in the error. A
/// well-formed control is read once, directly; only a failed one is read
/// again through `serde_path_to_error` (which costs on every field) to
/// find the field's path.
fn read<T: DeserializeOwned>(text: &str) -> Result<T, Problem> {
    if let Ok(control) = serde_json::from_str(text) {
        return Ok(control);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        // serde_json adds where in the text it was; the field says more.
        let message = match message.rfind(" at line ") {
            Some(at) => &message[..at],
            None => &message,
        };
        Problem::Invalid(if path == "." {
            message.to_owned()
        } else {
            format!("field `{path}` {message}")
        })
    })
}

/// `port` or `editorId`, exactly one.
fn target(port: Option<Port>, editor_id: Option<String>) -> Result<Target, Problem> {
    match (port, editor_id) {
        (Some(Port(port)), None) => Ok(Target::Port(port)),
        (None, Some(editor)) => Ok(Target::Editor(editor)),
        (None, None) => Err(Problem::Invalid(
            "missing field `port` (or `editorId`)".into(),
        )),
        (Some(_), Some(_)) => Err(Problem::Invalid(
            "fields `port` and `editorId` exclude each other".into(),
        )),
    }
}
