//! The client against a small Phoenix-speaking stub: over real loopback TCP,
//! and over in-memory pipes where paused time checks the schedules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::{
    ControlChannel, ControlClient, ControlConfig, ControlInput, JoinInfo, Session, Timing,
};
use super::connector::Connector;
use super::controls::Control;
use super::events::{Event, Limits, PortForwardClosed, RunnerReady};
use super::schedule::Backoff;

const WAIT: Duration = Duration::from_secs(20);

/// A frame as the stub (Kandan's side) sees it: a JSON tree is fine here.
#[derive(Clone, Debug, PartialEq)]
struct Frame {
    join_ref: Option<String>,
    msg_ref: Option<String>,
    topic: String,
    event: String,
    payload: Value,
}

impl Frame {
    fn parse(text: &str) -> Result<Frame, serde_json::Error> {
        let (join_ref, msg_ref, topic, event, payload) = serde_json::from_str(text)?;
        Ok(Frame {
            join_ref,
            msg_ref,
            topic,
            event,
            payload,
        })
    }

    fn to_text(&self) -> String {
        let array = (
            &self.join_ref,
            &self.msg_ref,
            &self.topic,
            &self.event,
            &self.payload,
        );
        serde_json::to_string(&array).unwrap()
    }
}

fn join_info() -> JoinInfo {
    JoinInfo {
        runner_id: "r1".into(),
        version: "0.1.0".into(),
        hostname: "box".into(),
        os: "linux".into(),
        backend: "procfs".into(),
        config_version: 2,
    }
}

fn fast_timing() -> Timing {
    Timing {
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(30),
        join_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        reconnect: Backoff::from_millis(&[10, 20], 50),
        rejoin: Backoff::from_millis(&[10, 20], 50),
    }
}

fn ready() -> Event {
    Event::RunnerReady(RunnerReady {
        runner_id: "r1".into(),
        version: "0.1.0".into(),
        backend: "procfs".into(),
        backend_reason: None,
        config_version: 2,
        listeners: vec![],
        instances: vec![],
        editors: vec![],
        limits: Limits {
            max_request_body: 1 << 20,
            max_response_body: 1 << 20,
            max_web_socket_message: 1 << 20,
        },
    })
}

fn closed_event(request_id: &str) -> Event {
    Event::PortForwardClosed(PortForwardClosed {
        instance_id: None,
        request_id: request_id.into(),
        port: 1,
    })
}

/// The server end of one connection.
struct StubConn<S> {
    ws: WebSocketStream<S>,
    uri: String,
    answer_heartbeats: bool,
    /// How long to wait for a frame before failing the test.
    patience: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StubConn<S> {
    async fn accept(stream: S) -> Self {
        let uri = Arc::new(Mutex::new(String::new()));
        let seen = uri.clone();
        // The signature is tungstenite's; its error type is not ours to shrink.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &Request, response: Response| {
            *seen.lock().unwrap() = request.uri().to_string();
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .unwrap();
        let uri = uri.lock().unwrap().clone();
        StubConn {
            ws,
            uri,
            answer_heartbeats: true,
            patience: WAIT,
        }
    }

    /// The next non-heartbeat frame, or None when the socket ends.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let message = timeout(self.patience, self.ws.next())
                .await
                .expect("no frame in time")?;
            let Ok(Message::Text(text)) = message else {
                match message {
                    Ok(Message::Close(_)) | Err(_) => return None,
                    _ => continue,
                }
            };
            let frame = Frame::parse(&text).unwrap();
            if frame.event == "heartbeat" {
                assert_eq!(frame.topic, "phoenix");
                assert_eq!(frame.join_ref, None);
                if self.answer_heartbeats {
                    self.reply(&frame, "ok", json!({})).await;
                }
                continue;
            }
            return Some(frame);
        }
    }

    async fn expect(&mut self, event: &str) -> Frame {
        let frame = self.next_frame().await.expect("socket ended");
        assert_eq!(frame.event, event, "{frame:?}");
        frame
    }

    async fn expect_event(&mut self) -> Value {
        self.expect("event").await.payload
    }

    async fn reply(&mut self, to: &Frame, status: &str, response: Value) {
        let reply = Frame {
            join_ref: to.join_ref.clone(),
            msg_ref: to.msg_ref.clone(),
            topic: to.topic.clone(),
            event: "phx_reply".into(),
            payload: json!({"status": status, "response": response}),
        };
        self.send_text(&reply.to_text()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    async fn push(&mut self, join_ref: Option<&str>, event: &str, payload: Value) {
        let frame = Frame {
            join_ref: join_ref.map(str::to_owned),
            msg_ref: None,
            topic: "runner:r1".into(),
            event: event.into(),
            payload,
        };
        self.send_text(&frame.to_text()).await;
    }

    /// Accepts the join; returns its joinRef.
    async fn join_ok(&mut self) -> String {
        let join = self.expect("phx_join").await;
        self.reply(&join, "ok", json!({})).await;
        join.join_ref.unwrap()
    }
}

async fn next_input(channel: &mut ControlChannel) -> ControlInput {
    timeout(WAIT, channel.inputs.recv())
        .await
        .expect("no input in time")
        .expect("client ended")
}

/// The next `Joined`, past the `Reconnecting` inputs of a reconnect.
async fn joined(channel: &mut ControlChannel) -> Session {
    loop {
        match next_input(channel).await {
            ControlInput::Joined(session) => return session,
            ControlInput::Reconnecting { .. } => {}
            other => panic!("expected Joined, got {other:?}"),
        }
    }
}

async fn control(channel: &mut ControlChannel) -> Control {
    match next_input(channel).await {
        ControlInput::Control { control, .. } => *control,
        other => panic!("expected a control, got {other:?}"),
    }
}

struct Tcp {
    listener: TcpListener,
    url: String,
}

impl Tcp {
    async fn new() -> Tcp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/runner/socket", listener.local_addr().unwrap());
        Tcp { listener, url }
    }

    async fn accept(&self) -> StubConn<tokio::net::TcpStream> {
        let (stream, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("no connection")
            .unwrap();
        StubConn::accept(stream).await
    }

    fn spawn(&self, timing: Timing) -> ControlChannel {
        let mut config =
            ControlConfig::new(self.url.clone(), Some("se cret+/=".into()), join_info());
        config.timing = timing;
        ControlClient::spawn(config)
    }
}

#[tokio::test]
async fn joins_and_exchanges_controls_and_events() {
    let tcp = Tcp::new().await;
    let mut client = tcp.spawn(fast_timing());
    // Sent before any join: superseded by runner_ready, never replayed.
    client.handle.send(closed_event("early")).await.unwrap();
    let mut server = tcp.accept().await;
    assert_eq!(
        server.uri,
        "/runner/socket/websocket?vsn=2.0.0&token=se%20cret%2B%2F%3D"
    );
    let join = server.expect("phx_join").await;
    assert_eq!(join.topic, "runner:r1");
    assert_eq!(join.join_ref, join.msg_ref);
    assert_eq!(
        join.payload,
        json!({"runnerId": "r1", "version": "0.1.0", "hostname": "box", "os": "linux",
               "backend": "procfs", "configVersion": 2})
    );
    server.reply(&join, "ok", json!({})).await;
    let session = joined(&mut client).await;
    // Before runner_ready: dropped.
    client.handle.send(closed_event("too-early")).await.unwrap();
    client.handle.reply(session, ready()).await.unwrap();
    client.handle.send(closed_event("after")).await.unwrap();
    let first = server.expect("event").await;
    assert_eq!(first.join_ref, join.join_ref);
    assert_eq!(first.payload["type"], "runner_ready");
    assert_eq!(server.expect_event().await["requestId"], "after");

    let join_ref = join.join_ref.as_deref();
    server
        .push(
            join_ref,
            "control",
            json!({"type": "forward_websocket_close", "socketId": "s1", "unknownField": 1}),
        )
        .await;
    let Control::ForwardWebsocketClose(close) = control(&mut client).await else {
        panic!()
    };
    assert_eq!(close.socket_id, "s1");

    // Unknown type: answered by the client itself.
    server
        .push(
            join_ref,
            "control",
            json!({"type": "self_destruct", "requestId": "q"}),
        )
        .await;
    let error = server.expect_event().await;
    assert_eq!(
        error,
        json!({"type": "control_error", "controlType": "self_destruct", "requestId": "q",
               "code": "unknown_control", "message": "unknown control type"})
    );
}

#[tokio::test]
async fn rejoins_after_phx_error_and_drops_stale_join_refs() {
    let tcp = Tcp::new().await;
    let mut client = tcp.spawn(fast_timing());
    let mut server = tcp.accept().await;
    let old_ref = server.join_ok().await;
    let first = joined(&mut client).await;
    client.handle.reply(first, ready()).await.unwrap();
    assert_eq!(server.expect_event().await["type"], "runner_ready");

    server.push(Some(&old_ref), "phx_error", json!({})).await;
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Disconnected
    ));
    let rejoin = server.expect("phx_join").await;
    let new_ref = rejoin.join_ref.clone().unwrap();
    assert_ne!(new_ref, old_ref);
    // A join error is retried on the rejoin schedule.
    server
        .reply(&rejoin, "error", json!({"reason": "busy"}))
        .await;
    let new_ref = server.join_ok().await;
    let second = joined(&mut client).await;
    assert_ne!(first, second);

    // An answer for the first session is stale; runner_ready goes first.
    client
        .handle
        .reply(first, closed_event("stale"))
        .await
        .unwrap();
    client.handle.reply(second, ready()).await.unwrap();
    assert_eq!(server.expect_event().await["type"], "runner_ready");

    let stale = json!({"type": "stop_instance", "instanceId": "stale"});
    let fresh = json!({"type": "stop_instance", "instanceId": "fresh"});
    server.push(Some(&old_ref), "control", stale).await;
    server.push(Some(&new_ref), "control", fresh).await;
    assert_eq!(
        control(&mut client).await,
        Control::StopInstance(super::controls::StopInstance {
            instance_id: "fresh".into()
        })
    );
    // phx_close with the stale ref is ignored too; the channel stays joined.
    server.push(Some(&old_ref), "phx_close", json!({})).await;
    server
        .push(
            Some(&new_ref),
            "control",
            json!({"type": "stop_instance", "instanceId": "still"}),
        )
        .await;
    assert!(
        matches!(control(&mut client).await, Control::StopInstance(s) if s.instance_id == "still")
    );
}

#[tokio::test]
async fn reconnects_after_a_drop_and_after_close_1011() {
    let tcp = Tcp::new().await;
    let mut client = tcp.spawn(fast_timing());
    let mut server = tcp.accept().await;
    server.join_ok().await;
    joined(&mut client).await;
    drop(server); // TCP drop without a close frame
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Disconnected
    ));

    let mut server = tcp.accept().await;
    server.join_ok().await;
    let session = joined(&mut client).await;
    client.handle.reply(session, ready()).await.unwrap();
    assert_eq!(server.expect_event().await["type"], "runner_ready");
    let close = CloseFrame {
        code: CloseCode::Error,
        reason: "internal error".into(),
    };
    server.ws.send(Message::Close(Some(close))).await.unwrap();
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Disconnected
    ));

    let mut server = tcp.accept().await;
    server.join_ok().await;
    joined(&mut client).await;
}

#[tokio::test]
async fn thousand_malformed_controls_each_get_a_control_error() {
    let tcp = Tcp::new().await;
    let mut client = tcp.spawn(fast_timing());
    let mut server = tcp.accept().await;
    let join_ref = server.join_ok().await;
    let session = joined(&mut client).await;
    client.handle.reply(session, ready()).await.unwrap();
    assert_eq!(server.expect_event().await["type"], "runner_ready");

    let bad = [
        json!({"type": "forward_http_request", "requestId": "h", "port": 0, "method": "GET", "path": "/"}),
        json!({"type": "forward_http_request", "requestId": "h", "port": 70000, "method": "GET", "path": "/"}),
        json!({"type": "forward_http_request", "requestId": "h", "port": 80, "method": "GET", "path": "/", "bodyBase64": "***"}),
        json!({"type": "forward_websocket_send", "socketId": "s", "opcode": "shout", "bodyBase64": ""}),
        json!({"type": "update_runner_config", "allowedCwds": ["relative"]}),
        json!({"type": "resolve_port_forward_request", "requestId": "h"}),
        json!({"type": 42}),
        json!("not an object"),
    ];
    for i in 0..1000 {
        if i % 10 == 9 {
            server.send_text("[garbage").await;
        } else {
            server
                .push(Some(&join_ref), "control", bad[i % bad.len()].clone())
                .await;
        }
    }
    for i in 0..1000 {
        let error = server.expect_event().await;
        assert_eq!(error["type"], "control_error", "{i}: {error}");
        assert_eq!(error["code"], "invalid_control", "{i}: {error}");
    }
    // Still the same connection, still joined.
    server
        .push(
            Some(&join_ref),
            "control",
            json!({"type": "stop_instance", "instanceId": "i"}),
        )
        .await;
    assert!(matches!(
        control(&mut client).await,
        Control::StopInstance(_)
    ));
    server
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(server.expect_event().await["code"], "invalid_control");
}

#[tokio::test]
async fn heartbeat_timeout_reconnects() {
    let tcp = Tcp::new().await;
    let mut timing = fast_timing();
    timing.heartbeat_interval = Duration::from_millis(100);
    timing.heartbeat_timeout = Duration::from_millis(300);
    let mut client = tcp.spawn(timing);
    let mut server = tcp.accept().await;
    server.answer_heartbeats = false;
    server.join_ok().await;
    joined(&mut client).await;
    // Heartbeats go unanswered: the client gives up on this socket.
    assert!(server.next_frame().await.is_none());
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Disconnected
    ));
    let mut server = tcp.accept().await;
    server.join_ok().await;
    joined(&mut client).await;
}

/// In-memory transport: each connection's server end goes to the test.
#[derive(Clone)]
struct Pipes {
    servers: mpsc::UnboundedSender<DuplexStream>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    refuse: bool,
}

impl Connector for Pipes {
    type Stream = DuplexStream;

    async fn connect(
        &mut self,
        url: &str,
    ) -> Result<WebSocketStream<DuplexStream>, tungstenite::Error> {
        self.attempts.lock().unwrap().push(Instant::now());
        if self.refuse {
            return Err(tungstenite::Error::Io(
                std::io::ErrorKind::ConnectionRefused.into(),
            ));
        }
        let (client, server) = tokio::io::duplex(1 << 16);
        let _ = self.servers.send(server);
        let (ws, _) = tokio_tungstenite::client_async(url, client).await?;
        Ok(ws)
    }
}

fn spawn_piped(
    timing: Timing,
    refuse: bool,
) -> (
    ControlChannel,
    mpsc::UnboundedReceiver<DuplexStream>,
    Arc<Mutex<Vec<Instant>>>,
) {
    let (servers, rx) = mpsc::unbounded_channel();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let pipes = Pipes {
        servers,
        attempts: attempts.clone(),
        refuse,
    };
    let mut config = ControlConfig::new("ws://kandan.test/socket", Some("t".into()), join_info());
    config.timing = timing;
    (ControlClient::spawn_with(config, pipes), rx, attempts)
}

fn gaps(times: &[Instant]) -> Vec<u128> {
    times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn reconnect_follows_the_contract_schedule() {
    let (client, _servers, attempts) = spawn_piped(Timing::default(), true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let times = attempts.lock().unwrap().clone();
    assert_eq!(
        &gaps(&times)[..12],
        [
            10, 50, 100, 150, 200, 250, 500, 1000, 2000, 5000, 5000, 5000
        ]
    );
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn join_errors_follow_the_rejoin_schedule() {
    let (mut client, mut servers, _) = spawn_piped(Timing::default(), false);
    let mut server = StubConn::accept(servers.recv().await.unwrap()).await;
    let mut times = Vec::new();
    for _ in 0..6 {
        let join = server.expect("phx_join").await;
        times.push(Instant::now());
        server
            .reply(&join, "error", json!({"reason": "unauthorized"}))
            .await;
    }
    assert_eq!(gaps(&times), [1000, 2000, 5000, 10_000, 10_000]);
    server.join_ok().await;
    joined(&mut client).await;
    // A successful join resets the schedule.
    server.push(None, "phx_error", json!({})).await;
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Disconnected
    ));
    let before = Instant::now();
    server.expect("phx_join").await;
    assert_eq!((Instant::now() - before).as_millis(), 1000);
}

#[tokio::test(start_paused = true)]
async fn answered_heartbeats_keep_the_connection_and_the_schedule_resets() {
    let (mut client, mut servers, attempts) = spawn_piped(Timing::default(), false);
    let mut server = StubConn::accept(servers.recv().await.unwrap()).await;
    server.join_ok().await;
    joined(&mut client).await;
    server.patience = Duration::from_secs(120);
    // Ten minutes of answered heartbeats: still the one connection.
    let serve = async {
        loop {
            if server.next_frame().await.is_none() {
                break;
            }
        }
    };
    assert!(timeout(Duration::from_secs(600), serve).await.is_err());
    assert_eq!(attempts.lock().unwrap().len(), 1);

    // Unanswered: dead after one interval plus the timeout, then the
    // first reconnect delay (10 ms) since the last join succeeded.
    server.answer_heartbeats = false;
    let heartbeat = server.ws.next().await.unwrap().unwrap();
    let sent = Instant::now();
    assert!(heartbeat.to_text().unwrap().contains("heartbeat"));
    let mut next = StubConn::accept(servers.recv().await.unwrap()).await;
    let times = attempts.lock().unwrap().clone();
    assert_eq!(times.len(), 2);
    assert_eq!((times[1] - sent).as_millis(), 30_000 + 10);
    next.join_ok().await;
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Disconnected
    ));
    // Then why, and when the next attempt is: in order, before the join.
    match next_input(&mut client).await {
        ControlInput::Reconnecting {
            attempt,
            delay,
            reason,
        } => {
            assert_eq!((attempt, delay), (1, Duration::from_millis(10)));
            assert!(reason.contains("heartbeat"), "{reason}");
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    assert!(matches!(
        next_input(&mut client).await,
        ControlInput::Joined(_)
    ));
}

#[tokio::test]
async fn leave_sends_phx_leave_after_pending_events_then_closes_with_1000() {
    let tcp = Tcp::new().await;
    let mut client = tcp.spawn(fast_timing());
    let mut server = tcp.accept().await;
    let join_ref = server.join_ok().await;
    let session = joined(&mut client).await;
    client.handle.reply(session, ready()).await.unwrap();
    client.handle.send(closed_event("last")).await.unwrap();
    client.handle.leave().await.unwrap();

    assert_eq!(server.expect_event().await["type"], "runner_ready");
    assert_eq!(server.expect_event().await["requestId"], "last");
    let leave = server.expect("phx_leave").await;
    assert_eq!(leave.join_ref.as_deref(), Some(join_ref.as_str()));
    assert_eq!(leave.topic, "runner:r1");
    server.reply(&leave, "ok", json!({})).await;
    match timeout(WAIT, server.ws.next()).await.expect("no close") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    timeout(WAIT, client.task)
        .await
        .expect("the client did not end")
        .unwrap();
}

#[tokio::test]
async fn tracked_pushes_come_back_acked_once_kandan_replies() {
    let tcp = Tcp::new().await;
    let mut channel = tcp.spawn(fast_timing());
    let mut conn = tcp.accept().await;
    conn.join_ok().await;
    let session = joined(&mut channel).await;
    channel.handle.reply(session, ready()).await.unwrap();
    assert_eq!(conn.expect_event().await["type"], "runner_ready");

    let ack = |seq| super::Ack {
        instance_id: "i1".into(),
        seq,
    };
    channel
        .handle
        .send_tracked(closed_event("a"), ack(1))
        .await
        .unwrap();
    channel
        .handle
        .send_tracked(closed_event("b"), ack(2))
        .await
        .unwrap();
    let first = conn.expect("event").await;
    let second = conn.expect("event").await;
    assert_eq!(second.payload["requestId"], "b");
    // Only the answered one is acked, whatever the order of the answers.
    conn.reply(&second, "error", json!({"reason": "nope"}))
        .await;
    match next_input(&mut channel).await {
        ControlInput::Acked(got) => assert_eq!(got, ack(2)),
        other => panic!("expected Acked, got {other:?}"),
    }
    assert!(
        timeout(Duration::from_millis(200), channel.inputs.recv())
            .await
            .is_err(),
        "an unanswered push was acked"
    );
    conn.reply(&first, "ok", json!({})).await;
    match next_input(&mut channel).await {
        ControlInput::Acked(got) => assert_eq!(got, ack(1)),
        other => panic!("expected Acked, got {other:?}"),
    }
}
