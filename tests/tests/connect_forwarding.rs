//! `kandan-runner connect` forwarding real HTTP through the simulator's
//! preview front to a real server in its tree: SSE streamed event by event,
//! 10 MiB each way intact, and bodies over the limits refused.

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::simulator::SimConfig;
use integration_tests::vite;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

const MIB: usize = 1 << 20;

fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes that differ everywhere (xorshift), so a dropped, doubled or
/// reordered chunk changes the hash.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn sse_arrives_event_by_event() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fwd-sse", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "sse").await?;

    const EVENTS: usize = 5;
    let resp = preview_client::open(
        &sim,
        Method::GET,
        port,
        &format!("/sse?n={EVENTS}"),
        Bytes::new(),
    )
    .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        resp.headers()
    );
    let mut body = resp.into_body();
    let mut seen = String::new();
    for i in 0..EVENTS {
        // The server writes event i+1 only after the ack of event i, so
        // event i must reach us while the response is still open: a proxy
        // that buffered the stream would never deliver it.
        let wanted = format!("data: event-{i}\n\n");
        while !seen.contains(&wanted) {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .with_context(|| {
                    format!("event {i} never arrived; got {seen:?}\n{}", runner.output())
                })?
                .with_context(|| format!("stream ended before event {i}: {seen:?}"))?
                .context("stream failed")?;
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data)?);
            }
        }
        assert!(
            !seen.contains(&format!("event-{}", i + 1)),
            "event {} came before its ack: {seen:?}",
            i + 1
        );
        let ack = vite::http_get(port, &format!("/sse-ack?i={i}"), "localhost").await?;
        assert_eq!(ack.status, 200);
    }
    // The stream then ends cleanly.
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .context("stream did not end")?
        .context("stream failed at its end")?;
    assert!(rest.to_bytes().is_empty());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

#[tokio::test]
async fn ten_mib_upload_and_download_arrive_intact() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fwd-big", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "big").await?;

    let upload = noise(10 * MIB);
    let resp = preview_client::request(
        &sim,
        Method::POST,
        port,
        "/upload",
        Bytes::from(upload.clone()),
    )
    .await?;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let got: Value = serde_json::from_slice(&resp.body)?;
    assert_eq!(got["len"], upload.len(), "{got}");
    assert_eq!(got["sha1"], sha1_hex(&upload), "upload corrupted: {got}");

    let resp = preview_client::get(&sim, port, &format!("/download?size={}", 10 * MIB)).await?;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "{}",
        resp.error_code().unwrap_or("")
    );
    assert_eq!(resp.body.len(), 10 * MIB);
    let sent = resp.headers["x-sha1"].to_str()?;
    assert_eq!(sha1_hex(&resp.body), sent, "download corrupted");
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_limits_are_refused() -> Result<()> {
    let limit = MIB.to_string();
    let flags = ["--max-request-body", &limit, "--max-response-body", &limit];
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fwd-limit", &flags).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "limit").await?;

    // Under the limit: forwarded.
    let small = noise(MIB / 2);
    let resp = preview_client::request(
        &sim,
        Method::POST,
        port,
        "/upload",
        Bytes::from(small.clone()),
    )
    .await?;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let got: Value = serde_json::from_slice(&resp.body)?;
    assert_eq!(got["sha1"], sha1_hex(&small));

    // Over it: refused, and the local server never sees it.
    let resp = preview_client::request(
        &sim,
        Method::POST,
        port,
        "/upload",
        Bytes::from(noise(2 * MIB)),
    )
    .await?;
    assert_eq!(
        resp.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        resp.text()
    );
    assert_eq!(resp.error_code(), Some("body_too_large"));
    // That was the preview front, which knows the limit from runner_ready;
    // a control that carries such a body anyway is refused by the runner.
    sim.send_control(json!({
        "type": "forward_http_request", "requestId": "over", "port": port,
        "method": "POST", "path": "/upload", "bodyBase64": STANDARD.encode(noise(2 * MIB)),
    }))?;
    let refusal = sim
        .wait_for_event("control_error", |e| e["requestId"] == "over", WAIT)
        .await?;
    assert_eq!(refusal["code"], "body_too_large", "{refusal}");
    let served = e2e::served_paths(port).await?;
    let uploads = served.iter().filter(|p| *p == "POST /upload").count();
    assert_eq!(
        uploads, 1,
        "the refused upload reached the server: {served:?}"
    );

    // A response over the limit: refused too.
    let resp = preview_client::get(&sim, port, &format!("/download?size={}", 2 * MIB)).await?;
    assert_eq!(
        resp.error_code(),
        Some("body_too_large"),
        "{:?}",
        resp.status
    );
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    let refused = sim
        .events_of("control_error")
        .into_iter()
        .filter(|e| e["code"] == "body_too_large")
        .count();
    assert_eq!(refused, 2, "{:?}", sim.events_of("control_error"));

    // And the port still works.
    e2e::expect_hello(&sim, port, "limit").await?;
    Ok(())
}

/// A person who leaves an endless SSE stream (closes the tab) frees the
/// local server at once: the preview front sends `forward_http_cancel` when
/// the browser's connection closes, and the runner drops the upstream
/// connection. Measured from the client's close to the server noticing.
#[tokio::test]
async fn a_client_leaving_an_endless_stream_frees_the_local_server_at_once() -> Result<()> {
    use std::time::{SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (sim, mut runner) = e2e::start(SimConfig::default(), "fwd-cancel", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "cancel").await?;

    let addr = sim.preview_addr();
    let mut client = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /preview/{port}/sse-forever HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("forever-0") {
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .with_context(|| format!("no first event: {:?}", String::from_utf8_lossy(&seen)))??;
        anyhow::ensure!(n > 0, "stream ended: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let request_id = sim
        .events_of("forward_http_response")
        .last()
        .and_then(|e| e["requestId"].as_str().map(str::to_owned))
        .context("no forward_http_response")?;

    // The person leaves.
    drop(client);
    let closed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let gone = loop {
        let resp = vite::http_get(port, "/sse-gone", "localhost").await?;
        let gone: Vec<f64> = serde_json::from_str(&resp.body)?;
        if let Some(at) = gone.first() {
            break *at;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the local server never saw the client leave\n{}",
            runner.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    let took = (gone - closed) * 1000.0;
    println!("client close -> local server saw it: {took:.1} ms");
    assert!(
        took < 100.0,
        "the local server saw the close after {took:.1} ms"
    );

    // Nothing more came for that request: no error, no chunk after the cancel.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let errors: Vec<Value> = sim
        .events_of("control_error")
        .into_iter()
        .filter(|e| e["requestId"] == request_id.as_str())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // The port still works.
    e2e::expect_hello(&sim, port, "cancel").await?;
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

/// A local server that drops a WebSocket's TCP connection without a
/// closing handshake (ends it, or resets it) closed it: code 1006 and no
/// `error`, not `upstream_unreachable` (PROTOCOL.md section 4).
#[tokio::test]
async fn a_websocket_dropped_without_a_close_frame_is_1006_without_an_error() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "fwd-ws-drop", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "drop").await?;
    for mode in ["drop", "reset"] {
        let socket_id = format!("ws-{mode}");
        sim.send_control(json!({
            "type": "forward_websocket_open", "socketId": socket_id, "port": port,
            "path": "/ws-push", "queryString": format!("count=1&size=5&close={mode}"),
        }))?;
        let closed = sim
            .wait_for_event(
                "forward_websocket_closed",
                |e| e["socketId"] == socket_id.as_str(),
                WAIT,
            )
            .await
            .with_context(|| runner.output())?;
        let opened = sim
            .events_of("forward_websocket_opened")
            .into_iter()
            .any(|e| e["socketId"] == socket_id.as_str());
        assert!(opened, "{mode}: never opened: {closed}");
        assert_eq!(closed["code"], 1006, "{mode}: {closed}");
        assert!(closed.get("error").is_none(), "{mode}: {closed}");
    }
    e2e::expect_hello(&sim, port, "drop").await?;
    Ok(())
}
