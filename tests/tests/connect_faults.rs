//! `kandan-runner connect` through faults on both sides: Kandan dropping,
//! closing, crashing the channel, withholding heartbeat replies, flooding
//! malformed controls; the local server dying mid-response. The runner
//! recovers without losing approvals and without hanging a request.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::runner_process::RunnerProcess;
use integration_tests::simulator::{REQUEST_ID_HEADER, SimConfig, Simulator};
use serde_json::{Value, json};

/// After a reconnect or rejoin: the `runner_ready` (after `cursor`) lists
/// `port` as approved, and requests work with no new decision.
async fn approval_survived(
    sim: &Simulator,
    runner: &RunnerProcess,
    cursor: usize,
    port: u16,
    name: &str,
) -> Result<()> {
    let (_, ready) = sim
        .wait_for_event_after(cursor, "runner_ready", |_| true, WAIT)
        .await
        .with_context(|| format!("no runner_ready:\n{}", runner.output()))?;
    let listener = e2e::ready_listener(&ready, port).context("port not in runner_ready")?;
    anyhow::ensure!(listener["state"] == "approved", "{ready}");
    let resolutions = sim.events_of("port_forward_resolved").len();
    e2e::expect_hello(sim, port, name).await?;
    anyhow::ensure!(sim.events_of("port_forward_resolved").len() == resolutions);
    anyhow::ensure!(
        sim.events_of("port_forward_request")
            .iter()
            .filter(|e| e["port"] == port)
            .count()
            == 1,
        "port asked about again"
    );
    Ok(())
}

#[tokio::test]
async fn kandan_dropping_mid_request_loses_no_approval() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fault-drop", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "drop").await?;

    let slow = preview_client::open(&sim, Method::GET, port, "/slow?ms=3000", Bytes::new());
    let (resp, ()) = tokio::join!(slow, async {
        // Drop once the server is inside the request.
        let deadline = tokio::time::Instant::now() + WAIT;
        while !e2e::served_paths(port)
            .await
            .is_ok_and(|p| p.iter().any(|p| p == "GET /slow"))
        {
            assert!(tokio::time::Instant::now() < deadline, "slow never served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sim.drop_connection().expect("connected");
    });
    let resp = resp?;
    // The browser's request ends (Kandan lost its runner), it does not hang.
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let old_id = resp.headers()[REQUEST_ID_HEADER].to_str()?.to_owned();

    let cursor = sim.event_count();
    sim.wait_join_count(2, WAIT)
        .await
        .with_context(|| runner.output())?;
    approval_survived(&sim, &runner, cursor, port, "drop").await?;
    // Once the slow answer is ready, it is not replayed on the new session.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stale: Vec<Value> = sim.events()[cursor..]
        .iter()
        .filter(|e| e["requestId"] == old_id.as_str())
        .cloned()
        .collect();
    assert!(stale.is_empty(), "stale answer replayed: {stale:?}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

#[tokio::test]
async fn a_local_server_dying_mid_response_ends_the_request_with_an_error() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fault-die", &[]).await?;

    // A body of known length, cut short.
    let port = e2e::serve_approved(&sim, &mut runner, "die-length").await?;
    let resp = preview_client::get(&sim, port, "/die?after=100000&mode=length").await?;
    assert!(
        resp.status.is_server_error(),
        "{} {:?}",
        resp.status,
        resp.error_code()
    );
    let id = resp.headers[REQUEST_ID_HEADER].to_str()?;
    let error = sim
        .wait_for_event("control_error", |e| e["requestId"] == id, WAIT)
        .await?;
    assert_eq!(error["controlType"], "forward_http_request", "{error}");

    // A chunked (streamed) body, cut short: the head came, the body fails.
    let port = e2e::serve_approved(&sim, &mut runner, "die-chunked").await?;
    let resp = preview_client::open(
        &sim,
        Method::GET,
        port,
        "/die?after=100000&mode=chunked",
        Bytes::new(),
    )
    .await?;
    let id = resp.headers()[REQUEST_ID_HEADER].to_str()?.to_owned();
    if resp.status().is_success() {
        let body = tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .context("the cut stream hangs")?;
        assert!(body.is_err(), "a cut stream ended as if complete");
    }
    let error = sim
        .wait_for_event("control_error", |e| e["requestId"] == id.as_str(), WAIT)
        .await
        .with_context(|| runner.output())?;
    assert_eq!(error["controlType"], "forward_http_request", "{error}");
    assert!(runner.alive());
    Ok(())
}

#[tokio::test]
async fn withheld_heartbeat_replies_make_the_runner_reconnect() -> Result<()> {
    let (sim, mut runner) = e2e::start(
        SimConfig::default(),
        "fault-hb",
        &["--heartbeat-ms", "1000"],
    )
    .await?;
    let port = e2e::serve_approved(&sim, &mut runner, "hb").await?;
    let connections = sim.connection_count();
    let cursor = sim.event_count();

    sim.hold_heartbeats(true);
    sim.wait_connection_count(connections + 1, WAIT)
        .await
        .with_context(|| format!("no reconnect:\n{}", runner.output()))?;
    sim.hold_heartbeats(false);
    approval_survived(&sim, &runner, cursor, port, "hb").await?;
    Ok(())
}

#[tokio::test]
async fn phx_error_makes_the_runner_rejoin() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fault-phx", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "phx").await?;
    let joins = sim.join_count();
    let cursor = sim.event_count();

    sim.send_phx_error()?;
    sim.wait_join_count(joins + 1, WAIT)
        .await
        .with_context(|| format!("no rejoin:\n{}", runner.output()))?;
    approval_survived(&sim, &runner, cursor, port, "phx").await?;
    Ok(())
}

#[tokio::test]
async fn close_1011_makes_the_runner_reconnect() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fault-1011", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "close").await?;
    let connections = sim.connection_count();
    let cursor = sim.event_count();

    sim.close_connection(1011, "server error")?;
    sim.wait_connection_count(connections + 1, WAIT)
        .await
        .with_context(|| format!("no reconnect:\n{}", runner.output()))?;
    sim.wait_join_count(2, WAIT).await?;
    approval_survived(&sim, &runner, cursor, port, "close").await?;
    Ok(())
}

/// One malformed control of several kinds, each needing a `control_error`.
fn malformed(i: usize, port: u16) -> Value {
    match i % 5 {
        0 => json!({"type": format!("no_such_control_{i}")}),
        1 => json!({"type": "forward_http_request", "requestId": format!("bad-{i}")}),
        2 => json!({
            "type": "forward_http_request", "requestId": format!("bad-{i}"), "port": port,
            "method": "GET", "path": "/hello", "bodyBase64": "%%% not base64 %%%",
        }),
        3 => json!({
            "type": "forward_http_request", "requestId": format!("bad-{i}"), "port": 70000,
            "method": "GET", "path": "/hello",
        }),
        _ => json!({"type": "resolve_port_forward_request", "requestId": 5, "decision": "maybe"}),
    }
}

#[tokio::test]
async fn a_flood_of_malformed_controls_is_answered_without_growth() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fault-flood", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "flood").await?;
    let connections = sim.connection_count();
    let errors = sim.events_of("control_error").len();
    let rss_before = runner.rss_kib()?;

    const FLOOD: usize = 1000;
    for i in 0..FLOOD {
        sim.send_control(malformed(i, port))?;
    }
    sim.wait_for_event_type_count("control_error", errors + FLOOD, WAIT)
        .await
        .with_context(|| format!("not every control answered:\n{}", runner.output()))?;
    let rss_after = runner.rss_kib()?;

    assert!(runner.alive(), "{}", runner.output());
    assert_eq!(sim.connection_count(), connections, "connection dropped");
    let answered = sim.events_of("control_error");
    assert_eq!(answered.len(), errors + FLOOD, "extra errors");
    assert!(
        rss_after <= rss_before + 20 * 1024,
        "rss grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        e2e::served_paths(port)
            .await?
            .iter()
            .all(|p| p == "GET /hello"),
        "a malformed control reached the server"
    );
    e2e::expect_hello(&sim, port, "flood").await?;
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}
