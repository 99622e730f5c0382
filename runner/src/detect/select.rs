//! Choosing a backend: `auto` takes the best that works on this platform and
//! says why it passed over the others.

use super::{BackendKind, DetectError, Detector, DetectorConfig, Unavailable};

/// `--backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    #[default]
    Auto,
    Ebpf,
    Procfs,
    Libproc,
}

/// One backend's state on this machine, for `doctor`.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct BackendStatus {
    pub(crate) backend: BackendKind,
    pub(crate) available: bool,
    /// Why it is unavailable; `None` when it works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// What would make it work, when that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

/// The backend that runs, and why the better ones do not.
#[derive(Clone, Debug)]
pub struct Selection {
    pub(crate) kind: BackendKind,
    /// `Some` when `kind` is not the best backend for the platform.
    pub(crate) reason: Option<String>,
}

/// Backends of this platform, best first.
fn preference() -> &'static [BackendKind] {
    if cfg!(target_os = "linux") {
        &[BackendKind::Ebpf, BackendKind::Procfs]
    } else if cfg!(target_os = "macos") {
        &[BackendKind::Libproc]
    } else {
        &[]
    }
}

fn probe(kind: BackendKind) -> Result<(), Unavailable> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::Ebpf => super::ebpf::probe(),
        #[cfg(target_os = "linux")]
        BackendKind::Procfs => super::procfs::probe(),
        #[cfg(target_os = "macos")]
        BackendKind::Libproc => super::libproc::probe(),
        #[allow(unreachable_patterns)]
        other => Err(Unavailable::new(format!(
            "not for {}: {other} is the {} backend",
            std::env::consts::OS,
            if other == BackendKind::Libproc {
                "macOS"
            } else {
                "Linux"
            }
        ))),
    }
}

fn start_kind(kind: BackendKind, config: &DetectorConfig) -> Result<Detector, DetectError> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::Ebpf => super::ebpf::start(config),
        #[cfg(target_os = "linux")]
        BackendKind::Procfs => super::procfs::start(config),
        #[cfg(target_os = "macos")]
        BackendKind::Libproc => super::libproc::start(config),
        #[allow(unreachable_patterns)]
        other => {
            let _ = config;
            Err(DetectError::Unavailable {
                backend: other,
                reason: probe(other).unwrap_err(),
            })
        }
    }
}

/// Every backend of every platform and whether it works here.
pub(crate) fn statuses() -> Vec<BackendStatus> {
    [BackendKind::Ebpf, BackendKind::Procfs, BackendKind::Libproc]
        .into_iter()
        .map(|backend| match probe(backend) {
            Ok(()) => BackendStatus {
                backend,
                available: true,
                reason: None,
                fix: None,
            },
            Err(why) => BackendStatus {
                backend,
                available: false,
                reason: Some(why.reason),
                fix: why.fix,
            },
        })
        .collect()
}

/// Starts the chosen backend; with `auto`, the best one that starts.
pub fn start(
    choice: BackendChoice,
    config: &DetectorConfig,
) -> Result<(Detector, Selection), DetectError> {
    let explicit = match choice {
        BackendChoice::Auto => None,
        BackendChoice::Ebpf => Some(BackendKind::Ebpf),
        BackendChoice::Procfs => Some(BackendKind::Procfs),
        BackendChoice::Libproc => Some(BackendKind::Libproc),
    };
    if let Some(kind) = explicit {
        let best = preference().first().copied();
        let detector = start_kind(kind, config)?;
        let reason = (best != Some(kind)).then(|| "chosen with --backend".to_string());
        return Ok((detector, Selection { kind, reason }));
    }
    let mut passed_over = Vec::new();
    for &kind in preference() {
        match start_kind(kind, config) {
            Ok(detector) => {
                let reason = (!passed_over.is_empty()).then(|| passed_over.join("; "));
                return Ok((detector, Selection { kind, reason }));
            }
            Err(err) => passed_over.push(err.to_string()),
        }
    }
    Err(DetectError::NoBackend {
        reasons: passed_over.join("; "),
    })
}
