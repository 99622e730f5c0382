//! Secrets through the binary (PROTOCOL.md section 5): the token never
//! reaches the started command's environment nor any log line at any
//! `RUST_LOG` level; a `user:password@` in the URL is redacted;
//! `--token-file` keeps the token out of `ps`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::WAIT;
use integration_tests::runner_run::RunnerRun;
use integration_tests::simulator::{SimConfig, Simulator};

/// Recognisable, and made of URL-unreserved characters so it would appear
/// as is in a logged URL.
const TOKEN: &str = "kandan-secret-token-7f3e9a";

async fn simulator() -> Result<Simulator> {
    Ok(Simulator::start(SimConfig {
        token: TOKEN.to_owned(),
        ..SimConfig::default()
    })
    .await?)
}

/// Stops `runner` with SIGTERM and waits for it.
async fn stop(runner: &mut RunnerRun) -> Result<()> {
    runner.signal(libc::SIGTERM);
    runner.wait(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test]
async fn the_token_is_not_in_the_commands_environment() -> Result<()> {
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    let env_file = dir.path().join("env");
    let script = format!("env > {}; exec sleep 300", env_file.display());
    let url = sim.url();
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--runner-id",
            "secrets-env",
            "--backend",
            "procfs",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("KANDAN_TOKEN", TOKEN), ("KANDAN_URL", &url)],
    )?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let env = loop {
        let env = std::fs::read_to_string(&env_file).unwrap_or_default();
        if env.contains("PATH=") {
            break env;
        }
        ensure!(tokio::time::Instant::now() < deadline, "no env written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop(&mut runner).await?;
    ensure!(!env.contains(TOKEN), "the token reached the command: {env}");
    ensure!(!env.contains("KANDAN_TOKEN="), "{env}");
    ensure!(!env.contains("KANDAN_URL="), "{env}");
    ensure!(env.contains("KANDAN_RUNNER_TREE="), "{env}");
    Ok(())
}

#[tokio::test]
async fn the_token_is_in_no_log_line_at_any_level() -> Result<()> {
    let sim = simulator().await?;
    let url = sim.url();
    for (n, level) in [
        "trace",
        "tungstenite=trace,tokio_tungstenite=trace,hyper=trace,rustls=trace,trace",
        "debug",
        "info",
        "warn",
    ]
    .into_iter()
    .enumerate()
    {
        let mut runner = RunnerRun::start(
            [
                "connect",
                "--url",
                &url,
                "--runner-id",
                "secrets-logs",
                "--backend",
                "procfs",
            ],
            &[("KANDAN_TOKEN", TOKEN), ("RUST_LOG", level)],
        )?;
        sim.wait_join_count(n + 1, WAIT)
            .await
            .with_context(|| runner.output())?;
        stop(&mut runner).await?;
        let stderr = runner.stderr();
        ensure!(
            !stderr.contains(TOKEN),
            "RUST_LOG={level} printed the token:\n{stderr}"
        );
        if level.ends_with("trace") || level == "debug" {
            // The level applied: the runner's own debug lines are there.
            ensure!(stderr.contains("joining"), "RUST_LOG={level}:\n{stderr}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn url_userinfo_is_redacted_in_logs() -> Result<()> {
    let sim = simulator().await?;
    let url = sim.url().replacen("ws://", "ws://alice:hunter2@", 1);
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--runner-id",
            "secrets-url",
            "--backend",
            "procfs",
        ],
        &[("RUST_LOG", "debug")],
    )?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !runner.stderr().contains("<redacted>@") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the URL was never logged: {}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&mut runner).await?;
    let stderr = runner.stderr();
    ensure!(!stderr.contains("hunter2"), "{stderr}");
    ensure!(!stderr.contains(TOKEN), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn token_file_is_read_once_and_trimmed() -> Result<()> {
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {TOKEN}\n"))?;
    let file_arg = file.to_str().context("path")?;
    let url = sim.url();
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--url",
            &url,
            "--token-file",
            file_arg,
            "--runner-id",
            "secrets-file",
            "--backend",
            "procfs",
        ],
        // The file takes the place of the environment's token.
        &[("KANDAN_TOKEN", "not-the-token")],
    )?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    ensure!(!std::fs::read_to_string(format!("/proc/{}/cmdline", runner.pid()))?.contains(TOKEN));
    // Read once: after the file changes, a reconnect still presents the
    // token read at start.
    std::fs::write(&file, "another")?;
    sim.drop_connection()?;
    sim.wait_join_count(2, WAIT)
        .await
        .with_context(|| runner.output())?;
    stop(&mut runner).await?;
    Ok(())
}

#[tokio::test]
async fn bad_token_files_are_one_line_errors_with_exit_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n")?;
    let missing = dir.path().join("missing");
    let token_file = |path: &std::path::Path| path.to_string_lossy().into_owned();
    for (args, says) in [
        (
            vec!["--token-file".to_owned(), token_file(&missing)],
            "cannot read",
        ),
        (vec!["--token-file".to_owned(), token_file(&empty)], "empty"),
        (
            vec![
                "--token".to_owned(),
                "x".to_owned(),
                "--token-file".to_owned(),
                token_file(&empty),
            ],
            "cannot be used with --token",
        ),
    ] {
        let mut all = vec![
            "connect".to_owned(),
            "--url".to_owned(),
            "ws://127.0.0.1:9/runner/socket".to_owned(),
        ];
        all.extend(args.iter().cloned());
        let mut runner = RunnerRun::start(&all, &[])?;
        let (status, _) = runner.wait(Duration::from_secs(10)).await?;
        let stderr = runner.stderr();
        ensure!(status.code() == Some(2), "{args:?}: {status} {stderr}");
        ensure!(stderr.lines().count() == 1, "{args:?}: {stderr}");
        ensure!(stderr.contains("--token-file"), "{args:?}: {stderr}");
        ensure!(stderr.contains(says), "{args:?}: {stderr}");
    }
    Ok(())
}

/// The agent runs as the runner's user, so file permissions do not keep it
/// from `/proc/<runner>/environ`, where `KANDAN_TOKEN` sits: with a token,
/// the runner makes itself non-dumpable, which leaves that file to root.
/// Runner and command run as `nobody` here (root could read it anyway).
#[tokio::test]
async fn the_command_cannot_read_the_token_from_the_runners_environment() -> Result<()> {
    if !integration_tests::support::privileged(
        "the_command_cannot_read_the_token_from_the_runners_environment",
    ) {
        return Ok(());
    }
    let sim = simulator().await?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let out = dir.path().join("read");
    // $PPID of the command is the runner that started it.
    let script = format!(
        "cat /proc/$PPID/environ > {out} 2>&1; echo \"exit $?\" >> {out}; exec sleep 300",
        out = out.display()
    );
    let mut child = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(integration_tests::support::runner_bin())
        .args([
            "connect",
            "--runner-id",
            "secrets-environ",
            "--backend",
            "procfs",
        ])
        .args(["--", "sh", "-c", &script])
        .env("KANDAN_TOKEN", TOKEN)
        .env("KANDAN_URL", sim.url())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let read = loop {
        let read = std::fs::read(&out).unwrap_or_default();
        if read.windows(5).any(|w| w == b"exit ") {
            break String::from_utf8_lossy(&read).replace('\0', " ");
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the command never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill has no memory preconditions; the group is ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait().await;
    ensure!(!read.contains(TOKEN), "the command read the token: {read}");
    ensure!(read.contains("Permission denied"), "{read}");
    Ok(())
}
