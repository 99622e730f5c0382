//! libproc backend (macOS, polling). Stub: replaced by the real poller.

use super::{DetectError, Detector, DetectorConfig, Unavailable};

/// Whether the backend can run here, and why not.
pub fn probe() -> Result<(), Unavailable> {
    Err(Unavailable("not implemented yet".into()))
}

/// Starts polling.
pub fn start(_config: &DetectorConfig) -> Result<Detector, DetectError> {
    Err(DetectError::Unavailable {
        backend: super::BackendKind::Libproc,
        reason: probe().unwrap_err(),
    })
}
