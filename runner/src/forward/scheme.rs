//! Whether a port's server speaks plain HTTP or HTTPS, as set per port or
//! learned by probing, remembered per listener.
//!
//! Dev servers with a self-signed certificate (Vite's `basic-ssl`,
//! `next dev --experimental-https`) reset a plain request; the forwarder then
//! probes with TLS and remembers the answer until the port's listener
//! closes or changes ([`Schemes::forget`], called where the pool is purged).

use std::fmt;
use std::sync::{Mutex, OnceLock};

use crate::fast_hash::FastMap;
/// What a local server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

/// How the forwarder picks a port's scheme: the `[[ports]]` `protocol`.
pub(crate) use crate::config::Protocol;

#[derive(Default)]
struct PortScheme {
    /// Bumped by every [`Schemes::forget`]: what was learned before it is stale.
    generation: u64,
    protocol: Protocol,
    learned: Option<Scheme>,
}

/// Told each scheme learned that differs from what was known (forwarding
/// does not know who shows it: `connect` passes it on to `status`).
pub(super) type OnLearned = dyn Fn(u16, Scheme) + Send + Sync;

/// Per-port settings and what was learned about each listener.
#[derive(Default)]
pub(super) struct Schemes {
    ports: Mutex<FastMap<u16, PortScheme>>,
    on_learned: OnceLock<Box<OnLearned>>,
}

/// A port's scheme as one request sees it, to report what it learns with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    pub(crate) port: u16,
    generation: u64,
    pub(crate) protocol: Protocol,
    pub(crate) learned: Option<Scheme>,
}

impl Seen {
    /// Whether the first connection uses TLS.
    pub(crate) fn tls(&self) -> bool {
        match self.protocol {
            Protocol::Https => true,
            Protocol::Http => false,
            Protocol::Auto => self.learned == Some(Scheme::Https),
        }
    }

    /// Whether a failure on a plain connection is worth a TLS probe.
    pub(crate) fn may_probe(&self) -> bool {
        self.protocol == Protocol::Auto && self.learned.is_none()
    }
}

impl Schemes {
    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<u16, PortScheme>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn seen(&self, port: u16) -> Seen {
        let ports = self.lock();
        let entry = ports.get(&port);
        Seen {
            port,
            generation: entry.map_or(0, |e| e.generation),
            protocol: entry.map_or(Protocol::Auto, |e| e.protocol),
            learned: entry.and_then(|e| e.learned),
        }
    }

    /// Records what a connection found, unless the listener was forgotten
    /// since `seen` was taken (the answer may be about the old server).
    pub(crate) fn learn(&self, seen: Seen, scheme: Scheme) {
        let news = {
            let mut ports = self.lock();
            let entry = ports.entry(seen.port).or_default();
            let current = entry.generation == seen.generation && entry.protocol == Protocol::Auto;
            let news = current && entry.learned != Some(scheme);
            if current {
                entry.learned = Some(scheme);
            }
            news
        };
        if news {
            tracing::info!(port = seen.port, %scheme, "local server scheme");
            // `status` shows it (and a person reads that it speaks HTTPS).
            if let Some(tell) = self.on_learned.get() {
                tell(seen.port, scheme);
            }
        }
    }

    /// Sets who is told what [`Schemes::learn`] finds (once; later calls
    /// are ignored).
    pub(crate) fn on_learned(&self, tell: Box<OnLearned>) {
        let _ = self.on_learned.set(tell);
    }

    /// The scheme the port is known to speak: as set, or as learned.
    pub(crate) fn scheme(&self, port: u16) -> Option<Scheme> {
        let ports = self.lock();
        let entry = ports.get(&port)?;
        match entry.protocol {
            Protocol::Http => Some(Scheme::Http),
            Protocol::Https => Some(Scheme::Https),
            Protocol::Auto => entry.learned,
        }
    }

    /// Sets how `port`'s scheme is chosen; true when it changed (connections
    /// made under the old setting must not be reused).
    pub(crate) fn set_protocol(&self, port: u16, protocol: Protocol) -> bool {
        let mut ports = self.lock();
        let entry = ports.entry(port).or_default();
        if entry.protocol == protocol {
            return false;
        }
        entry.protocol = protocol;
        entry.generation += 1;
        entry.learned = None;
        true
    }

    /// Forgets what was learned about `port`'s listener (it closed or
    /// changed); its setting stays.
    pub(crate) fn forget(&self, port: u16) {
        let mut ports = self.lock();
        if let Some(entry) = ports.get_mut(&port) {
            entry.generation += 1;
            entry.learned = None;
        }
    }

    /// Forgets every listener (the runner lost Kandan or is stopping).
    pub(crate) fn forget_all(&self) {
        for entry in self.lock().values_mut() {
            entry.generation += 1;
            entry.learned = None;
        }
    }
}
