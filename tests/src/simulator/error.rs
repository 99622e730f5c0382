//! What can go wrong when driving the simulator.

use std::time::Duration;

/// Errors of the simulator's API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A listening socket could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which front: `runner socket` or `preview`.
        what: &'static str,
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The bind failure.
        #[source]
        source: std::io::Error,
    },
    /// No runner is connected, so nothing can be sent to it.
    #[error("no runner connected")]
    NotConnected,
    /// A runner is connected but has not joined its channel.
    #[error("runner has not joined its channel")]
    NotJoined,
    /// A wait ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// A control must be a JSON object with a string `type`.
    #[error("control is not an object with a string `type`")]
    InvalidControl,
    /// The runner went away while a preview response was streaming.
    #[error("runner connection lost during a streamed response")]
    StreamCut,
    /// The runner sent a chunk the simulator cannot use (bad base64, or
    /// another event in the middle of a stream).
    #[error("unusable chunk in a streamed response")]
    BadChunk,
}
