//! Controls Kandan sends to the runner (PROTOCOL.md section 3): one type per
//! control, read by serde straight from the frame's text.
//!
//! The `type` picks the type to read ([`Control::parse`]); the error names
//! the field at fault (`serde_path_to_error`), which an internally tagged
//! serde enum would lose. The ids are read first, leniently (`LenientIds`), so a
//! broken control is still answered with the ids Kandan needs to match the
//! `control_error` to its request. Unknown fields are ignored; a `null`
//! optional field counts as absent.

use std::path::PathBuf;

use serde::de::{DeserializeOwned, IgnoredAny, IntoDeserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::control_error::{ControlIds, ErrorCode, Failure};
use super::fields::{
    AbsolutePath, ActorId, Body, Decision, Headers, Method, Opcode, Port, UrlPath,
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

#[derive(Debug, Default, PartialEq, Deserialize)]
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
    pub approval_policy: Option<String>,
    pub sandbox: Option<String>,
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
struct LenientIds {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    control_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    request_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    socket_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    instance_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    editor_id: Option<String>,
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
#[error("{:?} control refused: {problem}", ids.control_type)]
pub(crate) struct ControlRejection {
    /// As read leniently: every id that is a string, the `type` as sent.
    pub ids: ControlIds,
    pub problem: Problem,
}

/// What is wrong with a control.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
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
    fn new(ids: LenientIds, problem: Problem) -> Box<Self> {
        let ids = ControlIds {
            control_type: ids.control_type.unwrap_or_default(),
            request_id: ids.request_id,
            socket_id: ids.socket_id,
            instance_id: ids.instance_id,
            editor_id: ids.editor_id,
        };
        Box::new(ControlRejection { ids, problem })
    }

    /// `unknown_control` for unknown types, `invalid_control` otherwise.
    pub(crate) fn code(&self) -> ErrorCode {
        match self.problem {
            Problem::UnknownType => ErrorCode::UnknownControl,
            _ => ErrorCode::InvalidControl,
        }
    }

    /// The `control_error` to send back.
    pub(crate) fn to_event(&self) -> super::Event {
        let failure = Failure::new(self.code(), self.problem.to_string());
        self.ids.error(failure)
    }
}

impl Control {
    /// Reads the payload of a `control` push.
    pub(crate) fn parse(payload: &RawValue) -> Result<Control, Box<ControlRejection>> {
        let text = payload.get();
        // serde would read a struct from an array too.
        let object = text.trim_start().starts_with('{');
        let ids: LenientIds = match serde_json::from_str(text) {
            Ok(ids) if object => ids,
            _ => {
                return Err(ControlRejection::new(
                    LenientIds::default(),
                    Problem::NotAnObject,
                ));
            }
        };
        let Some(name) = ids.control_type.as_deref() else {
            return Err(ControlRejection::new(ids, Problem::NoType));
        };
        let kind = ControlType::deserialize(name.into_deserializer())
            .map_err(|_: serde::de::value::Error| Problem::UnknownType);
        let parsed = kind.and_then(|kind| Control::read(kind, text));
        parsed.map_err(|problem| ControlRejection::new(ids, problem))
    }

    /// Reads the control of type `kind` from `text`.
    fn read(kind: ControlType, text: &str) -> Result<Control, Problem> {
        Ok(match kind {
            ControlType::ResolvePortForwardRequest => {
                Control::ResolvePortForwardRequest(read(text)?)
            }
            ControlType::ForwardHttpRequest => {
                let mut req: ForwardHttpRequest = read(text)?;
                req.target = target(req.port.take(), req.editor_id.take())?;
                Control::ForwardHttpRequest(req)
            }
            ControlType::ForwardHttpCancel => Control::ForwardHttpCancel(read(text)?),
            ControlType::ForwardWebsocketOpen => {
                let mut open: ForwardWebsocketOpen = read(text)?;
                open.target = target(open.port.take(), open.editor_id.take())?;
                Control::ForwardWebsocketOpen(open)
            }
            ControlType::ForwardWebsocketSend => Control::ForwardWebsocketSend(read(text)?),
            ControlType::ForwardWebsocketClose => Control::ForwardWebsocketClose(read(text)?),
            ControlType::UpdateRunnerConfig => Control::UpdateRunnerConfig(read(text)?),
            ControlType::StartLocalEditor => Control::StartLocalEditor(read(text)?),
            ControlType::StopLocalEditor => Control::StopLocalEditor(read(text)?),
            ControlType::StartInstance => Control::StartInstance(read(text)?),
            ControlType::StartTurn => Control::StartTurn(read(text)?),
            ControlType::InterruptTurn => Control::InterruptTurn(read(text)?),
            ControlType::ResolveApprovalRequest => Control::ResolveApprovalRequest(read(text)?),
            ControlType::StopInstance => Control::StopInstance(read(text)?),
            ControlType::ReadThread => Control::ReadThread(read(text)?),
        })
    }

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
