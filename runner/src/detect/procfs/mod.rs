//! procfs backend (Linux, polling). Stub: replaced by the real poller.

use super::{DetectError, Detector, DetectorConfig, Unavailable};

/// Whether the backend can run here, and why not.
pub fn probe() -> Result<(), Unavailable> {
    Err(Unavailable("not implemented yet".into()))
}

/// Starts polling.
pub fn start(_config: &DetectorConfig) -> Result<Detector, DetectError> {
    Err(DetectError::Unavailable {
        backend: super::BackendKind::Procfs,
        reason: probe().unwrap_err(),
    })
}

/// Every LISTEN socket of the runner's network namespace held by a process
/// of the roots' trees (the runner itself excluded). The eBPF backend uses
/// it for its backfill at start and its resync after a ring-buffer drop.
pub fn scan(_roots: &[u32], _self_pid: u32) -> std::io::Result<Vec<super::ListenerSocket>> {
    Ok(Vec::new())
}
