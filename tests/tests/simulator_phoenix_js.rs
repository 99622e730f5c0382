//! Framing proof: the official `phoenix` JS client (with `ws` as transport)
//! joins, heartbeats, pushes and receives a control through the simulator.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::simulator::{SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(30);

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/phoenix-client")
}

/// `npm ci` when node_modules is missing (`cargo xtask setup` does it too).
async fn npm_ci() {
    let dir = fixture();
    if dir.join("node_modules/phoenix").exists() && dir.join("node_modules/ws").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .await
        .expect("npm runs (Node 20 is needed for this test)");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[tokio::test]
async fn official_phoenix_client_speaks_to_the_simulator() {
    npm_ci().await;
    let sim = Simulator::start(SimConfig {
        runner_id: Some("js1".into()),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let child = Command::new("node")
        .arg("client.mjs")
        .args([sim.url().as_str(), sim.token(), "js1"])
        .current_dir(fixture())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");

    sim.wait_joined(WAIT).await.expect("js client joins");
    sim.wait_for_event("runner_ready", |e| e["runnerId"] == "js1", WAIT)
        .await
        .expect("js client pushes an event");
    let control = json!({"type": "stop_instance", "instanceId": "i-js"});
    sim.send_control(control.clone()).expect("control sent");

    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("node finishes")
        .expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed: {stdout}\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    // What the JS client saw.
    assert_eq!(seen["joinReply"], json!({"status": "ok", "response": {}}));
    assert_eq!(seen["pushReply"], json!({"status": "ok", "response": {}}));
    assert!(seen["heartbeatReplies"].as_u64() >= Some(1), "{seen}");
    assert_eq!(seen["controls"], json!([control]));
    assert_eq!(seen["errors"], json!([]));
    let end_point = seen["endPoint"].as_str().unwrap();
    assert!(
        end_point.starts_with(&format!("{}/websocket?", sim.url())),
        "{end_point}"
    );
    assert!(end_point.contains("vsn=2.0.0"), "{end_point}");

    // What the simulator saw: v2 frames with decimal string refs.
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    let frames = sim.frames();
    let join = frames
        .iter()
        .find(|f| f.event == "phx_join")
        .expect("a join frame");
    assert_eq!(join.topic, "runner:js1");
    assert_eq!(
        join.join_ref, join.msg_ref,
        "phoenix joins with joinRef == ref"
    );
    assert_eq!(join.payload["runnerId"], "js1");
    let heartbeat = frames
        .iter()
        .find(|f| f.event == "heartbeat")
        .expect("a heartbeat");
    assert_eq!(
        (heartbeat.topic.as_str(), &heartbeat.join_ref),
        ("phoenix", &None)
    );
    assert_eq!(heartbeat.payload, json!({}));
    let push = frames.iter().find(|f| f.event == "event").expect("a push");
    assert_eq!(push.join_ref, join.join_ref);
    for frame in &frames {
        let r = frame.msg_ref.as_deref().expect("client frames carry a ref");
        assert!(r.parse::<u64>().is_ok(), "ref {r:?} is not decimal");
    }
    assert_eq!(sim.joins().len(), 1);
}
