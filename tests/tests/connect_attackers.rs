//! PROTOCOL.md section 5, played by an attacker with a local account: a
//! process outside the runner's tree (or another program inside it) tries
//! to receive what Kandan forwards to an approved dev server. Each test
//! counts every byte the attacker receives; one byte fails it. Each runs on
//! the eBPF backend (root) and on procfs.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use http::StatusCode;
use integration_tests::e2e::{self, WAIT};
use integration_tests::outsider::Outsider;
use integration_tests::preview_client::{self, PreviewResponse};
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::privileged;
use integration_tests::vite;

/// A long window, so that anything following the debounced events (as the
/// gate once did) would have seconds to forward to the attacker.
const LONG_WINDOW: &str = "3000";

/// Runs `scenario` on `backend`, skipping eBPF without root.
async fn on(backend: &str, test: &str) -> Option<Vec<&'static str>> {
    if backend == "ebpf" && !privileged(test) {
        return None;
    }
    Some(match backend {
        "ebpf" => vec!["--backend", "ebpf", "--debounce-ms", LONG_WINDOW],
        _ => vec!["--backend", "procfs", "--debounce-ms", LONG_WINDOW],
    })
}

/// A preview GET that must not be answered by anyone but `name`: a refusal
/// is fine, another body is a breach.
fn check_answer(resp: &PreviewResponse, name: &str) -> Result<bool> {
    if resp.status == StatusCode::OK {
        ensure!(
            resp.text() == format!("hello from {name}"),
            "answered by someone else: {}",
            resp.text()
        );
        return Ok(true);
    }
    ensure!(
        matches!(
            resp.error_code(),
            Some("port_not_listening" | "port_not_approved" | "upstream_unreachable")
        ),
        "unexpected answer {}: {}",
        resp.status,
        resp.text()
    );
    Ok(false)
}

/// A WebSocket open through the preview front; true when it opened.
async fn try_websocket(sim: &Simulator, port: u16) -> bool {
    let url = format!("ws://{}/preview/{port}/ws", sim.preview_addr());
    matches!(
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url)
        )
        .await,
        Ok(Ok(_))
    )
}

async fn outsider_racing_a_restart(backend: &str) -> Result<()> {
    let Some(flags) = on(backend, "outsider_racing_a_restart").await else {
        return Ok(());
    };
    let id = format!("atk-restart-{backend}");
    let (sim, mut runner) = e2e::start(SimConfig::default(), &id, &flags).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "dev").await?;

    // The dev server restarts; the outsider grabs the port the instant it
    // is free, while the closing is still inside the window.
    let mut outsider = Outsider::spawn("127.0.0.1", port, false)?;
    runner.send_line("stop dev").await?;
    outsider.bound().await?;
    let mut answered = 0;
    for _ in 0..40 {
        let resp = preview_client::get(&sim, port, "/hello").await?;
        if check_answer(&resp, "dev")? {
            answered += 1;
        }
    }
    for _ in 0..5 {
        ensure!(
            !try_websocket(&sim, port).await,
            "a WebSocket opened to the outsider"
        );
    }
    ensure!(
        answered == 0,
        "{answered} answers from a stopped dev server?"
    );
    ensure!(
        outsider.received() == 0,
        "the outsider received {} bytes of forwarded traffic:\n{}",
        outsider.received(),
        runner.output()
    );
    Ok(())
}

#[tokio::test]
async fn ebpf_outsider_racing_a_restart_gets_nothing() -> Result<()> {
    outsider_racing_a_restart("ebpf").await
}

#[tokio::test]
async fn procfs_outsider_racing_a_restart_gets_nothing() -> Result<()> {
    outsider_racing_a_restart("procfs").await
}

async fn reuseport_joiner(backend: &str) -> Result<()> {
    let Some(flags) = on(backend, "reuseport_joiner").await else {
        return Ok(());
    };
    let id = format!("atk-reuseport-{backend}");
    let (sim, mut runner) = e2e::start(SimConfig::default(), &id, &flags).await?;
    let port = vite::free_port()?;
    runner
        .send_line(&format!("start dev {port} reuseport"))
        .await?;
    e2e::approve_when_asked(&sim, &runner, port, "dev").await?;

    // Same user, outside the tree, joins the dev server's reuseport group.
    let mut joiner = Outsider::spawn("127.0.0.1", port, true)?;
    joiner.bound().await?;
    // Many at once, so fresh connections are made (not only pooled ones),
    // and the kernel spreads them over both sockets of the group.
    let mut refused = 0;
    for _ in 0..4 {
        let batch: Vec<_> = (0..16)
            .map(|_| preview_client::get(&sim, port, "/hello"))
            .collect();
        for resp in futures_util::future::join_all(batch).await {
            if !check_answer(&resp?, "dev")? {
                refused += 1;
            }
        }
    }
    for _ in 0..5 {
        if try_websocket(&sim, port).await {
            bail!("a WebSocket opened while a joiner shares the port");
        }
    }
    ensure!(
        joiner.received() == 0,
        "the joiner received {} bytes:\n{}",
        joiner.received(),
        runner.output()
    );
    ensure!(refused > 0, "no fresh connection was refused");

    // The joiner leaves: forwarding resumes, no new prompt.
    drop(joiner);
    tokio::time::sleep(Duration::from_millis(200)).await;
    e2e::expect_hello(&sim, port, "dev").await?;
    Ok(())
}

#[tokio::test]
async fn ebpf_reuseport_joiner_gets_nothing() -> Result<()> {
    reuseport_joiner("ebpf").await
}

#[tokio::test]
async fn procfs_reuseport_joiner_gets_nothing() -> Result<()> {
    reuseport_joiner("procfs").await
}

async fn another_program_in_the_window(backend: &str) -> Result<()> {
    let Some(flags) = on(backend, "another_program_in_the_window").await else {
        return Ok(());
    };
    let id = format!("atk-inside-{backend}");
    let (sim, mut runner) = e2e::start(SimConfig::default(), &id, &flags).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "first").await?;

    // Another program of the tree takes the port inside the window: no
    // event has told Kandan yet, and it must not be served meanwhile.
    runner.stop_server("first", port).await?;
    runner.start_server("second", port).await?;
    let cursor = sim.event_count();
    for _ in 0..20 {
        let resp = preview_client::get(&sim, port, "/hello").await?;
        ensure!(
            resp.status != StatusCode::OK,
            "served by another program: {}",
            resp.text()
        );
    }
    ensure!(
        e2e::served_paths(port).await?.is_empty(),
        "the other program was reached"
    );
    // Its own request comes after the window; approving it opens the port.
    let (_, request) = sim
        .wait_for_event_after(cursor, "port_forward_request", |e| e["port"] == port, WAIT)
        .await
        .with_context(|| format!("no request for the new program:\n{}", runner.output()))?;
    let id = request["requestId"].as_str().context("requestId")?;
    sim.approve(id)?;
    e2e::wait_resolved(&sim, id).await?;
    e2e::expect_hello(&sim, port, "second").await?;
    Ok(())
}

#[tokio::test]
async fn ebpf_another_program_in_the_window_is_not_served() -> Result<()> {
    another_program_in_the_window("ebpf").await
}

#[tokio::test]
async fn procfs_another_program_in_the_window_is_not_served() -> Result<()> {
    another_program_in_the_window("procfs").await
}

/// procfs learns of a family closing only at its next poll; an outsider
/// that takes that family's address in between must still get nothing.
#[tokio::test]
async fn procfs_outsider_on_a_family_that_just_closed_gets_nothing() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = vite::free_port()?;
    let control = tempfile::NamedTempFile::new()?;
    // A dev server on both families that closes its IPv4 socket when the
    // control file says so.
    let script = format!(
        r#"
import os, socket, threading, time
def serve(s):
    while True:
        try:
            c, _ = s.accept()
        except OSError:
            return
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhello from dev")
        c.close()
socks = []
for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, {port}))
    s.listen(64)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
    socks.append(s)
while open({path:?}).read().strip() != "close4":
    time.sleep(0.01)
socks[0].shutdown(socket.SHUT_RDWR)
socks[0].close()
time.sleep(3600)
"#,
        path = control.path().to_string_lossy()
    );
    let args = RunnerArgs::new("atk-family", vec!["python3".into(), "-c".into(), script]).flags([
        "--backend",
        "procfs",
        "--poll-interval-ms",
        "1000",
    ]);
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT).await?;
    e2e::approve_when_asked(&sim, &runner, port, "dev").await?;

    let mut outsider = Outsider::spawn("127.0.0.1", port, false)?;
    std::fs::write(control.path(), "close4")?;
    outsider.bound().await?;
    for _ in 0..20 {
        let resp = preview_client::get(&sim, port, "/hello").await?;
        check_answer(&resp, "dev")?;
    }
    ensure!(
        outsider.received() == 0,
        "the outsider received {} bytes:\n{}",
        outsider.received(),
        runner.output()
    );
    Ok(())
}
