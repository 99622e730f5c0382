//! The seam through which forwarding asks, per request, where it may connect
//! and whether a fresh connection may be used.

use std::net::{IpAddr, SocketAddr};

use crate::wire::ErrorCode;

/// Decides, per request, whether a port may be forwarded and which local
/// addresses its approved listener bound. Implemented by [`super::Gate`]; tests
/// give forwarding gates of their own.
pub trait PortGate: Send + Sync {
    /// The addresses the approved listener on `port` bound (for example
    /// `0.0.0.0` and `::`), or why the port may not be forwarded.
    fn target(&self, port: u16) -> Result<Vec<IpAddr>, GateRefusal>;

    /// Whether a connection just made to `peer` may be used: every socket
    /// listening there must be the approved listener's. Called after
    /// connect and before the first byte.
    fn verify(&self, peer: SocketAddr) -> Result<(), GateRefusal>;
}

/// Why the gate refused a port or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// Kandan was asked about the port's listener and has not answered.
    #[error("not approved: waiting for approval in Kandan")]
    Pending,
    /// Kandan denied the port's listener.
    #[error("not approved: denied in Kandan")]
    Denied,
    /// The port's listener is new (inside the debounce window, or not a
    /// candidate): Kandan has not been asked about it.
    #[error("not approved: not offered to Kandan for approval yet")]
    NotOffered,
    /// No listener of the watched trees holds the port.
    #[error("no watched listener on this port")]
    NotListening,
    /// A socket of a process that is not the approved listener listens on
    /// the same address and port, so the connection may have reached it.
    #[error("another process listens on this port too")]
    Foreign,
    /// The listening sockets could not be listed, so the connection could
    /// not be verified.
    #[error("the listener could not be verified")]
    Unverified,
}

impl GateRefusal {
    /// The `control_error` code for this refusal.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::Pending | Self::Denied | Self::NotOffered | Self::Foreign | Self::Unverified => {
                ErrorCode::PortNotApproved
            }
            Self::NotListening => ErrorCode::PortNotListening,
        }
    }
}
