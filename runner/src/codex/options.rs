//! How to start an instance: `start_instance`'s fields and the runner's
//! flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::control::budget::{Budget, DEFAULT_EVENT_BUDGET};
use crate::wire::StartInstance;

/// `--stream-flush-ms` default.
pub(crate) const DEFAULT_STREAM_FLUSH: Duration = Duration::from_millis(50);
/// `--turn-idle-timeout-ms` default.
pub(crate) const DEFAULT_TURN_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How to start an instance (`start_instance`, plus the runner's flags).
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// The `codex` binary (`--codex-bin`, `KANDAN_CODEX_BIN`, `PATH`).
    pub(crate) codex_bin: PathBuf,
    /// Already checked by [`CwdPolicy`](crate::workdir::CwdPolicy).
    pub(crate) cwd: PathBuf,
    /// `cwd` as the descriptor the check opened: the app-server starts in
    /// it ([`CheckedCwd::dir`](crate::workdir::CheckedCwd::dir)).
    pub(crate) cwd_dir: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Kandan's `start_instance` as sent: a `threadId` is resumed instead
    /// of starting a thread, `fast` asks for `serviceTier: "priority"`.
    /// Its `cwd` is the one above once checked; its `instanceId` is the
    /// caller's.
    pub start: StartInstance,
    /// Under `workspace-write`, the agent's commands keep the network (and
    /// the runner's network namespace): without it the sandbox puts them
    /// in a namespace of their own, where a dev server they start can never
    /// be forwarded (PROTOCOL.md section 5). Default: true.
    pub workspace_network: bool,
    /// `--stream-flush-ms` (zero: no batching).
    pub stream_flush: Duration,
    /// A running turn silent this long is interrupted.
    pub turn_idle_timeout: Duration,
    /// Arguments after `app-server` (e.g. `-c key=value` overrides).
    pub extra_args: Vec<String>,
    /// Variables added to the app-server's environment.
    pub env: Vec<(String, String)>,
    /// The runner's [`TREE_MARKER`](crate::supervise::TREE_MARKER) value.
    pub marker: String,
    /// The cgroup the app-server and everything it starts run in (none:
    /// its process group and marker hold it).
    pub(crate) cgroup: Option<std::sync::Arc<crate::cgroup::Cgroup>>,
    /// The runner's budget for events waiting for Kandan (PROTOCOL.md
    /// section 5): every line read from the app-server is charged to it.
    pub(crate) event_budget: Budget,
}

impl InstanceOptions {
    /// Defaults for everything but the binary and the cwd.
    pub fn new(codex_bin: PathBuf, cwd: PathBuf) -> Self {
        InstanceOptions {
            codex_bin,
            cwd,
            cwd_dir: None,
            start: StartInstance::default(),
            workspace_network: true,
            stream_flush: DEFAULT_STREAM_FLUSH,
            turn_idle_timeout: DEFAULT_TURN_IDLE_TIMEOUT,
            extra_args: Vec::new(),
            env: Vec::new(),
            marker: String::new(),
            cgroup: None,
            event_budget: Budget::new(DEFAULT_EVENT_BUDGET),
        }
    }
}
