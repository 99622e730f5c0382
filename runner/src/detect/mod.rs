//! Listener detection. Every backend turns what it sees into the same
//! [`DetectorEvent`] stream, so the pipeline never knows which one runs.

use std::net::IpAddr;

use crate::detect::process_info::ProcessInfo;

/// Which detector feeds the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Kernel pushes listen/close events (Linux, privileged).
    Ebpf,
    /// Polls socket tables and descendants' fds (Linux, unprivileged).
    Procfs,
    /// Polls through libproc (macOS).
    Libproc,
}

impl BackendKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendKind::Ebpf => "ebpf",
            BackendKind::Procfs => "procfs",
            BackendKind::Libproc => "libproc",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one listening socket while it is open: the kernel `struct sock`
/// address for eBPF, the socket inode for procfs and libproc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

/// One listening TCP socket held by a process of a watched tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSocket {
    pub id: SocketId,
    pub port: u16,
    /// Local address it is bound to (`0.0.0.0`, `::`, `127.0.0.1`, ...).
    pub addr: IpAddr,
    /// Pid as the runner sees it (its own pid namespace).
    pub pid: u32,
    /// Command line, label and cwd of `pid`, read when the socket was seen.
    pub process: ProcessInfo,
}

/// One listening TCP socket of the runner's network namespace, as the OS
/// lists it: its inode on Linux, its kernel socket address on macOS (the
/// same ids the detectors give). What the gate's verified dial checks a
/// fresh connection against; here, with the backends that list them, so
/// `gate` imports `detect` and not the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListeningSocket {
    pub id: u64,
    pub addr: IpAddr,
    pub port: u16,
}

/// What a backend reports. Backends that only poll may send nothing but
/// snapshots; the pipeline diffs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectorEvent {
    Opened(ListenerSocket),
    Closed(SocketId),
    /// Every listening socket of the watched trees right now: whatever the
    /// pipeline holds that is not in it has closed. Sent at start (backfill),
    /// after every poll, and after an eBPF ring-buffer drop (resync).
    Snapshot(Vec<ListenerSocket>),
}

use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::Cgroup;

use tokio::sync::mpsc;

/// Settings every backend understands.
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// How often polling backends (procfs, libproc) scan. Default 1000 ms.
    pub poll_interval: Duration,
    /// The runner's own pid: its own sockets are never reported, even when
    /// it watches its own descendants.
    pub self_pid: u32,
    /// The runner holds what it starts in cgroups: the eBPF program then
    /// looks up the cgroups of a task.
    pub watch_cgroups: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            poll_interval: Duration::from_millis(1000),
            self_pid: std::process::id(),
            watch_cgroups: false,
        }
    }
}

/// Adds and removes the roots of the watched process trees while a backend
/// runs. `add_root` must be called before the root can fork (the runner
/// spawns commands behind a pipe for that), so no child is missed.
// Public for the integration tests, which add roots by pid; the cgroup
// methods take the runner's own `Cgroup`, which stays crate-private.
#[allow(private_interfaces)]
pub trait RootRegistry: Send + Sync {
    /// Watches `pid` and all its present and future descendants.
    fn add_root(&self, pid: u32) -> Result<(), DetectError>;
    /// Stops watching `pid`'s tree (the root exited).
    fn remove_root(&self, pid: u32);
    /// Watches every process in `cgroup` (and the cgroups below it), now
    /// and later, whatever its ancestry: call it before a process enters.
    fn add_cgroup(&self, cgroup: &Arc<Cgroup>) -> Result<(), DetectError>;
    /// Stops watching `cgroup` (what ran in it has ended).
    fn remove_cgroup(&self, cgroup: &Cgroup);
}

/// A running backend: its events and the handle that manages its roots.
pub struct Detector {
    pub events: mpsc::Receiver<DetectorEvent>,
    pub roots: Arc<dyn RootRegistry>,
    /// The kernel's listener-change counters, for the gate's dial cache
    /// (eBPF; `None` for the polling backends).
    pub port_changes: Option<Arc<dyn PortChanges>>,
}

/// Why a backend cannot run here, in words for the user
/// ("CAP_BPF missing", "not built: bpf-linker not found"), and what would
/// make it run when that is known (`doctor` says it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The one cause.
    pub(crate) reason: String,
    /// What to do about it.
    pub(crate) fix: Option<String>,
}

impl Unavailable {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
            fix: None,
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn with_fix(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Errors of the detectors.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The backend cannot run here.
    #[error("{backend} unavailable: {reason}")]
    Unavailable {
        backend: BackendKind,
        reason: Unavailable,
    },
    /// No backend works on this machine.
    #[error("no detector backend works here: {reasons}")]
    NoBackend { reasons: String },
    /// A cgroup could not be registered.
    #[error("cannot watch cgroup {}", .path.display())]
    AddCgroup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A root could not be registered.
    #[error("cannot watch pid {pid}")]
    AddRoot {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(target_os = "linux")]
pub mod ebpf;
mod label;
#[cfg(any(target_os = "macos", test))]
pub(crate) mod libproc;
mod poll;
pub mod port_changes;
pub mod process_info;
pub mod process_tree;
#[cfg(target_os = "linux")]
pub mod procfs;
mod select;

pub use port_changes::PortChanges;
pub use select::{BackendChoice, start};
pub(crate) use select::{BackendStatus, Selection, statuses};
