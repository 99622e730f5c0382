//! The watched process trees, set up the same way for `watch` and `connect`:
//! set containment up (the runner's cgroups, PROTOCOL.md section 5), start a
//! detector, register the roots (spawning `-- COMMAND` in its cgroup, held
//! until it is registered), and run the pipeline behind it.

use std::collections::BTreeSet;

use tokio::sync::{mpsc, oneshot};

use crate::cgroup::{CgroupError, Containment};
use crate::cli::DetectorArgs;
use crate::detect::{self, DetectError, Selection};
use crate::gate::Gate;
use crate::pipeline::{self, CandidateEvent, Finish, PipelineConfig};
use crate::report::{Line, Report};
use crate::root_pids::{RootPidError, RootPids};
use crate::supervise::{
    self, HeldChild, Marked, Members, RootCommand, Signals, SpawnError, SpawnOptions, TREE_MARKER,
};

/// Candidate events waiting for the consumer; the pipeline stalls beyond it.
const CANDIDATE_QUEUE: usize = 1024;

/// A running detector and pipeline, plus the command started as a root.
pub(crate) struct Trees {
    pub(crate) selection: Selection,
    pub(crate) candidates: mpsc::Receiver<CandidateEvent>,
    /// `-- COMMAND`, released and running.
    pub(crate) command: Option<RootCommand>,
    /// Ends the pipeline with its final `closed` events.
    pub(crate) finisher: Finisher,
    /// Adds more roots while it runs (Codex instances under `connect`).
    pub(crate) roots: std::sync::Arc<dyn detect::RootRegistry>,
    /// The `--root-pid` roots when they are the only ones: the runner
    /// stops when they have all ended. Never ends with `-- COMMAND`.
    pub(crate) root_pids: RootPids,
    /// Where the command, instances and editors get their cgroups;
    /// [`Containment::remove`] at the runner's exit.
    pub(crate) containment: Containment,
}

/// Errors of starting to watch.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchedError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    RootPid(#[from] RootPidError),
    #[error(transparent)]
    Containment(#[from] CgroupError),
}

impl WatchedError {
    /// The runner's exit code: 127/126 for a command that cannot run, else 1.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            WatchedError::Spawn(err) => err.exit_code(),
            WatchedError::Detect(_) | WatchedError::Containment(_) => 1,
            // A bad flag value.
            WatchedError::RootPid(_) => 2,
        }
    }
}

/// What to do with the command's output.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CommandOutput {
    /// Its stdout goes to the runner's stderr (`watch --json`).
    pub(crate) stdout_to_stderr: bool,
}

/// Starts everything. `on_selected` runs as soon as the backend is known, so
/// the caller can say which one (and what holds the processes) before
/// anything else is logged.
pub(crate) fn start(
    args: &DetectorArgs,
    output: CommandOutput,
    gate: Option<Gate>,
    report: &Report,
    on_selected: impl FnOnce(&Selection, &Containment),
) -> Result<Trees, WatchedError> {
    let ignore = args.ignore_policy();
    let mut config = args.detector_config();
    // Before the detector: a root that does not exist is a bad flag value.
    let (root_pids, warnings) = RootPids::open(&args.root_pids)?;
    let containment = Containment::start(args.containment)?;
    config.watch_cgroups = containment.is_cgroups();
    let (detector, selection) = detect::start(args.backend, &config).inspect_err(|_| {
        containment.remove();
    })?;
    on_selected(&selection, &containment);
    if let (Some(gate), Some(changes)) = (&gate, &detector.port_changes) {
        gate.use_port_changes(changes.clone());
    }
    for warning in warnings {
        report.notice(Line::new("root_pid", warning.to_string()).level("warn"));
    }

    for &pid in &args.root_pids {
        detector.roots.add_root(pid)?;
    }
    let command = if args.command.is_empty() {
        None
    } else {
        let started = start_command(args, output, &containment, detector.roots.as_ref());
        Some(started.inspect_err(|_| containment.remove())?)
    };
    // At the end, the ports still listening are those of the trees the
    // runner did not start (the command's tree is ended first).
    let mut scan_roots = args.root_pids.clone();
    if args.root_pids.is_empty() && command.is_none() {
        // No root given: the runner's own descendants (its own sockets are
        // excluded by every backend).
        detector.roots.add_root(config.self_pid)?;
        scan_roots.push(config.self_pid);
    }

    // With a command, the runner lives as long as the command does.
    let root_pids = if command.is_none() {
        root_pids
    } else {
        RootPids::default()
    };

    let (tx, candidates) = mpsc::channel(CANDIDATE_QUEUE);
    let (finish_tx, finish_rx) = oneshot::channel();
    let pipeline_config = PipelineConfig {
        debounce: args.debounce(),
        ignore,
        ports: args.ports.clone(),
        gate,
    };
    let roots = detector.roots;
    let more_roots = roots.clone();
    tokio::spawn(async move {
        // The registry must outlive the pipeline: dropping it may stop a backend.
        let _roots = roots;
        pipeline::run(pipeline_config, detector.events, tx, finish_rx).await;
    });
    Ok(Trees {
        selection,
        candidates,
        command,
        finisher: Finisher {
            tx: finish_tx,
            scan_roots,
            self_pid: config.self_pid,
        },
        roots: more_roots,
        root_pids,
        containment,
    })
}

/// Starts `-- COMMAND` held, in a cgroup of its own when there is
/// containment, registers it as a root, then releases it.
fn start_command(
    args: &DetectorArgs,
    output: CommandOutput,
    containment: &Containment,
    roots: &dyn detect::RootRegistry,
) -> Result<RootCommand, WatchedError> {
    let cgroup = containment.new_group("tree");
    if let Some(cgroup) = &cgroup {
        roots.add_cgroup(cgroup)?;
    }
    let options = SpawnOptions {
        stdout_to_stderr: output.stdout_to_stderr,
        marker: supervise::new_marker(),
        cgroup: cgroup.clone(),
        ..SpawnOptions::default()
    };
    let held = HeldChild::spawn(&args.command, &options)?;
    roots.add_root(held.pid())?;
    let members = match cgroup {
        Some(cgroup) => Members::Cgroup(cgroup),
        None => Members::Marked(
            Marked::new(TREE_MARKER, &options.marker)
                .with_descendants_of(std::process::id(), &args.root_pids),
        ),
    };
    Ok(RootCommand::new(held.release()?, members))
}

/// Asks the pipeline for its final events when the runner stops.
pub(crate) struct Finisher {
    tx: oneshot::Sender<Finish>,
    scan_roots: Vec<u32>,
    self_pid: u32,
}

impl Finisher {
    /// Scans what still listens (the detector may not have seen the last
    /// closes yet: procfs polls) and has the pipeline report `closed` for
    /// every other reported port; its candidate stream then ends.
    pub(crate) async fn finish(self) {
        let listening = still_listening(self.scan_roots, self.self_pid).await;
        let _ = self.tx.send(Finish { listening });
    }
}

#[cfg(target_os = "linux")]
async fn still_listening(roots: Vec<u32>, self_pid: u32) -> Option<BTreeSet<u16>> {
    if roots.is_empty() {
        return Some(BTreeSet::new());
    }
    let scan = tokio::task::spawn_blocking(move || detect::procfs::scan(&roots, self_pid));
    match scan.await {
        Ok(Ok(sockets)) => Some(sockets.iter().map(|socket| socket.port).collect()),
        Ok(Err(err)) => {
            tracing::warn!("final scan failed, trusting the detector: {err}");
            None
        }
        Err(_) => None,
    }
}

#[cfg(not(target_os = "linux"))]
async fn still_listening(roots: Vec<u32>, _self_pid: u32) -> Option<BTreeSet<u16>> {
    roots.is_empty().then(BTreeSet::new)
}

/// What `watch` and `connect` start with: [`start`], printing the backend
/// line first, and the signals that start the shutdown. Failures are
/// printed; `Err` holds the exit code.
pub(crate) fn start_for_command(
    args: &DetectorArgs,
    output: CommandOutput,
    gate: Option<Gate>,
    report: &Report,
) -> Result<(Trees, Signals), i32> {
    // Listening first: a signal while the command starts must not kill the
    // runner before it can end the command.
    let signals = Signals::new().map_err(|err| {
        report.error(format!("cannot listen for signals: {err}"));
        1
    })?;
    let watched = start(args, output, gate, report, |selection, containment| {
        let line = Line::new("backend", backend_line(selection, containment))
            .field("backend", selection.kind.to_string());
        report.backend(line);
    })
    .map_err(|err| {
        report.error(crate::error_chain(&err));
        err.exit_code()
    })?;
    Ok((watched, signals))
}

/// The first stderr line: the backend, and why when it is not the best
/// one; and, where no cgroup could be created, what holds the processes
/// instead (PROTOCOL.md section 5).
pub(crate) fn backend_line(selection: &Selection, containment: &Containment) -> String {
    let backend = match &selection.reason {
        Some(reason) => format!("backend: {} ({reason})", selection.kind),
        None => format!("backend: {}", selection.kind),
    };
    match containment {
        Containment::Cgroups(_) => backend,
        Containment::Unavailable(_) => {
            format!("{backend}; containment: {}", containment.describe())
        }
    }
}
