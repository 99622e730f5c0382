//! A process outside the runner's tree that wants the runner's traffic
//! (`fixtures/outsider.py`), for the tests that play the attacker.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::e2e::WAIT;
use crate::vite::kill_group;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `fixtures/outsider.py`, started by the test itself: not a descendant of
/// the runner. Dropping it kills it.
pub struct Outsider {
    child: Child,
    count: tempfile::NamedTempFile,
}

impl Outsider {
    /// Starts binding `addr:port` in a loop; returns at once.
    pub fn spawn(addr: &str, port: u16, reuseport: bool) -> Result<Self> {
        let count = tempfile::NamedTempFile::new()?;
        let mut command = Command::new("python3");
        command
            .arg(fixture("outsider.py"))
            .args(["--port", &port.to_string(), "--addr", addr])
            .args(["--count", &count.path().to_string_lossy()]);
        if reuseport {
            command.args(["--reuseport", "1"]);
        }
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn outsider.py")?;
        Ok(Self { child, count })
    }

    /// Waits until it holds the port.
    pub async fn bound(&mut self) -> Result<()> {
        let stdout = self.child.stdout.take().context("outsider stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .context("the outsider never bound")??;
        ensure!(line.as_deref() == Some("bound"), "outsider said {line:?}");
        Ok(())
    }

    /// Bytes of forwarded traffic it received so far.
    pub fn received(&self) -> u64 {
        std::fs::read_to_string(self.count.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            kill_group(pid);
        }
    }
}
