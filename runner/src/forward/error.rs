//! The forwarding module's error type, and the protocol error code
//! (PROTOCOL.md section 4) each error is reported with.

use super::gate::GateRefusal;
use crate::control::ErrorCode;

/// Why a forwarded request or socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The gate refused the port.
    #[error("port {port} refused: {source}")]
    Refused {
        /// The requested port.
        port: u16,
        /// The gate's reason.
        #[source]
        source: GateRefusal,
    },
    /// The listener bound only non-loopback addresses; the runner never dials those.
    #[error(
        "port {port} listens only on non-loopback addresses ({addrs}); the runner connects to loopback only"
    )]
    NoLoopbackTarget {
        /// The requested port.
        port: u16,
        /// The addresses the listener bound, for the message.
        addrs: String,
    },
    /// Connecting to the local server failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address dialled.
        addr: std::net::SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to port {port} timed out after {after:?}")]
    ConnectTimeout {
        /// The requested port.
        port: u16,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The local server did not answer within the overall timeout.
    #[error("local server on port {port} did not answer within {after:?}")]
    ResponseTimeout {
        /// The requested port.
        port: u16,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The request body is over the limit; nothing was sent.
    #[error("request body of {len} bytes is over the {limit} byte limit")]
    RequestTooLarge {
        /// The body's length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The response body is over the limit; nothing of it was forwarded.
    #[error("response body is over the {limit} byte limit")]
    ResponseTooLarge {
        /// The configured limit.
        limit: usize,
    },
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
    /// The port's listener closed or its approval was revoked.
    #[error("forwarding to port {port} stopped: {cause}")]
    PortClosed {
        /// The port.
        port: u16,
        /// Why.
        cause: super::CloseCause,
    },
}

impl ForwardError {
    /// The `control_error` code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused { source, .. } => source.code(),
            Self::NoLoopbackTarget { .. }
            | Self::Connect { .. }
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
            Self::PortClosed { cause, .. } => cause.code(),
        }
    }

    /// The error and its sources on one line, for the wire `message`.
    pub fn message(&self) -> String {
        crate::error_chain(self)
    }
}
