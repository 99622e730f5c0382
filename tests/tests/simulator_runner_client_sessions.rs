//! The runner's own Phoenix client (`runner::control`) against the
//! simulator, driven by hand: what it tells the runner (`ControlInput`) and
//! what Kandan sees, in order. Sessions and join refs (nothing sent before
//! `runner_ready`, stale sessions and refs ignored), reconnects said in
//! order, a flood of malformed controls, `leave`, and tracked pushes acked.
//! (`simulator_runner_client.rs` drives the same client with an automatic
//! runner; the schedules under paused time stay unit tests in
//! `runner/src/control/tests.rs`, which need the client's in-memory seam.)

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use integration_tests::control_client::control_client;
use integration_tests::simulator::{Frame, SimConfig, Simulator};
use runner::control::schedule::Backoff;
use runner::control::{Ack, ControlChannel, ControlInput, Session, Timing};
use runner::wire::{Control, Event, Limits, PortForwardClosed, RunnerReady};
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
const TOPIC: &str = "runner:r1";

/// A simulator whose token needs percent-encoding in the socket URL.
async fn simulator() -> Result<Simulator> {
    let config = SimConfig {
        token: "se cret+/=".into(),
        ..SimConfig::default()
    };
    Ok(Simulator::start(config).await?)
}

fn client(sim: &Simulator) -> ControlChannel {
    let timing = Timing {
        reconnect: Backoff::from_millis(&[10, 20], 50),
        rejoin: Backoff::from_millis(&[10, 20], 50),
        ..Timing::default()
    };
    control_client(sim, "r1", timing)
}

fn ready() -> Event {
    Event::RunnerReady(RunnerReady {
        runner_id: "r1".into(),
        version: "0.1.0".into(),
        backend: "procfs".into(),
        backend_reason: None,
        config_version: 2,
        listeners: vec![],
        instances: vec![],
        editors: vec![],
        limits: Limits {
            max_request_body: 1 << 20,
            max_response_body: 1 << 20,
            max_web_socket_message: 1 << 20,
        },
    })
}

fn closed(request_id: &str) -> Event {
    Event::PortForwardClosed(PortForwardClosed {
        instance_id: None,
        request_id: request_id.into(),
        port: 1,
    })
}

async fn next_input(channel: &mut ControlChannel) -> Result<ControlInput> {
    timeout(WAIT, channel.inputs.recv())
        .await
        .context("no input in time")?
        .context("client ended")
}

async fn joined(channel: &mut ControlChannel) -> Result<Session> {
    match next_input(channel).await? {
        ControlInput::Joined(session) => Ok(session),
        other => bail!("expected Joined, got {other:?}"),
    }
}

async fn control(channel: &mut ControlChannel) -> Result<Control> {
    match next_input(channel).await? {
        ControlInput::Control { control, .. } => Ok(*control),
        other => bail!("expected a control, got {other:?}"),
    }
}

/// Joins and answers with `runner_ready`, as the runner does.
async fn joined_and_ready(sim: &Simulator, channel: &mut ControlChannel) -> Result<Session> {
    let session = joined(channel).await?;
    let readies = sim.events_of("runner_ready").len();
    channel.handle.reply(session, ready()).await?;
    sim.wait_for_event_type_count("runner_ready", readies + 1, WAIT)
        .await?;
    Ok(session)
}

/// The runner's frames of `event`, in order.
fn frames_of(sim: &Simulator, event: &str) -> Vec<Frame> {
    (sim.frames().into_iter())
        .filter(|f| f.event == event)
        .collect()
}

/// A frame from Kandan on `TOPIC` with `join_ref`, sent as is.
fn push(sim: &Simulator, join_ref: &str, event: &str, payload: Value) -> Result<()> {
    let frame = Frame::new(Some(join_ref), None, TOPIC, event, payload);
    Ok(sim.send_raw(&frame.to_text())?)
}

#[tokio::test]
async fn joins_and_exchanges_controls_and_events() -> Result<()> {
    let sim = simulator().await?;
    let mut client = client(&sim);
    // Sent before any join: superseded by runner_ready, never replayed.
    client.handle.send(closed("early")).await?;
    // The simulator refuses a token it cannot decode: joining proves the
    // URL carried it percent-encoded.
    let session = joined(&mut client).await?;
    let join = frames_of(&sim, "phx_join").remove(0);
    ensure!(
        join.topic == TOPIC && join.join_ref == join.msg_ref,
        "{join:?}"
    );
    ensure!(
        join.payload
            == json!({"runnerId": "r1", "version": "0.1.0", "hostname": "box", "os": "linux",
                      "backend": "procfs", "configVersion": 2}),
        "{join:?}"
    );
    // Before runner_ready: dropped.
    client.handle.send(closed("too-early")).await?;
    client.handle.reply(session, ready()).await?;
    client.handle.send(closed("after")).await?;
    let events = sim.wait_for_event_count(2, WAIT).await?;
    ensure!(events[0]["type"] == "runner_ready", "{events:?}");
    ensure!(events[1]["requestId"] == "after", "{events:?}");
    let first = frames_of(&sim, "event").remove(0);
    ensure!(first.join_ref == join.join_ref, "{first:?}");

    sim.send_control(
        json!({"type": "forward_websocket_close", "socketId": "s1", "unknownField": 1}),
    )?;
    let Control::ForwardWebsocketClose(close) = control(&mut client).await? else {
        bail!("expected forward_websocket_close");
    };
    ensure!(close.socket_id == "s1");

    // Unknown type: answered by the client itself.
    sim.send_control(json!({"type": "self_destruct", "requestId": "q"}))?;
    let error = sim
        .wait_for_event("control_error", |e| e["requestId"] == "q", WAIT)
        .await?;
    ensure!(
        error
            == json!({"type": "control_error", "controlType": "self_destruct", "requestId": "q",
                      "code": "unknown_control", "message": "unknown control type"}),
        "{error}"
    );
    ensure!(sim.events().len() == 3, "{:?}", sim.events());
    ensure!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

#[tokio::test]
async fn rejoins_after_phx_error_and_drops_stale_sessions_and_join_refs() -> Result<()> {
    let sim = simulator().await?;
    let mut client = client(&sim);
    let first = joined_and_ready(&sim, &mut client).await?;
    let old_ref = frames_of(&sim, "phx_join")[0]
        .join_ref
        .clone()
        .context("ref")?;

    // A join error is retried (on the rejoin schedule) until accepted.
    sim.reject_joins(Some("busy"));
    sim.send_phx_error()?;
    ensure!(matches!(
        next_input(&mut client).await?,
        ControlInput::Disconnected
    ));
    sim.wait_join_attempts(3, WAIT).await?;
    sim.reject_joins(None);
    let second = joined(&mut client).await?;
    ensure!(first != second);
    let joins = frames_of(&sim, "phx_join");
    let new_ref = joins
        .last()
        .and_then(|f| f.join_ref.clone())
        .context("ref")?;
    ensure!(new_ref != old_ref);

    // An answer for the first session is stale; runner_ready goes first.
    client.handle.reply(first, closed("stale")).await?;
    client.handle.reply(second, ready()).await?;
    client.handle.send(closed("fresh")).await?;
    sim.wait_for_event("port_forward_closed", |e| e["requestId"] == "fresh", WAIT)
        .await?;
    let events = sim.events();
    ensure!(
        !events.iter().any(|e| e["requestId"] == "stale"),
        "{events:?}"
    );
    ensure!(sim.events_of("runner_ready").len() == 2, "{events:?}");

    // A control with the old ref is ignored; one with the new ref is not.
    push(
        &sim,
        &old_ref,
        "control",
        json!({"type": "stop_instance", "instanceId": "stale"}),
    )?;
    sim.send_control(json!({"type": "stop_instance", "instanceId": "fresh"}))?;
    let Control::StopInstance(stop) = control(&mut client).await? else {
        bail!("expected stop_instance");
    };
    ensure!(stop.instance_id == "fresh", "{stop:?}");
    // phx_close with the old ref is ignored too; the channel stays joined.
    push(&sim, &old_ref, "phx_close", json!({}))?;
    sim.send_control(json!({"type": "stop_instance", "instanceId": "still"}))?;
    let Control::StopInstance(stop) = control(&mut client).await? else {
        bail!("expected stop_instance");
    };
    ensure!(stop.instance_id == "still", "{stop:?}");
    Ok(())
}

/// `Disconnected`, then why and when the next attempt is, then `Joined`:
/// the runner's state line and `status` follow this order.
async fn says_the_reconnect_in_order(client: &mut ControlChannel) -> Result<()> {
    ensure!(matches!(
        next_input(client).await?,
        ControlInput::Disconnected
    ));
    match next_input(client).await? {
        ControlInput::Reconnecting {
            attempt,
            delay,
            reason,
        } => {
            ensure!(attempt == 1 && delay == Duration::from_millis(10));
            ensure!(!reason.is_empty());
        }
        other => bail!("expected Reconnecting, got {other:?}"),
    }
    joined(client).await?;
    Ok(())
}

#[tokio::test]
async fn reconnects_after_a_drop_and_after_close_1011_say_so_in_order() -> Result<()> {
    let sim = simulator().await?;
    let mut client = client(&sim);
    joined_and_ready(&sim, &mut client).await?;
    sim.drop_connection()?;
    says_the_reconnect_in_order(&mut client).await?;
    sim.close_connection(1011, "internal error")?;
    says_the_reconnect_in_order(&mut client).await?;
    ensure!(sim.connection_count() == 3);
    Ok(())
}

#[tokio::test]
async fn thousand_malformed_controls_each_get_a_control_error() -> Result<()> {
    let sim = simulator().await?;
    let mut client = client(&sim);
    joined_and_ready(&sim, &mut client).await?;
    let join_ref = frames_of(&sim, "phx_join")[0]
        .join_ref
        .clone()
        .context("ref")?;
    let bad = [
        json!({"type": "forward_http_request", "requestId": "h", "port": 0, "method": "GET", "path": "/"}),
        json!({"type": "forward_http_request", "requestId": "h", "port": 70000, "method": "GET", "path": "/"}),
        json!({"type": "forward_http_request", "requestId": "h", "port": 80, "method": "GET", "path": "/", "bodyBase64": "***"}),
        json!({"type": "forward_websocket_send", "socketId": "s", "opcode": "shout", "bodyBase64": ""}),
        json!({"type": "update_runner_config", "allowedCwds": ["relative"]}),
        json!({"type": "resolve_port_forward_request", "requestId": "h"}),
        json!({"type": 42}),
        json!("not an object"),
    ];
    for i in 0..1000 {
        if i % 10 == 9 {
            sim.send_raw("[garbage")?;
        } else {
            push(&sim, &join_ref, "control", bad[i % bad.len()].clone())?;
        }
    }
    let events = sim.wait_for_event_count(1001, WAIT).await?;
    for (i, error) in events[1..].iter().enumerate() {
        ensure!(error["type"] == "control_error", "{i}: {error}");
        ensure!(error["code"] == "invalid_control", "{i}: {error}");
    }
    // Still the same connection, still joined.
    sim.send_control(json!({"type": "stop_instance", "instanceId": "i"}))?;
    ensure!(matches!(
        control(&mut client).await?,
        Control::StopInstance(_)
    ));
    sim.send_binary(&[1, 2, 3])?;
    let events = sim.wait_for_event_count(1002, WAIT).await?;
    ensure!(
        events[1001]["code"] == "invalid_control",
        "{}",
        events[1001]
    );
    ensure!(sim.connection_count() == 1);
    Ok(())
}

#[tokio::test]
async fn leave_sends_phx_leave_after_pending_events_then_closes_with_1000() -> Result<()> {
    let sim = simulator().await?;
    let mut client = client(&sim);
    let session = joined(&mut client).await?;
    client.handle.reply(session, ready()).await?;
    client.handle.send(closed("last")).await?;
    client.handle.leave().await?;
    timeout(WAIT, client.task)
        .await
        .context("the client did not end")??;

    let join_ref = frames_of(&sim, "phx_join")[0].join_ref.clone();
    let frames: Vec<Frame> = (sim.frames().into_iter())
        .filter(|f| f.event != "heartbeat")
        .collect();
    let order: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    ensure!(
        order == ["phx_join", "event", "event", "phx_leave"],
        "{order:?}"
    );
    ensure!(frames[1].payload["type"] == "runner_ready");
    ensure!(frames[2].payload["requestId"] == "last");
    ensure!(frames[3].join_ref == join_ref && frames[3].topic == TOPIC);
    ensure!(sim.close_codes() == [1000], "{:?}", sim.close_codes());
    Ok(())
}

#[tokio::test]
async fn tracked_pushes_come_back_acked_once_kandan_replies() -> Result<()> {
    let sim = simulator().await?;
    let mut client = client(&sim);
    joined_and_ready(&sim, &mut client).await?;
    // Kandan's replies are given by hand below.
    sim.hold_event_replies(true);
    let ack = |seq| Ack {
        instance_id: "i1".into(),
        seq,
    };
    client.handle.send_tracked(closed("a"), ack(1)).await?;
    client.handle.send_tracked(closed("b"), ack(2)).await?;
    sim.wait_for_event("port_forward_closed", |e| e["requestId"] == "b", WAIT)
        .await?;
    let pushed = |id: &str| {
        (frames_of(&sim, "event").into_iter())
            .find(|f| f.payload["requestId"] == id)
            .context("pushed")
    };
    let (first, second) = (pushed("a")?, pushed("b")?);
    // Only the answered one is acked, whatever the order of the answers.
    let error = second.reply("error", json!({"reason": "nope"}));
    sim.send_raw(&error.to_text())?;
    match next_input(&mut client).await? {
        ControlInput::Acked(got) => ensure!(got == ack(2), "{got:?}"),
        other => bail!("expected Acked, got {other:?}"),
    }
    let quiet = timeout(Duration::from_millis(200), client.inputs.recv()).await;
    ensure!(quiet.is_err(), "an unanswered push was acked: {quiet:?}");
    sim.send_raw(&first.reply("ok", json!({})).to_text())?;
    match next_input(&mut client).await? {
        ControlInput::Acked(got) => ensure!(got == ack(1), "{got:?}"),
        other => bail!("expected Acked, got {other:?}"),
    }
    Ok(())
}
