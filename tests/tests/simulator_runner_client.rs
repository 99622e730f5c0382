//! The runner's own Phoenix client (`runner::control`) against the
//! simulator: join, runner_ready, controls, control_error for garbage, and
//! reconnects/rejoins after each fault the simulator injects.

use std::time::Duration;

use integration_tests::control_client::control_client;
use integration_tests::simulator::{SimConfig, Simulator};
use runner::control::schedule::Backoff;
use runner::control::{ControlChannel, ControlInput, Timing};
use runner::wire::{Control, Event, Limits, RunnerReady};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn client(sim: &Simulator) -> ControlChannel {
    let timing = Timing {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_millis(600),
        reconnect: Backoff::from_millis(&[10, 50], 100),
        rejoin: Backoff::from_millis(&[50], 100),
        ..Timing::default()
    };
    control_client(sim, "rc", timing)
}

/// Answers every `Joined` with `runner_ready`; hands controls to `on_control`.
fn drive(mut channel: ControlChannel, on_control: tokio::sync::mpsc::UnboundedSender<Control>) {
    tokio::spawn(async move {
        while let Some(input) = channel.inputs.recv().await {
            match input {
                ControlInput::Joined(session) => {
                    let ready = Event::RunnerReady(RunnerReady {
                        runner_id: "rc".into(),
                        version: "0.1.0".into(),
                        backend: "procfs".into(),
                        backend_reason: None,
                        config_version: 0,
                        listeners: vec![],
                        instances: vec![],
                        editors: vec![],
                        limits: Limits {
                            max_request_body: 1 << 20,
                            max_response_body: 1 << 20,
                            max_web_socket_message: 1 << 20,
                        },
                    });
                    let _ = channel.handle.reply(session, ready).await;
                }
                ControlInput::Control { control, .. } => {
                    let _ = on_control.send(*control);
                }
                ControlInput::Disconnected
                | ControlInput::Acked(_)
                | ControlInput::Reconnecting { .. } => {}
                ControlInput::Refused(refusal) => panic!("refused: {refusal}"),
            }
        }
    });
}

async fn started() -> (Simulator, tokio::sync::mpsc::UnboundedReceiver<Control>) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    drive(client(&sim), tx);
    sim.wait_for_event("runner_ready", |_| true, WAIT)
        .await
        .expect("first runner_ready");
    (sim, rx)
}

/// Waits for the n-th join and its `runner_ready` (a fresh join after a fault).
async fn ready_again(sim: &Simulator, n: usize) {
    sim.wait_join_count(n, WAIT).await.expect("rejoined");
    sim.wait_for_event_type_count("runner_ready", n, WAIT)
        .await
        .expect("runner_ready after the join");
}

#[tokio::test]
async fn joins_with_the_contract_payload_and_heartbeats() {
    let (sim, _controls) = started().await;
    let join = &sim.joins()[0];
    for field in [
        "runnerId",
        "version",
        "hostname",
        "os",
        "backend",
        "configVersion",
    ] {
        assert!(
            join.get(field).is_some(),
            "join payload lacks {field}: {join}"
        );
    }
    assert_eq!(sim.joined_topic().as_deref(), Some("runner:rc"));
    sim.wait_heartbeat_count(2, WAIT)
        .await
        .expect("client heartbeats");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn controls_arrive_and_garbage_gets_control_errors() {
    let (sim, mut controls) = started().await;
    sim.send_control(json!({"type": "stop_instance", "instanceId": "i1"}))
        .unwrap();
    let control = tokio::time::timeout(WAIT, controls.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(control, Control::StopInstance(_)), "{control:?}");

    let cursor = sim.event_count();
    sim.send_garbage().unwrap();
    let (index, _) = sim
        .wait_for_event_after(
            cursor,
            "control_error",
            |e| e["code"] == "unknown_control",
            WAIT,
        )
        .await
        .expect("unknown type answered");
    let errors = sim.events()[cursor..=index]
        .iter()
        .filter(|e| e["type"] == "control_error")
        .count();
    assert!(errors >= 2, "{:?}", sim.events());
    assert!(sim.connected(), "garbage must not drop the connection");
}

#[tokio::test]
async fn reconnects_after_each_fault() {
    let (sim, _controls) = started().await;
    let mut joins = 1;

    sim.drop_connection().unwrap();
    joins += 1;
    ready_again(&sim, joins).await;

    sim.close_connection(1011, "server error").unwrap();
    joins += 1;
    ready_again(&sim, joins).await;

    sim.send_phx_error().unwrap();
    joins += 1;
    ready_again(&sim, joins).await;

    // No heartbeat replies: the client must call the connection dead.
    let connections = sim.connection_count();
    sim.hold_heartbeats(true);
    sim.wait_connection_count(connections + 1, WAIT)
        .await
        .expect("reconnected");
    sim.hold_heartbeats(false);
    joins += 1;
    ready_again(&sim, joins).await;

    // Rejected joins are retried until accepted.
    sim.reject_joins(Some("maintenance"));
    sim.drop_connection().unwrap();
    let attempts = sim.joins().len();
    sim.wait_join_attempts(attempts + 2, WAIT)
        .await
        .expect("join retried");
    assert_eq!(sim.join_count(), joins, "rejected joins are not counted");
    sim.reject_joins(None);
    joins += 1;
    ready_again(&sim, joins).await;
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
