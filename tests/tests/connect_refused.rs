//! `connect` fails fast where retrying cannot help (PROTOCOL.md section 1):
//! a `--url` that is no WebSocket URL is a one-line error naming the flag,
//! exit 2, before anything starts; a handshake Kandan refuses for the token
//! (403) or the path (404) exits 3 with a line saying which, after ending
//! the started command. Other answers (503) keep the reconnect schedule.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::WAIT;
use integration_tests::runner_run::{RunnerRun, alive, all_gone};
use integration_tests::simulator::{SimConfig, Simulator};

/// Logs as a user sees them (no `RUST_LOG`: warnings and errors).
const QUIET: [(&str, &str); 1] = [("RUST_LOG", "warn")];

/// stderr without the backend line (`watched` prints it first) and the
/// state line of retried 503s (one, however many retries).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| !line.starts_with("backend"))
        .filter(|line| !line.starts_with("cannot reach Kandan"))
        .collect()
}

#[tokio::test]
async fn a_url_that_is_no_websocket_url_is_one_line_and_exit_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let started = dir.path().join("started");
    let script = format!("touch {}", started.display());
    for (url, says) in [
        ("http://127.0.0.1:9/runner/socket", "use ws:// or wss://"),
        (
            "https://k.example/runner/socket",
            "wss://k.example/runner/socket",
        ),
        ("127.0.0.1:4000", "no scheme"),
        ("ws://", "not a valid URL"),
        ("ws://h:99999/runner/socket", "not a valid URL"),
    ] {
        let args = [
            "connect",
            "--url",
            url,
            "--token",
            "t",
            "--backend",
            "procfs",
            "--",
            "sh",
            "-c",
            &script,
        ];
        let mut runner = RunnerRun::start(args, &QUIET)?;
        let (status, _) = runner.wait(Duration::from_secs(10)).await?;
        let stderr = runner.stderr();
        ensure!(status.code() == Some(2), "{url}: {status} {stderr}");
        ensure!(stderr.lines().count() == 1, "{url}: {stderr}");
        ensure!(stderr.starts_with("error: --url "), "{url}: {stderr}");
        ensure!(stderr.contains(says), "{url}: {stderr}");
        ensure!(!started.exists(), "{url}: the command was started");
    }
    // From the environment too.
    let mut runner = RunnerRun::start(
        ["connect", "--backend", "procfs"],
        &[("KANDAN_URL", "http://127.0.0.1:9/s"), QUIET[0]],
    )?;
    let (status, _) = runner.wait(Duration::from_secs(10)).await?;
    ensure!(status.code() == Some(2), "{status} {}", runner.stderr());
    ensure!(
        runner.stderr().starts_with("error: --url "),
        "{}",
        runner.stderr()
    );
    Ok(())
}

/// Waits until `path` holds a pid.
async fn read_pid(path: &Path) -> Result<u32> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            return Ok(pid);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_file() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pid");
    Ok((dir, path))
}

#[tokio::test]
async fn a_rejected_token_ends_the_command_and_exits_3() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    // 503 first: retried, so the command is surely running when the 403
    // comes, and a refusal that is not about the token keeps the schedule.
    sim.refuse_connections(true);
    let (_dir, pid_file) = pid_file()?;
    let script = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let url = sim.url();
    let args = [
        "connect",
        "--url",
        &url,
        "--token",
        "not-the-token",
        "--backend",
        "procfs",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let mut runner = RunnerRun::start(args, &QUIET)?;
    let command = read_pid(&pid_file).await?;
    ensure!(alive(command));
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        alive(runner.pid()),
        "503 must be retried: {}",
        runner.output()
    );
    sim.refuse_connections(false);
    let (status, _) = runner
        .wait(Duration::from_secs(15))
        .await
        .context("a rejected token must end the runner")?;
    let stderr = runner.stderr();
    ensure!(status.code() == Some(3), "{status} {stderr}");
    let errors: Vec<&str> = error_lines(&stderr)
        .into_iter()
        .filter(|line| !line.contains("WARN"))
        .collect();
    ensure!(errors.len() == 1, "{stderr}");
    ensure!(errors[0].starts_with("error: "), "{stderr}");
    ensure!(errors[0].contains("rejected the token"), "{stderr}");
    ensure!(errors[0].contains("http 403"), "{stderr}");
    ensure!(
        !stderr.contains("not-the-token"),
        "the token leaked: {stderr}"
    );
    ensure!(
        all_gone(&[command], Duration::from_secs(2)).await,
        "the command outlived the runner"
    );
    Ok(())
}

/// No token at all is not a rejected one: the line says none was given.
#[tokio::test]
async fn no_token_says_that_none_was_given() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let url = sim.url();
    let args = ["connect", "--url", &url, "--backend", "procfs"];
    let mut runner = RunnerRun::start(args, &[("RUST_LOG", "warn"), ("KANDAN_TOKEN", "")])?;
    let (status, _) = runner
        .wait(Duration::from_secs(15))
        .await
        .context("a refused runner must stop")?;
    let stderr = runner.stderr();
    ensure!(status.code() == Some(3), "{status} {stderr}");
    let errors: Vec<&str> = error_lines(&stderr)
        .into_iter()
        .filter(|line| line.starts_with("error: "))
        .collect();
    ensure!(errors.len() == 1, "{stderr}");
    ensure!(errors[0].contains("no token was given"), "{stderr}");
    ensure!(!errors[0].contains("rejected"), "{stderr}");
    ensure!(errors[0].contains("--token-file"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_wrong_socket_path_exits_3_at_once() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let (_dir, pid_file) = pid_file()?;
    let script = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    // The site's root instead of the socket mount.
    let url = sim.url().replace("/runner/socket", "/");
    let args = [
        "connect",
        "--url",
        &url,
        "--token",
        sim.token(),
        "--backend",
        "procfs",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let mut runner = RunnerRun::start(args, &QUIET)?;
    let (status, _) = runner
        .wait(Duration::from_secs(10))
        .await
        .context("a wrong path must end the runner")?;
    let stderr = runner.stderr();
    ensure!(status.code() == Some(3), "{status} {stderr}");
    let errors = error_lines(&stderr);
    ensure!(errors.len() == 1, "{stderr}");
    ensure!(errors[0].contains("http 404"), "{stderr}");
    ensure!(
        errors[0].contains("--url should be the socket mount"),
        "{stderr}"
    );
    // Started or not when the refusal came, the command is not left behind.
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .trim()
        .parse::<u32>()
    {
        ensure!(
            all_gone(&[pid], Duration::from_secs(2)).await,
            "the command outlived the runner"
        );
    }
    Ok(())
}
