//! Steps the `connect_*` end-to-end tests share: a simulator with a runner
//! supervising test servers, and servers taken through approval.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::preview_client;
use crate::runner_process::RunnerProcess;
use crate::simulator::{PortForwardRequest, SimConfig, Simulator};
use crate::vite;

/// Generous limit for anything the runner does (detection, approval,
/// reconnects) on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// Kandan's `update_runner_config` allowing `root` (and no other cwd);
/// returns once the runner applied it.
pub async fn allow_cwd(sim: &Simulator, root: &std::path::Path) -> Result<()> {
    let after = sim.event_count();
    sim.send_control(serde_json::json!({
        "type": "update_runner_config", "allowedCwds": [root],
    }))?;
    sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
        .await?;
    Ok(())
}

/// A simulator and a runner supervising test servers, joined.
pub async fn start(
    config: SimConfig,
    runner_id: &str,
    flags: &[&str],
) -> Result<(Simulator, RunnerProcess)> {
    let sim = Simulator::start(config).await?;
    let runner = RunnerProcess::supervising(&sim, runner_id, flags)?;
    if let Err(err) = sim.wait_joined(WAIT).await {
        anyhow::bail!("runner never joined: {err}\n{}", runner.output());
    }
    Ok((sim, runner))
}

/// Starts server `name` on a fresh port and waits for its request.
pub async fn serve(
    sim: &Simulator,
    runner: &mut RunnerProcess,
    name: &str,
) -> Result<(u16, PortForwardRequest)> {
    let port = vite::free_port()?;
    runner.start_server(name, port).await?;
    let request = sim
        .wait_for_request(port, WAIT)
        .await
        .with_context(|| format!("no request for {port}:\n{}", runner.output()))?;
    Ok((port, request))
}

/// Starts server `name` on a fresh port, approves it and checks that a
/// request reaches it through the preview front.
pub async fn serve_approved(
    sim: &Simulator,
    runner: &mut RunnerProcess,
    name: &str,
) -> Result<u16> {
    let (port, request) = serve(sim, runner, name).await?;
    sim.approve(&request.request_id)?;
    wait_resolved(sim, &request.request_id).await?;
    expect_hello(sim, port, name).await?;
    Ok(port)
}

/// Approves the listener on `port` once the runner asks about it, and
/// checks that `GET /hello` through the preview front answers as `name`.
pub async fn approve_when_asked(
    sim: &Simulator,
    runner: &RunnerProcess,
    port: u16,
    name: &str,
) -> Result<()> {
    let request = sim
        .wait_for_request(port, WAIT)
        .await
        .with_context(|| format!("no request for {port}:\n{}", runner.output()))?;
    sim.approve(&request.request_id)?;
    wait_resolved(sim, &request.request_id).await?;
    expect_hello(sim, port, name).await
}

/// Waits for the runner's `port_forward_resolved` for `request_id`.
pub async fn wait_resolved(sim: &Simulator, request_id: &str) -> Result<Value> {
    sim.wait_for_event(
        "port_forward_resolved",
        |e| e["requestId"] == request_id,
        WAIT,
    )
    .await
    .with_context(|| format!("{request_id} never resolved"))
}

/// `GET /hello` through the preview front answers as server `name`.
pub async fn expect_hello(sim: &Simulator, port: u16, name: &str) -> Result<()> {
    let resp = preview_client::get(sim, port, "/hello").await?;
    ensure!(
        resp.status == 200 && resp.text() == format!("hello from {name}"),
        "GET /hello on {port}: {resp:?} {}",
        resp.text()
    );
    Ok(())
}

/// Drops the runner's connection and returns the `runner_ready` of its
/// next join.
pub async fn reconnect_ready(sim: &Simulator, runner: &RunnerProcess) -> Result<Value> {
    let joins = sim.join_count();
    let cursor = sim.event_count();
    sim.drop_connection()?;
    sim.wait_join_count(joins + 1, WAIT)
        .await
        .with_context(|| format!("no rejoin:\n{}", runner.output()))?;
    let (_, ready) = sim
        .wait_for_event_after(cursor, "runner_ready", |_| true, WAIT)
        .await?;
    Ok(ready)
}

/// The listeners of a `runner_ready` event, by port.
pub fn ready_listener(ready: &Value, port: u16) -> Option<&Value> {
    ready["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["port"] == port)
}

/// Server `name`'s own record of what it served (read directly).
pub async fn served_paths(port: u16) -> Result<Vec<String>> {
    let resp = vite::http_get(port, "/log", &format!("localhost:{port}")).await?;
    // `http_get` keeps chunk framing; the test server sends a plain length.
    serde_json::from_str(&resp.body).with_context(|| format!("bad /log: {}", resp.body))
}
