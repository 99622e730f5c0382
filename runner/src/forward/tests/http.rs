//! HTTP forwarding against real servers on loopback.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Channel};
use tokio::sync::mpsc;

use super::servers::{ForwardOutput, HttpRequest};
use super::servers::{
    PATIENCE, TestBody, dying_server, forwarder, full, http_server, next, refused_port,
    silent_server,
};
use crate::forward::{CloseCause, ForwardConfig};
use crate::gate::GateRefusal;
use crate::wire::ErrorCode;

fn request(id: &str, port: u16, method: &str, path: &str) -> HttpRequest {
    HttpRequest {
        request_id: id.to_owned(),
        port,
        method: method.to_owned(),
        path: path.to_owned(),
        query_string: None,
        headers: Vec::new(),
        body: Bytes::new(),
        accept_streaming: false,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Expects a whole (non-streamed) response.
fn whole(output: ForwardOutput) -> (u16, Vec<(String, String)>, Bytes) {
    match output {
        ForwardOutput::HttpResponse {
            status,
            headers,
            body,
            streaming: false,
            ..
        } => (status, headers, body),
        other => panic!("expected a whole response, got {other:?}"),
    }
}

fn error_code(output: ForwardOutput) -> (ErrorCode, String) {
    match output {
        ForwardOutput::HttpError { code, message, .. } => (code, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn echo(seen: &super::servers::Seen) -> Response<TestBody> {
    Response::new(full(seen.body.clone()))
}

#[tokio::test]
async fn get_round_trip_strips_hop_by_hop_and_rewrites_host() {
    let mut server = http_server("127.0.0.1", |_| {
        Response::builder()
            .status(201)
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("x-reply", "yes")
            .body(full("hello"))
            .unwrap()
    })
    .await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    let mut req = request("r1", server.port, "GET", "/hello");
    req.query_string = Some("a=1&b=2".to_owned());
    req.headers = pairs(&[
        ("Host", "preview.kandan.dev"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic x"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Cookie", "session=abc"),
        ("Accept", "text/html"),
    ]);
    fwd.http(req);

    let (status, headers, body) = whole(next(&mut out).await);
    assert_eq!(status, 201);
    assert_eq!(body, "hello");
    assert_eq!(header(&headers, "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(header(&headers, "x-reply"), ["yes"]);
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "transfer-encoding",
    ] {
        assert!(header(&headers, gone).is_empty(), "{gone} was forwarded");
    }

    let seen = server.seen.recv().await.unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/hello?a=1&b=2");
    assert_eq!(seen.headers["host"], format!("localhost:{}", server.port));
    assert_eq!(seen.headers["x-forwarded-host"], "preview.kandan.dev");
    assert_eq!(seen.headers["cookie"], "session=abc");
    assert_eq!(seen.headers["accept"], "text/html");
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the server"
        );
    }
}

#[tokio::test]
async fn post_body_round_trips() {
    let mut server = http_server("127.0.0.1", echo).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["0.0.0.0"]);
    let mut req = request("r1", server.port, "POST", "/submit");
    req.headers = pairs(&[
        ("Content-Type", "application/json"),
        ("Content-Length", "999"),
    ]);
    req.body = Bytes::from_static(b"{\"x\":1}");
    fwd.http(req);
    let (status, _, body) = whole(next(&mut out).await);
    assert_eq!((status, &body[..]), (200, &b"{\"x\":1}"[..]));
    let seen = server.seen.recv().await.unwrap();
    assert_eq!(seen.method, "POST");
    // The control's stale length is replaced by the real one.
    assert_eq!(seen.headers["content-length"], "7");
}

#[tokio::test]
async fn ipv6_only_server_is_reached_directly_and_by_fallback() {
    let server = http_server("::1", |_| Response::new(full("v6"))).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["::1"]);
    fwd.http(request("r1", server.port, "GET", "/"));
    assert_eq!(whole(next(&mut out).await).2, "v6");

    // The gate says both families: 127.0.0.1 refuses, ::1 answers.
    gate.allow(server.port, &["0.0.0.0", "::"]);
    fwd.http(request("r2", server.port, "GET", "/"));
    assert_eq!(whole(next(&mut out).await).2, "v6");
}

#[tokio::test]
async fn non_loopback_listener_is_never_dialled() {
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(8080, &["192.168.1.5"]);
    fwd.http(request("r1", 8080, "GET", "/"));
    let (code, message) = error_code(next(&mut out).await);
    assert_eq!(code, ErrorCode::UpstreamUnreachable);
    assert!(message.contains("loopback"), "{message}");
}

#[tokio::test]
async fn ten_mib_upload_and_download_are_intact() {
    let mut server = http_server("127.0.0.1", echo).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    let payload: Bytes = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut req = request("big", server.port, "PUT", "/upload");
    req.body = payload.clone();
    fwd.http(req);
    let (status, _, body) = whole(next(&mut out).await);
    assert_eq!(status, 200);
    assert_eq!(body.len(), payload.len());
    assert!(body == payload, "downloaded body differs");
    assert!(
        server.seen.recv().await.unwrap().body == payload,
        "uploaded body differs"
    );
}

#[tokio::test]
async fn request_body_over_limit_sends_nothing() {
    let mut server = http_server("127.0.0.1", echo).await;
    let config = ForwardConfig {
        max_request_body: 1024,
        ..ForwardConfig::default()
    };
    let (fwd, gate, mut out) = forwarder(config);
    gate.allow(server.port, &["127.0.0.1"]);
    let mut req = request("big", server.port, "POST", "/too-big");
    req.body = Bytes::from(vec![b'x'; 1025]);
    fwd.http(req);
    assert_eq!(error_code(next(&mut out).await).0, ErrorCode::BodyTooLarge);

    // The next request is the first the server ever sees.
    fwd.http(request("small", server.port, "GET", "/after"));
    whole(next(&mut out).await);
    assert_eq!(server.seen.recv().await.unwrap().uri, "/after");
}

#[tokio::test]
async fn response_over_limit_is_refused_whole() {
    let config = ForwardConfig {
        max_response_body: 1024,
        ..ForwardConfig::default()
    };
    let (fwd, gate, mut out) = forwarder(config);
    // Declared length over the limit.
    let sized = http_server("127.0.0.1", |_| Response::new(full(vec![b'x'; 4096]))).await;
    gate.allow(sized.port, &["127.0.0.1"]);
    fwd.http(request("sized", sized.port, "GET", "/"));
    assert_eq!(error_code(next(&mut out).await).0, ErrorCode::BodyTooLarge);

    // Chunked, no declared length: found out while reading.
    let chunked = http_server("127.0.0.1", |_| {
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(8);
        tokio::spawn(async move {
            for _ in 0..8 {
                if tx.send_data(Bytes::from(vec![b'y'; 512])).await.is_err() {
                    return;
                }
            }
        });
        Response::new(body.boxed())
    })
    .await;
    gate.allow(chunked.port, &["127.0.0.1"]);
    fwd.http(request("chunked", chunked.port, "GET", "/"));
    assert_eq!(error_code(next(&mut out).await).0, ErrorCode::BodyTooLarge);
}

/// A server whose response body the test feeds through a channel.
async fn fed_server(
    content_type: &'static str,
) -> (
    u16,
    mpsc::UnboundedReceiver<http_body_util::channel::Sender<Bytes, Infallible>>,
) {
    let (feeds_tx, feeds) = mpsc::unbounded_channel();
    let server = http_server("127.0.0.1", move |_| {
        let (tx, body) = Channel::<Bytes, Infallible>::new(1);
        let _ = feeds_tx.send(tx);
        Response::builder()
            .header("content-type", content_type)
            .body(body.boxed())
            .unwrap()
    })
    .await;
    (server.port, feeds)
}

fn chunk(output: ForwardOutput) -> (u64, Bytes, bool) {
    match output {
        ForwardOutput::HttpChunk {
            seq, body, done, ..
        } => (seq, body, done),
        other => panic!("expected a chunk, got {other:?}"),
    }
}

fn stream_head(output: ForwardOutput) -> Vec<(String, String)> {
    match output {
        ForwardOutput::HttpResponse {
            status: 200,
            headers,
            body,
            streaming: true,
            ..
        } if body.is_empty() => headers,
        other => panic!("expected a streamed response head, got {other:?}"),
    }
}

#[tokio::test]
async fn sse_arrives_event_by_event() {
    let (port, mut feeds) = fed_server("text/event-stream").await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    let mut req = request("sse", port, "GET", "/events");
    req.accept_streaming = true;
    fwd.http(req);
    let mut feed = feeds.recv().await.unwrap();
    let headers = stream_head(next(&mut out).await);
    assert_eq!(header(&headers, "content-type"), ["text/event-stream"]);
    // Each event is forwarded before the server sends the next one.
    for (seq, event) in ["data: one\n\n", "data: two\n\n", "data: three\n\n"]
        .iter()
        .enumerate()
    {
        feed.send_data(Bytes::from_static(event.as_bytes()))
            .await
            .unwrap();
        assert_eq!(
            chunk(next(&mut out).await),
            (seq as u64, Bytes::from_static(event.as_bytes()), false)
        );
    }
    drop(feed);
    assert_eq!(chunk(next(&mut out).await), (3, Bytes::new(), true));
}

#[tokio::test]
async fn unknown_length_body_streams_only_when_accepted() {
    let (port, mut feeds) = fed_server("text/plain").await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    let mut req = request("stream", port, "GET", "/");
    req.accept_streaming = true;
    fwd.http(req);
    let mut feed = feeds.recv().await.unwrap();
    stream_head(next(&mut out).await);
    feed.send_data(Bytes::from_static(b"part1")).await.unwrap();
    assert_eq!(
        chunk(next(&mut out).await),
        (0, Bytes::from_static(b"part1"), false)
    );
    feed.send_data(Bytes::from_static(b"part2")).await.unwrap();
    assert_eq!(
        chunk(next(&mut out).await),
        (1, Bytes::from_static(b"part2"), false)
    );
    drop(feed);
    assert_eq!(chunk(next(&mut out).await), (2, Bytes::new(), true));

    // Without acceptStreaming the same body comes back whole.
    fwd.http(request("whole", port, "GET", "/"));
    let mut feed = feeds.recv().await.unwrap();
    feed.send_data(Bytes::from_static(b"part1")).await.unwrap();
    feed.send_data(Bytes::from_static(b"part2")).await.unwrap();
    drop(feed);
    assert_eq!(whole(next(&mut out).await).2, "part1part2");
}

#[tokio::test]
async fn refused_port_is_upstream_unreachable() {
    let port = refused_port().await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["0.0.0.0", "::"]);
    fwd.http(request("r1", port, "GET", "/"));
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::UpstreamUnreachable
    );
}

#[tokio::test]
async fn silent_server_is_upstream_timeout() {
    let port = silent_server().await;
    let config = ForwardConfig {
        overall_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    };
    let (fwd, gate, mut out) = forwarder(config);
    gate.allow(port, &["127.0.0.1"]);
    fwd.http(request("r1", port, "GET", "/"));
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::UpstreamTimeout
    );
}

#[tokio::test]
async fn server_dying_mid_response_is_an_error() {
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    let buffered = dying_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc").await;
    gate.allow(buffered, &["127.0.0.1"]);
    fwd.http(request("buffered", buffered, "GET", "/"));
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::UpstreamUnreachable
    );

    let streamed =
        dying_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n").await;
    gate.allow(streamed, &["127.0.0.1"]);
    let mut req = request("streamed", streamed, "GET", "/");
    req.accept_streaming = true;
    fwd.http(req);
    stream_head(next(&mut out).await);
    assert_eq!(
        chunk(next(&mut out).await),
        (0, Bytes::from_static(b"abc"), false)
    );
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::UpstreamUnreachable
    );
}

#[tokio::test]
async fn gate_refusals_and_bad_controls_map_to_codes() {
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.refuse(3000, GateRefusal::Pending);
    fwd.http(request("a", 3000, "GET", "/"));
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::PortNotApproved
    );
    fwd.http(request("b", 3001, "GET", "/"));
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::PortNotListening
    );

    gate.allow(3002, &["127.0.0.1"]);
    // A bad method or a path that is not origin-form never gets here: the
    // control is refused when it is read (see `control::controls::tests`).
    for (method, path) in [("GET", "/a b"), ("GET", "/\u{7f}")] {
        fwd.http(request("c", 3002, method, path));
        assert_eq!(
            error_code(next(&mut out).await).0,
            ErrorCode::InvalidControl,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn close_port_ends_a_running_stream() {
    let (port, mut feeds) = fed_server("text/event-stream").await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    let mut req = request("sse", port, "GET", "/events");
    req.accept_streaming = true;
    fwd.http(req);
    let mut feed = feeds.recv().await.unwrap();
    stream_head(next(&mut out).await);
    fwd.close_port(port, CloseCause::ApprovalRevoked);
    assert_eq!(
        error_code(next(&mut out).await).0,
        ErrorCode::PortNotApproved
    );
    // The upstream connection is gone too: the server's body sender sees it.
    tokio::time::timeout(PATIENCE, async {
        while feed
            .send_data(Bytes::from_static(b"data: x\n\n"))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("upstream connection closed");
}

#[tokio::test]
async fn cancel_drops_a_running_stream_and_sends_nothing_more() {
    let (port, mut feeds) = fed_server("text/event-stream").await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    let mut req = request("sse", port, "GET", "/events");
    req.accept_streaming = true;
    fwd.http(req);
    let mut feed = feeds.recv().await.unwrap();
    stream_head(next(&mut out).await);
    // Unknown ids are ignored; the stream goes on.
    fwd.inner.cancel("nope");
    feed.send_data(Bytes::from_static(b"data: a\n\n"))
        .await
        .unwrap();
    assert_eq!(chunk(next(&mut out).await).1, "data: a\n\n");
    fwd.inner.cancel("sse");
    // The upstream connection is gone: the server's body sender sees it.
    tokio::time::timeout(PATIENCE, async {
        while feed
            .send_data(Bytes::from_static(b"data: x\n\n"))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("upstream connection closed");
    // Nothing was sent for it after the cancel, not even an error; a
    // second cancel of the finished request is ignored too.
    fwd.inner.cancel("sse");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        super::servers::try_next(&mut out).is_none(),
        "an answer after the cancel"
    );
}

/// Measures what a connection per request costs (run with `--ignored
/// --nocapture`); prints, asserts nothing about time.
#[tokio::test]
#[ignore = "measurement"]
async fn measure_connection_per_request() {
    let server = http_server("127.0.0.1", |_| Response::new(full("ok"))).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    let rounds = 2000u32;
    let start = std::time::Instant::now();
    for i in 0..rounds {
        fwd.http(request(&i.to_string(), server.port, "GET", "/"));
        whole(next(&mut out).await);
    }
    let forwarded = start.elapsed() / rounds;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        drop(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }
    let connect = start.elapsed() / rounds;
    println!(
        "sequential forwarded GET: {forwarded:?} each; bare loopback connect: {connect:?} each"
    );
}

#[tokio::test]
async fn a_connection_that_fails_verification_sends_nothing() {
    let mut server = http_server("127.0.0.1", echo).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(server.port, &["127.0.0.1"]);
    gate.foreign(server.port);
    fwd.http(request("r1", server.port, "POST", "/secret"));
    let (code, message) = error_code(next(&mut out).await);
    assert_eq!(code, ErrorCode::PortNotApproved);
    assert!(message.contains("another process"), "{message}");
    // The server accepted the connection, but not one request reached it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.seen.try_recv().is_err(), "a request was sent");
}
