//! The live gate: may a port be forwarded right now, and may a fresh
//! connection to it be used (PROTOCOL.md section 5).
//!
//! It follows two inputs: the live sockets of each port, straight from the
//! detector (before the debounce window that events to Kandan wait for),
//! and the identities Kandan approved. A port is forwardable while it has
//! live sockets and every one of them belongs to an approved identity. The
//! moment that stops being true (the last socket closed, a socket of
//! another identity appeared, the approval was withdrawn) the gate refuses
//! new requests and calls its revocation hook ([`Gate::on_revoke`]) at
//! once, on the thread that made the change, so forwarding closes what is
//! open. The same approved identity listening again resumes at once.
//!
//! Every new upstream connection is also checked after connect
//! ([`Gate::verify`]): each listening socket on that address and port must
//! be one of the forwardable sockets, so a process outside the tree (a
//! `SO_REUSEPORT` joiner, one that grabbed the port during a restart) is
//! never sent a byte. With the eBPF backend's counters, a dial to a peer
//! whose port provably did not change since a check that passed skips the
//! listener dump (`dial_cache`).

mod dial_cache;
mod port_gate;
mod verify;

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::detect::process_info::ProcessInfo;
use crate::detect::{ListenerSocket, ListeningSocket, PortChanges, SocketId};
use crate::fast_hash::{FastMap, FastSet};

pub use port_gate::{GateRefusal, PortGate};

/// Called with every revocation, on the thread that caused it.
type RevokeHook = dyn Fn(Revocation) + Send + Sync;

/// What an approval binds to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub(crate) port: u16,
    pub(crate) command: String,
    pub(crate) cwd: Option<PathBuf>,
}

impl Identity {
    pub fn new(port: u16, process: &ProcessInfo) -> Self {
        Identity {
            port,
            command: process.command.clone(),
            cwd: process.cwd.clone(),
        }
    }
}

/// Why a port stopped being forwardable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RevokeReason {
    /// Its last live socket closed.
    Closed,
    /// A socket of another identity holds it now; that one needs its own
    /// approval.
    OwnerChanged,
    /// Kandan denied it.
    Denied,
}

/// A port that must not be forwarded any more: close its WebSockets,
/// in-flight requests and pooled connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Revocation {
    pub(crate) port: u16,
    pub(crate) reason: RevokeReason,
}

/// One live listening socket of a watched tree.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LiveSocket {
    id: SocketId,
    addr: IpAddr,
    identity: Identity,
}

#[derive(Debug, Default)]
struct State {
    live: FastMap<u16, Vec<LiveSocket>>,
    approved: FastSet<Identity>,
    /// Only to say why a port is refused: denied, or asked and pending.
    denied: FastSet<Identity>,
    offered: FastSet<Identity>,
}

/// Where a port stands, to compare before and after a change.
#[derive(Debug, PartialEq, Eq)]
struct PortStatus {
    forwardable: bool,
    listening: bool,
    identities: BTreeSet<Identity>,
}

impl State {
    fn status(&self, port: u16) -> PortStatus {
        let sockets = self.live.get(&port).map(Vec::as_slice).unwrap_or_default();
        let identities: BTreeSet<Identity> = sockets.iter().map(|s| s.identity.clone()).collect();
        PortStatus {
            forwardable: !identities.is_empty()
                && identities.iter().all(|id| self.approved.contains(id)),
            listening: !sockets.is_empty(),
            identities,
        }
    }

    /// The sockets of `port` when it may be forwarded.
    fn forwardable(&self, port: u16) -> Result<&[LiveSocket], GateRefusal> {
        let sockets = match self.live.get(&port) {
            Some(sockets) if !sockets.is_empty() => sockets,
            _ => return Err(GateRefusal::NotListening),
        };
        let refused: Vec<&Identity> = sockets
            .iter()
            .map(|s| &s.identity)
            .filter(|identity| !self.approved.contains(*identity))
            .collect();
        if refused.is_empty() {
            Ok(sockets)
        } else if refused
            .iter()
            .any(|identity| self.denied.contains(*identity))
        {
            Err(GateRefusal::Denied)
        } else if refused
            .iter()
            .all(|identity| self.offered.contains(*identity))
        {
            Err(GateRefusal::Pending)
        } else {
            Err(GateRefusal::NotOffered)
        }
    }
}

/// What lists the listening sockets on a port (it may list others too) of
/// the runner's network namespace (sock_diag on Linux, libproc on macOS); a
/// seam for tests.
pub(crate) type ListenerTable =
    dyn Fn(u16) -> std::io::Result<Vec<ListeningSocket>> + Send + Sync + 'static;

struct Shared {
    state: RwLock<State>,
    hooks: RwLock<Vec<Box<RevokeHook>>>,
    listeners: Box<ListenerTable>,
    /// The kernel's listener-change counters, once a backend has them.
    port_changes: OnceLock<Arc<dyn PortChanges>>,
    dial_cache: dial_cache::DialCache,
}

/// Cheap to clone: the detector side writes live sockets, approval writes
/// decisions, forwarding reads.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("state", &*self.read())
            .finish()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// A gate that verifies connections against the OS's listener table.
    pub fn new() -> Self {
        Self::with_listener_table(Box::new(verify::os_listeners))
    }

    /// A gate that lists listening sockets through `listeners`.
    pub(crate) fn with_listener_table(listeners: Box<ListenerTable>) -> Self {
        Gate {
            shared: Arc::new(Shared {
                state: RwLock::default(),
                hooks: RwLock::default(),
                listeners,
                port_changes: OnceLock::new(),
                dial_cache: dial_cache::DialCache::default(),
            }),
        }
    }

    /// Lets verified dials skip the listener dump when `changes` proves
    /// nothing changed on the port (the detector's, eBPF only). The first
    /// call wins.
    pub fn use_port_changes(&self, changes: Arc<dyn PortChanges>) {
        let _ = self.shared.port_changes.set(changes);
    }

    /// Verified dials accepted without a listener dump so far.
    pub fn dials_from_cache(&self) -> u64 {
        self.shared.dial_cache.hits()
    }

    /// Calls `hook` with every revocation from now on, synchronously: it
    /// must be quick and must not call back into the gate.
    pub(crate) fn on_revoke(&self, hook: impl Fn(Revocation) + Send + Sync + 'static) {
        let mut hooks = self.shared.hooks.write().unwrap_or_else(|e| e.into_inner());
        hooks.push(Box::new(hook));
    }

    /// Revocations from now on, for tests to read.
    #[cfg(test)]
    pub(crate) fn revocations(&self) -> std::sync::mpsc::Receiver<Revocation> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.on_revoke(move |revocation| {
            let _ = tx.send(revocation);
        });
        rx
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Writers never panic halfway through an update.
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The detector's view of `port` right now (empty: nothing listens).
    pub fn set_live<'a>(&self, port: u16, sockets: impl IntoIterator<Item = &'a ListenerSocket>) {
        let sockets: Vec<LiveSocket> = sockets
            .into_iter()
            .map(|s| LiveSocket {
                id: s.id,
                addr: s.addr,
                identity: Identity::new(port, &s.process),
            })
            .collect();
        self.update(port, |state| {
            if sockets.is_empty() {
                state.live.remove(&port);
            } else {
                state.live.insert(port, sockets);
            }
        });
    }

    /// Kandan's decision for `identity`.
    pub fn set_approved(&self, identity: &Identity, approved: bool) {
        self.update(identity.port, |state| {
            state.offered.insert(identity.clone());
            if approved {
                state.approved.insert(identity.clone());
                state.denied.remove(identity);
            } else {
                state.approved.remove(identity);
                state.denied.insert(identity.clone());
            }
        });
    }

    /// Kandan was asked about `identity` (only refusals' messages use it).
    pub(crate) fn set_offered(&self, identity: &Identity) {
        self.write().offered.insert(identity.clone());
    }

    fn update(&self, port: u16, change: impl FnOnce(&mut State)) {
        let (before, after) = {
            let mut state = self.write();
            let before = state.status(port);
            change(&mut state);
            (before, state.status(port))
        };
        if !before.forwardable {
            return;
        }
        let reason = if !after.listening {
            RevokeReason::Closed
        } else if after.identities != before.identities {
            RevokeReason::OwnerChanged
        } else if !after.forwardable {
            RevokeReason::Denied
        } else {
            return;
        };
        tracing::debug!(port, ?reason, "forwarding revoked");
        let hooks = self.shared.hooks.read().unwrap_or_else(|e| e.into_inner());
        for hook in hooks.iter() {
            hook(Revocation { port, reason });
        }
    }
}

impl PortGate for Gate {
    fn target(&self, port: u16) -> Result<Vec<IpAddr>, GateRefusal> {
        let state = self.read();
        let sockets = state.forwardable(port)?;
        let mut addrs: Vec<IpAddr> = sockets.iter().map(|s| s.addr).collect();
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }

    fn verify(&self, peer: SocketAddr) -> Result<(), GateRefusal> {
        let changes = self.shared.port_changes.get().map(Arc::as_ref);
        let before = changes.and_then(|c| dial_cache::Reading::take(c, peer.port()));
        if let Some(now) = before
            && let Ok(allowed) = self.allowed(peer.port())
            && self.shared.dial_cache.hit(peer, now, &allowed)
        {
            return Ok(());
        }
        // The OS table first, the live state second: a socket that closes
        // in between is then missing from the live state and refused, never
        // the other way round.
        let listeners = (self.shared.listeners)(peer.port()).map_err(|err| {
            tracing::warn!(%peer, "cannot list listening sockets to verify a connection: {err}");
            GateRefusal::Unverified
        })?;
        let allowed = self.allowed(peer.port())?;
        let verdict = verify::check(peer, &allowed, &listeners);
        if let (Some(changes), Some(before)) = (changes, before) {
            let after = changes.generation(peer.port()).ok();
            let passed = verdict.is_ok().then_some(allowed);
            self.shared.dial_cache.settle(peer, before, after, passed);
        }
        verdict
    }
}

impl Gate {
    /// The ids of `port`'s sockets when it may be forwarded.
    fn allowed(&self, port: u16) -> Result<HashSet<u64>, GateRefusal> {
        let state = self.read();
        Ok(state.forwardable(port)?.iter().map(|s| s.id.0).collect())
    }
}

#[cfg(test)]
mod tests;
