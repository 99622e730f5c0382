//! Keep-alive reuse of local server connections, against real raw servers
//! that number their connections in every response body.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::servers::{ForwardOutput, HttpRequest, TestForwarder};
use super::servers::{PATIENCE, forwarder, next};
use crate::forward::{CloseCause, ForwardConfig};

/// What a connection does after answering its first request.
#[derive(Clone, Copy)]
enum After {
    /// Answers every request.
    KeepAlive,
    /// Closes when no request follows within this time.
    CloseIdle(Duration),
    /// Reads the next request's head, then closes without answering: the
    /// race of a server closing an idle connection as a request arrives.
    CloseOnNext,
}

/// Reads one request head; false at EOF.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

async fn answer(stream: &mut TcpStream, body: &str) -> bool {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.is_ok()
}

/// A server on `listener` answering `<tag>-<connection number>`; the
/// returned task is its accept loop (its connections outlive it).
fn serve(listener: TcpListener, tag: &'static str, after: After) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = 0u32;
        while let Ok((mut stream, _)) = listener.accept().await {
            conns += 1;
            let body = format!("{tag}-{conns}");
            tokio::spawn(async move {
                if !read_head(&mut stream).await || !answer(&mut stream, &body).await {
                    return;
                }
                loop {
                    let more = match after {
                        After::KeepAlive => read_head(&mut stream).await,
                        After::CloseIdle(idle) => {
                            matches!(
                                tokio::time::timeout(idle, read_head(&mut stream)).await,
                                Ok(true)
                            )
                        }
                        After::CloseOnNext => {
                            read_head(&mut stream).await;
                            false
                        }
                    };
                    if !more || !answer(&mut stream, &body).await {
                        return;
                    }
                }
            });
        }
    })
}

async fn server(tag: &'static str, after: After) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, serve(listener, tag, after))
}

fn request(id: &str, port: u16, method: &str) -> HttpRequest {
    HttpRequest {
        request_id: id.to_owned(),
        port,
        method: method.to_owned(),
        path: "/".to_owned(),
        query_string: None,
        headers: Vec::new(),
        body: Default::default(),
        accept_streaming: false,
    }
}

/// The body of a whole 200 response.
fn body(output: ForwardOutput) -> String {
    match output {
        ForwardOutput::HttpResponse {
            status: 200,
            body,
            streaming: false,
            ..
        } => String::from_utf8(body.to_vec()).unwrap(),
        other => panic!("expected a 200 response, got {other:?}"),
    }
}

/// Waits until `port` has `n` idle pooled connections.
async fn pooled(fwd: &TestForwarder, port: u16, n: usize) {
    tokio::time::timeout(PATIENCE, async {
        while fwd.inner.requests.pool.idle(port) != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("connection pooled");
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let (port, _server) = server("a", After::KeepAlive).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["0.0.0.0"]);
    for i in 0..3 {
        fwd.http(request(&format!("r{i}"), port, "GET"));
        assert_eq!(body(next(&mut out).await), "a-1");
        pooled(&fwd, port, 1).await;
    }
}

#[tokio::test]
async fn a_server_restarted_on_the_same_port_is_reached_fresh() {
    let (port, old) = server("old", After::KeepAlive).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    fwd.http(request("r1", port, "GET"));
    assert_eq!(body(next(&mut out).await), "old-1");
    pooled(&fwd, port, 1).await;

    // The old listener closes; its connection stays open (the worst case:
    // a pooled connection would still be answered, by the wrong server).
    old.abort();
    let _ = old.await;
    fwd.close_port(port, CloseCause::ListenerClosed);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let _new = serve(listener, "new", After::KeepAlive);

    fwd.http(request("r2", port, "GET"));
    assert_eq!(body(next(&mut out).await), "new-1");
}

#[tokio::test]
async fn a_revoked_port_drops_its_idle_connections() {
    let (port, _server) = server("a", After::KeepAlive).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    fwd.http(request("r1", port, "GET"));
    assert_eq!(body(next(&mut out).await), "a-1");
    pooled(&fwd, port, 1).await;
    fwd.close_port(port, CloseCause::ApprovalRevoked);
    assert_eq!(fwd.inner.requests.pool.idle(port), 0);
    fwd.http(request("r2", port, "GET"));
    assert_eq!(body(next(&mut out).await), "a-2");
}

#[tokio::test]
async fn a_server_closing_idle_connections_fails_no_request() {
    let (port, _server) = server("c", After::CloseIdle(Duration::from_millis(20))).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    for i in 1..=3 {
        fwd.http(request(&format!("r{i}"), port, "GET"));
        assert_eq!(body(next(&mut out).await), format!("c-{i}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_closed_under_it_is_retried_fresh() {
    let (port, _server) = server("d", After::CloseOnNext).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    fwd.http(request("r1", port, "GET"));
    assert_eq!(body(next(&mut out).await), "d-1");
    pooled(&fwd, port, 1).await;
    // Sent on the pooled connection, which the server closes unanswered.
    fwd.http(request("r2", port, "PUT"));
    assert_eq!(body(next(&mut out).await), "d-2");
}

#[tokio::test]
async fn a_post_sent_on_a_connection_closed_under_it_is_not_repeated() {
    let (port, _server) = server("e", After::CloseOnNext).await;
    let (fwd, gate, mut out) = forwarder(ForwardConfig::default());
    gate.allow(port, &["127.0.0.1"]);
    fwd.http(request("r1", port, "GET"));
    assert_eq!(body(next(&mut out).await), "e-1");
    pooled(&fwd, port, 1).await;
    fwd.http(request("r2", port, "POST"));
    match next(&mut out).await {
        ForwardOutput::HttpError { request_id, .. } => assert_eq!(request_id, "r2"),
        other => panic!("expected an error, got {other:?}"),
    }
    // No second connection was opened for the POST: the next request's is.
    fwd.http(request("r3", port, "GET"));
    assert_eq!(body(next(&mut out).await), "e-2");
}
