//! Secrets in a listener's command line (issue 11): `connect` sends Kandan
//! the command with `***` in their place, in `port_forward_request` and in
//! the `runner_ready` after a reconnect; `watch` shows them unless
//! `--redact`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::WAIT;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::runner_run::RunnerRun;
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::vite;
use serde_json::Value;

const TOKEN: &str = "supersecret";
const API_KEY: &str = "abc123";

/// A python3 that listens on `port` and sleeps, with a Jupyter-style token
/// option and an environment-style key after its `-c` script (python
/// ignores them: they only land in its argv, as a real server's would).
fn listener(port: u16) -> Vec<String> {
    let script = format!(
        "import socket, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen()\n\
         time.sleep(300)\n"
    );
    vec![
        "python3".into(),
        "-c".into(),
        script,
        format!("--IdentityProvider.token={TOKEN}"),
        format!("API_KEY={API_KEY}"),
    ]
}

/// Every event the simulator recorded is free of both secrets.
fn ensure_no_secret(sim: &Simulator) -> Result<()> {
    for event in sim.events() {
        let text = event.to_string();
        ensure!(
            !text.contains(TOKEN) && !text.contains(API_KEY),
            "a secret reached Kandan: {text}"
        );
    }
    Ok(())
}

fn ensure_redacted(command: &Value) -> Result<()> {
    let command = command.as_str().context("no command")?;
    ensure!(
        command.ends_with("--IdentityProvider.token=*** API_KEY=***")
            && command.contains("python3 -c import socket"),
        "command not redacted as expected: {command}"
    );
    Ok(())
}

#[tokio::test]
async fn connect_sends_commands_redacted_in_requests_and_ready() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = vite::free_port()?;
    let runner = RunnerProcess::start(&sim, RunnerArgs::new("redact", listener(port)))?;
    let request = sim
        .wait_for_event("port_forward_request", |e| e["port"] == port, WAIT)
        .await
        .with_context(|| format!("no request:\n{}", runner.output()))?;
    ensure_redacted(&request["command"])?;

    let ready = integration_tests::e2e::reconnect_ready(&sim, &runner).await?;
    let listener = integration_tests::e2e::ready_listener(&ready, port)
        .with_context(|| format!("port {port} not in runner_ready: {ready}"))?;
    ensure_redacted(&listener["command"])?;
    ensure_no_secret(&sim)
}

/// The config file's `redact` names reach `connect`'s requests too, not
/// only `watch --redact`: a value under a configured name never reaches
/// Kandan.
#[tokio::test]
async fn connect_hides_the_config_files_names_from_kandan() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "redact = [\"--my-secret\", \"MY_VAR\"]\n")?;
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = vite::free_port()?;
    let mut command = listener(port);
    command.extend(["--my-secret", "hunter2", "MY_VAR=xyzzy"].map(String::from));
    let mut args = RunnerArgs::new("redact-config", command);
    args.flags = vec!["--config".into(), config.display().to_string()];
    let runner = RunnerProcess::start(&sim, args)?;
    let request = sim
        .wait_for_event("port_forward_request", |e| e["port"] == port, WAIT)
        .await
        .with_context(|| format!("no request:\n{}", runner.output()))?;
    let shown = request["command"].as_str().context("no command")?;
    ensure!(
        shown.ends_with("--my-secret *** MY_VAR=***"),
        "not redacted as configured: {shown}"
    );
    for event in sim.events() {
        let text = event.to_string();
        ensure!(
            !text.contains("hunter2") && !text.contains("xyzzy"),
            "a configured secret reached Kandan: {text}"
        );
    }
    ensure_no_secret(&sim)
}

/// `watch --json [--redact]` with the listener as its command: the
/// `opened` line of the port.
async fn watch_line(redact: bool) -> Result<String> {
    let port = vite::free_port()?;
    let mut args = integration_tests::runner_run::watch_json_args();
    if redact {
        args.push("--redact".into());
    }
    args.push("--".into());
    args.extend(listener(port));
    let runner = RunnerRun::start(&args, &[])?;
    let wanted = format!("\"port\":{port}");
    runner
        .wait_stdout_line(
            |l| l.contains("\"opened\"") && l.contains(&wanted),
            Duration::from_secs(30),
        )
        .await
}

#[tokio::test]
async fn watch_shows_secrets_unless_redact() -> Result<()> {
    let shown = watch_line(false).await?;
    ensure!(
        shown.contains(&format!(
            "--IdentityProvider.token={TOKEN} API_KEY={API_KEY}"
        )),
        "watch hid the command's arguments: {shown}"
    );
    let hidden = watch_line(true).await?;
    ensure!(
        hidden.contains("--IdentityProvider.token=*** API_KEY=***")
            && !hidden.contains(TOKEN)
            && !hidden.contains(API_KEY),
        "watch --redact showed a secret: {hidden}"
    );
    Ok(())
}
