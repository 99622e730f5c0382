//! A browser WebSocket on `/preview/<port>/<path>` bridged to the runner:
//! `forward_websocket_open`, then frames and closes both ways.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::{Instrument, debug, info_span, warn};

use super::body::WaiterGuard;
use super::{Body, Target, control_error, empty, first_answer, header_pairs, sim_error, text};
use crate::simulator::state::Shared;

/// Largest browser message read (the runner's limit is 16 MiB by default).
const MAX_BROWSER_MESSAGE: usize = 64 << 20;

pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

pub(crate) async fn open(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    target: Target,
    path: String,
) -> Response<Body> {
    let socket_id = shared.fresh_id("sock");
    let span = info_span!("websocket", %socket_id, %target, %path);
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "missing Sec-WebSocket-Key",
        );
    };
    let mut control = json!({
        "type": "forward_websocket_open",
        "instanceId": shared.config.instance_id,
        "socketId": socket_id,
        "path": path,
        "headers": header_pairs(req.headers()),
    });
    target.name_in(&mut control);
    if let Some(query) = req.uri().query() {
        control["queryString"] = json!(query);
    }
    let mut rx = shared.register_waiter(&socket_id);
    let guard = WaiterGuard {
        shared: shared.clone(),
        id: socket_id.clone(),
        cancel: false,
    };
    if let Err(error) = shared.send_control(control) {
        return sim_error(&error);
    }
    let first = match first_answer(&shared, &mut rx).await {
        Ok(event) => event,
        Err(response) => return response,
    };
    match first.get("type").and_then(Value::as_str) {
        Some("forward_websocket_opened") => {}
        Some("control_error") => return control_error(&first),
        Some("forward_websocket_closed") => {
            let why = first
                .get("error")
                .or(first.get("reason"))
                .and_then(Value::as_str);
            return text(
                StatusCode::BAD_GATEWAY,
                "websocket_closed",
                why.unwrap_or("upstream refused"),
            );
        }
        _ => {
            return text(
                StatusCode::BAD_GATEWAY,
                "unexpected_event",
                &first.to_string(),
            );
        }
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let protocol = first
        .get("protocol")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty());
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    warn!(%error, "browser upgrade failed");
                    let _ = shared.send_control(close_control(&shared, &socket_id));
                    return;
                }
            };
            // Messages up to the runner's limit and a little past it are
            // read, so that one over the limit is refused by name below.
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_BROWSER_MESSAGE))
                .max_frame_size(Some(MAX_BROWSER_MESSAGE));
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            bridge(&shared, &socket_id, ws, rx).await;
            drop(guard);
        }
        .instrument(span),
    );
    resp
}

fn close_control(shared: &Shared, socket_id: &str) -> Value {
    json!({
        "type": "forward_websocket_close",
        "instanceId": shared.config.instance_id,
        "socketId": socket_id,
    })
}

async fn bridge<S>(
    shared: &Shared,
    socket_id: &str,
    mut ws: WebSocketStream<S>,
    mut rx: mpsc::UnboundedReceiver<Value>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            msg = ws.next() => {
                let (opcode, data) = match msg {
                    Some(Ok(Message::Text(t))) => ("text", Bytes::from(t)),
                    Some(Ok(Message::Binary(b))) => ("binary", b),
                    Some(Ok(Message::Ping(b))) => ("ping", b),
                    Some(Ok(Message::Pong(b))) => ("pong", b),
                    Some(Ok(Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        debug!("browser closed");
                        let _ = shared.send_control(close_control(shared, socket_id));
                        // Reading on sends tungstenite's queued close reply.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return;
                    }
                };
                let limit = shared.lock().limits.map(|l| l.max_web_socket_message);
                if limit.is_some_and(|limit| data.len() as u64 > limit) {
                    // Like Kandan: a message over the runner's limit is not
                    // sent; the socket closes with 1009 (message too big).
                    debug!(len = data.len(), "browser message over the runner's limit");
                    let _ = shared.send_control(close_control(shared, socket_id));
                    let frame = CloseFrame {
                        code: CloseCode::Size,
                        reason: "message over the runner's limit".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
                let control = json!({
                    "type": "forward_websocket_send",
                    "instanceId": shared.config.instance_id,
                    "socketId": socket_id,
                    "opcode": opcode,
                    "bodyBase64": STANDARD.encode(&data),
                });
                if let Err(error) = shared.send_control(control) {
                    warn!(%error, "cannot forward a browser frame");
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Error, reason: "runner gone".into() })).await;
                    return;
                }
            }
            event = rx.recv() => {
                let Some(event) = event else {
                    let frame = CloseFrame { code: CloseCode::Away, reason: "runner gone".into() };
                    let _ = ws.close(Some(frame)).await;
                    return;
                };
                match event.get("type").and_then(Value::as_str) {
                    Some("forward_websocket_message") => {
                        let Some(msg) = to_message(&event) else {
                            warn!(%event, "unusable websocket message from the runner");
                            continue;
                        };
                        if ws.send(msg).await.is_err() {
                            let _ = shared.send_control(close_control(shared, socket_id));
                            return;
                        }
                    }
                    Some("forward_websocket_closed") | Some("control_error") => {
                        debug!(%event, "runner closed");
                        let _ = ws.close(Some(close_frame(&event))).await;
                        // Drain until the browser acknowledges the close.
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        }).await;
                        return;
                    }
                    _ => debug!(%event, "ignored on a websocket"),
                }
            }
        }
    }
}

fn to_message(event: &Value) -> Option<Message> {
    let data = STANDARD.decode(event.get("bodyBase64")?.as_str()?).ok()?;
    Some(match event.get("opcode")?.as_str()? {
        "text" => Message::text(String::from_utf8(data).ok()?),
        "binary" => Message::binary(data),
        "ping" => Message::Ping(data.into()),
        "pong" => Message::Pong(data.into()),
        _ => return None,
    })
}

/// The close frame the browser gets: the runner's code when it may be sent
/// on the wire, 1011 for failures, 1000 otherwise.
fn close_frame(event: &Value) -> CloseFrame {
    let code = event
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let failed = event.get("error").is_some()
        || event.get("type").and_then(Value::as_str) == Some("control_error");
    let code = match code {
        Some(c) if (1000..5000).contains(&c) && ![1004, 1005, 1006, 1015].contains(&c) => c,
        _ if failed => 1011,
        _ => 1000,
    };
    let reason = event.get("reason").and_then(Value::as_str).unwrap_or("");
    // Close reasons are limited to 123 bytes; cut on a char boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_owned().into(),
    }
}
