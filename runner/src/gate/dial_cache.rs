//! The verified dial without its dump when nothing changed on the port.
//!
//! The dump (sock_diag) walks the kernel's whole listening hash, so it costs
//! more than the connect it checks. With the eBPF backend the kernel counts,
//! machine-wide, every socket change to or from `TCP_LISTEN` by port (its
//! generation; port 0 for listens whose port is not chosen yet) and the
//! `listen()` calls under way (in flight: counted when their socket becomes
//! `TCP_LISTEN`, uncounted when `listen()` returns). A full
//! verification that passed is recorded for its peer address with the
//! generation `g0` and the allowed set it used, and only if, read in this
//! order: `g0` before the dump, then in flight == 0, then the dump, then the
//! generation, still `g0`. A later dial to the same peer, after its
//! connect, is accepted without a dump when the generation is still `g0`,
//! nothing is in flight and the gate's allowed set is the recorded one.
//!
//! Why no listener L the dump did not see can be reachable then. L was
//! reachable at our connect, so it was hashed (`h`) before it. Inside
//! `inet_csk_listen_start`, its change to `TCP_LISTEN` (`T`) comes before
//! the hash, and the return of `listen()` (`X`, `sys_exit_listen`) after
//! it; at `T` the program counts the call in flight first, then bumps the
//! generation.
//! - `T` after the read of `g0`: the generation read after our connect
//!   (after `h`, so after `T`) differs.
//! - `T` before the read of `g0` and `h` before the dump: the dump saw L
//!   (it was allowed then, and the allowed set is unchanged).
//! - `T` before the read of `g0`, `h` after the dump started: then `T <`
//!   the in-flight read `<` the dump `< h < X`, so in flight was not 0 and
//!   nothing was recorded.
//!
//! A listener that closed bumps the generation too, so removals only make
//! the cache check again; so do other network namespaces (the counters are
//! machine-wide). A listen with no port yet (index 0) bumps the unknown
//! port's generation, which every entry compares. A listen that never
//! returns through `sys_exit_listen` (a kernel socket's, io_uring's) stays
//! counted: a count stuck above 0 only disables the cache. The state-change
//! tracepoint is not skipped for a `listen()` or a `close()`: they run in
//! process context, never inside another BPF program.
//!
//! The second case needs a reader that sees the generation's add to see
//! the in-flight add made before it: true of x86-64's locked adds, not of
//! the relaxed BPF atomic add elsewhere, so the eBPF backend hands the gate
//! its counters on x86-64 only.
//!
//! Kprobes would bracket `inet_csk_listen_start` itself, but kernels built
//! without `CONFIG_KPROBES` (this project's test machine) have none, and
//! there a fexit failed to load (EPERM): the syscall's exit tracepoint is
//! attached anyway and comes after the hash all the same.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::detect::PortChanges;
use crate::detect::port_changes::Generation;

/// At most this many peers are remembered (a few per approved port in
/// practice); past it the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// The counters read before a dial's decision, generation first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reading {
    pub(super) generation: Generation,
    pub(super) in_flight: u64,
}

impl Reading {
    /// The generation of `port`, then the in-flight count; `None` when
    /// either cannot be read (the dial then dumps, and records nothing).
    pub(super) fn take(changes: &dyn PortChanges, port: u16) -> Option<Reading> {
        let generation = changes.generation(port).ok()?;
        let in_flight = changes.in_flight().ok()?;
        Some(Reading {
            generation,
            in_flight,
        })
    }
}

/// A full verification that passed, and what it depended on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) generation: Generation,
    pub(super) allowed: HashSet<u64>,
}

/// Whether a dial may be accepted without a dump, `now` read after its
/// connect and `allowed` computed by the gate now.
pub(super) fn may_skip(entry: Option<&Entry>, now: Reading, allowed: &HashSet<u64>) -> bool {
    entry.is_some_and(|entry| {
        now.in_flight == 0 && now.generation == entry.generation && entry.allowed == *allowed
    })
}

/// Whether a full verification that passed may be recorded: `before` read
/// before its dump, `after` the generation read after it.
pub(super) fn may_record(before: Reading, after: Option<Generation>) -> bool {
    before.in_flight == 0 && after == Some(before.generation)
}

/// The recorded verifications, by peer.
#[derive(Debug, Default)]
pub(super) struct DialCache {
    entries: Mutex<HashMap<SocketAddr, Entry>>,
    hits: AtomicU64,
}

impl DialCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `peer`'s dial is accepted without a dump.
    pub(super) fn hit(&self, peer: SocketAddr, now: Reading, allowed: &HashSet<u64>) -> bool {
        let hit = may_skip(self.entries().get(&peer), now, allowed);
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// After a full verification of `peer`: records it when it passed
    /// (`allowed` is the set it used) and [`may_record`] says so, else
    /// forgets the peer.
    pub(super) fn settle(
        &self,
        peer: SocketAddr,
        before: Reading,
        after: Option<Generation>,
        allowed: Option<HashSet<u64>>,
    ) {
        let mut entries = self.entries();
        match allowed {
            Some(allowed) if may_record(before, after) => {
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                let generation = before.generation;
                entries.insert(
                    peer,
                    Entry {
                        generation,
                        allowed,
                    },
                );
            }
            _ => {
                entries.remove(&peer);
            }
        }
    }

    /// Dials accepted without a dump so far.
    pub(super) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(port: u64, unknown: u64, in_flight: u64) -> Reading {
        Reading {
            generation: Generation { port, unknown },
            in_flight,
        }
    }

    #[test]
    fn a_listen_in_flight_before_the_dump_is_never_recorded() {
        let after = Some(Generation {
            port: 3,
            unknown: 1,
        });
        assert!(may_record(reading(3, 1, 0), after));
        // It may be hashed after the dump started: the dump proves nothing.
        assert!(!may_record(reading(3, 1, 1), after));
        // A change during the dump, on the port or on no port yet.
        assert!(!may_record(reading(2, 1, 0), after));
        assert!(!may_record(reading(3, 0, 0), after));
        // Counters that could not be read after the dump.
        assert!(!may_record(reading(3, 1, 0), None));
    }

    #[test]
    fn a_dial_skips_only_when_nothing_moved() {
        let allowed = HashSet::from([7]);
        let entry = Entry {
            generation: Generation {
                port: 3,
                unknown: 1,
            },
            allowed: allowed.clone(),
        };
        assert!(may_skip(Some(&entry), reading(3, 1, 0), &allowed));
        assert!(!may_skip(None, reading(3, 1, 0), &allowed));
        assert!(
            !may_skip(Some(&entry), reading(3, 1, 1), &allowed),
            "in flight"
        );
        assert!(!may_skip(Some(&entry), reading(4, 1, 0), &allowed), "port");
        assert!(
            !may_skip(Some(&entry), reading(3, 2, 0), &allowed),
            "unknown"
        );
        // The approved sockets changed (another one, or one fewer).
        assert!(!may_skip(
            Some(&entry),
            reading(3, 1, 0),
            &HashSet::from([7, 8])
        ));
        assert!(!may_skip(Some(&entry), reading(3, 1, 0), &HashSet::new()));
    }

    #[test]
    fn a_refusal_forgets_the_peer() {
        let cache = DialCache::default();
        let peer: SocketAddr = "127.0.0.1:5173".parse().unwrap();
        let now = reading(3, 1, 0);
        let allowed = HashSet::from([7]);
        cache.settle(peer, now, Some(now.generation), Some(allowed.clone()));
        assert!(cache.hit(peer, now, &allowed));
        assert!(!cache.hit("127.0.0.2:5173".parse().unwrap(), now, &allowed));
        cache.settle(peer, now, Some(now.generation), None);
        assert!(!cache.hit(peer, now, &allowed));
        assert_eq!(cache.hits(), 1);
    }
}
