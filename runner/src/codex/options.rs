//! How to start an instance: `start_instance`'s fields and the runner's
//! flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::budget::{Budget, DEFAULT_EVENT_BUDGET};

/// `--stream-flush-ms` default.
pub const DEFAULT_STREAM_FLUSH: Duration = Duration::from_millis(50);
/// `--turn-idle-timeout-ms` default.
pub const DEFAULT_TURN_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// `approvalPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    Untrusted,
    OnRequest,
    Never,
}

/// `sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

/// How to start an instance (`start_instance`, plus the runner's flags).
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// The `codex` binary (`--codex-bin`, `KANDAN_CODEX_BIN`, `PATH`).
    pub codex_bin: PathBuf,
    /// Already checked by [`CwdPolicy`](crate::workdir::CwdPolicy).
    pub cwd: PathBuf,
    /// `cwd` as the descriptor the check opened: the app-server starts in
    /// it ([`CheckedCwd::dir`](crate::workdir::CheckedCwd::dir)).
    pub cwd_dir: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Resume this thread instead of starting one.
    pub thread_id: Option<String>,
    pub model: Option<String>,
    pub reasoning_effort: Option<String>,
    pub approval_policy: Option<ApprovalPolicy>,
    pub sandbox: Option<SandboxMode>,
    /// `serviceTier: "priority"`.
    pub fast: bool,
    /// Under `workspace-write`, the agent's commands keep the network (and
    /// the runner's network namespace): without it the sandbox puts them
    /// in a namespace of their own, where a dev server they start can never
    /// be forwarded (PROTOCOL.md section 5). Default: true.
    pub workspace_network: bool,
    /// `launchTui`: the app-server listens on `ws://127.0.0.1:<port>` (with
    /// a capability token) instead of stdio, so `codex --remote` can attach.
    pub launch_tui: bool,
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
    pub cgroup: Option<std::sync::Arc<crate::cgroup::Cgroup>>,
    /// The runner's budget for events waiting for Kandan (PROTOCOL.md
    /// section 5): every line read from the app-server is charged to it.
    pub event_budget: Budget,
}

impl InstanceOptions {
    /// Defaults for everything but the binary and the cwd.
    pub fn new(codex_bin: PathBuf, cwd: PathBuf) -> Self {
        InstanceOptions {
            codex_bin,
            cwd,
            cwd_dir: None,
            thread_id: None,
            model: None,
            reasoning_effort: None,
            approval_policy: None,
            sandbox: None,
            fast: false,
            workspace_network: true,
            launch_tui: false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_and_sandbox_use_the_wire_names() {
        assert_eq!(json!(ApprovalPolicy::OnRequest), json!("on-request"));
        assert_eq!(
            json!(SandboxMode::DangerFullAccess),
            json!("danger-full-access")
        );
        let policy: ApprovalPolicy = serde_json::from_value(json!("untrusted")).unwrap();
        assert_eq!(policy, ApprovalPolicy::Untrusted);
    }
}
