//! Forwarding to dev servers that speak HTTPS only (Vite's `basic-ssl`,
//! `next dev --experimental-https`): the TLS probe, the per-port
//! `protocol` setting, WebSockets over TLS, and that TLS never reaches a
//! port the verified dial refuses.

// tungstenite's handshake callback signature fixes its large `Err` type.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

use super::servers::{
    FakeGate, ForwardOutput, HttpRequest, PATIENCE, WsOpen, choose_subprotocol, forwarder, full,
    http_server, next,
};
use crate::forward::{CloseCause, ForwardConfig, Protocol, Scheme};
use crate::gate::GateRefusal;
use crate::wire::ErrorCode;
use crate::wire::Opcode;

/// What a TLS-only server saw, by the first byte of each connection.
#[derive(Default)]
struct Counts {
    /// ClientHellos (first byte 0x16).
    tls: AtomicUsize,
    /// Plain HTTP, reset as Node's TLS server does.
    plain: AtomicUsize,
    /// Connections closed before any byte (a dial that failed verification).
    empty: AtomicUsize,
}

impl Counts {
    fn get(&self) -> (usize, usize, usize) {
        (
            self.tls.load(Ordering::SeqCst),
            self.plain.load(Ordering::SeqCst),
            self.empty.load(Ordering::SeqCst),
        )
    }
}

/// What a TLS-only server does once the handshake is done.
#[derive(Clone, Copy)]
enum Serve {
    /// HTTP/1.1: answers `tls <method> <uri>`.
    Http,
    /// A WebSocket that echoes each message.
    WsEcho,
}

struct TlsServer {
    port: u16,
    counts: Arc<Counts>,
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], PrivateKeyDer::Pkcs8(der))
        .unwrap();
    // As Vite's HTTPS server does: h2 preferred, HTTP/1.1 allowed.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// How a TLS-only server ends a plain connection.
#[derive(Clone, Copy)]
enum Plain {
    /// With a reset, as Node's TLS servers may.
    Reset,
    /// With a plain close and no answer, as Vite's HTTPS server does.
    Close,
}

/// A server that speaks only TLS, with a self-signed certificate; plain
/// connections are reset once their first byte has arrived.
async fn tls_server(serve: Serve) -> TlsServer {
    tls_server_with(serve, Plain::Reset, || {}).await
}

/// [`tls_server`], ending plain connections as `plain` says and calling
/// `on_plain` before it does.
async fn tls_server_with(
    serve: Serve,
    plain: Plain,
    on_plain: impl Fn() + Send + Sync + 'static,
) -> TlsServer {
    let on_plain = Arc::new(on_plain);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Counts::default());
    let acceptor = acceptor();
    let seen = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counts, on_plain) = (acceptor.clone(), seen.clone(), on_plain.clone());
            tokio::spawn(async move {
                serve_one(stream, acceptor, &counts, (serve, plain), &*on_plain).await;
            });
        }
    });
    TlsServer { port, counts }
}

async fn serve_one(
    mut stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    counts: &Counts,
    (serve, plain): (Serve, Plain),
    on_plain: &(dyn Fn() + Send + Sync),
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(PATIENCE, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => counts.tls.fetch_add(1, Ordering::SeqCst),
        Ok(Ok(1)) => {
            counts.plain.fetch_add(1, Ordering::SeqCst);
            on_plain();
            if let Plain::Reset = plain {
                let _ = stream.set_zero_linger();
            } else {
                // Read the request first, so closing sends no reset.
                let mut sink = vec![0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
            }
            return;
        }
        _ => {
            counts.empty.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    match serve {
        Serve::Http => {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = format!("tls {} {}", req.method(), req.uri());
                Ok::<_, std::convert::Infallible>(Response::new(full(body)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
        Serve::WsEcho => {
            let callback = |req: &WsRequest, resp: WsResponse| Ok(choose_subprotocol(req, resp));
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, callback).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() && ws.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn get(id: &str, port: u16, method: &str) -> HttpRequest {
    HttpRequest {
        request_id: id.to_owned(),
        port,
        method: method.to_owned(),
        path: "/src/main.js".to_owned(),
        query_string: Some("t=1".to_owned()),
        headers: Vec::new(),
        body: Bytes::new(),
        accept_streaming: false,
    }
}

fn body(output: ForwardOutput) -> String {
    match output {
        ForwardOutput::HttpResponse {
            status: 200, body, ..
        } => String::from_utf8(body.to_vec()).unwrap(),
        other => panic!("expected a 200, got {other:?}"),
    }
}

fn error(output: ForwardOutput) -> (ErrorCode, String) {
    match output {
        ForwardOutput::HttpError { code, message, .. } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn allow(gate: &FakeGate, port: u16) {
    gate.allow(port, &["127.0.0.1"]);
}

#[tokio::test]
async fn a_tls_only_server_is_probed_and_the_get_is_answered_over_tls() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server(Serve::Http).await;
    allow(&gate, server.port);
    assert_eq!(
        fwd.inner.scheme(server.port),
        None,
        "unknown before any request"
    );

    fwd.http(get("r1", server.port, "GET"));
    assert_eq!(body(next(&mut answers).await), "tls GET /src/main.js?t=1");
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));
    assert_eq!(
        server.counts.get(),
        (1, 1, 0),
        "one plain try, one TLS connection"
    );

    // Later requests use TLS from the start, on the pooled connection.
    fwd.http(get("r2", server.port, "GET"));
    assert_eq!(body(next(&mut answers).await), "tls GET /src/main.js?t=1");
    assert_eq!(
        server.counts.get(),
        (1, 1, 0),
        "the TLS connection was reused"
    );
}

#[tokio::test]
async fn a_tls_server_that_closes_plain_connections_without_a_word_is_probed_too() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server_with(Serve::Http, Plain::Close, || {}).await;
    allow(&gate, server.port);
    fwd.http(get("r1", server.port, "GET"));
    assert_eq!(body(next(&mut answers).await), "tls GET /src/main.js?t=1");
    assert_eq!(server.counts.get(), (1, 1, 0));
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));
}

#[tokio::test]
async fn a_post_that_reached_the_server_is_not_resent_but_later_ones_use_tls() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server(Serve::Http).await;
    allow(&gate, server.port);

    fwd.http(get("r1", server.port, "POST"));
    let (code, message) = error(next(&mut answers).await);
    assert_eq!(code, ErrorCode::UpstreamUnreachable);
    assert!(
        message.contains(&format!("port {} speaks HTTPS", server.port))
            && message.contains("later requests use TLS"),
        "{message}"
    );
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));

    fwd.http(get("r2", server.port, "POST"));
    assert_eq!(body(next(&mut answers).await), "tls POST /src/main.js?t=1");
    assert_eq!(
        server.counts.get().1,
        1,
        "only the first POST went out plain"
    );
}

#[tokio::test]
async fn protocol_https_speaks_tls_from_the_first_connection() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server(Serve::Http).await;
    allow(&gate, server.port);
    fwd.inner.set_protocol(server.port, Protocol::Https);
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));

    fwd.http(get("r1", server.port, "POST"));
    assert_eq!(body(next(&mut answers).await), "tls POST /src/main.js?t=1");
    assert_eq!(server.counts.get(), (1, 0, 0), "no plain byte ever");
}

#[tokio::test]
async fn protocol_http_never_probes() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server(Serve::Http).await;
    allow(&gate, server.port);
    fwd.inner.set_protocol(server.port, Protocol::Http);

    fwd.http(get("r1", server.port, "GET"));
    let (code, _) = error(next(&mut answers).await);
    assert_eq!(code, ErrorCode::UpstreamUnreachable);
    assert_eq!(server.counts.get(), (0, 1, 0), "no TLS probe");
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Http));
}

#[tokio::test]
async fn plain_servers_are_learned_as_http_and_never_probed() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = http_server("127.0.0.1", |_| Response::new(full("plain"))).await;
    allow(&gate, server.port);
    fwd.http(get("r1", server.port, "GET"));
    assert_eq!(body(next(&mut answers).await), "plain");
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Http));
}

#[tokio::test]
async fn the_scheme_is_forgotten_when_the_listener_closes() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server(Serve::Http).await;
    allow(&gate, server.port);
    fwd.http(get("r1", server.port, "GET"));
    body(next(&mut answers).await);
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));

    fwd.close_port(server.port, CloseCause::ListenerClosed);
    assert_eq!(fwd.inner.scheme(server.port), None);

    // The next listener on the port is asked afresh: plain first.
    fwd.http(get("r2", server.port, "GET"));
    body(next(&mut answers).await);
    assert_eq!(
        server.counts.get().1,
        2,
        "a second plain try after the close"
    );

    // A changed listener (approval revoked) is forgotten too; a setting stays.
    fwd.close_port(server.port, CloseCause::ApprovalRevoked);
    assert_eq!(fwd.inner.scheme(server.port), None);
    fwd.inner.set_protocol(server.port, Protocol::Https);
    fwd.close_port(server.port, CloseCause::ListenerClosed);
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));
}

#[tokio::test]
async fn websockets_are_probed_and_spoken_over_tls() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());
    let server = tls_server(Serve::WsEcho).await;
    allow(&gate, server.port);
    fwd.ws_open(WsOpen {
        socket_id: "s1".to_owned(),
        port: server.port,
        path: "/".to_owned(),
        query_string: Some("token=abc".to_owned()),
        headers: vec![("sec-websocket-protocol".to_owned(), "vite-hmr".to_owned())],
    })
    .await;
    match next(&mut answers).await {
        ForwardOutput::WsOpened {
            socket_id,
            protocol,
        } => assert_eq!(
            (socket_id.as_str(), protocol.as_deref()),
            ("s1", Some("vite-hmr"))
        ),
        other => panic!("expected the socket open, got {other:?}"),
    }
    assert_eq!(fwd.inner.scheme(server.port), Some(Scheme::Https));
    fwd.ws_send(
        "s1",
        Opcode::Text,
        Bytes::from_static(b"{\"type\":\"ping\"}"),
    )
    .await;
    match next(&mut answers).await {
        ForwardOutput::WsMessage { body, opcode, .. } => {
            assert_eq!(opcode, Opcode::Text);
            assert_eq!(&body[..], b"{\"type\":\"ping\"}");
        }
        other => panic!("expected the echo, got {other:?}"),
    }
    assert_eq!(server.counts.get(), (1, 1, 0));
    fwd.ws_close("s1").await;
}

/// The probe and every TLS connection go through the verified dial: a port
/// whose connections fail verification (another process listens there too)
/// or that the gate refuses never receives a ClientHello.
#[tokio::test]
async fn tls_never_reaches_a_port_the_verified_dial_refuses() {
    let (fwd, gate, mut answers) = forwarder(ForwardConfig::default());

    // The probe: the server resets the first plain request, and by then
    // the port's connections fail verification (as if another process had
    // bound it too).
    let (turn, port_slot) = (gate.clone(), Arc::new(AtomicUsize::new(0)));
    let slot = port_slot.clone();
    let server = tls_server_with(Serve::Http, Plain::Reset, move || {
        turn.foreign(slot.load(Ordering::SeqCst) as u16);
    })
    .await;
    port_slot.store(usize::from(server.port), Ordering::SeqCst);
    allow(&gate, server.port);
    fwd.http(get("r1", server.port, "GET"));
    let (code, _) = error(next(&mut answers).await);
    assert_eq!(code, ErrorCode::UpstreamUnreachable);
    // The probe connected, failed verification and closed without a byte.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.counts.get().2 == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        server.counts.get(),
        (0, 1, 1),
        "no ClientHello after verification failed"
    );
    assert_ne!(fwd.inner.scheme(server.port), Some(Scheme::Https));

    // `protocol = https` on a foreign port: refused before any byte.
    fwd.inner.set_protocol(server.port, Protocol::Https);
    fwd.http(get("r2", server.port, "GET"));
    let (code, message) = error(next(&mut answers).await);
    assert_eq!(code, GateRefusal::Foreign.code(), "{message}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.counts.get().0, 0, "no ClientHello");

    // `protocol = https` on a refused port: not even a connection.
    let refused = tls_server(Serve::Http).await;
    gate.refuse(refused.port, GateRefusal::Denied);
    fwd.inner.set_protocol(refused.port, Protocol::Https);
    fwd.http(get("r3", refused.port, "GET"));
    let (code, _) = error(next(&mut answers).await);
    assert_eq!(code, ErrorCode::PortNotApproved);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(refused.counts.get(), (0, 0, 0));
}

/// A plain server that closes a request unanswered (it crashed, or is
/// restarting) is probed, is not taken for HTTPS, and the request fails
/// with the plain error, without waiting out the connect timeout.
#[tokio::test]
async fn a_plain_server_closing_unanswered_is_not_taken_for_https() {
    let config = ForwardConfig {
        connect_timeout: Duration::from_secs(30),
        ..ForwardConfig::default()
    };
    let (fwd, gate, mut answers) = forwarder(config);
    let port = super::servers::dying_server(b"").await;
    allow(&gate, port);
    let started = tokio::time::Instant::now();
    fwd.http(get("r1", port, "GET"));
    let (code, message) = error(next(&mut answers).await);
    assert_eq!(code, ErrorCode::UpstreamUnreachable);
    assert!(!message.contains("HTTPS"), "{message}");
    assert_eq!(fwd.inner.scheme(port), None);
    // The probe's own limit, not the 30 s connect timeout.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "failed after {took:?}");
}
