//! `control_error` (PROTOCOL.md section 4), built in one place
//! ([`ControlIds::error`]): a handler fails with a [`Failure`], which knows
//! its code; the caller adds the control's type and ids.

use serde::Serialize;

use super::events::Event;
use super::names::name_of;

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

/// A control's `type` and the ids its `control_error` echoes, so Kandan
/// can match the error to what it sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ControlIds {
    /// As received ("" when it could not be read).
    pub control_type: String,
    pub request_id: Option<String>,
    pub socket_id: Option<String>,
    pub instance_id: Option<String>,
    pub editor_id: Option<String>,
}

impl ControlIds {
    /// With `requestId`.
    pub(crate) fn request(self, id: impl Into<String>) -> Self {
        ControlIds {
            request_id: Some(id.into()),
            ..self
        }
    }

    /// With `socketId`.
    pub(crate) fn socket(self, id: impl Into<String>) -> Self {
        ControlIds {
            socket_id: Some(id.into()),
            ..self
        }
    }

    /// With `instanceId`.
    pub(crate) fn instance(self, id: impl Into<String>) -> Self {
        ControlIds {
            instance_id: Some(id.into()),
            ..self
        }
    }

    /// The `control_error` for `failure` of this control: the one place
    /// one is made.
    pub(crate) fn error(&self, failure: Failure) -> Event {
        Event::ControlError(ControlErrorEvent {
            control_type: self.control_type.clone(),
            request_id: self.request_id.clone(),
            socket_id: self.socket_id.clone(),
            instance_id: self.instance_id.clone(),
            editor_id: self.editor_id.clone(),
            code: failure.code,
            message: failure.message,
        })
    }
}

/// Why a control failed: its `control_error` code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The `code` of a `control_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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

impl std::fmt::Display for ErrorCode {
    /// The wire spelling.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&name_of(self))
    }
}
