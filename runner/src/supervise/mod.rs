//! What the runner starts: spawning it held ([`HeldChild`]) in its cgroup,
//! the set of its processes ([`Members`], one mechanism for the command's
//! tree, Codex instances and editors), passing signals on ([`Signals`]),
//! the command's exit code, and ending what remains of its tree when the
//! runner stops ([`finish`]).

mod child_setup;
mod environment;
mod members;
pub(crate) mod probe;
mod signals;
mod spawn;
mod start_dir;

use std::time::Duration;

use tokio::process::Child;
use tokio::time::{Instant, timeout_at};

// The editor's code-server is set up between fork and exec the same way.
pub(crate) use child_setup::{ParentDeath, in_child as child_setup_in_child};
pub(crate) use environment::scrub as scrub_environment;
pub(crate) use members::{Marked, Members, group_alive};
pub(crate) use signals::{Signal, Signals};
pub(crate) use spawn::{HeldChild, SpawnError, SpawnOptions, TREE_MARKER};
pub(crate) use start_dir::{ESCAPED_ERRNO, cwd_is_under, enter as enter_dir};

/// After a signal, how long the command gets to stop by itself before its
/// tree gets SIGTERM.
const OWN_STOP: Duration = Duration::from_millis(800);
/// From the start of the shutdown, when SIGKILL goes to whatever remains:
/// the runner must be gone within 2 s (PROTOCOL.md section 9), leave
/// included.
const KILL_AT: Duration = Duration::from_millis(1200);
/// How long SIGKILLed processes get to disappear before the runner goes on.
const KILL_GRACE: Duration = Duration::from_millis(200);

/// `-- COMMAND`, released and running.
pub(crate) struct RootCommand {
    child: Child,
    /// Its tree: its cgroup, or (fallback) the processes carrying this
    /// runner's [`spawn::TREE_MARKER`] and the runner's descendants,
    /// `--root-pid` trees left out.
    members: Members,
}

/// Why the runner stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunnerStop {
    /// The command exited with this shell-style code.
    Exited(i32),
    /// The runner got this signal.
    Signal(Signal),
}

impl RootCommand {
    pub(crate) fn new(child: Child, members: Members) -> Self {
        RootCommand { child, members }
    }

    /// Waits for the command; its shell-style exit code (cancel-safe).
    async fn wait(&mut self) -> i32 {
        match self.child.wait().await {
            Ok(status) => exit_code(status),
            Err(err) => {
                tracing::error!("cannot wait for the command: {err}");
                1
            }
        }
    }
}

/// Makes the runner's /proc files (its environment with `KANDAN_TOKEN`,
/// its memory) unreadable to the processes it starts, which run as the same
/// user: they may be the agent. Also blocks core dumps and same-user ptrace.
pub(crate) fn hide_from_tree() {
    child_setup::hide_runner();
}

/// A marker no other runner uses: this runner's pid and start time.
pub(crate) fn new_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Waits for the command and returns its shell-style exit code; pends
/// forever when there is no command.
pub(crate) async fn exit_code_of(command: &mut Option<RootCommand>) -> i32 {
    match command {
        Some(command) => command.wait().await,
        None => std::future::pending().await,
    }
}

/// Ends the command and what remains of its tree, within 1.4 s, and returns
/// the runner's exit code: the command's status, or 128 + N for a signal N
/// when there is no command.
///
/// On a signal the command gets it first (see [`Signals::forward`]) and
/// 0.8 s to exit; then its tree gets SIGTERM; at 1.2 s SIGKILL. When the
/// command has exited, what remains of its tree (a backgrounded grandchild)
/// gets SIGTERM at once and SIGKILL at 1.2 s.
pub(crate) async fn finish(
    command: Option<RootCommand>,
    stop: RunnerStop,
    signals: &Signals,
) -> i32 {
    let start = Instant::now();
    let Some(mut command) = command else {
        return match stop {
            RunnerStop::Exited(code) => code,
            RunnerStop::Signal(signal) => 128 + signal.number(),
        };
    };
    let code = match stop {
        RunnerStop::Exited(code) => code,
        RunnerStop::Signal(signal) => {
            signals.forward(signal, &command.child);
            match timeout_at(start + OWN_STOP, command.wait()).await {
                Ok(code) => code,
                Err(_) => {
                    tracing::info!("the command is still running: ending its tree");
                    command.members.signal(libc::SIGTERM).await;
                    match timeout_at(start + KILL_AT, command.wait()).await {
                        Ok(code) => code,
                        Err(_) => {
                            command.members.kill_now();
                            let _ = command.child.start_kill();
                            let grace = Instant::now() + Duration::from_millis(200);
                            timeout_at(grace, command.wait())
                                .await
                                .unwrap_or(128 + libc::SIGKILL)
                        }
                    }
                }
            }
        }
    };
    end_tree(&command.members, start + KILL_AT).await;
    code
}

/// SIGTERM to what remains of the tree (a backgrounded grandchild), and
/// SIGKILL at `kill_at` to whatever is still there, forked meanwhile too.
async fn end_tree(members: &Members, kill_at: Instant) {
    let pids = members.live().await;
    if pids.is_empty() {
        return;
    }
    tracing::debug!(?pids, "ending what remains of the command's tree");
    members.signal(libc::SIGTERM).await;
    if !members.wait_empty(kill_at).await {
        tracing::info!("killing what remains of the command's tree");
        members.kill(KILL_GRACE).await;
    }
}

/// Shell-style exit code for a finished child: its code, or 128 + signal.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}
