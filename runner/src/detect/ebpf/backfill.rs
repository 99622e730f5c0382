//! Listeners the kernel never saw open (older than the tracking, or found by
//! a resync): userspace knows them from /proc, so it puts their ports in the
//! kernel's `BACKFILL_PORTS`, and the kernel reports any listener closing on
//! such a port. Only then is the socket table read, to learn which of them
//! closed: nothing is polled while all is quiet.
//!
//! The kernel emits the close just before it unhashes the socket, so the
//! table may still list it when userspace looks (the closing task can be
//! preempted in between). A socket still listed is looked at again a few
//! times, after [`RECHECK`]; a close of some other socket on the port (one
//! outside the tree, or a failed `listen()`) costs no more than that.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;

use tokio::time::{Duration, Instant};

use crate::detect::SocketId;

/// Delays of the looks that follow one that still found the socket listed.
pub(crate) const RECHECK: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(50),
    Duration::from_millis(500),
];

/// The kernel's set of ports (a seam, so the logic is tested without BPF).
pub(crate) trait PortSet: Send + Sync {
    fn insert(&mut self, port: u16) -> Result<(), aya::maps::MapError>;
    fn remove(&mut self, port: u16) -> Result<(), aya::maps::MapError>;
}

impl PortSet for aya::maps::HashMap<aya::maps::MapData, u16, u8> {
    fn insert(&mut self, port: u16) -> Result<(), aya::maps::MapError> {
        aya::maps::HashMap::insert(self, port, 1, 0)
    }

    fn remove(&mut self, port: u16) -> Result<(), aya::maps::MapError> {
        aya::maps::HashMap::remove(self, &port)
    }
}

/// Looks still to come for some ports.
#[derive(Debug)]
struct Recheck {
    at: Instant,
    /// Index into [`RECHECK`] of the delay that led to `at`.
    round: usize,
    ports: BTreeSet<u16>,
}

/// The backfilled listeners and what the kernel knows of them.
pub(crate) struct Backfill {
    /// Socket (inode) -> port.
    sockets: HashMap<SocketId, u16>,
    kernel: Box<dyn PortSet>,
    /// Ports now in the kernel's map.
    in_kernel: BTreeSet<u16>,
    recheck: Option<Recheck>,
}

impl Backfill {
    pub(crate) fn new(kernel: Box<dyn PortSet>) -> Self {
        Backfill {
            sockets: HashMap::new(),
            kernel,
            in_kernel: BTreeSet::new(),
            recheck: None,
        }
    }

    /// Replaces the set with the listeners of a snapshot that no event
    /// reported.
    pub(crate) fn replace(&mut self, sockets: impl IntoIterator<Item = (SocketId, u16)>) {
        self.sockets = sockets.into_iter().collect();
        self.recheck = None;
        self.sync();
    }

    /// Forgets a socket an event reported (open or close).
    pub(crate) fn remove(&mut self, id: SocketId) {
        if self.sockets.remove(&id).is_some() {
            self.sync();
        }
    }

    #[cfg(test)]
    fn contains(&self, id: SocketId) -> bool {
        self.sockets.contains_key(&id)
    }

    /// A listener on `port` closed that the kernel never saw open. Returns
    /// the backfilled sockets on it that `listening` (the inodes listening
    /// now) no longer has; looks again later at those it still has.
    pub(crate) fn closed_on(
        &mut self,
        port: u16,
        listening: impl FnOnce() -> io::Result<HashSet<u64>>,
    ) -> Vec<SocketId> {
        if !self.sockets.values().any(|&p| p == port) {
            return Vec::new();
        }
        let gone = self.check([port].into(), listening);
        if self.sockets.values().any(|&p| p == port) {
            match &mut self.recheck {
                Some(recheck) => {
                    recheck.ports.insert(port);
                }
                None => {
                    self.recheck = Some(Recheck {
                        at: Instant::now() + RECHECK[0],
                        round: 0,
                        ports: [port].into(),
                    });
                }
            }
        }
        gone
    }

    /// When the next look is due, if one is.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.recheck.as_ref().map(|recheck| recheck.at)
    }

    /// The look that [`Backfill::due`] asked for. Returns the sockets gone.
    pub(crate) fn recheck(
        &mut self,
        listening: impl FnOnce() -> io::Result<HashSet<u64>>,
    ) -> Vec<SocketId> {
        let Some(recheck) = self.recheck.take() else {
            return Vec::new();
        };
        let gone = self.check(recheck.ports.clone(), listening);
        let ports: BTreeSet<u16> = recheck
            .ports
            .into_iter()
            .filter(|port| self.sockets.values().any(|p| p == port))
            .collect();
        let round = recheck.round + 1;
        if !ports.is_empty() && round < RECHECK.len() {
            self.recheck = Some(Recheck {
                at: Instant::now() + RECHECK[round],
                round,
                ports,
            });
        }
        gone
    }

    /// Drops the sockets on `ports` that are no longer listening.
    fn check(
        &mut self,
        ports: BTreeSet<u16>,
        listening: impl FnOnce() -> io::Result<HashSet<u64>>,
    ) -> Vec<SocketId> {
        let listening = match listening() {
            Ok(listening) => listening,
            Err(error) => {
                // Nothing is dropped on a failed read; the next look retries.
                tracing::debug!(%error, "socket table unreadable");
                return Vec::new();
            }
        };
        let gone: Vec<SocketId> = self
            .sockets
            .iter()
            .filter(|(id, port)| ports.contains(port) && !listening.contains(&id.0))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.sockets.remove(id);
        }
        if !gone.is_empty() {
            self.sync();
        }
        gone
    }

    /// Makes the kernel's ports those of the sockets.
    fn sync(&mut self) {
        let wanted: BTreeSet<u16> = self.sockets.values().copied().collect();
        for &port in wanted.difference(&self.in_kernel) {
            if let Err(error) = self.kernel.insert(port) {
                // Its close then goes unseen until the next resync.
                tracing::warn!(port, %error, "cannot watch a backfilled port in the kernel");
            }
        }
        for &port in self.in_kernel.difference(&wanted) {
            let _ = self.kernel.remove(port);
        }
        self.in_kernel = wanted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct FakeKernel(Arc<Mutex<BTreeSet<u16>>>);

    impl PortSet for FakeKernel {
        fn insert(&mut self, port: u16) -> Result<(), aya::maps::MapError> {
            self.0.lock().unwrap().insert(port);
            Ok(())
        }

        fn remove(&mut self, port: u16) -> Result<(), aya::maps::MapError> {
            self.0.lock().unwrap().remove(&port);
            Ok(())
        }
    }

    fn backfill(sockets: &[(u64, u16)]) -> (Backfill, FakeKernel) {
        let kernel = FakeKernel::default();
        let mut backfill = Backfill::new(Box::new(kernel.clone()));
        backfill.replace(sockets.iter().map(|&(id, port)| (SocketId(id), port)));
        (backfill, kernel)
    }

    fn ports(kernel: &FakeKernel) -> Vec<u16> {
        kernel.0.lock().unwrap().iter().copied().collect()
    }

    fn table(inodes: &[u64]) -> impl FnOnce() -> io::Result<HashSet<u64>> {
        let inodes: HashSet<u64> = inodes.iter().copied().collect();
        move || Ok(inodes)
    }

    #[test]
    fn the_kernel_watches_exactly_the_backfilled_ports() {
        let (mut backfill, kernel) = backfill(&[(1, 8000), (2, 8000), (3, 9000)]);
        assert_eq!(ports(&kernel), [8000, 9000]);
        backfill.remove(SocketId(3));
        assert_eq!(ports(&kernel), [8000]);
        backfill.remove(SocketId(1));
        assert_eq!(ports(&kernel), [8000], "socket 2 is still there");
        backfill.replace([]);
        assert!(ports(&kernel).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_on_the_port_drops_the_socket_no_longer_listening() {
        let (mut backfill, kernel) = backfill(&[(1, 8000), (2, 8000), (3, 9000)]);
        let gone = backfill.closed_on(8000, table(&[2, 3]));
        assert_eq!(gone, [SocketId(1)]);
        assert!(backfill.contains(SocketId(2)));
        assert_eq!(ports(&kernel), [8000, 9000]);
        // Socket 2 is still listed: maybe its close came first. Look again.
        assert!(backfill.due().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_still_listed_at_its_close_is_dropped_at_the_next_look() {
        let (mut backfill, kernel) = backfill(&[(1, 8000)]);
        // The close was reported, the table not yet updated.
        assert!(backfill.closed_on(8000, table(&[1])).is_empty());
        let due = backfill.due().expect("a look is due");
        assert_eq!(due - Instant::now(), RECHECK[0]);
        assert_eq!(backfill.recheck(table(&[])), [SocketId(1)]);
        assert_eq!(backfill.due(), None);
        assert!(ports(&kernel).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn looks_stop_after_the_last_delay_when_the_socket_stays() {
        let (mut backfill, _kernel) = backfill(&[(1, 8000)]);
        backfill.closed_on(8000, table(&[1]));
        for delay in &RECHECK[1..] {
            assert!(backfill.recheck(table(&[1])).is_empty());
            assert_eq!(backfill.due().unwrap() - Instant::now(), *delay);
        }
        assert!(backfill.recheck(table(&[1])).is_empty());
        assert_eq!(backfill.due(), None, "no endless polling");
        assert!(backfill.contains(SocketId(1)));
    }

    #[test]
    fn closes_on_other_ports_read_nothing() {
        let (mut backfill, _kernel) = backfill(&[(1, 8000)]);
        let gone = backfill.closed_on(9000, || panic!("no table read for another port"));
        assert!(gone.is_empty());
        assert_eq!(backfill.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_table_drops_nothing_and_looks_again() {
        let (mut backfill, _kernel) = backfill(&[(1, 8000)]);
        let gone = backfill.closed_on(8000, || Err(io::Error::other("netlink busy")));
        assert!(gone.is_empty());
        assert!(backfill.due().is_some());
    }
}
