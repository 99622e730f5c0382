//! The forwarding module's error type, and the protocol error code
//! (PROTOCOL.md section 4) each error is reported with.

use crate::gate::GateRefusal;
use crate::wire::{ErrorCode, Failure};

/// Why a forwarded request or socket failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The gate refused the port. The refusal is the message, not a
    /// cause: as a source it would be said twice.
    #[error("port {port}: {refusal}")]
    Refused { port: u16, refusal: GateRefusal },
    /// The listener bound only non-loopback addresses; the runner never dials those.
    #[error(
        "port {port} listens only on non-loopback addresses ({addrs}); the runner connects to loopback only"
    )]
    NoLoopbackTarget { port: u16, addrs: String },
    /// Connecting to the local server failed.
    #[error("cannot connect to {addr}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake with a local server failed.
    #[error("TLS handshake with port {port} failed")]
    Tls {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// A request went out as plain HTTP to a server that turned out to
    /// speak HTTPS, and resending it was not safe.
    #[error(
        "port {port} speaks HTTPS: later requests use TLS, but this {method} request was not resent (it may have reached the server); retry it"
    )]
    SpeaksHttps { port: u16, method: http::Method },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to port {port} timed out after {after:?}")]
    ConnectTimeout {
        port: u16,
        after: std::time::Duration,
    },
    /// The local server did not answer within the overall timeout.
    #[error("the local server did not answer within {after:?}")]
    ResponseTimeout { after: std::time::Duration },
    /// Connecting to an editor's socket failed.
    #[error("cannot connect to the editor's socket {}", path.display())]
    ConnectEditor {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The request body is over the limit; nothing was sent.
    #[error("request body of {len} bytes is over the {limit} byte limit")]
    RequestTooLarge { len: usize, limit: usize },
    /// The response body is over the limit; nothing of it was forwarded.
    #[error("response body is over the {limit} byte limit")]
    ResponseTooLarge { limit: usize },
    /// The HTTP exchange with the local server failed (it closed the
    /// connection, sent garbage, or died mid-response).
    #[error("http exchange with the local server failed")]
    Http(#[source] hyper::Error),
    /// Reading the response body failed (the local server died mid-response).
    #[error("reading the response body failed")]
    ResponseBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The WebSocket handshake or stream failed.
    #[error("websocket with the local server failed")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The control's method, path, query or headers cannot form a request.
    #[error("invalid {what}: {detail}")]
    InvalidRequest {
        /// Which part was bad (`method`, `path`, `header`...).
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A WebSocket control named a socket that is not open.
    #[error("no open websocket {0:?}")]
    UnknownSocket(String),
    /// A request named an editor that is not running.
    #[error("no running editor {0:?}")]
    UnknownEditor(String),
    /// The port's listener closed or its approval was revoked.
    #[error("forwarding to port {port} stopped: {cause}")]
    PortClosed { port: u16, cause: super::CloseCause },
}

impl ForwardError {
    /// The `control_error` code for this error.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::Refused { refusal, .. } => refusal.code(),
            Self::NoLoopbackTarget { .. }
            | Self::Connect { .. }
            | Self::ConnectEditor { .. }
            | Self::Tls { .. }
            | Self::SpeaksHttps { .. }
            | Self::Http(_)
            | Self::ResponseBody(_) => ErrorCode::UpstreamUnreachable,
            Self::WebSocket(err) => match **err {
                tokio_tungstenite::tungstenite::Error::Capacity(_) => ErrorCode::BodyTooLarge,
                _ => ErrorCode::UpstreamUnreachable,
            },
            Self::ConnectTimeout { .. } | Self::ResponseTimeout { .. } => {
                ErrorCode::UpstreamTimeout
            }
            Self::RequestTooLarge { .. } | Self::ResponseTooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::InvalidRequest { .. } => ErrorCode::InvalidControl,
            Self::UnknownSocket(_) => ErrorCode::UnknownSocket,
            Self::UnknownEditor(_) => ErrorCode::UnknownEditor,
            Self::PortClosed { cause, .. } => cause.code(),
        }
    }

    /// The error and its sources on one line, for the wire `message`.
    pub(crate) fn message(&self) -> String {
        crate::error_chain(self)
    }

    /// The `control_error`'s code and message.
    pub(crate) fn failure(&self) -> Failure {
        Failure::new(self.code(), self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_said_once() {
        let err = ForwardError::Refused {
            port: 8601,
            refusal: GateRefusal::Denied,
        };
        assert_eq!(err.message(), "port 8601: not approved: denied in Kandan");
        assert_eq!(err.code(), ErrorCode::PortNotApproved);
    }
}
