//! The simulator's runner socket against a minimal in-test Phoenix client:
//! handshake checks, join, heartbeat, push/reply, controls, approvals, faults.

use std::time::Duration;

use integration_tests::simulator::test_client::{Closed, TestClient};
use integration_tests::simulator::{RequestState, SimConfig, SimError, Simulator};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "runner:r1";

async fn sim() -> Simulator {
    Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts")
}

async fn joined(sim: &Simulator) -> TestClient {
    let mut client = TestClient::connect(&sim.websocket_url())
        .await
        .expect("connects");
    let reply = client
        .join(TOPIC, json!({"runnerId": "r1", "version": "0.1.0"}))
        .await
        .expect("join reply");
    assert_eq!(reply, json!({"status": "ok", "response": {}}));
    sim.wait_joined(WAIT).await.expect("joined");
    client
}

/// The next control pushed to the client.
async fn next_control(client: &mut TestClient) -> Value {
    let frame = client
        .next_matching(|f| f.event == "control", WAIT)
        .await
        .expect("a control");
    assert_eq!(frame.topic, TOPIC);
    assert_eq!(frame.msg_ref, None, "server pushes carry no ref");
    assert_eq!(
        frame.join_ref, client.join_ref,
        "server pushes carry the join ref"
    );
    frame.payload
}

#[tokio::test]
async fn refuses_bad_token_with_403_and_bad_vsn_with_400() {
    let sim = sim().await;
    let bad_token = format!("{}/websocket?vsn=2.0.0&token=nope", sim.url());
    let err = TestClient::connect(&bad_token)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    let bad_vsn = format!("{}/websocket?vsn=1.0.0&token={}", sim.url(), sim.token());
    let err = TestClient::connect(&bad_vsn).await.err().expect("refused");
    assert!(format!("{err:#}").contains("400"), "{err:#}");
    assert_eq!(sim.connection_count(), 0);
}

#[tokio::test]
async fn join_heartbeat_and_push_get_replies_and_are_recorded() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    assert_eq!(sim.join_count(), 1);
    assert_eq!(sim.joined_topic().as_deref(), Some(TOPIC));
    assert_eq!(sim.joins()[0]["runnerId"], "r1");

    let hb = client.heartbeat().await.unwrap();
    let reply = client.reply_to(&hb).await.unwrap();
    assert_eq!(reply.topic, "phoenix");
    assert_eq!(reply.join_ref, None);
    assert_eq!(reply.payload["status"], "ok");

    let event = json!({"type": "runner_ready", "runnerId": "r1", "listeners": []});
    let push = client.push_event(TOPIC, event.clone()).await.unwrap();
    let reply = client.reply_to(&push).await.unwrap();
    assert_eq!(reply.join_ref, client.join_ref);
    assert_eq!(reply.payload, json!({"status": "ok", "response": {}}));
    let seen = sim
        .wait_for_event("runner_ready", |e| e["runnerId"] == "r1", WAIT)
        .await
        .unwrap();
    assert_eq!(seen, event);
    assert_eq!(sim.heartbeat_count(), 1);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn push_on_unjoined_topic_gets_an_error_reply_and_is_not_recorded() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    let push = client
        .send(
            client.join_ref.clone().as_deref(),
            "runner:other",
            "event",
            json!({"type": "x"}),
        )
        .await
        .unwrap();
    let reply = client.reply_to(&push).await.unwrap();
    assert_eq!(reply.payload["status"], "error");
    assert!(sim.events().is_empty());
}

#[tokio::test]
async fn stale_join_ref_is_a_violation() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    let push = client
        .send(Some("999"), TOPIC, "event", json!({"type": "x"}))
        .await
        .unwrap();
    client.reply_to(&push).await.unwrap();
    assert_eq!(sim.violations().len(), 1, "{:?}", sim.violations());
}

#[tokio::test]
async fn controls_are_pushed_and_need_a_joined_runner() {
    let sim = sim().await;
    let control = json!({"type": "stop_instance", "instanceId": "i1"});
    assert!(matches!(
        sim.send_control(control.clone()),
        Err(SimError::NotConnected)
    ));
    let mut client = TestClient::connect(&sim.websocket_url()).await.unwrap();
    sim.wait_connection_count(1, WAIT).await.unwrap();
    assert!(matches!(
        sim.send_control(control.clone()),
        Err(SimError::NotJoined)
    ));
    client.join(TOPIC, json!({})).await.unwrap();
    sim.send_control(control.clone()).unwrap();
    assert_eq!(next_control(&mut client).await, control);
    assert!(matches!(
        sim.send_control(json!({"no": "type"})),
        Err(SimError::InvalidControl)
    ));
}

#[tokio::test]
async fn approve_and_deny_track_requests() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    for (id, port) in [("a", 5173), ("b", 9229)] {
        let event = json!({"type": "port_forward_request", "requestId": id, "port": port,
            "pid": 1, "command": "node", "label": "node", "addresses": ["127.0.0.1"], "restarted": false});
        client.push_event(TOPIC, event).await.unwrap();
    }
    let request = sim.wait_for_request(9229, WAIT).await.unwrap();
    assert_eq!(request.request_id, "b");
    assert_eq!(sim.port_forward_requests().len(), 2);

    assert_eq!(sim.approve_port(5173, WAIT).await.unwrap().request_id, "a");
    let control = next_control(&mut client).await;
    assert_eq!(control["type"], "resolve_port_forward_request");
    assert_eq!(control["requestId"], "a");
    assert_eq!(control["decision"], "approve");
    assert!(control["instanceId"].is_string());
    sim.deny("b").unwrap();
    assert_eq!(next_control(&mut client).await["decision"], "deny");

    let states: Vec<_> = sim
        .port_forward_requests()
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states, [RequestState::Approved, RequestState::Denied]);
}

#[tokio::test]
async fn auto_approve_answers_each_request() {
    let sim = Simulator::start(SimConfig {
        auto_approve: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut client = joined(&sim).await;
    let event = json!({"type": "port_forward_request", "requestId": "q", "port": 8000});
    client.push_event(TOPIC, event).await.unwrap();
    let control = next_control(&mut client).await;
    assert_eq!(
        (control["requestId"].as_str(), control["decision"].as_str()),
        (Some("q"), Some("approve"))
    );
}

#[tokio::test]
async fn rejected_joins_reply_error_with_reason() {
    let sim = Simulator::start(SimConfig {
        reject_joins: Some("unauthorized".into()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut client = TestClient::connect(&sim.websocket_url()).await.unwrap();
    let reply = client.join(TOPIC, json!({})).await.unwrap();
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "unauthorized"}})
    );
    assert_eq!(sim.join_count(), 0);
    assert_eq!(sim.joins().len(), 1);
    sim.reject_joins(None);
    assert_eq!(client.join(TOPIC, json!({})).await.unwrap()["status"], "ok");
    assert_eq!(sim.join_count(), 1);
}

#[tokio::test]
async fn only_the_configured_runner_id_may_join() {
    let sim = Simulator::start(SimConfig {
        runner_id: Some("r1".into()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut client = TestClient::connect(&sim.websocket_url()).await.unwrap();
    assert_eq!(
        client.join("runner:r2", json!({})).await.unwrap()["status"],
        "error"
    );
    assert_eq!(client.join(TOPIC, json!({})).await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn drop_connection_ends_without_close_frame() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    sim.drop_connection().unwrap();
    assert_eq!(client.wait_closed(WAIT).await.unwrap(), Closed::Dropped);
    sim.wait_disconnected(WAIT).await.unwrap();
    assert!(!sim.connected());
}

#[tokio::test]
async fn close_with_1011_sends_the_code() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    sim.close_connection(1011, "boom").unwrap();
    assert_eq!(
        client.wait_closed(WAIT).await.unwrap(),
        Closed::CloseFrame(Some((1011, "boom".into())))
    );
    sim.wait_disconnected(WAIT).await.unwrap();
}

#[tokio::test]
async fn held_heartbeats_are_answered_when_released() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    sim.hold_heartbeats(true);
    let hb = client.heartbeat().await.unwrap();
    let held = client
        .next_matching(
            |f| f.msg_ref.as_deref() == Some(hb.as_str()),
            Duration::from_millis(500),
        )
        .await;
    assert!(held.is_err(), "reply was not held: {held:?}");
    sim.hold_heartbeats(false);
    assert_eq!(client.reply_to(&hb).await.unwrap().payload["status"], "ok");
}

#[tokio::test]
async fn phx_error_unjoins_until_the_client_rejoins() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    let join_ref = client.join_ref.clone();
    sim.send_phx_error().unwrap();
    let frame = client
        .next_matching(|f| f.event == "phx_error", WAIT)
        .await
        .unwrap();
    assert_eq!((frame.topic.as_str(), &frame.join_ref), (TOPIC, &join_ref));
    assert_eq!(frame.msg_ref, join_ref);
    assert!(matches!(
        sim.send_control(json!({"type": "x"})),
        Err(SimError::NotJoined)
    ));
    client.join(TOPIC, json!({})).await.unwrap();
    sim.wait_join_count(2, WAIT).await.unwrap();
    sim.send_control(json!({"type": "x"})).unwrap();
}

#[tokio::test]
async fn garbage_frames_reach_the_client_and_leave_the_connection_up() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    sim.send_garbage().unwrap();
    // The three control frames parse as frames; the rest is raw garbage.
    for _ in 0..3 {
        client
            .next_matching(|f| f.event == "control", WAIT)
            .await
            .unwrap();
    }
    assert!(
        client.raw.iter().any(|r| r == "this is not json"),
        "{:?}",
        client.raw
    );
    let hb = client.heartbeat().await.unwrap();
    client.reply_to(&hb).await.unwrap();
    assert!(sim.connected());
}

#[tokio::test]
async fn refused_connections_get_503_then_reconnect_counts() {
    let sim = sim().await;
    sim.refuse_connections(true);
    let err = TestClient::connect(&sim.websocket_url())
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("503"), "{err:#}");
    sim.refuse_connections(false);
    let _client = joined(&sim).await;
    assert_eq!(sim.connection_count(), 1);
}

#[tokio::test]
async fn wait_for_event_after_skips_older_events_and_times_out() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    client
        .push_event(TOPIC, json!({"type": "runner_ready", "n": 1}))
        .await
        .unwrap();
    sim.wait_for_event_count(1, WAIT).await.unwrap();
    let cursor = sim.event_count();
    let late = sim
        .wait_for_event_after(cursor, "runner_ready", |_| true, Duration::from_millis(200))
        .await;
    assert!(matches!(late, Err(SimError::Timeout { .. })));
    client
        .push_event(TOPIC, json!({"type": "runner_ready", "n": 2}))
        .await
        .unwrap();
    let (index, event) = sim
        .wait_for_event_after(cursor, "runner_ready", |_| true, WAIT)
        .await
        .unwrap();
    assert_eq!((index, event["n"].as_u64()), (1, Some(2)));
}

#[tokio::test]
async fn non_decimal_or_repeated_refs_are_violations() {
    let sim = sim().await;
    let mut client = joined(&sim).await;
    client
        .push_event(TOPIC, json!({"type": "x"}))
        .await
        .unwrap();
    sim.wait_for_event_count(1, WAIT).await.unwrap();
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    client
        .send_raw(&format!(
            "[{:?},\"1\",\"{TOPIC}\",\"event\",{{\"type\":\"y\"}}]",
            client.join_ref.clone().unwrap()
        ))
        .await
        .unwrap();
    client
        .send_raw(&format!(
            "[{:?},\"abc\",\"{TOPIC}\",\"event\",{{\"type\":\"z\"}}]",
            client.join_ref.clone().unwrap()
        ))
        .await
        .unwrap();
    sim.wait_for_event_count(3, WAIT).await.unwrap();
    assert_eq!(sim.violations().len(), 2, "{:?}", sim.violations());
}

#[tokio::test]
async fn percent_encoded_tokens_are_accepted() {
    let sim = Simulator::start(SimConfig {
        token: "t+k/=x y".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    assert!(
        sim.websocket_url().ends_with("token=t%2Bk%2F%3Dx%20y"),
        "{}",
        sim.websocket_url()
    );
    let _client = joined(&sim).await;
}
