//! libproc backend (macOS, polling).
//!
//! [`source`] is the thin OS layer (libproc and sysctl calls) behind the
//! [`logic::ProcSource`] seam; [`logic::scan_with`] is the logic (tree walk, grouping
//! of sockets shared over fork, mapping to [`ListenerSocket`]s), compiled
//! and unit-tested on every platform.
//!
//! [`ListenerSocket`]: super::ListenerSocket

mod logic;
#[cfg(target_os = "macos")]
mod source;

#[cfg(target_os = "macos")]
pub(crate) use imp::{listening_sockets, probe, start};

#[cfg(target_os = "macos")]
mod imp {
    use super::super::{
        BackendKind, DetectError, Detector, DetectorConfig, ListenerSocket, Unavailable,
    };

    /// Whether the backend can run here, and why not.
    pub(crate) fn probe() -> Result<(), Unavailable> {
        super::source::Darwin::probe().map_err(Unavailable::new)
    }

    /// Starts polling every `config.poll_interval`. Call it inside a tokio
    /// runtime.
    pub(crate) fn start(config: &DetectorConfig) -> Result<Detector, DetectError> {
        probe().map_err(|reason| DetectError::Unavailable {
            backend: BackendKind::Libproc,
            reason,
        })?;
        Ok(super::super::poll::start(
            BackendKind::Libproc,
            config,
            scan,
        ))
    }

    /// Every LISTEN socket of every process libproc shows the runner (all
    /// of its user's, all when root): what the verified dial checks a fresh
    /// connection against. A full walk; it runs once per new connection.
    pub(crate) fn listening_sockets() -> std::io::Result<Vec<crate::detect::ListeningSocket>> {
        use super::logic::ProcSource;
        let darwin = super::source::Darwin;
        Ok(darwin
            .parents()?
            .into_iter()
            .flat_map(|(pid, _)| darwin.listening(pid))
            .map(|raw| crate::detect::ListeningSocket {
                id: raw.so,
                addr: raw.addr,
                port: raw.port,
            })
            .collect())
    }

    /// Every LISTEN socket held by a process of the roots' trees, the
    /// runner itself excluded. Blocking.
    pub(crate) fn scan(roots: &[u32], self_pid: u32) -> std::io::Result<Vec<ListenerSocket>> {
        super::logic::scan_with(&super::source::Darwin, roots, self_pid)
    }
}
