//! `connect` binds an approval to the listener's identity, read live: a
//! process that `exec`s another program keeping the approved socket loses
//! the approval, and a listener a descendant opens inside a network
//! namespace of its own is never a candidate. On eBPF and procfs.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use http::StatusCode;
use integration_tests::e2e::{self, WAIT};
use integration_tests::outsider::{Outsider, fixture};
use integration_tests::preview_client;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::privileged;
use integration_tests::vite;

fn count_of(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

async fn exec_swap(backend: &str) -> Result<()> {
    if backend == "ebpf" && !privileged("exec_swap") {
        return Ok(());
    }
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = vite::free_port()?;
    let control = tempfile::NamedTempFile::new()?;
    let count = tempfile::NamedTempFile::new()?;
    let command = vec![
        "python3".to_string(),
        fixture("execswap.py"),
        "first".into(),
        "--port".into(),
        port.to_string(),
        "--control".into(),
        control.path().to_string_lossy().into_owned(),
        "--count".into(),
        count.path().to_string_lossy().into_owned(),
    ];
    let args =
        RunnerArgs::new(&format!("ident-exec-{backend}"), command).flags(["--backend", backend]);
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT).await?;
    e2e::approve_when_asked(&sim, &runner, port, "first").await?;

    // The approved process becomes another program on the same socket.
    let cursor = sim.event_count();
    std::fs::write(control.path(), "exec")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = preview_client::get(&sim, port, "/hello").await?;
        if resp.status == StatusCode::FORBIDDEN {
            ensure!(
                resp.error_code() == Some("port_not_approved"),
                "{}",
                resp.text()
            );
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the exec never revoked the approval; last answer {}: {}\n{}",
            resp.status,
            resp.text(),
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What was in flight when it flipped has arrived by now; from here on
    // nothing may reach the new program.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = count_of(count.path());
    for _ in 0..20 {
        let resp = preview_client::get(&sim, port, "/hello").await?;
        ensure!(
            resp.status == StatusCode::FORBIDDEN,
            "served after the exec: {} {}",
            resp.status,
            resp.text()
        );
    }
    ensure!(
        count_of(count.path()) == before,
        "the exec'd program received forwarded traffic"
    );
    // It is a new identity: its own request, with its own command line.
    let (_, request) = sim
        .wait_for_event_after(cursor, "port_forward_request", |e| e["port"] == port, WAIT)
        .await
        .with_context(|| format!("no request for the exec'd program:\n{}", runner.output()))?;
    ensure!(
        request["command"]
            .as_str()
            .is_some_and(|c| c.contains("execswap.py second")),
        "{request}"
    );
    ensure!(request["state"] == "pending", "{request}");
    Ok(())
}

#[tokio::test]
async fn ebpf_an_exec_into_another_program_loses_the_approval() -> Result<()> {
    exec_swap("ebpf").await
}

#[tokio::test]
async fn procfs_an_exec_into_another_program_loses_the_approval() -> Result<()> {
    exec_swap("procfs").await
}

/// Waits until a `http.server <port>` process listens on `port` in its
/// own network namespace (its `/proc/<pid>/net/tcp`), so the test cannot
/// pass because the listener never came up.
async fn wait_listening_in_own_namespace(port: u16) -> Result<()> {
    let needle = format!("http.server\0{port}");
    let hex = format!(":{port:04X} ");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let path = entry.path();
            let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
                continue;
            };
            if !String::from_utf8_lossy(&cmdline).contains(&needle) {
                continue;
            }
            let own = std::fs::read_link(path.join("ns/net")).ok();
            let ours = std::fs::read_link("/proc/self/ns/net").ok();
            let tcp = std::fs::read_to_string(path.join("net/tcp")).unwrap_or_default();
            if own != ours && tcp.lines().any(|l| l.contains(&hex) && l.contains(" 0A ")) {
                return Ok(());
            }
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no http.server listening on {port} in a namespace of its own"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn own_namespace(backend: &str) -> Result<()> {
    if !privileged("own_namespace") {
        return Ok(());
    }
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = vite::free_port()?;
    // In the runner's namespace, the same port belongs to an outsider.
    let mut outsider = Outsider::spawn("127.0.0.1", port, false)?;
    outsider.bound().await?;
    // A descendant listens on that port in a network namespace of its own.
    let script = format!("exec python3 -m http.server {port} --bind 0.0.0.0");
    let command = vec![
        "unshare".to_string(),
        "-n".into(),
        "sh".into(),
        "-c".into(),
        script,
    ];
    let args =
        RunnerArgs::new(&format!("ident-netns-{backend}"), command).flags(["--backend", backend]);
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT).await?;
    wait_listening_in_own_namespace(port).await?;
    // Long enough for detection and the 300 ms window many times over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests: Vec<_> = sim
        .events_of("port_forward_request")
        .into_iter()
        .filter(|e| e["port"] == port)
        .collect();
    ensure!(
        requests.is_empty(),
        "a listener in another namespace was offered: {requests:?}\n{}",
        runner.output()
    );
    let resp = preview_client::get(&sim, port, "/").await?;
    ensure!(
        resp.error_code() == Some("port_not_listening"),
        "{} {}",
        resp.status,
        resp.text()
    );
    ensure!(outsider.received() == 0, "the outsider received traffic");
    Ok(())
}

#[tokio::test]
async fn ebpf_a_listener_in_its_own_network_namespace_is_not_a_candidate() -> Result<()> {
    own_namespace("ebpf").await
}

#[tokio::test]
async fn procfs_a_listener_in_its_own_network_namespace_is_not_a_candidate() -> Result<()> {
    own_namespace("procfs").await
}
