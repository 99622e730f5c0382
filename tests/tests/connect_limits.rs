//! `kandan-runner connect` at its size limits: header floods in controls
//! and from a hostile local server, the limits `runner_ready` announces,
//! and the preview front refusing uploads over them before the runner is
//! asked.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::simulator::{REQUEST_ID_HEADER, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `[name, value]` pairs, far past the runner's cap and past the 32,768
/// entries an `http::HeaderMap` can hold.
fn flood(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!([format!("x-flood-{i}"), "v"]))
        .collect()
}

fn hello_count(paths: &[String]) -> usize {
    paths.iter().filter(|p| *p == "GET /hello").count()
}

#[tokio::test]
async fn header_floods_are_invalid_controls_and_the_runner_keeps_serving() -> Result<()> {
    let (sim, mut runner) = e2e::start(SimConfig::default(), "limits-headers", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "headers").await?;
    let hellos = hello_count(&e2e::served_paths(port).await?);

    sim.send_control(json!({
        "type": "forward_http_request", "requestId": "flood-http", "port": port,
        "method": "GET", "path": "/hello", "headers": flood(30_000),
    }))?;
    sim.send_control(json!({
        "type": "forward_websocket_open", "socketId": "flood-ws", "port": port,
        "path": "/ws-push", "queryString": "count=1&size=5", "headers": flood(30_000),
    }))?;
    let http = sim
        .wait_for_event("control_error", |e| e["requestId"] == "flood-http", WAIT)
        .await
        .with_context(|| runner.output())?;
    assert_eq!(http["code"], "invalid_control", "{http}");
    assert_eq!(http["controlType"], "forward_http_request", "{http}");
    let ws = sim
        .wait_for_event("control_error", |e| e["socketId"] == "flood-ws", WAIT)
        .await
        .with_context(|| runner.output())?;
    assert_eq!(ws["code"], "invalid_control", "{ws}");
    assert_eq!(ws["controlType"], "forward_websocket_open", "{ws}");

    // Nothing reached the local server, and the runner is whole: no
    // socket was left behind under that id, requests still flow.
    assert!(runner.alive(), "{}", runner.output());
    assert_eq!(hello_count(&e2e::served_paths(port).await?), hellos);
    sim.send_control(json!({
        "type": "forward_websocket_open", "socketId": "flood-ws", "port": port,
        "path": "/ws-push", "queryString": "count=1&size=5",
        "headers": [["x-few", "1"]],
    }))?;
    let message = sim
        .wait_for_event(
            "forward_websocket_message",
            |e| e["socketId"] == "flood-ws",
            WAIT,
        )
        .await
        .with_context(|| runner.output())?;
    assert_eq!(message["opcode"], "binary", "{message}");
    let closed = sim
        .wait_for_event(
            "forward_websocket_closed",
            |e| e["socketId"] == "flood-ws",
            WAIT,
        )
        .await?;
    assert_eq!(closed["code"], 1000, "{closed}");
    e2e::expect_hello(&sim, port, "headers").await?;

    // A hostile local server answering with 30,000 headers: an upstream
    // error for that request, not a panic.
    let resp = preview_client::get(&sim, port, "/many-headers?n=30000").await?;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());
    assert_eq!(resp.error_code(), Some("upstream_unreachable"));
    // A header value that is not UTF-8 (HTTP allows any byte above 0x7f):
    // the frame stays valid JSON, each bad byte one U+FFFD.
    let resp = preview_client::get(&sim, port, "/odd-header").await?;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let id = resp.headers[REQUEST_ID_HEADER].to_str()?;
    let answer = sim
        .wait_for_event("forward_http_response", |e| e["requestId"] == id, WAIT)
        .await?;
    let odd: Vec<&Value> = answer["headers"]
        .as_array()
        .context("headers are pairs")?
        .iter()
        .filter(|pair| pair[0] == "x-odd")
        .collect();
    assert_eq!(odd, [&json!(["x-odd", "caf\u{FFFD} \u{FFFD}"])], "{answer}");
    sim.send_control(json!({
        "type": "forward_websocket_open", "socketId": "hostile-ws", "port": port,
        "path": "/ws-push", "queryString": "count=1&size=5&headers=30000",
    }))?;
    let closed = sim
        .wait_for_event(
            "forward_websocket_closed",
            |e| e["socketId"] == "hostile-ws",
            WAIT,
        )
        .await
        .with_context(|| runner.output())?;
    // tungstenite reads at most 124 handshake headers and reports a
    // capacity error, which forwarding files under body_too_large.
    let error = closed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("body_too_large"), "{closed}");
    assert!(error.contains("Too many headers"), "{closed}");
    e2e::expect_hello(&sim, port, "headers").await?;
    assert!(runner.alive(), "{}", runner.output());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    Ok(())
}

/// Sends `head` and `body` as is to the preview front and returns the
/// response head (status line and headers).
async fn raw_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let exchange = async {
        while !read.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            ensure!(n > 0, "connection closed after {read:?}");
            read.extend_from_slice(&buf[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("no response head")??;
    Ok(String::from_utf8_lossy(&read).into_owned())
}

/// The `x-kandan-request-id` of a raw response head.
fn request_id(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{REQUEST_ID_HEADER}: ")))
        .map(str::to_owned)
}

#[tokio::test]
async fn runner_ready_announces_limits_and_larger_uploads_get_413_without_a_control() -> Result<()>
{
    const LIMIT: usize = 1 << 20;
    let flags = ["--max-request-body", "1048576"];
    let (sim, mut runner) = e2e::start(SimConfig::default(), "limits-413", &flags).await?;
    let ready = sim.wait_for_event("runner_ready", |_| true, WAIT).await?;
    assert_eq!(
        ready["limits"],
        json!({"maxRequestBody": LIMIT, "maxResponseBody": 16 << 20, "maxWebSocketMessage": 16 << 20}),
        "{ready}"
    );
    let port = e2e::serve_approved(&sim, &mut runner, "uploads").await?;

    // At the limit: forwarded.
    let body = Bytes::from(vec![7u8; LIMIT]);
    let resp = preview_client::request(&sim, Method::POST, port, "/upload", body).await?;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let echoed: Value = serde_json::from_slice(&resp.body)?;
    assert_eq!(echoed["len"], LIMIT);

    // A declared length over the limit: refused from the head alone.
    let addr = sim.preview_addr();
    let head = format!(
        "POST /preview/{port}/upload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        LIMIT + 1
    );
    let declared = raw_exchange(addr, &head, b"").await?;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("body_too_large"), "{declared}");

    // A chunked body that grows over the limit.
    let head = format!(
        "POST /preview/{port}/upload HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = [
        format!("{:x}\r\n", 64 << 10).into_bytes(),
        vec![b'x'; 64 << 10],
        b"\r\n".to_vec(),
    ]
    .concat();
    let body = chunk.repeat(LIMIT / (64 << 10) + 1);
    let grown = raw_exchange(addr, &head, &body).await?;
    assert!(grown.starts_with("HTTP/1.1 413"), "{grown}");

    // Neither reached the runner: it never answered their request ids,
    // and the local server saw one upload only.
    e2e::expect_hello(&sim, port, "uploads").await?;
    for head in [&declared, &grown] {
        let id = request_id(head).context("no request id")?;
        let answered: Vec<Value> = sim
            .events()
            .into_iter()
            .filter(|e| e["requestId"] == id.as_str())
            .collect();
        assert!(answered.is_empty(), "the runner was asked: {answered:?}");
    }
    let uploads = e2e::served_paths(port).await?;
    assert_eq!(
        uploads.iter().filter(|p| *p == "POST /upload").count(),
        1,
        "{uploads:?}"
    );
    assert!(runner.alive(), "{}", runner.output());
    Ok(())
}

/// The simulator reads the limits of each `runner_ready`.
#[tokio::test]
async fn the_simulator_keeps_the_announced_limits() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    assert!(sim.limits().is_none());
    let runner = integration_tests::runner_process::RunnerProcess::start(
        &sim,
        integration_tests::runner_process::RunnerArgs::new("limits-sim", Vec::new())
            .flags(["--max-response-body", "2000000"]),
    )?;
    sim.wait_for_event("runner_ready", |_| true, WAIT)
        .await
        .with_context(|| runner.output())?;
    let limits = sim.limits().context("no limits kept")?;
    assert_eq!(limits.max_response_body, 2_000_000);
    assert_eq!(limits.max_request_body, 16 << 20);
    Ok(())
}

#[tokio::test]
async fn a_browser_message_over_the_announced_limit_closes_with_1009_without_a_control()
-> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (sim, mut runner) = e2e::start(SimConfig::default(), "limits-ws", &[]).await?;
    let port = e2e::serve_approved(&sim, &mut runner, "wslimit").await?;
    let limit = sim.limits().context("no limits")?.max_web_socket_message;
    assert_eq!(limit, 16 << 20);

    let url = format!(
        "ws://{}/preview/{port}/ws-push?count=1&size=5&close=0",
        sim.preview_addr()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .context("no message")?
        .context("socket ended")??;
    assert_eq!(first.into_data().len(), 5);

    ws.send(Message::binary(vec![0u8; limit as usize + 1]))
        .await?;
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no close")?
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => anyhow::bail!("socket ended without a close frame: {other:?}"),
        }
    };
    let close = close.context("close without a frame")?;
    assert_eq!(u16::from(close.code), 1009, "{close:?}");

    // The runner was told to close, and never asked to send the message.
    let closed = sim
        .wait_for_event("forward_websocket_closed", |_| true, WAIT)
        .await
        .with_context(|| runner.output())?;
    let socket_id = closed["socketId"].clone();
    let refused: Vec<Value> = sim
        .events_of("control_error")
        .into_iter()
        .filter(|e| e["socketId"] == socket_id)
        .collect();
    assert!(
        refused.is_empty(),
        "the runner saw the message: {refused:?}"
    );
    assert!(runner.alive(), "{}", runner.output());
    Ok(())
}
