//! Forwarding to an editor's Unix socket by `editorId`: HTTP and WebSocket
//! through the same code as ports, and `unknown_editor` for any other id.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::servers::{ForwardOutput, PATIENCE, TestForwarder, control, full, next};
use crate::control::Responder;
use crate::forward::{EditorSockets, ForwardConfig, Forwarder};
use crate::gate::{GateRefusal, PortGate};
use crate::wire::ErrorCode;
use crate::wire::{Control, Opcode};

struct Editors(HashMap<String, PathBuf>);

impl EditorSockets for Editors {
    fn socket(&self, editor_id: &str) -> Option<PathBuf> {
        self.0.get(editor_id).cloned()
    }
}

/// No port is ever forwardable: editors must not need the gate.
struct ClosedGate;

impl PortGate for ClosedGate {
    fn target(&self, _: u16) -> Result<Vec<std::net::IpAddr>, GateRefusal> {
        Err(GateRefusal::Pending)
    }

    fn verify(&self, _: std::net::SocketAddr) -> Result<(), GateRefusal> {
        Err(GateRefusal::Pending)
    }
}

/// A WebSocket server on a Unix socket that echoes text.
fn serve_ws(listener: UnixListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// An HTTP server on a Unix socket answering with the Host it saw.
fn serve(listener: UnixListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let host = req.headers()["host"].to_str().unwrap().to_owned();
                    Ok::<_, std::convert::Infallible>(Response::new(full(format!(
                        "{} {} host={host}",
                        req.method(),
                        req.uri()
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

#[tokio::test]
async fn requests_and_sockets_reach_the_editor_by_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("editor.sock");
    serve(UnixListener::bind(&path).unwrap());
    let ws_path = dir.path().join("ws.sock");
    serve_ws(UnixListener::bind(&ws_path).unwrap());
    let editors = Editors(HashMap::from([
        ("ed-1".to_owned(), path),
        ("ed-ws".to_owned(), ws_path),
    ]));
    let (to, mut out) = Responder::for_tests();
    let inner = Forwarder::new(
        Arc::new(ClosedGate),
        Arc::new(editors),
        ForwardConfig::default(),
    );
    let fwd = TestForwarder::new(inner, to.clone());

    let Control::ForwardHttpRequest(req) = control(serde_json::json!({
        "type": "forward_http_request", "requestId": "h1", "editorId": "ed-1",
        "method": "GET", "path": "/stable/x", "queryString": "folder=/w",
        "headers": {"host": "kandan.example"},
    })) else {
        unreachable!()
    };
    fwd.inner.http(req, to.clone());
    match next(&mut out).await {
        ForwardOutput::HttpResponse { status, body, .. } => {
            assert_eq!(status, 200);
            assert_eq!(&body[..], b"GET /stable/x?folder=/w host=localhost");
        }
        other => panic!("expected a response, got {other:?}"),
    }

    let Control::ForwardWebsocketOpen(open) = control(serde_json::json!({
        "type": "forward_websocket_open", "socketId": "s1", "editorId": "ed-ws", "path": "/ws",
    })) else {
        unreachable!()
    };
    fwd.inner.ws_open(open, to.clone()).await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsOpened { .. }
    ));
    fwd.ws_send("s1", Opcode::Text, bytes::Bytes::from_static(b"hello"))
        .await;
    match tokio::time::timeout(PATIENCE, next(&mut out))
        .await
        .unwrap()
    {
        ForwardOutput::WsMessage { body, .. } => assert_eq!(&body[..], b"hello"),
        other => panic!("expected the echo, got {other:?}"),
    }
    // A port's revocation never touches an editor's socket.
    fwd.close_port(0, crate::forward::CloseCause::ApprovalRevoked);
    fwd.ws_send("s1", Opcode::Text, bytes::Bytes::from_static(b"again"))
        .await;
    assert!(matches!(
        next(&mut out).await,
        ForwardOutput::WsMessage { .. }
    ));
}

#[tokio::test]
async fn an_unknown_editor_is_refused() {
    let (to, mut out) = Responder::for_tests();
    let inner = Forwarder::new(
        Arc::new(ClosedGate),
        Arc::new(Editors(HashMap::new())),
        ForwardConfig::default(),
    );
    let Control::ForwardHttpRequest(req) = control(serde_json::json!({
        "type": "forward_http_request", "requestId": "h1", "editorId": "gone",
        "method": "GET", "path": "/",
    })) else {
        unreachable!()
    };
    inner.http(req, to.clone());
    match next(&mut out).await {
        ForwardOutput::HttpError { code, .. } => assert_eq!(code, ErrorCode::UnknownEditor),
        other => panic!("expected unknown_editor, got {other:?}"),
    }
    let Control::ForwardWebsocketOpen(open) = control(serde_json::json!({
        "type": "forward_websocket_open", "socketId": "s1", "editorId": "gone", "path": "/",
    })) else {
        unreachable!()
    };
    inner.ws_open(open, to).await;
    match next(&mut out).await {
        ForwardOutput::WsError {
            control_type, code, ..
        } => {
            assert_eq!(code, ErrorCode::UnknownEditor);
            assert_eq!(control_type, "forward_websocket_open");
        }
        other => panic!("expected unknown_editor, got {other:?}"),
    }
}
