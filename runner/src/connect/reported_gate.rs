//! The gate as forwarding sees it: the approval gate, and each refusal
//! told to the person (Kandan asking for a port that is pending or denied
//! is worth their attention). Forwarding itself does not know the report.

use std::net::{IpAddr, SocketAddr};

use crate::gate::{Gate, GateRefusal, PortGate};
use crate::report::Report;

pub(super) struct ReportedGate {
    pub(crate) gate: Gate,
    pub(crate) report: Report,
}

impl PortGate for ReportedGate {
    fn target(&self, port: u16) -> Result<Vec<IpAddr>, GateRefusal> {
        (self.gate.target(port)).inspect_err(|refusal| self.report.refused(port, *refusal))
    }

    fn verify(&self, peer: SocketAddr) -> Result<(), GateRefusal> {
        // The peer is the port dialled: the refusal is that port's.
        (self.gate.verify(peer)).inspect_err(|refusal| self.report.refused(peer.port(), *refusal))
    }
}
