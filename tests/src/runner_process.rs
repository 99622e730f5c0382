//! `kandan-runner connect` as a real process for the end-to-end tests.
//!
//! The runner runs in its own process group with everything it starts;
//! dropping a [`RunnerProcess`] stops it as a person would (SIGTERM), then
//! kills the whole group. Its stdout and
//! stderr are captured for failure messages.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::simulator::Simulator;
use crate::support::runner_bin;
use crate::vite::{self, kill_group};

/// How long a server started under the runner may take to answer.
const SERVER_READY: Duration = Duration::from_secs(30);

/// How to start the runner; [`RunnerArgs::new`] gives the fast test defaults.
#[derive(Debug, Clone)]
pub struct RunnerArgs {
    pub runner_id: String,
    /// Flags after the defaults (`--debounce-ms 300 --poll-interval-ms 100`,
    /// each left out when the flags set it).
    pub flags: Vec<String>,
    /// The `-- COMMAND` to run as the watched root.
    pub command: Vec<String>,
    /// Extra environment of the runner (the command inherits it).
    pub env: Vec<(String, String)>,
    /// Working directory of the runner (the command inherits it).
    pub cwd: Option<PathBuf>,
}

impl RunnerArgs {
    pub fn new(runner_id: &str, command: Vec<String>) -> Self {
        Self {
            runner_id: runner_id.to_owned(),
            flags: Vec::new(),
            command,
            env: Vec::new(),
            cwd: None,
        }
    }

    /// `testserver.py supervise` as the command, so a test can start and
    /// stop servers inside the watched tree.
    pub fn supervising(runner_id: &str) -> Self {
        Self::new(
            runner_id,
            vec![
                "python3".into(),
                test_server_script().to_string_lossy().into_owned(),
                "supervise".into(),
            ],
        )
    }

    /// Adds flags, e.g. `["--max-request-body", "1048576"]`.
    pub fn flags<const N: usize>(mut self, flags: [&str; N]) -> Self {
        self.flags.extend(flags.iter().map(|f| (*f).to_owned()));
        self
    }
}

/// A running `kandan-runner connect`; dropping it stops it (SIGTERM, then
/// SIGKILL of its process group).
#[derive(Debug)]
pub struct RunnerProcess {
    child: Child,
    pid: u32,
    pgid: Option<libc::pid_t>,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
}

impl RunnerProcess {
    /// Starts the runner against `sim`, with a piped stdin the command inherits.
    pub fn start(sim: &Simulator, args: RunnerArgs) -> Result<Self> {
        let mut command = Command::new(runner_bin());
        command
            .arg("connect")
            .args(["--url", &sim.url()])
            .args(["--token", sim.token()])
            .args(["--runner-id", &args.runner_id]);
        // The fast test defaults, unless the test sets its own.
        for (flag, value) in [("--debounce-ms", "300"), ("--poll-interval-ms", "100")] {
            if !args.flags.iter().any(|f| f == flag) {
                command.args([flag, value]);
            }
        }
        command.args(&args.flags);
        if !args.command.is_empty() {
            command.arg("--").args(&args.command);
        }
        command
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            // The developer's own config file stays out of the tests.
            .env("XDG_CONFIG_HOME", crate::runner_run::NO_CONFIG)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &args.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().context("spawn kandan-runner")?;
        let pid = child.id().context("runner has no pid")?;
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(capture(stderr, output.clone(), ""));
        }
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(capture(stdout, output.clone(), "stdout: "));
        }
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            pid,
            pgid: libc::pid_t::try_from(pid).ok(),
            output,
        })
    }

    /// Starts the runner with `testserver.py supervise` as its command, so
    /// a test can start and stop servers inside the watched tree.
    pub fn supervising(sim: &Simulator, runner_id: &str, flags: &[&str]) -> Result<Self> {
        let mut args = RunnerArgs::supervising(runner_id);
        args.flags = flags.iter().map(|f| (*f).to_owned()).collect();
        Self::start(sim, args)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the runner (and its command) printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// The first stderr line (it names the backend), waiting for it.
    pub async fn backend_line(&self) -> Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.output();
            if let Some(line) = output.lines().find(|l| !l.starts_with("stdout: "))
                && output.contains('\n')
            {
                return Ok(line.to_owned());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the runner printed no backend line: {output}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True while the runner has not exited.
    /// SIGTERM to the runner alone; waits (up to 10 s) for it to exit and
    /// returns its exit code.
    pub async fn terminate(&mut self) -> Result<i32> {
        let pid = libc::pid_t::try_from(self.pid)?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("the runner did not exit within 10 s of SIGTERM")??;
        Ok(status.code().unwrap_or(-1))
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The runner's resident set size in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("read the runner's /proc status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in the runner's status")
    }

    /// Writes one line to the command's stdin (the supervisor's orders).
    pub async fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Has the supervisor start server `name` on `port`, and waits until it
    /// answers `/ready` as `name` (directly, not through the runner).
    pub async fn start_server(&mut self, name: &str, port: u16) -> Result<()> {
        self.send_line(&format!("start {name} {port}")).await?;
        let expected = format!("hello from {name}");
        let deadline = tokio::time::Instant::now() + SERVER_READY;
        loop {
            let host = format!("localhost:{port}");
            if let Ok(resp) = vite::http_get(port, "/ready", &host).await
                && resp.body.contains(&expected)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("server {name} not up on {port}: {}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Has the supervisor stop server `name` on `port`, and waits until the
    /// port refuses connections.
    pub async fn stop_server(&mut self, name: &str, port: u16) -> Result<()> {
        self.send_line(&format!("stop {name}")).await?;
        let deadline = tokio::time::Instant::now() + SERVER_READY;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            if tokio::time::Instant::now() > deadline {
                bail!("server {name} still listening on {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

impl Drop for RunnerProcess {
    /// SIGTERM first, so the runner ends the editors and instances it
    /// started in their own cgroups (a SIGKILL of its group would leave them
    /// to the next runner's sweep); then SIGKILL for whatever is left.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None))
            && let Some(pid) = self.child.id()
        {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }
}

/// `tests/fixtures/testserver.py` in this checkout.
pub fn test_server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/testserver.py")
}

async fn capture(stream: impl AsyncRead + Unpin, output: Arc<Mutex<String>>, prefix: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut output) = output.lock() {
            output.push_str(prefix);
            output.push_str(&line);
            output.push('\n');
        }
    }
}
