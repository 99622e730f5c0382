//! The `kandan-runner connect` a benchmark forwards through: a release
//! build started against the simulator with a command of the bench's
//! choosing (its local server, or Vite), output to a log file.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::simulator::Simulator;

/// What to start under the runner.
pub struct Launch<'a> {
    /// The `kandan-runner` binary (a release build).
    pub runner: &'a Path,
    pub runner_id: &'a str,
    /// The `-- COMMAND` the runner starts and watches.
    pub command: Vec<OsString>,
    /// Environment and working directory of the runner; the command inherits both.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Where the runner's and the command's output go.
    pub log: PathBuf,
    /// Run the runner under valgrind's callgrind with instrumentation off
    /// (see [`crate::bench::instructions`]), the profile written here.
    pub callgrind: Option<PathBuf>,
}

/// The runner process, in its own process group; stopped (TERM, then KILL
/// of the group) when dropped, however the run ends. It dies with the bench
/// (`PR_SET_PDEATHSIG`), and its command dies with it (the runner sets the
/// same on the command).
pub struct RunnerProcess {
    child: Child,
    binary: PathBuf,
    log: PathBuf,
}

impl RunnerProcess {
    pub fn spawn(sim: &Simulator, launch: Launch<'_>) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(&launch.log)
            .with_context(|| format!("creating {}", launch.log.display()))?;
        // A relative path would be looked up from `cwd`.
        let runner = std::path::absolute(launch.runner)
            .with_context(|| format!("locating {}", launch.runner.display()))?;
        let mut command = match &launch.callgrind {
            None => Command::new(&runner),
            Some(out) => crate::bench::instructions::under_callgrind(&runner, out),
        };
        command
            .args(["connect", "--url", &sim.url(), "--token", sim.token()])
            .args(["--runner-id", launch.runner_id, "--debounce-ms", "0"])
            .args(["--poll-interval-ms", "100", "--"])
            .args(&launch.command)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if let Some(cwd) = &launch.cwd {
            command.current_dir(cwd);
        }
        // SAFETY: prctl is async-signal-safe; it only sets a flag of the child.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", runner.display()))?;
        Ok(Self {
            child,
            binary: runner,
            log: launch.log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The runner binary it runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The last 20 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; pid is our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its group holds whatever it started that did not leave the group.
        crate::vite::kill_group(pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
