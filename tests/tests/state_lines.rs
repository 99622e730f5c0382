//! What `connect` tells a person on stderr (issue 10): joined, each port's
//! state, refused forwards, reconnects collapsed into two lines, nothing
//! with `--quiet`; `--log-format json` makes every stderr line JSON with a
//! timestamp, and text has no colour off a terminal. Matching is tolerant:
//! it looks for the facts (port, state, URL), not whole lines.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use serde_json::Value;

/// A runner supervising test servers, with its own state directory.
async fn start(
    runner_id: &str,
    flags: &[&str],
) -> Result<(Simulator, RunnerProcess, tempfile::TempDir)> {
    let state = tempfile::tempdir()?;
    let sim = Simulator::start(SimConfig::default()).await?;
    let mut args = RunnerArgs::supervising(runner_id);
    args.flags = flags.iter().map(|f| (*f).to_owned()).collect();
    args.env
        .push(("XDG_STATE_HOME".into(), state.path().display().to_string()));
    let runner = RunnerProcess::start(&sim, args)?;
    if let Err(err) = sim.wait_joined(WAIT).await {
        anyhow::bail!("runner never joined: {err}\n{}", runner.output());
    }
    Ok((sim, runner, state))
}

/// stderr lines of the runner (not its command's stdout).
fn stderr_lines(runner: &RunnerProcess) -> Vec<String> {
    runner
        .output()
        .lines()
        .filter(|line| !line.starts_with("stdout: "))
        .map(str::to_owned)
        .collect()
}

/// Waits for a stderr line with every one of `words`.
async fn wait_line(runner: &RunnerProcess, words: &[&str]) -> Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(line) = stderr_lines(runner)
            .into_iter()
            .find(|line| words.iter().all(|w| line.contains(w)))
        {
            return Ok(line);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no line with {words:?}:\n{}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(runner: &RunnerProcess, words: &[&str]) -> usize {
    stderr_lines(runner)
        .iter()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .count()
}

/// The `port_not_approved` message of a forward to `port` just refused.
async fn refusal_message(sim: &Simulator, port: u16) -> Result<String> {
    let cursor = sim.event_count();
    let resp = preview_client::get(sim, port, "/hello").await?;
    ensure!(resp.error_code() == Some("port_not_approved"), "{resp:?}");
    let (_, error) = sim
        .wait_for_event_after(cursor, "control_error", |_| true, WAIT)
        .await?;
    ensure!(error["code"] == "port_not_approved", "{error}");
    error["message"]
        .as_str()
        .map(str::to_owned)
        .context("a message")
}

#[tokio::test]
async fn connect_says_joined_and_each_port_state_once() -> Result<()> {
    let (sim, mut runner, _state) = start("lines", &[]).await?;
    let joined = wait_line(
        &runner,
        &["connected to Kandan", &sim.url(), "runner:lines"],
    )
    .await?;
    ensure!(!joined.contains(sim.token()), "the token in {joined}");

    // Waiting, then approved.
    let (approved, request) = e2e::serve(&sim, &mut runner, "approved").await?;
    let port = format!("port {approved} ");
    wait_line(&runner, &[&port, "waiting for approval", "127.0.0.1:"]).await?;
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    wait_line(&runner, &[&port, "approved"]).await?;

    // Pending: the forward's message and the state line say so, once.
    let (pending, _) = e2e::serve(&sim, &mut runner, "pending").await?;
    let message = refusal_message(&sim, pending).await?;
    ensure!(message.contains("waiting for approval"), "{message}");
    ensure!(message.matches("not approved").count() == 1, "{message}");
    refusal_message(&sim, pending).await?;
    let refused = format!("refused a forward to port {pending}");
    wait_line(&runner, &[&refused, "waiting for approval"]).await?;

    // Denied: the same, saying denied.
    let (denied, request) = e2e::serve(&sim, &mut runner, "denied").await?;
    sim.deny(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    wait_line(&runner, &[&format!("port {denied} "), "denied"]).await?;
    let message = refusal_message(&sim, denied).await?;
    ensure!(message.contains("denied"), "{message}");
    ensure!(!message.contains("waiting"), "{message}");
    ensure!(message.matches("not approved").count() == 1, "{message}");
    refusal_message(&sim, denied).await?;
    let refused_denied = format!("refused a forward to port {denied}");
    wait_line(&runner, &[&refused_denied, "denied"]).await?;

    // Closed.
    runner.stop_server("approved", approved).await?;
    wait_line(&runner, &[&port, "closed"]).await?;

    // Each once: two refused forwards per port, one line each.
    ensure!(count(&runner, &[&refused]) == 1, "{}", runner.output());
    ensure!(
        count(&runner, &[&refused_denied]) == 1,
        "{}",
        runner.output()
    );
    ensure!(
        count(&runner, &[&port, "waiting for approval"]) == 1,
        "{}",
        runner.output()
    );
    ensure!(
        count(&runner, &["connected to Kandan"]) == 1,
        "{}",
        runner.output()
    );
    Ok(())
}

/// The `kandan` part of `status --json` for this state directory.
async fn kandan_status(state: &std::path::Path) -> Result<Value> {
    let output = tokio::process::Command::new(integration_tests::support::runner_bin())
        .args(["status", "--json"])
        .env("XDG_STATE_HOME", state)
        .output()
        .await?;
    let document: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("status --json: {output:?}"))?;
    Ok(document["runners"][0]["kandan"].clone())
}

#[tokio::test]
async fn a_reconnect_is_one_line_down_and_one_line_back() -> Result<()> {
    let (sim, runner, state) = start("lines-reconnect", &[]).await?;
    wait_line(&runner, &["connected to Kandan"]).await?;
    let connections = sim.connection_count();
    sim.refuse_connections(true);
    sim.drop_connection()?;
    // The schedule's first steps (10 ms to 500 ms) fit many attempts here;
    // `status` counts them, the lines must not.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let kandan = kandan_status(state.path()).await?;
    ensure!(kandan["state"] == "reconnecting", "{kandan}");
    ensure!(kandan["attempts"].as_u64() >= Some(3), "{kandan}");
    ensure!(
        kandan["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{kandan}"
    );
    sim.refuse_connections(false);
    sim.wait_join_count(2, WAIT)
        .await
        .with_context(|| runner.output())?;
    wait_line(&runner, &["connected to Kandan again"]).await?;
    ensure!(
        sim.connection_count() > connections,
        "no reconnect: {}",
        runner.output()
    );
    ensure!(
        count(&runner, &["reconnecting"]) == 1,
        "not one reconnecting line:\n{}",
        runner.output()
    );
    ensure!(
        count(&runner, &["connected to Kandan"]) == 2,
        "{}",
        runner.output()
    );
    Ok(())
}

#[tokio::test]
async fn quiet_prints_no_state_lines() -> Result<()> {
    let (sim, mut runner, _state) = start("lines-quiet", &["--quiet"]).await?;
    let (port, request) = e2e::serve(&sim, &mut runner, "quiet").await?;
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    e2e::expect_hello(&sim, port, "quiet").await?;
    // Give any line time to be printed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The backend line stays: the contract makes it the first stderr line.
    ensure!(
        runner.output().trim_start().starts_with("backend:"),
        "{}",
        runner.output()
    );
    for words in [&["connected to Kandan"][..], &[&format!("port {port} ")]] {
        ensure!(
            count(&runner, words) == 0,
            "{words:?}:\n{}",
            runner.output()
        );
    }
    Ok(())
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_a_timestamp() -> Result<()> {
    let (sim, mut runner, _state) = start("lines-json", &["--log-format", "json"]).await?;
    let (_, request) = e2e::serve(&sim, &mut runner, "json").await?;
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    wait_line(&runner, &[r#""event":"port_approved""#]).await?;
    let lines = stderr_lines(&runner);
    ensure!(lines.len() >= 3, "{lines:?}");
    let mut events = Vec::new();
    for line in &lines {
        let object: Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        let ts = object["ts"]
            .as_str()
            .with_context(|| format!("no ts: {line}"))?;
        ensure!(ts.ends_with('Z') && ts.len() == 24, "ts {ts}");
        ensure!(object["level"].is_string(), "{line}");
        ensure!(!line.contains('\u{1b}'), "colour in {line}");
        events.extend(object["event"].as_str().map(str::to_owned));
    }
    // Log lines (RUST_LOG=info) too, not only state lines.
    ensure!(
        lines.iter().any(|l| l.contains(r#""target":"runner"#)),
        "no log line: {lines:?}"
    );
    for wanted in ["backend", "connected", "port_pending", "port_approved"] {
        ensure!(events.iter().any(|e| e == wanted), "{wanted} in {events:?}");
    }
    Ok(())
}

#[tokio::test]
async fn text_logs_off_a_terminal_have_no_colour() -> Result<()> {
    // stderr is a pipe here; NO_COLOR would also turn colour off.
    let (sim, mut runner, _state) = start("lines-plain", &[]).await?;
    let (_, request) = e2e::serve(&sim, &mut runner, "plain").await?;
    sim.deny(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    wait_line(&runner, &["denied"]).await?;
    let output = runner.output();
    // RUST_LOG=info: log lines with levels are there, without escapes.
    ensure!(output.contains("INFO"), "{output}");
    ensure!(!output.contains('\u{1b}'), "colour in {output:?}");
    Ok(())
}

/// stderr of a `connect` that cannot reach Kandan, run for a second on a
/// terminal (`script` gives it a pty), with `RUST_LOG=debug` so that log
/// lines (which carry the colours) are printed.
async fn on_a_terminal(no_color: bool) -> Result<String> {
    let state = tempfile::tempdir()?;
    let port = integration_tests::support::free_port()?;
    let runner = integration_tests::support::runner_bin();
    let command = format!(
        "timeout -s INT 1 {} connect --url ws://127.0.0.1:{port}/runner/socket --token t --backend procfs -- sleep 5",
        runner.display()
    );
    let mut script = tokio::process::Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_LOG", "debug")
        .env("XDG_STATE_HOME", state.path())
        .env_remove("NO_COLOR");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let output = script.output().await.context("script (util-linux)")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn colour_only_on_a_terminal_and_never_with_no_color() -> Result<()> {
    let coloured = on_a_terminal(false).await?;
    ensure!(coloured.contains("cannot connect to kandan"), "{coloured}");
    ensure!(
        coloured.contains('\u{1b}'),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(true).await?;
    ensure!(plain.contains("cannot connect to kandan"), "{plain}");
    ensure!(!plain.contains('\u{1b}'), "colour with NO_COLOR: {plain:?}");
    Ok(())
}
