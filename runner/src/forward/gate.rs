//! The seam through which forwarding asks, per request, where it may connect.

use std::net::IpAddr;

use crate::control::ErrorCode;

/// Decides, per request, whether a port may be forwarded and which local
/// addresses its approved listener bound. Implemented by `approval`.
pub trait PortGate: Send + Sync {
    /// The addresses the approved listener on `port` bound (for example
    /// `0.0.0.0` and `::`), or why the port may not be forwarded.
    fn target(&self, port: u16) -> Result<Vec<IpAddr>, GateRefusal>;
}

/// Why the gate refused a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// A listener holds the port but Kandan has not approved it.
    #[error("port is not approved")]
    NotApproved,
    /// No listener of the watched trees holds the port.
    #[error("no watched listener on this port")]
    NotListening,
}

impl GateRefusal {
    /// The `control_error` code for this refusal.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::NotApproved => ErrorCode::PortNotApproved,
            Self::NotListening => ErrorCode::PortNotListening,
        }
    }
}
