//! From raw socket events to candidates: one service per port, a timer-based
//! stability window, change detection and the ignore policy.

use std::net::IpAddr;

use crate::process::ProcessInfo;

/// A stable listener of a watched tree, one per port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub port: u16,
    pub pid: u32,
    pub process: ProcessInfo,
    /// Local addresses bound on that port, sorted, deduplicated.
    pub addresses: Vec<IpAddr>,
}

/// What the pipeline tells the rest of the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateEvent {
    /// The port's listener has been stable for the debounce window.
    Opened(Candidate),
    /// The same port is now owned by another pid, command or cwd.
    Changed(Candidate),
    /// Only the bound addresses changed (an IPv6 socket joined later, say):
    /// not printed by `watch`, but forwarding must dial the right family.
    AddressesChanged(Candidate),
    /// The port's last socket closed and stayed closed for the window.
    Closed { port: u16, pid: u32 },
}

use std::time::Duration;

use tokio::sync::mpsc;

use crate::detect::DetectorEvent;

/// Ports and commands that are never candidates. Stub.
#[derive(Clone, Debug, Default)]
pub struct IgnorePolicy {}

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Stability window (`--debounce-ms`, default 750 ms).
    pub debounce: Duration,
    pub ignore: IgnorePolicy,
}

/// Runs until `events` closes, sending candidates to `out`. Stub.
pub async fn run(
    _config: PipelineConfig,
    mut events: mpsc::Receiver<DetectorEvent>,
    _out: mpsc::Sender<CandidateEvent>,
) {
    while events.recv().await.is_some() {}
}
