//! Limits and timeouts for forwarding (PROTOCOL.md section 5 defaults).

use std::time::Duration;

use super::PoolConfig;
use crate::control::budget::{Budget, DEFAULT_EVENT_BUDGET};

/// Limits and timeouts for forwarded HTTP requests and WebSockets.
#[derive(Debug, Clone)]
pub(crate) struct ForwardConfig {
    /// Largest request body sent upstream; larger ones are refused whole.
    pub(crate) max_request_body: usize,
    /// Largest buffered response body; streamed responses have no total
    /// limit (an SSE stream may run for hours) but flow chunk by chunk.
    pub(crate) max_response_body: usize,
    /// Time to open the TCP connection to the local server.
    pub(crate) connect_timeout: Duration,
    /// Time from the request until a buffered response is complete, or
    /// until the head of a streamed response (or a WebSocket handshake) arrives.
    pub(crate) overall_timeout: Duration,
    /// Bytes of bodies waiting to be written to Kandan, shared by every
    /// request and socket (and by clones of this config).
    pub(crate) event_budget: Budget,
    /// Messages from Kandan waiting to be written to one local WebSocket.
    pub(crate) ws_queue_messages: usize,
    /// Bytes from Kandan waiting to be written to one local WebSocket, and
    /// bytes (on the wire) of its messages waiting to be written to Kandan.
    pub(crate) ws_queue_bytes: usize,
    /// Largest WebSocket message accepted from the local server.
    pub(crate) ws_max_message: usize,
    /// How long to wait for the local server's half of a closing handshake.
    pub(crate) ws_close_grace: Duration,
    /// Keep-alive connections kept for reuse.
    pub(crate) pool: PoolConfig,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_request_body: 16 * 1024 * 1024,
            max_response_body: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            overall_timeout: Duration::from_secs(60),
            event_budget: Budget::new(DEFAULT_EVENT_BUDGET),
            ws_queue_messages: 256,
            ws_queue_bytes: 16 * 1024 * 1024,
            ws_max_message: 16 * 1024 * 1024,
            ws_close_grace: Duration::from_secs(5),
            pool: PoolConfig::default(),
        }
    }
}
