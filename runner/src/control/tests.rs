//! The client's schedules under paused time: reconnect and rejoin delays,
//! heartbeats that keep or end a connection. They need the client's
//! in-memory seam (`spawn_with` and a `Connector` over pipes) and a clock
//! the test owns, so they stay here with a small Phoenix stub; everything
//! said over real sockets is tested against the simulator in
//! `tests/tests/simulator_runner_client*.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::{
    ControlChannel, ControlClient, ControlConfig, ControlInput, JoinInfo, Session, Timing,
};
use super::connector::Connector;

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

/// The server end of one connection.
struct StubConn<S> {
    ws: WebSocketStream<S>,
    answer_heartbeats: bool,
    /// How long to wait for a frame before failing the test.
    patience: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StubConn<S> {
    async fn accept(stream: S) -> Self {
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        StubConn {
            ws,
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
