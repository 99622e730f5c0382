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

use super::{ForwardConfig, ForwardOutput, Forwarder, GateRefusal, PortGate};

/// Generous wait for anything in tests (the machine is shared and noisy).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A gate whose answers the test sets; unknown ports are not listening.
#[derive(Default)]
pub struct FakeGate {
    ports: Mutex<HashMap<u16, Result<Vec<IpAddr>, GateRefusal>>>,
    /// Ports whose connections fail verification.
    foreign: Mutex<std::collections::HashSet<u16>>,
}

impl FakeGate {
    pub fn allow(&self, port: u16, addrs: &[&str]) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.ports.lock().unwrap().insert(port, Ok(addrs));
    }

    pub fn refuse(&self, port: u16, why: GateRefusal) {
        self.ports.lock().unwrap().insert(port, Err(why));
    }

    /// Connections to `port` fail verification from now on, as if another
    /// process listened there too.
    pub fn foreign(&self, port: u16) {
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

/// A forwarder over a fake gate, and the receiving end of its outputs.
pub fn forwarder(
    config: ForwardConfig,
) -> (Forwarder, Arc<FakeGate>, mpsc::Receiver<ForwardOutput>) {
    let gate = Arc::new(FakeGate::default());
    let (tx, rx) = mpsc::channel(16);
    (Forwarder::new(gate.clone(), config, tx), gate, rx)
}

/// The next output, or a panic after [`PATIENCE`].
pub async fn next(rx: &mut mpsc::Receiver<ForwardOutput>) -> ForwardOutput {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("an output in time")
        .expect("the channel is open")
}

pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).boxed()
}

/// A request as the test server received it.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A hyper HTTP/1.1 server; every request it reads whole is reported on `seen`.
pub struct HttpServer {
    pub port: u16,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

pub async fn http_server(
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
pub async fn refused_port() -> u16 {
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
pub async fn silent_server() -> u16 {
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
pub async fn dying_server(partial: &'static [u8]) -> u16 {
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
pub struct WsServer {
    pub port: u16,
    pub received: mpsc::UnboundedReceiver<Message>,
    pub conns: mpsc::UnboundedReceiver<mpsc::UnboundedSender<Message>>,
    pub handshakes: mpsc::UnboundedReceiver<HeaderMap>,
}

/// Accepts the first subprotocol the client offers.
fn choose_subprotocol(req: &WsRequest, mut resp: WsResponse) -> WsResponse {
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

pub async fn ws_server(stalled: bool) -> WsServer {
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
