//! `kandan-runner connect` keeping PROTOCOL.md section 5's approval rules
//! with real servers in its tree: nothing unapproved is reachable, a denial
//! sticks, an approval binds to the program holding the port, and
//! `runner_ready` restates the whole state.

use anyhow::{Context, Result};
use http::StatusCode;
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::vite;
use serde_json::Value;

/// A preview request to `port` is refused with `code`, and the server on it
/// (if any) never sees it.
async fn expect_refused(sim: &Simulator, port: u16, code: &str, status: StatusCode) -> Result<()> {
    let resp = preview_client::get(sim, port, "/hello").await?;
    anyhow::ensure!(
        resp.status == status && resp.error_code() == Some(code),
        "GET /hello on {port}: expected {status} {code}, got {} {:?}: {}",
        resp.status,
        resp.error_code(),
        resp.text()
    );
    Ok(())
}

async fn pid_of(port: u16) -> Result<u64> {
    let resp = vite::http_get(port, "/pid", "localhost").await?;
    resp.body.trim().parse().context("bad /pid")
}

fn requests_for(sim: &Simulator, port: u16) -> Vec<Value> {
    sim.events_of("port_forward_request")
        .into_iter()
        .filter(|e| e["port"] == port)
        .collect()
}

#[tokio::test]
async fn pending_unlistened_and_denied_ports_are_refused() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "appr-refuse", &[]).await?;

    // Pending: asked about, not decided, not reachable.
    let (pending, _) = e2e::serve(&sim, &mut runner, "pending").await?;
    expect_refused(&sim, pending, "port_not_approved", StatusCode::FORBIDDEN).await?;

    // Nobody listens: refused.
    let nobody = vite::free_port()?;
    let resp = preview_client::get(&sim, nobody, "/hello").await?;
    assert!(!resp.status.is_success(), "{resp:?}");
    assert_eq!(resp.error_code(), Some("port_not_listening"), "{resp:?}");

    // Denied: never reachable.
    let (denied, request) = e2e::serve(&sim, &mut runner, "denied").await?;
    sim.deny(&request.request_id)?;
    let resolved = e2e::wait_resolved(&sim, &request.request_id).await?;
    assert_eq!(resolved["decision"], "deny");
    for _ in 0..3 {
        expect_refused(&sim, denied, "port_not_approved", StatusCode::FORBIDDEN).await?;
    }
    assert!(
        e2e::served_paths(denied).await?.is_empty(),
        "a denied server was reached"
    );

    // The same server restarts: not asked again, still refused.
    let old_pid = request.event["pid"].as_u64().context("pid")?;
    runner.stop_server("denied", denied).await?;
    sim.wait_for_event(
        "port_forward_closed",
        |e| e["requestId"] == request.request_id.as_str(),
        WAIT,
    )
    .await?;
    runner.start_server("denied", denied).await?;
    let new_pid = pid_of(denied).await?;
    assert_ne!(old_pid, new_pid);
    // Proof the runner saw the restarted listener: a runner_ready that
    // lists it, denied, with its new pid.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = e2e::reconnect_ready(&sim, &runner).await?;
        if let Some(listener) = e2e::ready_listener(&ready, denied)
            && listener["pid"] == new_pid
        {
            assert_eq!(listener["state"], "denied", "{ready}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted server never showed: {ready}\n{}",
            runner.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        requests_for(&sim, denied).len(),
        1,
        "asked again about a denied server: {:?}",
        requests_for(&sim, denied)
    );
    expect_refused(&sim, denied, "port_not_approved", StatusCode::FORBIDDEN).await?;
    assert!(e2e::served_paths(denied).await?.is_empty());
    // The pending one is still pending and refused.
    expect_refused(&sim, pending, "port_not_approved", StatusCode::FORBIDDEN).await?;
    Ok(())
}

#[tokio::test]
async fn another_program_on_an_approved_port_needs_a_new_approval() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "appr-owner", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "first").await?;
    let first = requests_for(&sim, port);
    let first_id = first[0]["requestId"].as_str().context("id")?.to_owned();

    runner.stop_server("first", port).await?;
    sim.wait_for_event(
        "port_forward_closed",
        |e| e["requestId"] == first_id.as_str(),
        WAIT,
    )
    .await?;
    let cursor = sim.event_count();
    // Another command line on the same port, in the same tree.
    runner.start_server("second", port).await?;
    let (_, request) = sim
        .wait_for_event_after(cursor, "port_forward_request", |e| e["port"] == port, WAIT)
        .await
        .with_context(|| format!("no new request:\n{}", runner.output()))?;
    assert_ne!(request["requestId"], first_id.as_str(), "{request}");
    assert_eq!(request["restarted"], false, "{request}");
    assert_eq!(request["state"], "pending", "{request}");
    assert!(
        request["command"]
            .as_str()
            .is_some_and(|c| c.contains("second")),
        "{request}"
    );

    for _ in 0..3 {
        expect_refused(&sim, port, "port_not_approved", StatusCode::FORBIDDEN).await?;
    }
    assert!(
        e2e::served_paths(port).await?.is_empty(),
        "unapproved server reached"
    );

    let id = request["requestId"].as_str().context("id")?;
    sim.approve(id)?;
    e2e::wait_resolved(&sim, id).await?;
    e2e::expect_hello(&sim, port, "second").await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_of_the_same_command_keeps_its_approval() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "appr-restart", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "same").await?;
    let first_id = requests_for(&sim, port)[0]["requestId"]
        .as_str()
        .context("id")?
        .to_owned();

    runner.stop_server("same", port).await?;
    sim.wait_for_event(
        "port_forward_closed",
        |e| e["requestId"] == first_id.as_str(),
        WAIT,
    )
    .await?;
    expect_refused(&sim, port, "port_not_listening", StatusCode::NOT_FOUND).await?;
    let cursor = sim.event_count();
    let resolutions = sim.events_of("port_forward_resolved").len();
    runner.start_server("same", port).await?;
    let (_, request) = sim
        .wait_for_event_after(cursor, "port_forward_request", |e| e["port"] == port, WAIT)
        .await
        .with_context(|| format!("restart not announced:\n{}", runner.output()))?;
    assert_eq!(request["restarted"], true, "{request}");
    assert_eq!(
        request["state"], "approved",
        "no new prompt needed: {request}"
    );

    // Works with no new approval.
    e2e::expect_hello(&sim, port, "same").await?;
    assert_eq!(sim.events_of("port_forward_resolved").len(), resolutions);
    Ok(())
}

#[tokio::test]
async fn runner_ready_carries_pending_approved_and_denied_listeners() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "appr-ready", &[]).await?;
    let first_ready = sim.wait_for_event("runner_ready", |_| true, WAIT).await?;
    assert_eq!(first_ready["runnerId"], "appr-ready");
    assert_eq!(
        first_ready["listeners"],
        serde_json::json!([]),
        "{first_ready}"
    );

    let approved = e2e::serve_approved(&sim, &mut runner, "approved").await?;
    let (denied, denied_req) = e2e::serve(&sim, &mut runner, "denied").await?;
    sim.deny(&denied_req.request_id)?;
    e2e::wait_resolved(&sim, &denied_req.request_id).await?;
    let (pending, pending_req) = e2e::serve(&sim, &mut runner, "pending").await?;

    let ready = e2e::reconnect_ready(&sim, &runner).await?;
    let listeners = ready["listeners"].as_array().context("listeners")?;
    assert_eq!(listeners.len(), 3, "{ready}");
    for (port, state, name) in [
        (approved, "approved", "approved"),
        (denied, "denied", "denied"),
        (pending, "pending", "pending"),
    ] {
        let listener = e2e::ready_listener(&ready, port).context("listener missing")?;
        let original = &requests_for(&sim, port)[0];
        assert_eq!(listener["state"], state, "{listener}");
        assert_eq!(listener["requestId"], original["requestId"], "{listener}");
        assert_eq!(listener["pid"], pid_of(port).await?, "{listener}");
        assert!(
            listener["command"]
                .as_str()
                .is_some_and(|c| c.contains(name)),
            "{listener}"
        );
    }
    // Nothing was asked again on the new connection.
    for port in [approved, denied, pending] {
        assert_eq!(requests_for(&sim, port).len(), 1, "port {port} asked again");
    }
    // And the state holds: approved works, the others are refused.
    e2e::expect_hello(&sim, approved, "approved").await?;
    expect_refused(&sim, denied, "port_not_approved", StatusCode::FORBIDDEN).await?;
    expect_refused(&sim, pending, "port_not_approved", StatusCode::FORBIDDEN).await?;
    // The pending one can still be approved on the new connection.
    sim.approve(&pending_req.request_id)?;
    e2e::wait_resolved(&sim, &pending_req.request_id).await?;
    e2e::expect_hello(&sim, pending, "pending").await?;
    Ok(())
}
