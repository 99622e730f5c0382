//! One code-server: spawning it (its own cgroup, else its own session; the
//! editor's XDG dirs, no runner secrets), waiting until it answers, and
//! ending every process of it ([`Members`]).
//!
//! Without a cgroup, every process carries [`EDITOR_MARKER`] in its
//! environment: a terminal opened in the editor gets a session of its own
//! (node-pty calls setsid), so the process group alone would miss it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::dirs::EditorDirs;
use super::{EditorError, EditorId, healthz};
use crate::cgroup::Cgroup;
use crate::supervise::{
    ESCAPED_ERRNO, Marked, Members, ParentDeath, child_setup_in_child, cwd_is_under, enter_dir,
    exit_code, scrub_environment,
};

/// Inherited by every process of an editor; its value is the editor id.
pub(crate) const EDITOR_MARKER: &str = "KANDAN_RUNNER_EDITOR";
/// code-server's own password variables (`--auth none` is meant); the
/// runner's variables go as for the root command (`scrub_environment`).
const REMOVED_VARS: [&str; 2] = ["PASSWORD", "HASHED_PASSWORD"];
/// The line code-server prints once its socket listens.
const LISTENING: &str = "HTTP server listening on ";
/// Lines of output kept for error messages.
const TAIL_LINES: usize = 30;
/// After SIGTERM, how long the editor gets before SIGKILL (code-server ends
/// in under 0.3 s when signalled as a whole).
const TERM_GRACE: Duration = Duration::from_millis(1500);
/// After SIGKILL, how long the processes get to disappear.
const KILL_GRACE: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(20);
/// How long the output of an exited code-server may take to be read.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// A command for the editor's code-server (the editor itself or
/// `--install-extension`): its XDG dirs, the marker, no secrets, stdin
/// closed, a session (so a process group) of its own, and `cgroup` when
/// there is one.
pub(crate) fn command(
    program: &Path,
    dirs: &EditorDirs,
    id: &EditorId,
    cgroup: Option<&Cgroup>,
) -> Result<Command, EditorError> {
    // Moved into the hook below, so it stays open until the spawn.
    let cgroup_procs = match cgroup {
        Some(cgroup) => Some(
            cgroup
                .procs_for_child()
                .map_err(|source| EditorError::Spawn {
                    program: cgroup.path().to_path_buf(),
                    source,
                })?,
        ),
        None => None,
    };
    let mut command = Command::new(program);
    scrub_environment(command.as_std_mut());
    command
        .env("XDG_DATA_HOME", &dirs.xdg_data)
        .env("XDG_CONFIG_HOME", &dirs.xdg_config)
        .env("XDG_CACHE_HOME", &dirs.xdg_cache)
        .env(EDITOR_MARKER, id.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in REMOVED_VARS {
        command.env_remove(var);
    }
    let parent_death = ParentDeath::for_this_thread();
    // SAFETY: setsid and the async-signal-safe calls of child_setup only.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            child_setup_in_child(parent_death, cgroup_procs.as_ref().map(|fd| fd.as_raw_fd()))
        });
    }
    Ok(command)
}

/// The editor itself: code-server on its private socket, without auth,
/// telemetry or update checks, opening `cwd`.
pub(crate) fn serve(
    program: &Path,
    dirs: &EditorDirs,
    id: &EditorId,
    cgroup: Option<&Cgroup>,
    cwd: &Path,
) -> Result<Command, EditorError> {
    let mut command = command(program, dirs, id, cgroup)?;
    command
        .arg("--socket")
        .arg(&dirs.socket)
        .args([
            "--socket-mode",
            "600",
            "--auth",
            "none",
            "--config",
            "/dev/null",
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-workspace-trust",
        ])
        .arg("--user-data-dir")
        .arg(&dirs.user_data)
        .arg("--extensions-dir")
        .arg(&dirs.extensions)
        .arg(cwd);
    Ok(command)
}

/// Starts `command` in `dir` (the descriptor the cwd check opened) and,
/// where a child can read its own directory, fails it before `exec` with
/// [`ESCAPED_ERRNO`] unless that still lies under one of `roots` (canonical,
/// as bytes; `None`: no policy to check against).
pub(crate) fn start_in(command: &mut Command, dir: Arc<OwnedFd>, roots: Option<Vec<Vec<u8>>>) {
    // SAFETY: fchdir, readlink into the stack and byte comparisons only.
    unsafe {
        command.pre_exec(move || {
            enter_dir(dir.as_raw_fd())?;
            match &roots {
                Some(roots) if !cwd_is_under(roots) => {
                    Err(std::io::Error::from_raw_os_error(ESCAPED_ERRNO))
                }
                _ => Ok(()),
            }
        });
    }
}

/// The last lines a process printed, for error messages.
#[derive(Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub(crate) fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// How the wait for the listening line ended.
enum Seen {
    Line,
    OutputClosed,
    Timeout,
}

/// A running code-server and what it started. Dropping it SIGKILLs
/// whatever remains, so a cancelled start or a dropped runtime leaves
/// nothing behind.
pub(crate) struct Group {
    child: Child,
    pgid: libc::pid_t,
    id: EditorId,
    members: Members,
    tail: Tail,
    /// The address after [`LISTENING`], once printed.
    listening: watch::Receiver<Option<String>>,
    /// Set once every process is gone.
    ended: bool,
}

impl Group {
    /// Starts `command` (from [`command`], with the same `cgroup`) and
    /// collects its output.
    pub(crate) fn spawn(
        mut command: Command,
        program: &Path,
        id: &EditorId,
        cgroup: Option<Arc<Cgroup>>,
    ) -> Result<Self, EditorError> {
        let mut child = command.spawn().map_err(|source| EditorError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
        let pgid = child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .unwrap_or(0);
        let tail = Tail::default();
        let (listening_tx, listening) = watch::channel(None);
        let listening_tx = Arc::new(listening_tx);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(out, tail.clone(), listening_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_lines(err, tail.clone(), listening_tx));
        }
        let members = match cgroup {
            Some(cgroup) => Members::Cgroup(cgroup),
            None => Members::Marked(
                Marked::new(EDITOR_MARKER, id.as_str())
                    .with_group(u32::try_from(pgid).unwrap_or(0)),
            ),
        };
        Ok(Group {
            child,
            pgid,
            id: id.clone(),
            members,
            tail,
            listening,
            ended: false,
        })
    }

    /// The group's leader; also the process group id.
    pub(crate) fn pid(&self) -> u32 {
        u32::try_from(self.pgid).unwrap_or(0)
    }

    pub(crate) fn tail(&self) -> String {
        self.tail.text()
    }

    /// Its cgroup's folder, when it has one.
    pub(crate) fn cgroup_path(&self) -> Option<std::path::PathBuf> {
        match &self.members {
            Members::Cgroup(cgroup) => Some(cgroup.path().to_path_buf()),
            Members::Marked(_) => None,
        }
    }

    /// Waits until code-server prints that it listens on `socket` and
    /// `/healthz` answers 200 there, within `timeout`.
    pub(crate) async fn wait_ready(
        &mut self,
        socket: &Path,
        timeout: Duration,
    ) -> Result<(), EditorError> {
        let deadline = Instant::now() + timeout;
        let not_ready = |stage, tail| EditorError::NotReady {
            timeout,
            stage,
            tail,
        };
        let wanted = socket.to_string_lossy().into_owned();
        let mut listening = self.listening.clone();
        // The watch guard is not Send: only whether the line came is kept.
        let seen = async {
            match tokio::time::timeout_at(
                deadline,
                listening.wait_for(|line| line.as_deref() == Some(wanted.as_str())),
            )
            .await
            {
                Ok(Ok(_)) => Seen::Line,
                Ok(Err(_)) => Seen::OutputClosed,
                Err(_) => Seen::Timeout,
            }
        };
        let seen = tokio::select! {
            status = self.child.wait() => return Err(self.exited_early(status).await),
            seen = seen => seen,
        };
        match seen {
            Seen::Line => {}
            // The output closed without the line: it is exiting.
            Seen::OutputClosed => {
                let status = tokio::time::timeout_at(deadline, self.child.wait()).await;
                return Err(match status {
                    Ok(status) => self.exited_early(status).await,
                    Err(_) => not_ready("listening line", self.tail()),
                });
            }
            Seen::Timeout => return Err(not_ready("listening line", self.tail())),
        }
        loop {
            match healthz::status(socket, "/healthz").await {
                Ok(200) => return Ok(()),
                Ok(status) => tracing::debug!("editor /healthz answered {status}"),
                Err(err) => tracing::debug!("editor /healthz: {err}"),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.exited_early(Ok(status)).await);
            }
            if Instant::now() + POLL > deadline {
                return Err(not_ready("/healthz", self.tail()));
            }
            sleep(POLL).await;
        }
    }

    async fn exited_early(&self, status: std::io::Result<std::process::ExitStatus>) -> EditorError {
        // Its last lines may still be in the pipes: wait (briefly) until
        // both readers are done, which drops the sender.
        let mut output = self.listening.clone();
        let _ = tokio::time::timeout(OUTPUT_DRAIN, async {
            while output.changed().await.is_ok() {}
        })
        .await;
        EditorError::ExitedEarly {
            code: status.map(exit_code).unwrap_or(1),
            tail: self.tail(),
        }
    }

    /// Waits for the leader to exit by itself; its shell-style code.
    /// Cancel-safe.
    pub(crate) async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().map(exit_code)
    }

    /// Ends every process of the editor: SIGTERM to all, SIGKILL to what
    /// remains after a grace period. Returns the leader's shell-style exit
    /// code when it could be read.
    pub(crate) async fn end(&mut self) -> Option<i32> {
        if self.ended {
            return self.child.try_wait().ok().flatten().map(exit_code);
        }
        self.members.signal(libc::SIGTERM).await;
        let term_deadline = Instant::now() + TERM_GRACE;
        let mut code = tokio::time::timeout_at(term_deadline, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
            .map(exit_code);
        if !self.members.wait_empty(term_deadline).await {
            tracing::info!(editor = %self.id, "the editor did not stop on SIGTERM: killing it");
            self.members.kill(KILL_GRACE).await;
        }
        if code.is_none() {
            code = tokio::time::timeout(KILL_GRACE, self.child.wait())
                .await
                .ok()
                .and_then(Result::ok)
                .map(exit_code);
        }
        self.ended = true;
        code
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.ended {
            self.members.kill_now();
        }
    }
}

/// Reads `stream` line by line into the tail and the log, and publishes the
/// address of the listening line.
async fn read_lines(
    stream: impl AsyncRead + Unpin,
    tail: Tail,
    listening: Arc<watch::Sender<Option<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "runner::editor::code_server", "{line}");
        if let Some((_, address)) = line.split_once(LISTENING) {
            listening.send_replace(Some(address.trim().to_string()));
        }
        tail.push(line);
    }
}

/// Live (not zombie) processes in the group `pgid` or carrying the marker
/// of editor `id`.
#[cfg(test)]
pub(crate) fn member_pids(pgid: libc::pid_t, id: &str) -> Vec<u32> {
    let marked = Marked::new(EDITOR_MARKER, id).with_group(u32::try_from(pgid).unwrap_or(0));
    let mut pids = Members::Marked(marked).pids();
    pids.sort_unstable();
    pids
}

/// SIGKILL to every process marked for editor `id` (an editor of a runner
/// that died without a cgroup); how many there were.
pub(crate) fn kill_marked(id: &str) -> usize {
    Members::Marked(Marked::new(EDITOR_MARKER, id)).kill_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (state, process group) of `pid` from /proc.
    fn state_and_group(pid: u32) -> Option<(String, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.to_string();
        Some((state, fields.nth(1)?.parse().ok()?))
    }

    /// Without a cgroup, a process that leaves the group (a terminal's
    /// shell does: node-pty calls setsid) still goes, found by its marker;
    /// and nothing of the runner's secrets reaches the group.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn end_reaches_processes_that_left_the_group() {
        let scratch = tempfile::tempdir().unwrap();
        let id = EditorId::generate().unwrap();
        let dirs = EditorDirs::new(&scratch.path().join("state"), &id);
        let _lock = dirs.create(&scratch.path().join("state")).unwrap();
        let escaped = scratch.path().join("escaped.pid");
        let mut command = command(Path::new("/bin/sh"), &dirs, &id, None).unwrap();
        command.arg("-c").arg(format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 300' & exec sleep 300",
            escaped.display()
        ));
        let mut group = Group::spawn(command, Path::new("/bin/sh"), &id, None).unwrap();
        let leader = u32::try_from(group.pgid).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let escaped_pid: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&escaped)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the escaped child never started");
            sleep(POLL).await;
        };
        assert_ne!(
            state_and_group(escaped_pid).unwrap().1,
            leader,
            "it left the group"
        );
        let mut expected = vec![leader, escaped_pid];
        expected.sort();
        assert_eq!(member_pids(group.pgid, id.as_str()), expected);
        let environ = std::fs::read(format!("/proc/{escaped_pid}/environ")).unwrap();
        assert!(!environ.windows(13).any(|w| w == b"KANDAN_TOKEN="));

        let code = group.end().await;
        assert_eq!(code, Some(128 + libc::SIGTERM));
        assert!(member_pids(group.pgid, id.as_str()).is_empty());
        assert!(state_and_group(escaped_pid).is_none_or(|(state, _)| state == "Z"));
    }
}
