//! The `codex app-server` process: started held (so the caller registers
//! its pid with the detector before it can fork), in its own cgroup (else
//! its own process group) in the instance's cwd, with stdin and stdout for
//! JSON-RPC and stderr kept as a bounded tail; ended with everything it
//! started ([`Members`]).

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};

use crate::cgroup::Cgroup;
use crate::supervise::{HeldChild, Marked, Members, SpawnError, SpawnOptions};

/// How much of stderr is kept for `instance_stopped`.
const STDERR_TAIL_BYTES: usize = 4096;
/// How often stderr's end is checked.
const POLL: Duration = Duration::from_millis(20);
/// After SIGKILL, how long the processes get to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Without a cgroup, marks every process of one instance, whatever its
/// group or session: the app-server runs the agent's commands in sessions
/// of their own (its sandbox), which outlive a SIGKILLed app-server unless
/// swept.
pub(crate) const INSTANCE_MARKER: &str = "KANDAN_CODEX_INSTANCE";

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct AppServerCommand {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) cwd: PathBuf,
    /// `cwd` as the descriptor its check opened; wins over `cwd`.
    pub(crate) cwd_dir: Option<Arc<std::os::fd::OwnedFd>>,
    pub(crate) env: Vec<(String, String)>,
    /// The runner's [`TREE_MARKER`](crate::supervise::TREE_MARKER) value.
    pub(crate) marker: String,
    /// This instance's [`INSTANCE_MARKER`] value.
    pub(crate) instance_marker: String,
    /// The instance's cgroup (none: its process group and marker).
    pub(crate) cgroup: Option<Arc<Cgroup>>,
}

/// Started, blocked before `exec`.
pub(crate) struct HeldAppServer {
    held: HeldChild,
    members: Members,
}

impl HeldAppServer {
    pub(crate) fn spawn(command: &AppServerCommand) -> Result<Self, SpawnError> {
        let mut argv = vec![command.program.to_string_lossy().into_owned()];
        argv.extend(command.args.iter().cloned());
        let options = SpawnOptions {
            marker: command.marker.clone(),
            piped: true,
            cwd: Some(command.cwd.clone()),
            cwd_dir: command.cwd_dir.clone(),
            own_group: true,
            env: [
                command.env.clone(),
                vec![(INSTANCE_MARKER.to_string(), command.instance_marker.clone())],
            ]
            .concat(),
            cgroup: command.cgroup.clone(),
            ..SpawnOptions::default()
        };
        let held = HeldChild::spawn(&argv, &options)?;
        let members = match &command.cgroup {
            Some(cgroup) => Members::Cgroup(Arc::clone(cgroup)),
            None => Members::Marked(
                Marked::new(INSTANCE_MARKER, &command.instance_marker).with_group(held.pid()),
            ),
        };
        Ok(HeldAppServer { held, members })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.held.pid()
    }

    /// Lets it exec; its stderr is read into the tail from now on.
    pub(crate) fn release(self) -> Result<AppServer, SpawnError> {
        let pid = self.pid();
        let mut child = self.held.release()?;
        let tail = StderrTail::default();
        let (url_tx, listen_url) = oneshot::channel();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_stderr(stderr, tail.clone(), url_tx));
        }
        Ok(AppServer {
            child,
            pid,
            members: self.members,
            tail,
            listen_url: Some(listen_url),
        })
    }
}

/// Running.
pub(crate) struct AppServer {
    pub(crate) child: Child,
    pid: u32,
    members: Members,
    pub(crate) tail: StderrTail,
    /// The `ws://` address it prints when started with `--listen ws://...`.
    pub(crate) listen_url: Option<oneshot::Receiver<String>>,
}

/// How the app-server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        Exit {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl AppServer {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGTERM to every process of the instance, SIGKILL to what remains
    /// after `grace`; returns once the leader is reaped and no process of
    /// it is left.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> Exit {
        self.members.signal(libc::SIGTERM).await;
        let exit = match timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok().map(Exit::from),
            Err(_) => {
                tracing::info!(pid = self.pid, "the app-server ignored SIGTERM: killing it");
                None
            }
        };
        self.end_group(exit, Instant::now() + grace).await
    }

    /// After the leader exited (or alongside it): ends what remains of the
    /// instance (the agent's commands, in sessions of their own too),
    /// SIGKILL at `kill_at`, and reaps the leader.
    pub(crate) async fn end_group(&mut self, exit: Option<Exit>, kill_at: Instant) -> Exit {
        self.members.signal(libc::SIGTERM).await;
        while !self.members.settled().await && Instant::now() < kill_at {
            // Reaping the leader is what lets its group empty.
            let _ = self.child.try_wait();
            sleep(POLL).await;
        }
        if !self.members.settled().await {
            self.members.kill(KILL_WAIT).await;
        }
        let exit = match exit {
            Some(exit) => exit,
            None => match self.child.wait().await {
                Ok(status) => Exit::from(status),
                Err(err) => {
                    tracing::warn!("cannot wait for the app-server: {err}");
                    Exit {
                        code: None,
                        signal: None,
                    }
                }
            },
        };
        // The leader is reaped: its group's last zombies go with it (a
        // cgroup no longer counts zombies; their group does until reaped).
        let deadline = Instant::now() + KILL_WAIT;
        let _ = self.members.wait_empty(deadline).await;
        while crate::supervise::group_alive(self.pid) && Instant::now() < deadline {
            sleep(POLL).await;
        }
        exit
    }
}

/// The last lines of stderr, at most [`STDERR_TAIL_BYTES`].
#[derive(Clone, Debug, Default)]
pub(crate) struct StderrTail {
    inner: Arc<Mutex<TailInner>>,
}

#[derive(Debug, Default)]
struct TailInner {
    lines: VecDeque<String>,
    bytes: usize,
    /// stderr reached its end.
    done: bool,
}

impl StderrTail {
    fn push(&self, line: &str) {
        let mut line = line.trim_end().to_string();
        // One line alone fits, with its newline.
        if line.len() >= STDERR_TAIL_BYTES {
            let mut cut = line.len() + 1 - STDERR_TAIL_BYTES;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            line.drain(..cut);
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.bytes += line.len() + 1;
        inner.lines.push_back(line);
        while inner.bytes > STDERR_TAIL_BYTES {
            match inner.lines.pop_front() {
                Some(old) => inner.bytes -= old.len() + 1,
                None => break,
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.done = true;
        }
    }

    /// The tail so far, lines joined by `\n`; `None` when empty.
    pub(crate) fn text(&self) -> Option<String> {
        let inner = self.inner.lock().ok()?;
        let lines: Vec<&str> = inner.lines.iter().map(String::as_str).collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Waits (at most `limit`) for stderr to end, so the tail holds the
    /// last words of a process that just exited.
    pub(crate) async fn settle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.inner.lock().map(|inner| inner.done).unwrap_or(true) {
                return;
            }
            sleep(POLL).await;
        }
    }
}

async fn read_stderr(stderr: ChildStderr, tail: StderrTail, url_tx: oneshot::Sender<String>) {
    let mut url_tx = Some(url_tx);
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Lines are bounded by what the tail keeps; a longer one is cut.
        match (&mut reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                tracing::debug!(target: "codex_stderr", "{}", line.trim_end());
                tail.push(&line);
                if let Some(url) = listening_url(&line)
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(url);
                }
            }
        }
    }
    tail.finish();
}

/// `listening on: ws://127.0.0.1:PORT` from the app-server's banner.
fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on: ")?;
    let url: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
        .collect();
    url.starts_with("ws://").then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_url() {
        assert_eq!(
            listening_url("  listening on: ws://127.0.0.1:42563\n").as_deref(),
            Some("ws://127.0.0.1:42563")
        );
        assert_eq!(listening_url("readyz: http://127.0.0.1:1/readyz"), None);
        assert_eq!(listening_url("listening on: unix:///x"), None);
    }

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_bound() {
        let tail = StderrTail::default();
        assert_eq!(tail.text(), None);
        for i in 0..1000 {
            tail.push(&format!("line {i}\n"));
        }
        let text = tail.text().unwrap();
        assert!(text.len() <= STDERR_TAIL_BYTES);
        assert!(text.ends_with("line 999"));
        assert!(!text.contains("line 1\n"));
        tail.push(&"é".repeat(STDERR_TAIL_BYTES));
        assert!(tail.text().unwrap().len() <= STDERR_TAIL_BYTES);
    }
}
