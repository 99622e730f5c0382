//! Idle keep-alive connections to local servers, reused across forwarded
//! HTTP requests.
//!
//! A fresh loopback connection per request cost more runner CPU than the
//! HTTP exchange itself. Reuse must never reach the wrong server: a port's
//! idle connections are dropped when its listener closes or its approval is
//! revoked ([`Pool::purge`]), and a connection taken out before that never
//! comes back (its generation is stale). Every request still asks the gate
//! first; a pooled connection is used only if its address is one the gate
//! names now.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::fast_hash::FastMap;

/// Aborts the spawned connection task when dropped, however the exchange ends.
pub(super) struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 connection to a local server.
pub(super) struct Upstream {
    pub(crate) sender: SendRequest<Full<Bytes>>,
    pub(crate) addr: SocketAddr,
    /// The connection task; dropping the upstream closes the socket.
    pub(crate) _task: AbortOnDrop,
}

/// How many idle connections to keep, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolConfig {
    /// Idle connections kept per port; beyond that they are closed.
    pub(crate) max_idle_per_port: usize,
    /// An idle connection older than this is closed instead of reused.
    /// Below Node's default `keepAliveTimeout` (5 s), so reuse rarely
    /// races a server closing an idle connection.
    pub(crate) idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_port: 16,
            idle_timeout: Duration::from_secs(4),
        }
    }
}

#[derive(Default)]
struct PortIdle {
    /// Bumped by every purge: connections taken out before it stay out.
    generation: u64,
    /// Most recently used last.
    idle: Vec<(Instant, Upstream)>,
}

/// Idle connections per port.
pub(super) struct Pool {
    config: PoolConfig,
    ports: Mutex<FastMap<u16, PortIdle>>,
}

/// A port's generation when a connection was taken, to check it back in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    port: u16,
    generation: u64,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            ports: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<u16, PortIdle>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The freshest usable idle connection to one of `targets` on `port`,
    /// and the ticket to give it (or a fresh one) back with.
    pub(crate) fn take(&self, port: u16, targets: &[IpAddr]) -> (Option<Upstream>, Ticket) {
        let now = Instant::now();
        let mut ports = self.lock();
        let entry = ports.entry(port).or_default();
        let ticket = Ticket {
            port,
            generation: entry.generation,
        };
        let idle_timeout = self.config.idle_timeout;
        entry.idle.retain(|(since, up)| {
            now.duration_since(*since) < idle_timeout && !up.sender.is_closed()
        });
        while let Some((_, up)) = entry.idle.pop() {
            if targets.contains(&up.addr.ip()) && up.sender.is_ready() {
                return (Some(up), ticket);
            }
        }
        (None, ticket)
    }

    /// Keeps `up` for the next request, unless its port was purged since
    /// `ticket` was issued, the connection cannot take another request, or
    /// the port has enough idle connections.
    pub(crate) fn put(&self, ticket: Ticket, up: Upstream) {
        if !up.sender.is_ready() {
            return;
        }
        let mut ports = self.lock();
        let Some(entry) = ports.get_mut(&ticket.port) else {
            return;
        };
        if entry.generation != ticket.generation
            || entry.idle.len() >= self.config.max_idle_per_port
        {
            return;
        }
        entry.idle.push((Instant::now(), up));
    }

    /// Closes `port`'s idle connections; those in use are not returned.
    pub(crate) fn purge(&self, port: u16) {
        let dropped = {
            let mut ports = self.lock();
            let entry = ports.entry(port).or_default();
            entry.generation += 1;
            std::mem::take(&mut entry.idle)
        };
        drop(dropped);
    }

    /// Closes every idle connection.
    pub(crate) fn purge_all(&self) {
        let dropped: Vec<_> = {
            let mut ports = self.lock();
            ports
                .values_mut()
                .flat_map(|entry| {
                    entry.generation += 1;
                    std::mem::take(&mut entry.idle)
                })
                .collect()
        };
        drop(dropped);
    }

    /// Idle connections kept for `port` (for tests).
    #[cfg(test)]
    pub(crate) fn idle(&self, port: u16) -> usize {
        self.lock().get(&port).map_or(0, |entry| entry.idle.len())
    }
}
