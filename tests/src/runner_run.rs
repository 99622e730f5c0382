//! A `kandan-runner` run to its end, for the shutdown and secrets tests:
//! any subcommand and environment, stdout and stderr kept apart, signals
//! sent to the runner alone, and its exit status with how long it took.
//!
//! The runner leads a process group of its own (the command it starts
//! shares it), so dropping a [`RunnerRun`] kills whatever is left.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::support::runner_bin;
use crate::vite::kill_group;

/// True while a pid exists and is not a zombie.
pub use crate::bench::procstat::alive;

/// An `XDG_CONFIG_HOME` with no config file in it, for every runner a
/// test starts (a test that wants a file passes `--config` or its own).
pub const NO_CONFIG: &str = "/nonexistent/kandan-runner-tests";

/// `watch --json --backend procfs --debounce-ms 100`: a `watch` whose
/// JSON lines a test reads, on the backend every machine has; add flags,
/// then `--` and the command.
pub fn watch_json_args() -> Vec<String> {
    [
        "watch",
        "--json",
        "--backend",
        "procfs",
        "--debounce-ms",
        "100",
    ]
    .map(String::from)
    .to_vec()
}

/// A running `kandan-runner`.
#[derive(Debug)]
pub struct RunnerRun {
    child: Child,
    pid: u32,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl RunnerRun {
    /// Starts `kandan-runner ARGS` with `env` added (`RUST_LOG` is `info`
    /// unless `env` sets it) and stdin from /dev/null.
    pub fn start<I, S>(args: I, env: &[(&str, &str)]) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(runner_bin());
        command
            .args(args)
            .env("RUST_LOG", "info")
            // The developer's own config file stays out of the tests.
            .env("XDG_CONFIG_HOME", NO_CONFIG)
            .envs(env.iter().copied())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("spawn kandan-runner")?;
        let pid = child.id().context("the runner has no pid")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(err, stderr.clone()));
        }
        Ok(Self {
            child,
            pid,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the runner alone (not its group).
    pub fn signal(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill on our own child's pid, not reaped yet.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Waits for the runner to exit, at most `limit`; its status and how
    /// long it took from this call.
    pub async fn wait(&mut self, limit: Duration) -> Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| {
                format!("the runner still runs after {limit:?}: {}", self.output())
            })??;
        // Let the readers take the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok((status, start.elapsed()))
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Both streams, for failure messages.
    pub fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }

    /// Waits until a stdout line satisfies `wanted`; returns that line.
    pub async fn wait_stdout_line(
        &self,
        wanted: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.stdout().lines().find(|l| wanted(l)) {
                return Ok(line.to_owned());
            }
            if Instant::now() > deadline {
                bail!("no such stdout line after {limit:?}: {}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunnerRun {
    fn drop(&mut self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.pid) {
            kill_group(pgid);
        }
    }
}

/// Waits until none of `pids` is alive, at most `limit`; false if some still are.
pub async fn all_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|&pid| alive(pid)) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn capture(stream: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut text) = into.lock() {
            text.push_str(&line);
            text.push('\n');
        }
    }
}
