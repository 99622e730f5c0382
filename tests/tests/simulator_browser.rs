//! Headless Chromium loads a page through the preview front: redirect to the
//! trailing slash, stylesheet, relative and absolute fetches, and a
//! WebSocket with a subprotocol. A JS stand-in runner (official phoenix
//! client) forwards the controls, so this tests the simulator alone.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::simulator::{SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/phoenix-client")
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| which(name))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn node(script: &str, args: &[&str]) -> Child {
    Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(fixture())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts")
}

#[tokio::test]
async fn chromium_loads_a_page_and_a_websocket_through_the_preview() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium missing under CI"
        );
        eprintln!("skipping: no chromium on PATH");
        return;
    };
    if !fixture().join("node_modules/phoenix").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(fixture())
            .status()
            .await
            .expect("npm runs");
        assert!(status.success(), "npm ci failed");
    }
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let mut upstream = node("browser-upstream.mjs", &[]);
    let mut lines = BufReader::new(upstream.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
        .as_u64()
        .unwrap();
    let _runner = node("standin-runner.mjs", &[&sim.url(), sim.token()]);
    sim.wait_joined(WAIT).await.expect("stand-in runner joins");

    let profile = std::env::temp_dir().join(format!("sim-chromium-{}", std::process::id()));
    // Without the trailing slash, to go through the redirect.
    let page = format!("http://{}/preview/{port}", sim.preview_addr());
    let _browser = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--remote-debugging-port=0")
        .arg(&page)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");

    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the page reports in time")
        .unwrap()
        .expect("a report line");
    let report: Value = serde_json::from_str(&line).expect("report is json");
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(report["error"], Value::Null, "{report}");
    assert_eq!(report["color"], "rgb(255, 0, 0)", "{report}");
    assert_eq!(
        report["relative"],
        json!({"status": 200, "body": {"hello": "world"}})
    );
    assert_eq!(report["base"], format!("/preview/{port}/"));
    assert_eq!(report["absolute"], 200);
    assert_eq!(report["protocol"], "echo-proto");
    assert_eq!(report["message"], "echo:ping-from-browser");
    assert_eq!(report["closeCode"], 4000);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
