//! eBPF backend (Linux, privileged): tracepoints report listen() and close of
//! TCP listeners in the watched trees the moment they happen.
//!
//! `tracefs` reads the tracepoint layouts, `loader` loads and attaches the
//! object built by `runner/build.rs` (in the runner through
//! `loader_child`, a short-lived process that hands the maps and
//! attachments over with `fd_passing`), `ring` reads its events, `roots` feeds
//! the kernel the watched trees, `task` turns events into [`DetectorEvent`]s
//! with the help of `procinfo`, `backfill` learns from the kernel when
//! listeners older than the tracking close, and `port_counters` reads the
//! listener-change counters the gate's dial cache compares.

mod backfill;
mod blockers;
mod fd_passing;
mod loader;
pub(crate) mod loader_child;
mod port_counters;
mod procinfo;
mod ring;
mod roots;
mod task;
mod tracefs;

use tokio::sync::mpsc;

use super::{BackendKind, DetectError, Detector, DetectorConfig, DetectorEvent, Unavailable};

/// Knobs the tests turn; the defaults suit the runner.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Size of the kernel ring buffer: a power of two, at least one page.
    pub ring_bytes: u32,
    /// Capacity of the event channel to the pipeline.
    pub channel: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            ring_bytes: loader::RING_BYTES,
            channel: 1024,
        }
    }
}

/// Whether the backend can run here, and why not. Loads and attaches the
/// programs once (then detaches them), so a kernel that refuses them is
/// found here rather than at start.
pub fn probe() -> Result<(), Unavailable> {
    if !loader::NOT_BUILT.is_empty() {
        return Err(not_built());
    }
    blockers::check().map_err(blocked)?;
    loader::load(loader::Request {
        self_pid: std::process::id(),
        ring_bytes: loader::RING_BYTES,
        watch_cgroups: false,
    })
    .map(drop)
    .map_err(|err| Unavailable::new(crate::error_chain(&err)))
}

/// The object was not built into this binary.
fn not_built() -> Unavailable {
    Unavailable::with_fix(
        format!("not built: {}", loader::NOT_BUILT),
        "build with the eBPF toolchain: cargo xtask setup, then cargo build",
    )
}

fn blocked(blocker: blockers::Blocker) -> Unavailable {
    Unavailable::with_fix(blocker.to_string(), blocker.fix())
}

/// Loads and attaches the programs and starts streaming events. Call from a
/// tokio runtime.
pub fn start(config: &DetectorConfig) -> Result<Detector, DetectError> {
    start_tuned(config, Tuning::default())
}

/// [`start`] with explicit [`Tuning`].
pub fn start_tuned(config: &DetectorConfig, tuning: Tuning) -> Result<Detector, DetectError> {
    let unavailable = |reason: Unavailable| DetectError::Unavailable {
        backend: BackendKind::Ebpf,
        reason,
    };
    if !loader::NOT_BUILT.is_empty() {
        return Err(unavailable(not_built()));
    }
    blockers::check().map_err(|blocker| unavailable(blocked(blocker)))?;
    let request = loader::Request {
        self_pid: config.self_pid,
        ring_bytes: tuning.ring_bytes,
        watch_cgroups: config.watch_cgroups,
    };
    let loaded = loader::load(request)
        .map_err(|err| unavailable(Unavailable::new(crate::error_chain(&err))))?;
    let loader::Loaded {
        attached,
        events,
        drops,
        ns_tracked,
        backfill_ports,
        cgroups,
        port_changes,
    } = loaded;
    let ring = ring::Ring::new(events, drops).map_err(|err| {
        unavailable(Unavailable::new(format!(
            "cannot poll the ring buffer: {err}"
        )))
    })?;
    let (resync_tx, resync_rx) = mpsc::unbounded_channel();
    let (tx, rx) = mpsc::channel::<DetectorEvent>(tuning.channel);
    let roots = roots::Roots::new(ns_tracked, cgroups, resync_tx);
    let task = task::EventTask {
        ring,
        roots: roots.clone(),
        resync: resync_rx,
        tx,
        self_pid: config.self_pid,
        net_ns: procinfo::net_ns("self"),
        backfill: backfill::Backfill::new(Box::new(backfill_ports)),
        _attached: attached,
    };
    tokio::spawn(task.run());
    // Debug: the first stderr line is the backend line, printed after this.
    tracing::debug!("eBPF detector attached");
    Ok(Detector {
        events: rx,
        roots,
        port_changes: ordered_counters().then_some(port_changes),
    })
}

/// Whether the counters' proof holds here: the program adds to the
/// in-flight count, then to the generation, and a reader that sees the
/// second must see the first. x86-64's locked adds are ordered; the BPF
/// atomic add of other architectures (arm64's `stadd`) is relaxed, so there
/// every verified dial dumps.
fn ordered_counters() -> bool {
    cfg!(target_arch = "x86_64")
}
