//! The runner's memory is bounded in bytes (PROTOCOL.md section 5): with a
//! Kandan that stops reading while large WebSocket messages and responses
//! flow, its resident set stays under 128 MiB, the local servers are held
//! back, and traffic flows again once Kandan reads again.

use std::time::Duration;

use anyhow::{Context, Result};
use http::StatusCode;
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::runner_process::RunnerProcess;
use integration_tests::simulator::SimConfig;
use integration_tests::vite;
use serde_json::json;

const MIB: u64 = 1024 * 1024;
/// The bound the issue sets for the runner's resident set.
const RSS_LIMIT_KIB: u64 = 128 * 1024;

/// Large bodies are not kept by the simulator (its own memory is not the
/// runner's, but the test process should not hold gigabytes either).
fn config() -> SimConfig {
    SimConfig {
        record_forward_events: false,
        ..SimConfig::default()
    }
}

/// Samples the runner's RSS every 100 ms until `progress` (a count the
/// local server or the simulator reports) has not moved for `quiet`;
/// returns the peak RSS in KiB and the last progress.
async fn peak_rss_until_stalled<F, Fut>(
    runner: &RunnerProcess,
    quiet: Duration,
    mut progress: F,
) -> Result<(u64, u64)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let mut peak = 0;
    let mut last = (progress().await?, tokio::time::Instant::now());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        peak = peak.max(runner.rss_kib()?);
        let now = progress().await?;
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() >= quiet {
            return Ok((peak, now));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never stalled; peak {peak} KiB"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ws_sent(port: u16) -> Result<u64> {
    let resp = vite::http_get(port, "/ws-sent", &format!("localhost:{port}")).await?;
    resp.body.trim().parse().context("bad /ws-sent")
}

#[tokio::test]
async fn a_stalled_kandan_bounds_memory_under_websocket_messages() -> Result<()> {
    const COUNT: u64 = 150;
    let (sim, mut runner) = e2e::start(config(), "memory-ws", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "push").await?;

    sim.pause_reading(true)?;
    sim.send_control(json!({
        "type": "forward_websocket_open", "socketId": "push", "port": port,
        "path": "/ws-push", "queryString": format!("count={COUNT}&size={}", 8 * MIB),
    }))?;
    let (peak, sent) = peak_rss_until_stalled(&runner, Duration::from_secs(3), || ws_sent(port))
        .await
        .with_context(|| runner.output())?;
    println!(
        "stalled kandan, websocket: peak RSS {peak} KiB, {sent} of {COUNT} messages written by the server"
    );
    assert!(sent < COUNT, "the local server was never held back");
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");

    // Kandan reads again: messages flow again, in order, and the socket
    // closes cleanly when Kandan closes it. (Draining all 1.2 GB through
    // debug builds would take minutes; ten messages show the flow is back.)
    sim.pause_reading(false)?;
    sim.wait_for_seen_count("forward_websocket_message", 10, WAIT)
        .await
        .with_context(|| runner.output())?;
    sim.send_control(json!({"type": "forward_websocket_close", "socketId": "push"}))?;
    sim.wait_for_seen_count("forward_websocket_closed", 1, WAIT)
        .await
        .with_context(|| runner.output())?;
    let peak = peak.max(runner.rss_kib()?);
    println!("after draining: RSS {} KiB", runner.rss_kib()?);
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

#[tokio::test]
async fn a_stalled_kandan_bounds_memory_under_large_responses() -> Result<()> {
    const COUNT: usize = 64;
    let size = 15 * MIB;
    // Draining 64 such bodies through debug builds takes a while: the
    // runner's 60 s request timeout and the front's wait must not cut it.
    let config = SimConfig {
        forward_timeout: Duration::from_secs(300),
        ..config()
    };
    let flags = ["--request-timeout-ms", "300000"];
    let (sim, mut runner) = e2e::start(config, "memory-http", &flags).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "download").await?;

    sim.pause_reading(true)?;
    let path = format!("/download?size={size}");
    let requests: Vec<_> = (0..COUNT)
        .map(|_| {
            let (sim, path) = (&sim, path.clone());
            // Only the length is kept: the bodies are a gigabyte in all.
            async move {
                let resp = preview_client::get(sim, port, &path).await?;
                anyhow::Ok((
                    resp.status,
                    resp.error_code().map(str::to_owned),
                    resp.body.len(),
                ))
            }
        })
        .collect();
    let all = futures_util::future::join_all(requests);
    let watch = async {
        // Progress: downloads the server started plus responses the
        // simulator has seen (none while it does not read).
        let served = || async {
            let paths = e2e::served_paths(port).await?;
            let started = paths.iter().filter(|p| *p == "GET /download").count();
            Ok((started + sim.seen_count("forward_http_response")) as u64)
        };
        let stalled = peak_rss_until_stalled(&runner, Duration::from_secs(5), served).await?;
        // Kandan reads again: responses flow again. Then the server stops,
        // so the rest end with an error instead of draining a gigabyte
        // through debug builds.
        sim.pause_reading(false)?;
        sim.wait_for_seen_count("forward_http_response", 4, WAIT)
            .await
            .with_context(|| runner.output())?;
        let peak = stalled.0.max(runner.rss_kib()?);
        runner.send_line("stop download").await?;
        anyhow::Ok(peak)
    };
    let (responses, peak) = tokio::join!(all, watch);
    let peak = peak?;
    println!("stalled kandan, {COUNT} responses of {size} bytes: peak RSS {peak} KiB");
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    let mut whole = 0;
    for resp in responses {
        // Each one answered: whole, or refused once its server was gone.
        let (status, code, len) = resp?;
        if status == StatusCode::OK {
            assert_eq!(len as u64, size);
            whole += 1;
        } else {
            // Cut by the dying server, or by its listener closing.
            let code = code.unwrap_or_default();
            assert!(
                ["upstream_unreachable", "port_not_listening"].contains(&code.as_str()),
                "{status} {code}"
            );
        }
    }
    assert!(whole >= 4, "{whole} whole responses");
    let after = runner.rss_kib()?;
    println!("after draining: RSS {after} KiB");
    assert!(after < RSS_LIMIT_KIB, "RSS {after} KiB");
    Ok(())
}
