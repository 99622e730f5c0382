//! WebSocket forwarding against real tokio-tungstenite servers on loopback.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::servers::{ForwardOutput, WsOpen, try_next};
use super::servers::{PATIENCE, forwarder, next, refused_port, ws_server};
use crate::control::TestAnswers;
use crate::forward::{CloseCause, ForwardConfig};
use crate::gate::GateRefusal;
use crate::wire::ErrorCode;
use crate::wire::Opcode;

fn open(id: &str, port: u16, headers: &[(&str, &str)]) -> WsOpen {
    WsOpen {
        socket_id: id.to_owned(),
        port,
        path: "/hmr".to_owned(),
        query_string: Some("token=abc".to_owned()),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

async fn received(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("the server received a message in time")
        .expect("the server runs")
}

fn message(output: ForwardOutput) -> (Opcode, Bytes) {
    match output {
        ForwardOutput::WsMessage { opcode, body, .. } => (opcode, body),
        other => panic!("expected a message, got {other:?}"),
    }
}

type Closed = (Option<u16>, Option<String>, Option<ErrorCode>);

fn closed(output: ForwardOutput) -> Closed {
    match output {
        ForwardOutput::WsClosed {
            code,
            reason,
            error,
            ..
        } => (code, reason, error),
        other => panic!("expected closed, got {other:?}"),
    }
}

fn ws_error(output: ForwardOutput) -> ErrorCode {
    match output {
        ForwardOutput::WsError { code, .. } => code,
        other => panic!("expected a websocket error, got {other:?}"),
    }
}

#[tokio::test]
async fn frames_flow_both_ways_with_the_subprotocol_kept() {
    let mut server = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["0.0.0.0"]);
    fwd.ws_open(open(
        "s1",
        server.port,
        &[
            ("Host", "preview.kandan.dev"),
            ("Origin", "https://preview.kandan.dev"),
            ("Cookie", "session=abc"),
            ("Sec-WebSocket-Protocol", "vite-hmr"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("Sec-WebSocket-Key", "browser-key"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
        ],
    ))
    .await;
    assert_eq!(
        next(&mut out).await,
        ForwardOutput::WsOpened {
            socket_id: "s1".to_owned(),
            protocol: Some("vite-hmr".to_owned())
        }
    );
    let hs = server.handshakes.recv().await.unwrap();
    assert_eq!(hs["host"], format!("localhost:{}", server.port));
    assert_eq!(hs["x-forwarded-host"], "preview.kandan.dev");
    assert_eq!(hs["origin"], format!("http://localhost:{}", server.port));
    assert_eq!(hs["cookie"], "session=abc");
    assert!(!hs.contains_key("sec-websocket-extensions"));
    assert_ne!(hs["sec-websocket-key"], "browser-key");
    let to_client = server.conns.recv().await.unwrap();

    // Kandan -> local server.
    fwd.ws_send(
        "s1",
        Opcode::Text,
        Bytes::from_static(b"{\"type\":\"ping\"}"),
    )
    .await;
    assert_eq!(
        received(&mut server.received).await,
        Message::text("{\"type\":\"ping\"}")
    );
    fwd.ws_send("s1", Opcode::Binary, Bytes::from_static(&[0, 159, 255]))
        .await;
    assert_eq!(
        received(&mut server.received).await,
        Message::binary(vec![0, 159, 255])
    );
    fwd.ws_send("s1", Opcode::Ping, Bytes::from_static(b"p1"))
        .await;
    assert_eq!(
        received(&mut server.received).await,
        Message::Ping(Bytes::from_static(b"p1"))
    );
    // The server's automatic pong comes back.
    assert_eq!(
        message(next(&mut out).await),
        (Opcode::Pong, Bytes::from_static(b"p1"))
    );

    // Local server -> Kandan.
    to_client
        .send(Message::text("{\"type\":\"update\"}"))
        .unwrap();
    assert_eq!(
        message(next(&mut out).await),
        (Opcode::Text, Bytes::from_static(b"{\"type\":\"update\"}"))
    );
    to_client.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(
        message(next(&mut out).await),
        (Opcode::Binary, Bytes::from_static(&[1, 2, 3]))
    );
    to_client
        .send(Message::Ping(Bytes::from_static(b"p2")))
        .unwrap();
    assert_eq!(
        message(next(&mut out).await),
        (Opcode::Ping, Bytes::from_static(b"p2"))
    );
    // The runner answered the server's ping itself.
    assert_eq!(
        received(&mut server.received).await,
        Message::Pong(Bytes::from_static(b"p2"))
    );

    // Kandan closes; the server sees the close and its reply's code comes back.
    fwd.ws_close("s1").await;
    match received(&mut server.received).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(
        closed(next(&mut out).await),
        (Some(1000), Some("closed by kandan".to_owned()), None)
    );
    assert_eq!(fwd.socket_count(), 0);
}

#[tokio::test]
async fn local_server_closing_is_reported_with_code_and_reason() {
    let mut server = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { protocol: None, .. }
    ));
    let to_client = server.conns.recv().await.unwrap();
    to_client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Library(4000),
            reason: "server restart".into(),
        })))
        .unwrap();
    assert_eq!(
        closed(next(&mut out).await),
        (Some(4000), Some("server restart".to_owned()), None)
    );
    // The socket is gone: Kandan's next frame is refused.
    fwd.ws_send("s1", Opcode::Text, Bytes::from_static(b"late"))
        .await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::UnknownSocket);
}

#[tokio::test]
async fn unknown_sockets_and_bad_payloads_are_refused() {
    let mut server = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    fwd.ws_send("nope", Opcode::Text, Bytes::from_static(b"x"))
        .await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::UnknownSocket);
    fwd.ws_close("nope").await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::UnknownSocket);

    gate.allow(server.port, &["127.0.0.1"]);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { .. }
    ));
    fwd.ws_send("s1", Opcode::Text, Bytes::from_static(&[0xff, 0xfe]))
        .await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::InvalidControl);
    fwd.ws_send("s1", Opcode::Ping, Bytes::from(vec![0; 126]))
        .await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::InvalidControl);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::InvalidControl);
    // The socket survived all of that.
    fwd.ws_send("s1", Opcode::Text, Bytes::from_static(b"still here"))
        .await;
    assert_eq!(
        received(&mut server.received).await,
        Message::text("still here")
    );
}

#[tokio::test]
async fn failed_opens_end_in_closed_with_the_code() {
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    let port = refused_port().await;
    gate.allow(port, &["127.0.0.1"]);
    fwd.ws_open(open("refused", port, &[])).await;
    assert_eq!(
        closed(next(&mut out).await).2,
        Some(ErrorCode::UpstreamUnreachable)
    );
    gate.refuse(4000, GateRefusal::Pending);
    fwd.ws_open(open("denied", 4000, &[])).await;
    assert_eq!(
        closed(next(&mut out).await).2,
        Some(ErrorCode::PortNotApproved)
    );
    assert_eq!(fwd.socket_count(), 0);
}

#[tokio::test]
async fn a_full_queue_closes_the_socket_instead_of_growing() {
    let server = ws_server(true).await;
    let config = ForwardConfig {
        ws_queue_messages: 4,
        ws_queue_bytes: 256 * 1024,
        ws_close_grace: Duration::from_millis(200),
        ..ForwardConfig::default()
    };
    let (fwd, gate, mut out) = forwarder(config);
    gate.allow(server.port, &["127.0.0.1"]);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { .. }
    ));
    // The server never reads: socket buffers fill, then the queue.
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let mut outcome = None;
    for _ in 0..100_000 {
        fwd.ws_send("s1", Opcode::Binary, chunk.clone()).await;
        if let Some(output) = try_next(&mut out) {
            outcome = Some(output);
            break;
        }
        tokio::task::yield_now().await;
    }
    let outcome = outcome.expect("the queue overflowed");
    assert_eq!(
        closed(outcome),
        (
            Some(1013),
            Some("kandan-runner send queue overflowed".to_owned()),
            Some(ErrorCode::BodyTooLarge)
        )
    );
    assert_eq!(fwd.socket_count(), 0);
}

#[tokio::test]
async fn close_port_closes_its_sockets_only() {
    let mut server = ws_server(false).await;
    let mut other = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    gate.allow(other.port, &["127.0.0.1"]);
    for (id, port) in [("a", server.port), ("b", server.port), ("c", other.port)] {
        fwd.ws_open(open(id, port, &[])).await;
        assert!(matches!(
            next(&mut out).await,
            ForwardOutput::WsOpened { .. }
        ));
    }
    fwd.close_port(server.port, CloseCause::ListenerClosed);
    let mut ids = Vec::new();
    for _ in 0..2 {
        match next(&mut out).await {
            ForwardOutput::WsClosed {
                socket_id,
                code,
                error,
                ..
            } => {
                assert_eq!(code, Some(1001));
                assert_eq!(error.unwrap(), ErrorCode::PortNotListening);
                ids.push(socket_id);
            }
            other => panic!("expected closed, got {other:?}"),
        }
    }
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    for _ in 0..2 {
        match received(&mut server.received).await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close, got {other:?}"),
        }
    }
    // The other port's socket still works.
    assert_eq!(fwd.socket_count(), 1);
    fwd.ws_send("c", Opcode::Text, Bytes::from_static(b"alive"))
        .await;
    assert_eq!(received(&mut other.received).await, Message::text("alive"));

    // close_all stops it without a word to Kandan.
    fwd.close_all();
    match received(&mut other.received).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(fwd.socket_count(), 0);
    assert!(try_next(&mut out).is_none(), "close_all reported something");
}

#[tokio::test]
async fn a_websocket_that_fails_verification_is_not_opened() {
    let server = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    gate.foreign(server.port);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert_eq!(
        closed(next(&mut out).await).2,
        Some(ErrorCode::PortNotApproved)
    );
    assert_eq!(fwd.socket_count(), 0);
}

#[tokio::test]
async fn shut_down_closes_every_socket_with_1001_and_reports_a_plain_close() {
    let mut server = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    fwd.ws_open(open("a", server.port, &[])).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { .. }
    ));
    fwd.shut_down();
    match next(&mut out).await {
        ForwardOutput::WsClosed {
            socket_id,
            code,
            error,
            ..
        } => {
            assert_eq!(socket_id, "a");
            assert_eq!(code, Some(1001));
            assert!(error.is_none(), "{error:?}");
        }
        other => panic!("expected closed, got {other:?}"),
    }
    match received(&mut server.received).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(fwd.socket_count(), 0);
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_and_the_socket_stays() {
    let mut server = ws_server(false).await;
    let config = ForwardConfig {
        ws_max_message: 1000,
        ..ForwardConfig::default()
    };
    let (fwd, gate, mut out) = forwarder(config);
    gate.allow(server.port, &["127.0.0.1"]);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { .. }
    ));
    fwd.ws_send("s1", Opcode::Binary, Bytes::from(vec![1; 1001]))
        .await;
    assert_eq!(ws_error(next(&mut out).await), ErrorCode::BodyTooLarge);
    fwd.ws_send("s1", Opcode::Binary, Bytes::from(vec![2; 1000]))
        .await;
    assert_eq!(
        received(&mut server.received).await,
        Message::binary(vec![2; 1000])
    );
}

/// Pushes `count` messages of `size` bytes from the server and returns
/// the forwarder's outputs channel after the socket opened.
async fn pushing(
    config: ForwardConfig,
    count: usize,
    size: usize,
) -> (super::servers::TestForwarder, TestAnswers) {
    let mut server = ws_server(false).await;
    let (fwd, gate, mut out) = forwarder(config);
    gate.allow(server.port, &["127.0.0.1"]);
    fwd.ws_open(open("s1", server.port, &[])).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { .. }
    ));
    let to_client = server.conns.recv().await.expect("a connection");
    for i in 0..count {
        let _ = to_client.send(Message::binary(vec![i as u8; size]));
    }
    (fwd, out)
}

/// True when no output comes within a short while.
async fn quiet(out: &mut TestAnswers) -> bool {
    tokio::time::timeout(Duration::from_millis(300), out.next())
        .await
        .is_err()
}

#[tokio::test]
async fn messages_toward_kandan_wait_for_room_in_the_event_budget() {
    use crate::control::budget::{Budget, wire_cost};
    let budget = Budget::new(2 * wire_cost(10_000));
    let config = ForwardConfig {
        event_budget: budget.clone(),
        ..ForwardConfig::default()
    };
    let (_fwd, mut out) = pushing(config, 5, 10_000).await;
    // Two fit; the third waits, unread, until one of them is written.
    let first = next(&mut out).await;
    // Held, not taken apart: its charge lives as long as the output.
    let _second = next(&mut out).await;
    assert!(
        quiet(&mut out).await,
        "a third message went past the budget"
    );
    assert_eq!(budget.available(), 0);
    drop(first);
    assert_eq!(message(next(&mut out).await).1[0], 2);
}

#[tokio::test]
async fn each_socket_has_its_own_byte_budget_toward_kandan() {
    use crate::control::budget::wire_cost;
    let config = ForwardConfig {
        ws_queue_bytes: wire_cost(10_000),
        ..ForwardConfig::default()
    };
    let (_fwd, mut out) = pushing(config.clone(), 3, 10_000).await;
    let first = next(&mut out).await;
    assert!(
        quiet(&mut out).await,
        "a second message went past the socket's budget"
    );
    // The shared budget is not what held it back.
    assert!(config.event_budget.available() > config.event_budget.total() / 2);
    drop(first);
    assert_eq!(message(next(&mut out).await).1[0], 1);
}
