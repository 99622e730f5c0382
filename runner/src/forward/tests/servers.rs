//! Real local servers on loopback for the forwarding tests, and a fake gate.

// tungstenite's handshake callback signature fixes its large `Err` type.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

use crate::control::budget::Charge;
use crate::control::{Responder, TestAnswers};
use crate::forward::{CloseCause, ForwardConfig, Forwarder};
use crate::gate::{GateRefusal, PortGate};
use crate::wire::ErrorCode;
use crate::wire::Event;
use crate::wire::{Control, Opcode};

/// Generous wait for anything in tests (the machine is shared and noisy).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A gate whose answers the test sets; unknown ports are not listening.
#[derive(Default)]
pub(crate) struct FakeGate {
    ports: Mutex<HashMap<u16, Result<Vec<IpAddr>, GateRefusal>>>,
    /// Ports whose connections fail verification.
    foreign: Mutex<std::collections::HashSet<u16>>,
}

impl FakeGate {
    pub(crate) fn allow(&self, port: u16, addrs: &[&str]) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.ports.lock().unwrap().insert(port, Ok(addrs));
    }

    pub(crate) fn refuse(&self, port: u16, why: GateRefusal) {
        self.ports.lock().unwrap().insert(port, Err(why));
    }

    /// Connections to `port` fail verification from now on, as if another
    /// process listened there too.
    pub(crate) fn foreign(&self, port: u16) {
        self.foreign.lock().unwrap().insert(port);
    }
}

impl PortGate for FakeGate {
    fn target(&self, port: u16) -> Result<Vec<IpAddr>, GateRefusal> {
        self.ports
            .lock()
            .unwrap()
            .get(&port)
            .cloned()
            .unwrap_or(Err(GateRefusal::NotListening))
    }

    fn verify(&self, peer: std::net::SocketAddr) -> Result<(), GateRefusal> {
        if self.foreign.lock().unwrap().contains(&peer.port()) {
            return Err(GateRefusal::Foreign);
        }
        self.target(peer.port()).map(drop)
    }
}

/// A `forward_http_request`, as the test writes it.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequest {
    pub(crate) request_id: String,
    pub(crate) port: u16,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query_string: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
    pub(crate) accept_streaming: bool,
}

/// A `forward_websocket_open`, as the test writes it.
#[derive(Debug, Clone)]
pub(crate) struct WsOpen {
    pub(crate) socket_id: String,
    pub(crate) port: u16,
    pub(crate) path: String,
    pub(crate) query_string: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
}

/// Reads a control the way the runner does: from its wire JSON.
pub(crate) fn control(json: serde_json::Value) -> Control {
    let raw = serde_json::value::RawValue::from_string(json.to_string()).unwrap();
    Control::parse(&raw).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn base64(body: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(body)
}

/// A forwarder whose answers (all on one session) the test reads.
pub(crate) struct TestForwarder {
    pub(crate) inner: Forwarder,
    to: Responder,
}

impl TestForwarder {
    pub(crate) fn new(inner: Forwarder, to: Responder) -> Self {
        TestForwarder { inner, to }
    }

    pub(crate) fn http(&self, req: HttpRequest) {
        let Control::ForwardHttpRequest(req) = control(serde_json::json!({
            "type": "forward_http_request", "requestId": req.request_id, "port": req.port,
            "method": req.method, "path": req.path, "queryString": req.query_string,
            "headers": req.headers, "bodyBase64": base64(&req.body),
            "acceptStreaming": req.accept_streaming,
        })) else {
            unreachable!()
        };
        self.inner.http(req, self.to.clone());
    }

    pub(crate) async fn ws_open(&self, open: WsOpen) {
        let Control::ForwardWebsocketOpen(open) = control(serde_json::json!({
            "type": "forward_websocket_open", "socketId": open.socket_id, "port": open.port,
            "path": open.path, "queryString": open.query_string, "headers": open.headers,
        })) else {
            unreachable!()
        };
        self.inner.ws_open(open, self.to.clone());
    }

    pub(crate) async fn ws_send(&self, socket_id: &str, opcode: Opcode, body: Bytes) {
        let Control::ForwardWebsocketSend(send) = control(serde_json::json!({
            "type": "forward_websocket_send", "socketId": socket_id, "opcode": opcode,
            "bodyBase64": base64(&body),
        })) else {
            unreachable!()
        };
        self.inner.ws_send(send, &self.to);
    }

    pub(crate) async fn ws_close(&self, socket_id: &str) {
        let Control::ForwardWebsocketClose(close) = control(serde_json::json!({
            "type": "forward_websocket_close", "socketId": socket_id,
        })) else {
            unreachable!()
        };
        self.inner.ws_close(close, &self.to);
    }

    pub(crate) fn close_port(&self, port: u16, cause: CloseCause) {
        self.inner.close_port(port, cause);
    }

    pub(crate) fn close_all(&self) {
        self.inner.close_all();
    }

    pub(crate) fn shut_down(&self) {
        self.inner.shut_down();
    }

    pub(crate) fn socket_count(&self) -> usize {
        self.inner.socket_count()
    }
}

/// What the forwarder answered, in the shape the assertions use.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ForwardOutput {
    HttpResponse {
        request_id: String,
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
        streaming: bool,
        charge: Charge,
    },
    HttpChunk {
        request_id: String,
        seq: u64,
        body: Bytes,
        done: bool,
        charge: Charge,
    },
    HttpError {
        request_id: String,
        code: ErrorCode,
        message: String,
    },
    WsOpened {
        socket_id: String,
        protocol: Option<String>,
    },
    WsMessage {
        socket_id: String,
        opcode: Opcode,
        body: Bytes,
        charge: Charge,
    },
    WsClosed {
        socket_id: String,
        code: Option<u16>,
        reason: Option<String>,
        /// The code at the front of the wire's `error`.
        error: Option<ErrorCode>,
    },
    WsError {
        control_type: String,
        socket_id: String,
        code: ErrorCode,
        message: String,
    },
}

fn code_named(text: &str) -> ErrorCode {
    let name = text.split(':').next().unwrap_or_default();
    let codes = [
        ErrorCode::PortNotApproved,
        ErrorCode::PortNotListening,
        ErrorCode::UpstreamUnreachable,
        ErrorCode::UpstreamTimeout,
        ErrorCode::BodyTooLarge,
        ErrorCode::InvalidControl,
        ErrorCode::UnknownSocket,
        ErrorCode::UnknownEditor,
    ];
    codes
        .into_iter()
        .find(|code| code.to_string() == name)
        .unwrap_or_else(|| panic!("no error code at the front of {text:?}"))
}

impl ForwardOutput {
    fn of(charged: crate::control::Charged) -> Self {
        let charge = charged.charge;
        match charged.event {
            Event::ForwardHttpResponse(r) => ForwardOutput::HttpResponse {
                request_id: r.request_id,
                status: r.status,
                headers: r
                    .headers
                    .0
                    .iter()
                    .map(|(name, value)| {
                        let value = String::from_utf8_lossy(value.as_bytes());
                        (name.to_string(), value.into_owned())
                    })
                    .collect(),
                body: r.body.to_bytes(),
                streaming: r.streaming == Some(true),
                charge,
            },
            Event::ForwardHttpResponseChunk(c) => ForwardOutput::HttpChunk {
                request_id: c.request_id,
                seq: c.seq,
                body: c.body.to_bytes(),
                done: c.done,
                charge,
            },
            Event::ForwardWebsocketOpened(o) => ForwardOutput::WsOpened {
                socket_id: o.socket_id,
                protocol: o.protocol,
            },
            Event::ForwardWebsocketMessage(m) => ForwardOutput::WsMessage {
                socket_id: m.socket_id,
                opcode: m.opcode,
                body: m.body.to_bytes(),
                charge,
            },
            Event::ForwardWebsocketClosed(c) => ForwardOutput::WsClosed {
                socket_id: c.socket_id,
                code: c.code,
                reason: c.reason,
                error: c.error.as_deref().map(code_named),
            },
            Event::ControlError(e) if e.control_type == "forward_http_request" => {
                ForwardOutput::HttpError {
                    request_id: e.request_id.expect("a request id"),
                    code: e.code,
                    message: e.message,
                }
            }
            Event::ControlError(e) => ForwardOutput::WsError {
                control_type: e.control_type,
                socket_id: e.socket_id.expect("a socket id"),
                code: e.code,
                message: e.message,
            },
            other => panic!("forwarding answered {other:?}"),
        }
    }
}

/// A forwarder over a fake gate, and what it answers.
pub(crate) fn forwarder(config: ForwardConfig) -> (TestForwarder, Arc<FakeGate>, TestAnswers) {
    let gate = Arc::new(FakeGate::default());
    let (to, answers) = Responder::for_tests();
    let inner = Forwarder::new(gate.clone(), Arc::new(crate::forward::NoEditors), config);
    (TestForwarder { inner, to }, gate, answers)
}

/// The next answer, or a panic after [`PATIENCE`].
pub(crate) async fn next(answers: &mut TestAnswers) -> ForwardOutput {
    let charged = tokio::time::timeout(PATIENCE, answers.next_charged())
        .await
        .expect("an answer in time")
        .expect("the channel is open");
    ForwardOutput::of(charged)
}

/// An answer already there, if any.
pub(crate) fn try_next(answers: &mut TestAnswers) -> Option<ForwardOutput> {
    answers.try_next_charged().map(ForwardOutput::of)
}

pub(crate) type TestBody = BoxBody<Bytes, Infallible>;

pub(crate) fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).boxed()
}

/// A request as the test server received it.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// A hyper HTTP/1.1 server; every request it reads whole is reported on `seen`.
pub(crate) struct HttpServer {
    pub(crate) port: u16,
    pub(crate) seen: mpsc::UnboundedReceiver<Seen>,
}

pub(crate) async fn http_server(
    ip: &str,
    handler: impl Fn(&Seen) -> Response<TestBody> + Send + Sync + 'static,
) -> HttpServer {
    let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen_tx, handler) = (seen_tx.clone(), handler.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (seen_tx, handler) = (seen_tx.clone(), handler.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let seen = Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let response = handler(&seen);
                        let _ = seen_tx.send(seen);
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    HttpServer { port, seen }
}

/// A port that is free now (bound then released), so connecting is refused.
pub(crate) async fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Reads a request head from a raw connection.
async fn read_head(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
}

/// A server that accepts, reads the request, and never answers.
pub(crate) async fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            held.push(stream);
        }
    });
    port
}

/// A server that writes `partial` after the request head, then dies.
pub(crate) async fn dying_server(partial: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            read_head(&mut stream).await;
            let _ = stream.write_all(partial).await;
            drop(stream);
        }
    });
    port
}

/// A WebSocket server: what it receives (from any connection) goes to
/// `received`; for each connection, `conns` yields a sender whose messages
/// go to that client; handshake request headers go to `handshakes`. It picks
/// the first offered subprotocol. With `stalled`, it completes handshakes
/// and then never reads.
pub(crate) struct WsServer {
    pub(crate) port: u16,
    pub(crate) received: mpsc::UnboundedReceiver<Message>,
    pub(crate) conns: mpsc::UnboundedReceiver<mpsc::UnboundedSender<Message>>,
    pub(crate) handshakes: mpsc::UnboundedReceiver<HeaderMap>,
}

/// Accepts the first subprotocol the client offers.
pub(crate) fn choose_subprotocol(req: &WsRequest, mut resp: WsResponse) -> WsResponse {
    let first = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned());
    if let Some(first) = first {
        resp.headers_mut()
            .insert("sec-websocket-protocol", first.parse().unwrap());
    }
    resp
}

pub(crate) async fn ws_server(stalled: bool) -> WsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (received_tx, received) = mpsc::unbounded_channel();
    let (conns_tx, conns) = mpsc::unbounded_channel();
    let (hs_tx, handshakes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (hs_tx, received_tx, conns_tx) =
                (hs_tx.clone(), received_tx.clone(), conns_tx.clone());
            tokio::spawn(async move {
                let callback = move |req: &WsRequest, resp: WsResponse| {
                    let _ = hs_tx.send(req.headers().clone());
                    Ok(choose_subprotocol(req, resp))
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                let (send, mut send_rx) = mpsc::unbounded_channel::<Message>();
                let _ = conns_tx.send(send);
                if stalled {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                loop {
                    tokio::select! {
                        msg = ws.next() => match msg {
                            Some(Ok(msg)) => { let _ = received_tx.send(msg); }
                            _ => break,
                        },
                        Some(msg) = send_rx.recv() => {
                            if ws.send(msg).await.is_err() { break; }
                        }
                    }
                }
            });
        }
    });
    WsServer {
        port,
        received,
        conns,
        handshakes,
    }
}
