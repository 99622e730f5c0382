//! Reading a control from a frame's text.
//!
//! The `type` picks the type to read ([`Control::parse`]); the error names
//! the field at fault (`serde_path_to_error`), which an internally tagged
//! serde enum would lose. A control the typed read refuses has its ids
//! read leniently (`LenientIds`), so it is still answered with the ids
//! Kandan needs to match the `control_error` to its request. Unknown
//! fields are ignored; a `null` optional field counts as absent.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::value::RawValue;

use super::control_error::{ControlIds, ErrorCode, Failure};
use super::controls::{Control, ControlType, ForwardHttpRequest, ForwardWebsocketOpen, Target};
use super::fields::Port;

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

/// A string, or nothing for any other JSON value (read in one pass:
/// serde's `untagged` would buffer the value first).
fn lenient<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct StringOrNothing;
    impl<'de> Visitor<'de> for StringOrNothing {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(text.to_owned()))
        }
        fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
            Ok(Some(text))
        }
        other_values_are!('de, None; bool, i64, u64, f64, unit, seq, map);
    }
    deserializer.deserialize_any(StringOrNothing)
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
        let kind = control_type(name).map_err(|_| Problem::UnknownType);
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
}

/// The control type named `name`, if the contract has it.
pub(super) fn control_type(name: &str) -> Result<ControlType, serde::de::value::Error> {
    ControlType::deserialize(name.into_deserializer())
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
pub(super) fn target(port: Option<Port>, editor_id: Option<String>) -> Result<Target, Problem> {
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
