//! The kernel's count of listener changes by port (eBPF backend only): what
//! lets the verified dial skip its sock_diag dump when nothing changed on
//! the port since a dump that passed (`gate::dial_cache` says why that is
//! sound).

use std::io;

/// How many times sockets went to or from `TCP_LISTEN`, machine-wide (every
/// network namespace: other namespaces only make a cached dial check again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    /// On the port.
    pub port: u64,
    /// On no port yet: a `listen()` without `bind()` picks its port after
    /// its socket is counted, so such a listen may land on any port.
    pub unknown: u64,
}

/// The counters, as the eBPF programs keep them.
pub trait PortChanges: Send + Sync {
    /// The generation of `port` right now.
    fn generation(&self, port: u16) -> io::Result<Generation>;
    /// `listen()` calls under way, machine-wide, that made their socket
    /// `TCP_LISTEN` (and counted it) and may not have made it reachable yet.
    fn in_flight(&self) -> io::Result<u64>;
}
