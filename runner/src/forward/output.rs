//! Typed requests into forwarding and the outputs it emits (raw bytes; the
//! control layer maps them to and from the wire's JSON and base64).

use bytes::Bytes;

use crate::control::ErrorCode;
use crate::control::budget::Charge;
use crate::control::controls::Opcode;

/// One `forward_http_request`.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Kandan's id, echoed in every output for this request.
    pub request_id: String,
    /// The approved local port.
    pub port: u16,
    /// The HTTP method, as sent.
    pub method: String,
    /// The path, starting with `/` (origin form).
    pub path: String,
    /// The query string, without the leading `?`.
    pub query_string: Option<String>,
    /// Header pairs; repeated names are kept.
    pub headers: Vec<(String, String)>,
    /// The whole request body.
    pub body: Bytes,
    /// Kandan accepts a streamed response (`forward_http_response_chunk`).
    pub accept_streaming: bool,
}

/// One `forward_websocket_open`.
#[derive(Debug, Clone)]
pub struct WsOpen {
    /// Kandan's id for the socket.
    pub socket_id: String,
    /// The approved local port.
    pub port: u16,
    /// The path, starting with `/`.
    pub path: String,
    /// The query string, without the leading `?`.
    pub query_string: Option<String>,
    /// The browser's handshake headers (`Sec-WebSocket-Protocol`, `Origin`,
    /// `Cookie`...); connection-level ones are replaced.
    pub headers: Vec<(String, String)>,
}

/// Why a WebSocket failed, with the code a `control_error` would carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFailure {
    /// The protocol error code.
    pub code: ErrorCode,
    /// A one-line explanation.
    pub message: String,
}

/// What forwarding tells Kandan. Outputs with a body hold a [`Charge`] of
/// the event budget until their frame is written to Kandan.
#[derive(Debug, PartialEq, Eq)]
pub enum ForwardOutput {
    /// `forward_http_response`. With `streaming`, `body` is empty and
    /// `HttpChunk`s follow.
    HttpResponse {
        /// The request's id.
        request_id: String,
        /// The status code.
        status: u16,
        /// End-to-end response headers.
        headers: Vec<(String, String)>,
        /// The whole body (empty when streaming).
        body: Bytes,
        /// Chunks follow.
        streaming: bool,
        /// The body's share of the event budget.
        charge: Charge,
    },
    /// `forward_http_response_chunk`: `seq` counts from 0; the last has
    /// `done` (and may be empty).
    HttpChunk {
        /// The request's id.
        request_id: String,
        /// Position of this chunk.
        seq: u64,
        /// The data.
        body: Bytes,
        /// This is the last chunk.
        done: bool,
        /// The body's share of the event budget.
        charge: Charge,
    },
    /// `control_error` for a `forward_http_request`; after a streamed
    /// `HttpResponse` it ends the stream early.
    HttpError {
        /// The request's id.
        request_id: String,
        /// The protocol code.
        code: ErrorCode,
        /// A one-line explanation.
        message: String,
    },
    /// `forward_websocket_opened`.
    WsOpened {
        /// The socket's id.
        socket_id: String,
        /// The subprotocol the local server chose.
        protocol: Option<String>,
    },
    /// `forward_websocket_message`: a frame from the local server.
    WsMessage {
        /// The socket's id.
        socket_id: String,
        /// The frame kind.
        opcode: Opcode,
        /// The payload.
        body: Bytes,
        /// The payload's share of the socket's and the event budget.
        charge: Charge,
    },
    /// `forward_websocket_closed`: the last output of every socket that was
    /// opened, whether it closed cleanly, failed to open, or broke.
    WsClosed {
        /// The socket's id.
        socket_id: String,
        /// The close code, when a close frame was exchanged.
        code: Option<u16>,
        /// The close reason, when a close frame was exchanged.
        reason: Option<String>,
        /// Set when the socket failed rather than closed.
        error: Option<WsFailure>,
    },
    /// `control_error` for a WebSocket control that was refused (unknown
    /// socket, invalid payload); the socket, if any, is unaffected.
    WsError {
        /// The socket id the control named.
        socket_id: String,
        /// The protocol code.
        code: ErrorCode,
        /// A one-line explanation.
        message: String,
    },
}
