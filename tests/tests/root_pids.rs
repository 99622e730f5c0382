//! `--root-pid` through the binary: a pid with no process is a one-line
//! error, exit 2; a root the runner cannot read gets a warning saying why;
//! with only `--root-pid` roots, `watch` and `connect` exit 0 once all of
//! them have ended (`connect` after leaving Kandan); a bare `watch` says
//! what it watches.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::runner_run::RunnerRun;
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::{privileged, runner_bin};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A pid that surely has no process: one that just ended and was reaped.
fn dead_pid() -> Result<u32> {
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

/// A root process the test ends when it chooses (`end`), so that no
/// check depends on how fast a loaded machine starts the runner.
struct Root {
    child: tokio::process::Child,
    pid: String,
}

impl Root {
    /// `sleep 600`.
    fn sleeping() -> Result<Self> {
        let child = tokio::process::Command::new("sleep")
            .arg("600")
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("no pid")?.to_string();
        Ok(Self { child, pid })
    }

    /// A process that listens on a loopback port; (root, port), once it listens.
    async fn listening() -> Result<(Self, u16)> {
        let script = "import socket, time\n\
             s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
             print(s.getsockname()[1], flush=True)\n\
             time.sleep(600)\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("no pid")?.to_string();
        let stdout = child.stdout.take().context("no stdout")?;
        let port = BufReader::new(stdout)
            .lines()
            .next_line()
            .await?
            .context("the root printed no port")?
            .trim()
            .parse()?;
        Ok((Self { child, pid }, port))
    }

    /// Ends and reaps the root (a zombie would still count as alive).
    async fn end(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Waits until the runner has printed its backend line: it has checked its
/// roots and is watching them.
async fn wait_watching(runner: &RunnerRun) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !runner.stderr().contains("backend: ") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the runner did not start: {}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_root_pid_with_no_process_is_one_line_and_exit_2() -> Result<()> {
    let pid = dead_pid()?.to_string();
    for command in ["watch", "connect"] {
        let mut args = vec![command, "--backend", "procfs", "--root-pid", &pid];
        if command == "connect" {
            args.extend(["--url", "ws://127.0.0.1:9/runner/socket"]);
        }
        let mut runner = RunnerRun::start(&args, &[("RUST_LOG", "warn")])?;
        let (status, _) = runner.wait(Duration::from_secs(10)).await?;
        let stderr = runner.stderr();
        ensure!(status.code() == Some(2), "{command}: {status} {stderr}");
        ensure!(
            stderr == format!("error: --root-pid {pid}: no such process\n"),
            "{command}: {stderr:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn watch_exits_0_once_its_root_pids_have_ended() -> Result<()> {
    let short = Root::sleeping()?;
    let long = Root::sleeping()?;
    let mut runner = RunnerRun::start(
        [
            "watch",
            "--backend",
            "procfs",
            "--root-pid",
            &short.pid,
            "--root-pid",
            &long.pid,
        ],
        &[],
    )?;
    wait_watching(&runner).await?;
    short.end().await?;
    ensure!(
        runner.wait(Duration::from_secs(1)).await.is_err(),
        "exited before the last root ended: {}",
        runner.output()
    );
    long.end().await?;
    let (status, _) = runner
        .wait(Duration::from_secs(10))
        .await
        .context("watch outlived its roots")?;
    ensure!(status.code() == Some(0), "{status}: {}", runner.output());
    ensure!(
        !runner.stderr().contains("watching the runner's own"),
        "{}",
        runner.output()
    );
    Ok(())
}

#[tokio::test]
async fn watch_reports_the_roots_last_ports_closed_before_it_exits() -> Result<()> {
    let (root, port) = Root::listening().await?;
    let mut runner = RunnerRun::start(
        [
            "watch",
            "--json",
            "--backend",
            "procfs",
            "--debounce-ms",
            "200",
            "--root-pid",
            &root.pid,
        ],
        &[],
    )?;
    runner
        .wait_stdout_line(|line| line.contains("\"opened\""), Duration::from_secs(30))
        .await?;
    root.end().await?;
    let (status, _) = runner
        .wait(Duration::from_secs(10))
        .await
        .context("watch outlived its root")?;
    ensure!(status.code() == Some(0), "{status}: {}", runner.output());
    let events: Vec<serde_json::Value> = runner
        .stdout()
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let seen: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_owned(),
                e["port"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        seen == [
            ("opened".to_owned(), u64::from(port)),
            ("closed".to_owned(), u64::from(port))
        ],
        "{}",
        runner.output()
    );
    Ok(())
}

#[tokio::test]
async fn connect_leaves_and_exits_0_once_its_root_pids_have_ended() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let (root, port) = Root::listening().await?;
    let url = sim.url();
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--url",
            &url,
            "--token",
            sim.token(),
            "--backend",
            "procfs",
            "--root-pid",
            &root.pid,
        ],
        &[],
    )?;
    sim.wait_joined(Duration::from_secs(30)).await?;
    sim.wait_for_request(port, Duration::from_secs(30)).await?;
    root.end().await?;
    let (status, _) = runner
        .wait(Duration::from_secs(10))
        .await
        .context("connect outlived its root")?;
    ensure!(status.code() == Some(0), "{status}: {}", runner.output());
    sim.wait_disconnected(Duration::from_secs(2)).await?;
    // Section 9: the port's close is reported, then the channel is left.
    let closed = sim.events_of("port_forward_closed");
    ensure!(
        closed.iter().any(|e| e["port"] == port),
        "no port_forward_closed for {port}: {:?}",
        sim.events()
    );
    ensure!(
        sim.frames().iter().any(|frame| frame.event == "phx_leave"),
        "no phx_leave: {:?}",
        sim.frames()
    );
    ensure!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

#[tokio::test]
async fn a_bare_watch_says_what_it_watches() -> Result<()> {
    let mut runner = RunnerRun::start(["watch", "--backend", "procfs"], &[])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !runner.stderr().contains("watching") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.signal(libc::SIGINT);
    let (status, _) = runner.wait(Duration::from_secs(5)).await?;
    ensure!(status.code() == Some(130), "{status}");
    let stderr = runner.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(
        lines[0] == "backend: procfs (chosen with --backend)",
        "{stderr}"
    );
    ensure!(
        lines[1].starts_with("watching the runner's own descendants"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn a_root_the_runner_cannot_read_gets_a_warning_naming_why() -> Result<()> {
    if !privileged("a_root_the_runner_cannot_read_gets_a_warning_naming_why") {
        return Ok(());
    }
    // Root's process, watched by a runner running as nobody. It lives
    // until the runner has warned (copying the binary and starting it can
    // take seconds on a loaded machine), then ends so the runner exits.
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("kandan-runner");
    std::fs::copy(runner_bin(), &bin)?;
    let sleeper = Root::sleeping()?;
    let root = sleeper.pid.clone();
    let mut runner = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["watch", "--backend", "procfs", "--root-pid", &root])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(runner.stderr.take().context("no stderr")?).lines();
    let mut stderr = String::new();
    let first_warning = async {
        while let Some(line) = lines.next_line().await? {
            stderr.push_str(&line);
            stderr.push('\n');
            if line.starts_with("warning: ") {
                return Ok(());
            }
        }
        anyhow::bail!("stderr ended without a warning")
    };
    tokio::time::timeout(Duration::from_secs(30), first_warning)
        .await
        .context("no warning within 30 s")??;
    sleeper.end().await?;
    let rest = async {
        while let Some(line) = lines.next_line().await? {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        anyhow::Ok(runner.wait().await?)
    };
    let status = tokio::time::timeout(Duration::from_secs(10), rest)
        .await
        .context("the runner outlived its root")??;
    ensure!(status.code() == Some(0), "{status:?}: {stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("warning: "))
        .collect();
    ensure!(warnings.len() == 1, "{stderr}");
    ensure!(
        warnings[0].starts_with(&format!(
            "warning: --root-pid {root}: cannot read /proc/{root}/fd: it belongs to uid 0, the runner runs as uid 65534"
        )),
        "{stderr}"
    );
    Ok(())
}
