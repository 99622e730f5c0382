//! The Phoenix v2 socket the runner connects to:
//! `ws://<addr>/runner/socket/websocket?vsn=2.0.0&token=<token>`.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tracing::{Instrument, debug, info, info_span, warn};

use super::frame::Frame;
use super::state::{Connection, Outgoing, Shared};

/// Largest frame accepted from the runner.
const MAX_FRAME: usize = 256 << 20;

/// Most frames queued before a flush while more are waiting to go out.
const FLUSH_EVERY: usize = 64;

/// The socket mount; the runner appends `/websocket`.
pub(crate) const MOUNT: &str = "/runner/socket";

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "runner socket accept failed");
                continue;
            }
        };
        // Like Phoenix's servers: small frames go out at once.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(
            async move {
                if super::assets::is_plain_http(&stream).await {
                    super::assets::serve(shared, stream).await;
                } else {
                    connection(shared, stream).await;
                }
            }
            .instrument(info_span!("runner", %peer)),
        );
    }
}

/// Checks path, `vsn` and token; wrong token is 403, anything else wrong 400.
fn check_upgrade(shared: &Shared, req: &Request) -> Result<(), (StatusCode, &'static str)> {
    let refuse = |status: StatusCode, why: &'static str| (status, why);
    if shared.lock().refuse_upgrades {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "refusing connections",
        ));
    }
    if req.uri().path() != format!("{MOUNT}/websocket") {
        return Err(refuse(StatusCode::NOT_FOUND, "no socket here"));
    }
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    };
    if param("vsn").as_deref() != Some("2.0.0") {
        return Err(refuse(StatusCode::BAD_REQUEST, "vsn must be 2.0.0"));
    }
    if param("token").as_deref() != Some(shared.config.token.as_str()) {
        return Err(refuse(StatusCode::FORBIDDEN, "bad token"));
    }
    Ok(())
}

/// `%XX` escapes decoded; anything malformed stays as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    // tungstenite's callback type fixes the large error type.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| match check_upgrade(&shared, req) {
        Ok(()) => Ok(resp),
        Err((status, why)) => {
            let mut refusal = ErrorResponse::new(Some(why.to_owned()));
            *refusal.status_mut() = status;
            Err(refusal)
        }
    };
    // Bodies travel base64 inside frames: a 16 MiB body is a ~22 MiB frame,
    // over tungstenite's 16 MiB default.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let mut ws =
        match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
        {
            Ok(ws) => ws,
            Err(error) => {
                info!(%error, "runner handshake refused or failed");
                return;
            }
        };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = shared.update(|inner| {
        inner.connection_count += 1;
        let id = inner.connection_count as u64;
        // The newest connection is the default; the others stay open.
        let previous = inner.current.replace(Connection {
            id,
            tx,
            joined: None,
        });
        inner.others.extend(previous);
        id
    });
    info!(id, "runner connected");
    let mut last_ref = 0;
    let mut reading = true;
    // Frames written since the last flush: what is ready together leaves in
    // one write (see `FLUSH_EVERY`).
    let mut unflushed = 0;
    loop {
        if unflushed > 0 && (unflushed >= FLUSH_EVERY || rx.is_empty()) {
            if ws.flush().await.is_err() {
                break;
            }
            unflushed = 0;
        }
        tokio::select! {
            msg = ws.next(), if reading => match msg {
                Some(Ok(Message::Text(text))) => {
                    for reply in on_text(&shared, id, &mut last_ref, &text) {
                        if ws.feed(Message::text(reply.to_text())).await.is_err() {
                            break;
                        }
                        unflushed += 1;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    shared.update(|i| i.close_codes.push(code));
                    break;
                }
                None => {
                    shared.update(|i| i.close_codes.push(1006));
                    break;
                }
                Some(Ok(Message::Binary(_))) => {
                    shared.update(|i| i.violations.push("binary frame from runner".to_owned()));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    info!(%error, "runner socket read failed");
                    shared.update(|i| i.close_codes.push(1006));
                    break;
                }
            },
            out = rx.recv() => match out {
                Some(Outgoing::Frame(frame)) => {
                    if ws.feed(Message::text(frame.to_text())).await.is_err() {
                        break;
                    }
                    unflushed += 1;
                }
                Some(Outgoing::Raw(text)) => {
                    if ws.feed(Message::text(text)).await.is_err() {
                        break;
                    }
                    unflushed += 1;
                }
                Some(Outgoing::Binary(bytes)) => {
                    if ws.feed(Message::binary(bytes)).await.is_err() {
                        break;
                    }
                    unflushed += 1;
                }
                Some(Outgoing::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = ws.close(Some(frame)).await;
                    // Give the runner a moment to answer the close, then go.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    }).await;
                    break;
                }
                Some(Outgoing::PauseReading(paused)) => {
                    info!(paused, "reading from the runner");
                    reading = !paused;
                }
                // Dropping `ws` closes the TCP stream with no close frame.
                Some(Outgoing::Drop) | None => break,
            },
        }
    }
    drop(ws);
    shared.update(|inner| {
        if inner.current.as_ref().is_some_and(|c| c.id == id) {
            // The latest of the others (another runner) becomes the default.
            inner.current = inner.others.pop();
            // Nothing in flight survives the connection: end the waits.
            inner.waiters.clear();
        } else {
            inner.others.retain(|c| c.id != id);
        }
    });
    info!(id, "runner disconnected");
}

/// Handles one text frame from the runner; returns the replies to send.
fn on_text(shared: &Arc<Shared>, conn: u64, last_ref: &mut u64, text: &str) -> Vec<Frame> {
    let mut frame = match Frame::parse(text) {
        Ok(frame) => frame,
        Err(error) => {
            warn!(%error, "bad frame from runner");
            shared.update(|i| i.violations.push(format!("{error}: {text}")));
            return Vec::new();
        }
    };
    if let Some(limit) = shared.config.digest_strings_over {
        super::digest::digest_long_strings(&mut frame.payload, limit);
    }
    debug!(frame = %text, "from runner");
    // Refs are decimal strings from one counter per connection.
    match frame.msg_ref.as_deref().map(str::parse::<u64>) {
        Some(Ok(r)) if r > *last_ref => *last_ref = r,
        _ => shared.update(|i| {
            i.violations
                .push(format!("ref not a decimal above {last_ref}: {text}"))
        }),
    }
    let traffic = frame.event == "event"
        && frame
            .payload
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("forward_"));
    if shared.config.record_forward_events || !traffic {
        shared.update(|i| i.frames.push(frame.clone()));
    }
    let ok = json!({});
    match (frame.topic.as_str(), frame.event.as_str()) {
        ("phoenix", "heartbeat") => {
            if frame.join_ref.is_some() || frame.payload != json!({}) {
                shared.update(|i| i.violations.push(format!("odd heartbeat: {text}")));
            }
            let reply = frame.reply("ok", ok);
            shared
                .update(|i| {
                    i.heartbeats += 1;
                    if i.hold_heartbeats {
                        i.held_replies.push((conn, reply.clone()));
                        None
                    } else {
                        Some(reply)
                    }
                })
                .into_iter()
                .collect()
        }
        (topic, "phx_join") => vec![on_join(shared, conn, &frame, topic)],
        (_, "phx_leave") => {
            shared.update(|i| {
                if let Some(c) = i.connection_mut(conn) {
                    c.joined = None;
                }
            });
            vec![frame.reply("ok", ok)]
        }
        (topic, event) => {
            let joined = shared.lock().connection(conn).and_then(|c| {
                c.joined
                    .as_ref()
                    .filter(|(_, t)| t == topic)
                    .map(|(join_ref, _)| join_ref.clone())
            });
            let Some(join_ref) = joined else {
                return vec![frame.reply("error", json!({"reason": "unmatched topic"}))];
            };
            if frame.join_ref.as_deref() != Some(join_ref.as_str()) {
                shared.update(|i| {
                    i.violations
                        .push(format!("stale joinRef {:?} on {event}", frame.join_ref))
                });
            }
            if event == "event" {
                if !frame.payload.is_object() {
                    shared.update(|i| {
                        i.violations
                            .push(format!("event payload not an object: {text}"))
                    });
                } else {
                    for request_id in shared.record_event(std::mem::take(&mut frame.payload)) {
                        if let Err(error) = shared.resolve(&request_id, true) {
                            warn!(%error, request_id, "auto-approve failed");
                        }
                    }
                }
                if shared.lock().hold_event_replies {
                    // Recorded, not acknowledged: as if the reply were lost.
                    return Vec::new();
                }
            }
            vec![frame.reply("ok", ok)]
        }
    }
}

fn on_join(shared: &Arc<Shared>, conn: u64, frame: &Frame, topic: &str) -> Frame {
    let wanted = shared.config.runner_id.as_deref();
    let topic_ok = match topic.strip_prefix("runner:") {
        Some(id) => !id.is_empty() && wanted.is_none_or(|w| w == id),
        None => false,
    };
    let Some(join_ref) = frame.join_ref.clone().filter(|_| topic_ok) else {
        shared.update(|i| i.joins.push(frame.payload.clone()));
        return frame.reply("error", json!({"reason": "unmatched topic"}));
    };
    shared.update(|i| {
        i.joins.push(frame.payload.clone());
        if let Some(reason) = i.reject_joins.clone() {
            return frame.reply("error", json!({ "reason": reason }));
        }
        if let Some(c) = i.connection_mut(conn) {
            c.joined = Some((join_ref, topic.to_owned()));
            i.join_count += 1;
        }
        frame.reply("ok", json!({}))
    })
}

/// Sends the heartbeat replies held back while holding was on.
pub(crate) fn release_heartbeats(shared: &Shared) {
    shared.update(|i| {
        let held = std::mem::take(&mut i.held_replies);
        for (conn, reply) in held {
            if let Some(c) = i.connection(conn) {
                let _ = c.tx.send(Outgoing::Frame(reply));
            }
        }
    });
}

/// `phx_error` for the joined channel, as Phoenix sends when a channel crashes.
pub(crate) fn phx_error(shared: &Shared) -> Result<(), super::SimError> {
    let frame = {
        let inner = shared.lock();
        let conn = inner
            .current
            .as_ref()
            .ok_or(super::SimError::NotConnected)?;
        let (join_ref, topic) = conn.joined.as_ref().ok_or(super::SimError::NotJoined)?;
        Frame::new(
            Some(join_ref),
            Some(join_ref),
            topic,
            "phx_error",
            Value::Object(Default::default()),
        )
    };
    // Phoenix forgets the channel after an error; the client must rejoin.
    shared.update(|i| {
        if let Some(c) = i.current.as_mut() {
            c.joined = None;
        }
    });
    shared.send_outgoing(Outgoing::Frame(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let token = "a b/c+d=%é";
        assert_eq!(percent_decode(&percent_encode(token)), token);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
