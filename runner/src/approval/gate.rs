//! The read side of approvals, for forwarding: may this port be dialed, on
//! which addresses, and which ports just stopped being forwardable.
//!
//! The approval task publishes an immutable map through a `watch` channel,
//! so a lookup is a brief read lock and a clone of the gate is cheap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::forward::{GateRefusal, PortGate};

/// How many revocations a slow reader may fall behind before it sees
/// `RecvError::Lagged` (then it should re-check its ports with `target`).
const REVOCATION_QUEUE: usize = 256;

/// One forwardable (or not yet) port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct GateEntry {
    pub approved: bool,
    pub addresses: Vec<IpAddr>,
}

pub(super) type GateMap = HashMap<u16, GateEntry>;

/// Why a port stopped being forwardable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// Its listener closed.
    Closed,
    /// Another program took the port; it needs its own approval.
    OwnerChanged,
    /// Kandan denied it.
    Denied,
}

/// An approved port that must not be forwarded any more: close its
/// WebSockets and in-flight requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub port: u16,
    pub reason: RevokeReason,
}

/// Cheap to clone; share one per forwarding task.
#[derive(Clone, Debug)]
pub struct Gate {
    ports: watch::Receiver<Arc<GateMap>>,
    revocations: broadcast::Sender<Revocation>,
}

impl Gate {
    /// Revocations from now on.
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }
}

impl PortGate for Gate {
    /// The addresses the port's listener bound, when it may be forwarded.
    fn target(&self, port: u16) -> Result<Vec<IpAddr>, GateRefusal> {
        match self.ports.borrow().get(&port) {
            None => Err(GateRefusal::NotListening),
            Some(entry) if !entry.approved => Err(GateRefusal::NotApproved),
            Some(entry) => Ok(entry.addresses.clone()),
        }
    }
}

/// The write side, owned by [`super::Approval`].
#[derive(Debug)]
pub(super) struct GateWriter {
    ports: watch::Sender<Arc<GateMap>>,
    revocations: broadcast::Sender<Revocation>,
}

impl GateWriter {
    pub fn new() -> Self {
        let (ports, _) = watch::channel(Arc::new(GateMap::new()));
        let (revocations, _) = broadcast::channel(REVOCATION_QUEUE);
        GateWriter { ports, revocations }
    }

    pub fn gate(&self) -> Gate {
        Gate {
            ports: self.ports.subscribe(),
            revocations: self.revocations.clone(),
        }
    }

    /// Sets the port's entry; revokes when it was approved and is no more.
    pub fn set(&self, port: u16, entry: GateEntry, reason: RevokeReason) {
        let was_approved = self.is_approved(port);
        let approved = entry.approved;
        self.ports.send_if_modified(|map| {
            if map.get(&port) == Some(&entry) {
                return false;
            }
            Arc::make_mut(map).insert(port, entry);
            true
        });
        if was_approved && !approved {
            self.revoke(port, reason);
        }
    }

    /// Removes the port; revokes when it was approved.
    pub fn remove(&self, port: u16, reason: RevokeReason) {
        let was_approved = self.is_approved(port);
        self.ports.send_if_modified(|map| {
            if !map.contains_key(&port) {
                return false;
            }
            Arc::make_mut(map).remove(&port);
            true
        });
        if was_approved {
            self.revoke(port, reason);
        }
    }

    fn is_approved(&self, port: u16) -> bool {
        self.ports.borrow().get(&port).is_some_and(|e| e.approved)
    }

    fn revoke(&self, port: u16, reason: RevokeReason) {
        tracing::debug!(port, ?reason, "forwarding revoked");
        // No subscriber is fine: nothing is being forwarded then.
        let _ = self.revocations.send(Revocation { port, reason });
    }
}
