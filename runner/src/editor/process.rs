//! One code-server process group: spawning it (its own session, the
//! editor's XDG dirs, no runner secrets), waiting until it answers, and
//! ending every process of it.
//!
//! Every process carries [`EDITOR_MARKER`] in its environment: a terminal
//! opened in the editor gets a session of its own (node-pty calls setsid),
//! so the process group alone would miss it.

use std::collections::VecDeque;
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
use crate::supervise::{ParentDeath, child_setup_in_child, exit_code, scrub_environment};

/// Inherited by every process of an editor; its value is the editor id.
pub(crate) const EDITOR_MARKER: &str = "KANDAN_RUNNER_EDITOR";
/// code-server's own password variables (`--auth none` is meant); the
/// runner's variables go as for the root command (`scrub_environment`).
const REMOVED_VARS: [&str; 2] = ["PASSWORD", "HASHED_PASSWORD"];
/// The line code-server prints once its socket listens.
const LISTENING: &str = "HTTP server listening on ";
/// Lines of output kept for error messages.
const TAIL_LINES: usize = 30;
/// After SIGTERM, how long the group gets before SIGKILL (code-server ends
/// in under 0.3 s when signalled as a group).
const TERM_GRACE: Duration = Duration::from_millis(1500);
/// After SIGKILL, how long the processes get to disappear.
const KILL_GRACE: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(20);
/// How long the output of an exited code-server may take to be read.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// A command for the editor's code-server (the editor itself or
/// `--install-extension`): its XDG dirs, the marker, no secrets, stdin
/// closed, and a session (so a process group) of its own.
pub(crate) fn command(program: &Path, dirs: &EditorDirs, id: &EditorId) -> Command {
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
            child_setup_in_child(parent_death)
        });
    }
    command
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

    pub fn text(&self) -> String {
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

/// A running code-server group. Dropping it SIGKILLs whatever remains, so
/// a cancelled start or a dropped runtime leaves nothing behind.
pub(crate) struct Group {
    child: Child,
    pgid: libc::pid_t,
    id: EditorId,
    tail: Tail,
    /// The address after [`LISTENING`], once printed.
    listening: watch::Receiver<Option<String>>,
    /// Set once every process is gone.
    ended: bool,
}

impl Group {
    /// Starts `command` (from [`command`]) and collects its output.
    pub fn spawn(mut command: Command, program: &Path, id: &EditorId) -> Result<Self, EditorError> {
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
        Ok(Group {
            child,
            pgid,
            id: id.clone(),
            tail,
            listening,
            ended: false,
        })
    }

    /// The group's leader; also the process group id.
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pgid).unwrap_or(0)
    }

    pub fn tail(&self) -> String {
        self.tail.text()
    }

    /// Waits until code-server prints that it listens on `socket` and
    /// `/healthz` answers 200 there, within `timeout`.
    pub async fn wait_ready(
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
    pub async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().map(exit_code)
    }

    /// Ends every process of the editor: SIGTERM to the group and the
    /// marked processes, SIGKILL to what remains after a grace period.
    /// Returns the leader's shell-style exit code when it could be read.
    pub async fn end(&mut self) -> Option<i32> {
        if self.ended {
            return self.child.try_wait().ok().flatten().map(exit_code);
        }
        signal_members(self.pgid, &self.id, libc::SIGTERM).await;
        let term_deadline = Instant::now() + TERM_GRACE;
        let mut code = tokio::time::timeout_at(term_deadline, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
            .map(exit_code);
        while Instant::now() < term_deadline && !members(self.pgid, &self.id).await.is_empty() {
            sleep(POLL).await;
        }
        if !members(self.pgid, &self.id).await.is_empty() {
            tracing::info!(editor = %self.id, "the editor did not stop on SIGTERM: killing it");
            signal_members(self.pgid, &self.id, libc::SIGKILL).await;
            let kill_deadline = Instant::now() + KILL_GRACE;
            while Instant::now() < kill_deadline && !members(self.pgid, &self.id).await.is_empty() {
                sleep(POLL).await;
            }
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
            kill_now(self.pgid, &self.id);
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

/// SIGKILL to the group and the marked processes, without waiting (for Drop).
fn kill_now(pgid: libc::pid_t, id: &EditorId) {
    for pid in member_pids(pgid, id.as_str()) {
        send(pid, libc::SIGKILL);
    }
    if pgid > 1 {
        // SAFETY: kill has no memory preconditions; -pgid names our group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

async fn signal_members(pgid: libc::pid_t, id: &EditorId, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
    for pid in members(pgid, id).await {
        send(pid, sig);
    }
}

fn send(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The editor's live processes, off the async threads (it reads /proc).
async fn members(pgid: libc::pid_t, id: &EditorId) -> Vec<libc::pid_t> {
    let id = id.as_str().to_owned();
    tokio::task::spawn_blocking(move || member_pids(pgid, &id))
        .await
        .unwrap_or_default()
}

/// Live (not zombie) processes in the group `pgid` or carrying the marker
/// of editor `id`.
pub(crate) fn member_pids(pgid: libc::pid_t, id: &str) -> Vec<libc::pid_t> {
    let mut pids = marked_pids(id, Some(pgid));
    // Without /proc only the group is known: `kill(-pgid, 0)` says whether
    // it has members (zombies included).
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: kill with signal 0 only checks.
        if pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0 {
            pids.push(pgid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Live processes carrying the marker of editor `id`, plus those of the
/// group `pgid` when given (never group 0: the kernel's threads).
#[cfg(target_os = "linux")]
pub(crate) fn marked_pids(id: &str, pgid: Option<libc::pid_t>) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgid = pgid.filter(|&pgid| pgid > 1);
    let marker = format!("{EDITOR_MARKER}={id}");
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| {
            let Some((zombie, group)) = stat_of(pid) else {
                return false;
            };
            !zombie && (Some(group) == pgid || has_marker(pid, &marker))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn marked_pids(_id: &str, _pgid: Option<libc::pid_t>) -> Vec<libc::pid_t> {
    Vec::new()
}

/// SIGKILL to every process marked for editor `id` (an editor of a runner
/// that died).
pub(crate) fn kill_marked(id: &str) -> usize {
    let pids = marked_pids(id, None);
    for &pid in &pids {
        send(pid, libc::SIGKILL);
    }
    pids.len()
}

/// (zombie, process group) from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn stat_of(pid: libc::pid_t) -> Option<(bool, libc::pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// `pid (comm) S ppid pgrp ...`; `comm` may hold spaces and parentheses.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str) -> Option<(bool, libc::pid_t)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((matches!(state, "Z" | "X" | "x"), pgrp))
}

#[cfg(target_os = "linux")]
fn has_marker(pid: libc::pid_t, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that leaves the group (a terminal's shell does: node-pty
    /// calls setsid) still goes, found by its marker; and nothing of the
    /// runner's secrets reaches the group.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn end_reaches_processes_that_left_the_group() {
        let scratch = tempfile::tempdir().unwrap();
        let id = EditorId::generate().unwrap();
        let dirs = EditorDirs::new(&scratch.path().join("state"), &id);
        let _lock = dirs.create(&scratch.path().join("state")).unwrap();
        let escaped = scratch.path().join("escaped.pid");
        let mut command = command(Path::new("/bin/sh"), &dirs, &id);
        command.arg("-c").arg(format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 300' & exec sleep 300",
            escaped.display()
        ));
        let mut group = Group::spawn(command, Path::new("/bin/sh"), &id).unwrap();
        let leader = group.pgid;
        let deadline = Instant::now() + Duration::from_secs(10);
        let escaped_pid: libc::pid_t = loop {
            if let Some(pid) = std::fs::read_to_string(&escaped)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the escaped child never started");
            sleep(POLL).await;
        };
        assert_ne!(stat_of(escaped_pid).unwrap().1, leader, "it left the group");
        let mut members = member_pids(leader, id.as_str());
        members.sort();
        let mut expected = vec![leader, escaped_pid];
        expected.sort();
        assert_eq!(members, expected);
        let environ = std::fs::read(format!("/proc/{escaped_pid}/environ")).unwrap();
        assert!(!environ.windows(13).any(|w| w == b"KANDAN_TOKEN="));

        let code = group.end().await;
        assert_eq!(code, Some(128 + libc::SIGTERM));
        assert!(member_pids(leader, id.as_str()).is_empty());
        assert!(stat_of(escaped_pid).is_none_or(|(zombie, _)| zombie));
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(parse_stat("42 (node) S 1 42 42 0 -1"), Some((false, 42)));
        assert_eq!(parse_stat("43 (a (b) c) Z 1 7 7 0 -1"), Some((true, 7)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
