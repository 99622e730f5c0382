//! eBPF backend (Linux, privileged). Stub: replaced by the real loader.

use super::{DetectError, Detector, DetectorConfig, Unavailable};

/// Whether the backend can run here, and why not.
pub fn probe() -> Result<(), Unavailable> {
    Err(Unavailable("not implemented yet".into()))
}

/// Loads and attaches the programs and starts streaming events.
pub fn start(_config: &DetectorConfig) -> Result<Detector, DetectError> {
    Err(DetectError::Unavailable {
        backend: super::BackendKind::Ebpf,
        reason: probe().unwrap_err(),
    })
}
