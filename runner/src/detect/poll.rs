//! The polling loop of the procfs and libproc backends: scan the roots'
//! trees every `poll_interval`, at start and right after a root is added or
//! removed, and send each result as a [`DetectorEvent::Snapshot`] (the
//! pipeline diffs them).

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::{
    BackendKind, DetectError, Detector, DetectorConfig, DetectorEvent, ListenerSocket, RootRegistry,
};
use crate::cgroup::Cgroup;

/// Scans the trees of `roots` for listeners, leaving out `self_pid`.
pub(crate) type ScanFn = fn(&[u32], u32) -> io::Result<Vec<ListenerSocket>>;

/// A scanner kept across polls, so each poll may reuse what the last one
/// read. Blocking: the poller calls it off the async threads.
pub(crate) trait Scan: Send + 'static {
    /// Listeners of the trees of `roots` (the runner left out).
    fn scan(&mut self, roots: &[u32]) -> io::Result<Vec<ListenerSocket>>;
}

/// A stateless [`ScanFn`] as a [`Scan`].
struct Stateless {
    scan: ScanFn,
    self_pid: u32,
}

impl Scan for Stateless {
    fn scan(&mut self, roots: &[u32]) -> io::Result<Vec<ListenerSocket>> {
        (self.scan)(roots, self.self_pid)
    }
}

/// Shortest interval honoured, so a zero in the config cannot spin a core.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Snapshots waiting for the pipeline; the poller waits when it is full.
const QUEUE: usize = 4;

/// The roots of a polling backend. Changing them wakes the poller.
#[derive(Debug, Default)]
struct RootList {
    pids: Mutex<BTreeSet<u32>>,
    /// Every process in one of them is a root: the cgroup is the tree.
    cgroups: Mutex<Vec<Arc<Cgroup>>>,
    changed: Notify,
}

impl RootList {
    /// The root pids and every process of the cgroups (one small read
    /// each: `cgroup.procs`).
    fn current(&self) -> Vec<u32> {
        let mut roots = self.lock().clone();
        let cgroups = self
            .cgroups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for cgroup in cgroups.iter() {
            roots.extend(cgroup.members());
        }
        roots.into_iter().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        // A panic while holding this lock leaves a plain set behind: usable.
        self.pids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RootRegistry for RootList {
    fn add_root(&self, pid: u32) -> Result<(), DetectError> {
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Err(DetectError::AddRoot {
                pid,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(raw, 0) } != 0 {
            let err = io::Error::last_os_error();
            // EPERM: it exists, it is just not ours to signal.
            if err.raw_os_error() != Some(libc::EPERM) {
                return Err(DetectError::AddRoot { pid, source: err });
            }
        }
        self.lock().insert(pid);
        self.changed.notify_one();
        Ok(())
    }

    fn remove_root(&self, pid: u32) {
        if self.lock().remove(&pid) {
            self.changed.notify_one();
        }
    }

    fn add_cgroup(&self, cgroup: &Arc<Cgroup>) -> Result<(), DetectError> {
        let mut cgroups = self
            .cgroups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cgroups.push(Arc::clone(cgroup));
        self.changed.notify_one();
        Ok(())
    }

    fn remove_cgroup(&self, cgroup: &Cgroup) {
        let mut cgroups = self
            .cgroups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cgroups.retain(|watched| watched.id() != cgroup.id());
        self.changed.notify_one();
    }
}

/// Spawns the poller on the current tokio runtime (call it from inside one).
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) fn start(kind: BackendKind, config: &DetectorConfig, scan: ScanFn) -> Detector {
    let self_pid = config.self_pid;
    start_with(kind, config, Stateless { scan, self_pid })
}

/// Spawns the poller with `scanner`, kept across polls.
pub(crate) fn start_with(
    kind: BackendKind,
    config: &DetectorConfig,
    scanner: impl Scan,
) -> Detector {
    let roots = Arc::new(RootList::default());
    let (tx, events) = mpsc::channel(QUEUE);
    let interval = config.poll_interval.max(MIN_INTERVAL);
    let scanner = Arc::new(Mutex::new(scanner));
    tokio::spawn(run(kind, Arc::clone(&roots), tx, interval, scanner));
    Detector {
        events,
        roots,
        port_changes: None,
    }
}

async fn run<S: Scan>(
    kind: BackendKind,
    roots: Arc<RootList>,
    tx: mpsc::Sender<DetectorEvent>,
    interval: Duration,
    scanner: Arc<Mutex<S>>,
) {
    tracing::debug!(backend = %kind, ?interval, "poller started");
    loop {
        let current = roots.current();
        let scanned = if current.is_empty() {
            Ok(Vec::new())
        } else {
            let scanner = Arc::clone(&scanner);
            let scan = move || {
                // A scan that panicked leaves a scanner whose caches may be
                // half updated; the next full re-read repairs them.
                let mut scanner = scanner
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                scanner.scan(&current)
            };
            match tokio::task::spawn_blocking(scan).await {
                Ok(result) => result,
                Err(err) => Err(io::Error::other(err)),
            }
        };
        match scanned {
            Ok(listeners) => {
                if tx.send(DetectorEvent::Snapshot(listeners)).await.is_err() {
                    break;
                }
            }
            // No snapshot rather than an empty one, which would close
            // every listener; the next poll tries again.
            Err(err) => tracing::warn!(backend = %kind, %err, "scan failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = roots.changed.notified() => {}
            () = tx.closed() => break,
        }
    }
    tracing::debug!(backend = %kind, "poller stopped: events receiver dropped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// One fake listener per root, on port = root.
    fn fake_scan(roots: &[u32], self_pid: u32) -> io::Result<Vec<ListenerSocket>> {
        Ok(roots
            .iter()
            .filter(|&&pid| pid != self_pid)
            .map(|&pid| ListenerSocket {
                id: super::super::SocketId(u64::from(pid)),
                port: u16::try_from(pid).unwrap_or(0),
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                pid,
                process: Default::default(),
            })
            .collect())
    }

    fn failing_scan(_: &[u32], _: u32) -> io::Result<Vec<ListenerSocket>> {
        Err(io::Error::other("no /proc"))
    }

    fn ports(event: DetectorEvent) -> Vec<u16> {
        match event {
            DetectorEvent::Snapshot(list) => list.iter().map(|l| l.port).collect(),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    fn config(ms: u64) -> DetectorConfig {
        DetectorConfig {
            poll_interval: Duration::from_millis(ms),
            self_pid: 1,
            watch_cgroups: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_at_start_on_add_root_and_every_interval() {
        let mut det = start(BackendKind::Procfs, &config(1000), fake_scan);
        assert_eq!(ports(det.events.recv().await.unwrap()), Vec::<u16>::new());
        let me = std::process::id();
        det.roots.add_root(me).unwrap();
        let before = tokio::time::Instant::now();
        let expected = vec![u16::try_from(me).unwrap_or(0)];
        assert_eq!(ports(det.events.recv().await.unwrap()), expected);
        assert!(
            before.elapsed() < Duration::from_millis(1000),
            "add_root must not wait a poll"
        );
        let before = tokio::time::Instant::now();
        assert_eq!(ports(det.events.recv().await.unwrap()), expected);
        assert_eq!(before.elapsed(), Duration::from_millis(1000));
        det.roots.remove_root(me);
        assert!(ports(det.events.recv().await.unwrap()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn self_pid_is_passed_to_the_scan() {
        let mut det = start(BackendKind::Procfs, &config(1000), fake_scan);
        det.events.recv().await.unwrap();
        // Pid 1 exists everywhere and is the configured self pid here.
        det.roots.add_root(1).unwrap();
        assert!(ports(det.events.recv().await.unwrap()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn missing_root_is_refused() {
        let det = start(BackendKind::Procfs, &config(1000), fake_scan);
        let err = det.roots.add_root(u32::MAX - 1).unwrap_err();
        assert!(matches!(err, DetectError::AddRoot { pid, .. } if pid == u32::MAX - 1));
        assert!(det.roots.add_root(u32::MAX).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_scans_send_nothing() {
        let mut det = start(BackendKind::Procfs, &config(100), failing_scan);
        assert!(
            ports(det.events.recv().await.unwrap()).is_empty(),
            "no roots: no scan"
        );
        det.roots.add_root(std::process::id()).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), det.events.recv()).await;
        assert!(
            next.is_err(),
            "a failed scan must not look like everything closed"
        );
    }

    /// Reports one listener whose port counts the scans it made.
    struct Counting(u16);

    impl Scan for Counting {
        fn scan(&mut self, _roots: &[u32]) -> io::Result<Vec<ListenerSocket>> {
            self.0 += 1;
            Ok(vec![ListenerSocket {
                id: super::super::SocketId(1),
                port: self.0,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                pid: 1,
                process: Default::default(),
            }])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_scanner_is_kept_across_polls() {
        let mut det = start_with(BackendKind::Procfs, &config(100), Counting(0));
        det.events.recv().await.unwrap();
        det.roots.add_root(std::process::id()).unwrap();
        for expected in 1..=3 {
            assert_eq!(ports(det.events.recv().await.unwrap()), [expected]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn zero_interval_does_not_spin() {
        let mut det = start(BackendKind::Procfs, &config(0), fake_scan);
        det.roots.add_root(std::process::id()).unwrap();
        let before = tokio::time::Instant::now();
        for _ in 0..5 {
            det.events.recv().await.unwrap();
        }
        assert!(before.elapsed() >= 3 * MIN_INTERVAL);
    }
}
