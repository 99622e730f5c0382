//! The watched process trees, set up the same way for `watch` and `connect`:
//! start a detector, register the roots (spawning `-- COMMAND` held until
//! its pid is registered), and run the pipeline behind it.

use tokio::process::Child;
use tokio::sync::mpsc;

use crate::cli::DetectorArgs;
use crate::detect::{self, DetectError, Selection};
use crate::gate::Gate;
use crate::pipeline::{self, CandidateEvent, PipelineConfig};
use crate::signals::Signals;
use crate::spawn::{HeldChild, SpawnError};

/// Candidate events waiting for the consumer; the pipeline stalls beyond it.
const CANDIDATE_QUEUE: usize = 1024;

/// A running detector and pipeline, plus the command started as a root.
pub struct Watched {
    pub selection: Selection,
    pub candidates: mpsc::Receiver<CandidateEvent>,
    /// `-- COMMAND`, released and running.
    pub child: Option<Child>,
}

/// Errors of starting to watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchedError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Starts everything. `on_selected` runs as soon as the backend is known, so
/// the caller can say which one before anything else is logged.
pub fn start(
    args: &DetectorArgs,
    gate: Option<Gate>,
    on_selected: impl FnOnce(&Selection),
) -> Result<Watched, WatchedError> {
    let ignore = args.ignore_policy();
    let config = args.detector_config();
    let (detector, selection) = detect::start(args.backend, &config)?;
    on_selected(&selection);

    for &pid in &args.root_pids {
        detector.roots.add_root(pid)?;
    }
    let child = if args.command.is_empty() {
        None
    } else {
        let held = HeldChild::spawn(&args.command)?;
        detector.roots.add_root(held.pid())?;
        Some(held.release()?)
    };
    if args.root_pids.is_empty() && child.is_none() {
        // No root given: the runner's own descendants (its own sockets are
        // excluded by every backend).
        detector.roots.add_root(config.self_pid)?;
    }

    let (tx, candidates) = mpsc::channel(CANDIDATE_QUEUE);
    let pipeline_config = PipelineConfig {
        debounce: args.debounce(),
        ignore,
        gate,
    };
    let roots = detector.roots;
    tokio::spawn(async move {
        // The registry must outlive the pipeline: dropping it may stop a backend.
        let _roots = roots;
        pipeline::run(pipeline_config, detector.events, tx).await;
    });
    Ok(Watched {
        selection,
        candidates,
        child,
    })
}

/// What `watch` and `connect` start with: [`start`], printing the backend
/// line first, and the signals to forward to the command. Failures are
/// printed; `Err` holds the exit code.
pub fn start_for_command(
    args: &DetectorArgs,
    gate: Option<Gate>,
) -> Result<(Watched, Signals), i32> {
    let watched = start(args, gate, |selection| {
        eprintln!("{}", backend_line(selection))
    })
    .map_err(|err| {
        eprintln!("error: {}", crate::error_chain(&err));
        1
    })?;
    let signals = Signals::new().map_err(|err| {
        eprintln!("error: cannot listen for signals: {err}");
        1
    })?;
    Ok((watched, signals))
}

/// The first stderr line: the backend, and why when it is not the best one.
pub fn backend_line(selection: &Selection) -> String {
    match &selection.reason {
        Some(reason) => format!("backend: {} ({reason})", selection.kind),
        None => format!("backend: {}", selection.kind),
    }
}
