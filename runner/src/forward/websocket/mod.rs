//! WebSockets from Kandan to approved local ports: one task per socket,
//! owned by a [`SocketTable`].
//!
//! Each socket has a bounded queue toward the local server (messages and
//! bytes). When Kandan sends faster than the local server reads and the
//! queue fills, the socket is closed with an error rather than left to grow:
//! a stalled HMR socket is better reconnected than buffered without end.
//! Toward Kandan, each message waits for room in the socket's own byte
//! budget and in the shared event budget, which stops reading from the
//! local server in the meantime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use crate::control::Responder;
use crate::gate::PortGate;
use crate::wire::{ControlType, ForwardWebsocketOpen, ForwardWebsocketSend, Opcode};

use super::dial::LocalStream;
use super::scheme::Schemes;
use super::{CloseCause, ForwardConfig, ForwardError, Local, TaskStop};

type Ws = WebSocketStream<LocalStream>;

/// What tungstenite reads a local server's frames into at a time. Its
/// 128 KiB default is zeroed on every read (Kandan's socket reads 16 KiB
/// for the same reason, `control::connector`).
const READ_BUFFER: usize = 16 * 1024;

/// Handshake headers the runner sets itself. Extensions go too: tungstenite
/// speaks no permessage-deflate, so the browser's offer must not reach the
/// local server.
const HANDSHAKE_HEADERS: [&str; 5] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "content-length",
];

struct Entry {
    serial: u64,
    /// None for an editor's socket.
    port: Option<u16>,
    frames: mpsc::Sender<(Message, usize)>,
    queued: Arc<AtomicUsize>,
    stop: oneshot::Sender<TaskStop>,
}

struct Inner {
    gate: Arc<dyn PortGate>,
    schemes: Arc<Schemes>,
    config: Arc<ForwardConfig>,
    /// Socket tasks that have not sent their last event yet.
    unreported: AtomicUsize,
    reported: Notify,
    next: AtomicU64,
    sockets: Mutex<HashMap<String, Entry>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // No code path can leave the map half-updated, so a poisoned lock is fine to reuse.
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the socket's entry if it is still this task's.
    fn forget(&self, socket_id: &str, serial: u64) {
        let mut sockets = self.lock();
        if sockets.get(socket_id).is_some_and(|e| e.serial == serial) {
            sockets.remove(socket_id);
        }
    }
}

/// A WebSocket control that was refused (unknown socket, invalid payload);
/// the socket, if any, is unaffected. Sent from a task of its own: the
/// control's caller (the connection task) must not wait on the outbox.
fn refuse(to: &Responder, control: ControlType, socket_id: &str, err: ForwardError) {
    let event = control.ids().socket(socket_id).error(err.failure());
    let to = to.clone();
    tokio::spawn(async move { to.send(event).await });
}

/// The open WebSockets, each run by its own task.
pub(super) struct SocketTable {
    inner: Arc<Inner>,
}

impl SocketTable {
    /// An empty table whose sockets ask `gate`.
    pub(super) fn new(
        gate: Arc<dyn PortGate>,
        config: Arc<ForwardConfig>,
        schemes: Arc<Schemes>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                gate,
                schemes,
                config,
                unreported: AtomicUsize::new(0),
                reported: Notify::new(),
                next: AtomicU64::new(0),
                sockets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The number of open (or opening) sockets.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// Starts opening a socket; `forward_websocket_opened` or `_closed`
    /// (with the error) follows through `to`. Frames sent before the
    /// handshake completes wait in the queue.
    pub(super) fn open(
        &self,
        open: ForwardWebsocketOpen,
        local: Result<Local, ForwardError>,
        to: Responder,
    ) {
        const CONTROL: ControlType = ControlType::ForwardWebsocketOpen;
        let local = match local {
            Ok(local) => local,
            Err(err) => return refuse(&to, CONTROL, &open.socket_id, err),
        };
        // Editors have no port: `close_port` never reaches their sockets.
        let port = match &local {
            Local::Port(port) => Some(*port),
            Local::Editor(_) => None,
        };
        let serial = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (frames_tx, frames_rx) = mpsc::channel(self.inner.config.ws_queue_messages.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let duplicate = {
            let mut sockets = self.inner.lock();
            let duplicate = sockets.contains_key(&open.socket_id);
            if !duplicate {
                sockets.insert(
                    open.socket_id.clone(),
                    Entry {
                        serial,
                        port,
                        frames: frames_tx,
                        queued: queued.clone(),
                        stop: stop_tx,
                    },
                );
            }
            duplicate
        };
        if duplicate {
            let err = ForwardError::InvalidRequest {
                what: "socket id",
                detail: format!("{:?} is already open", open.socket_id),
            };
            return refuse(&to, CONTROL, &open.socket_id, err);
        }
        let span = tracing::info_span!("forward_ws", socket_id = %open.socket_id, ?port);
        self.inner.unreported.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        tokio::spawn(
            async move {
                let socket_id = open.socket_id.clone();
                let socket = Socket {
                    inner: &inner,
                    to: &to,
                    socket_id: &socket_id,
                    port,
                    reported: AtomicBool::new(false),
                };
                socket.run(&open, &local, frames_rx, queued, stop_rx).await;
                socket.mark_reported();
                inner.forget(&socket_id, serial);
            }
            .instrument(span),
        );
    }

    /// Queues a frame for the local server. An unknown socket or a bad
    /// payload gets a `control_error`; a full queue closes the socket.
    pub(super) fn send(&self, send: ForwardWebsocketSend, to: &Responder) {
        const CONTROL: ControlType = ControlType::ForwardWebsocketSend;
        let socket_id = send.socket_id.as_str();
        let body = send.body.0;
        let len = body.len();
        let limit = self.inner.config.ws_max_message;
        if len > limit {
            let err = ForwardError::RequestTooLarge { len, limit };
            return refuse(to, CONTROL, socket_id, err);
        }
        let message = match to_message(send.opcode, body) {
            Ok(message) => message,
            Err(err) => return refuse(to, CONTROL, socket_id, err),
        };
        let config = &self.inner.config;
        let overflowed = {
            let mut sockets = self.inner.lock();
            match sockets.get(socket_id) {
                None => Err(()),
                Some(entry) => {
                    let bytes_full =
                        entry.queued.load(Ordering::Relaxed) + len > config.ws_queue_bytes;
                    if !bytes_full && entry.frames.try_send((message, len)).is_ok() {
                        entry.queued.fetch_add(len, Ordering::Relaxed);
                        Ok(None)
                    } else {
                        // Full, or the task is already ending: either way the socket goes.
                        Ok(sockets.remove(socket_id))
                    }
                }
            }
        };
        let Ok(overflowed) = overflowed else {
            let err = ForwardError::UnknownSocket(socket_id.to_owned());
            return refuse(to, CONTROL, socket_id, err);
        };
        if let Some(entry) = overflowed {
            tracing::warn!(
                socket_id,
                "websocket send queue overflowed; closing the socket"
            );
            let _ = entry.stop.send(TaskStop::Overflow);
        }
    }

    /// Closes the socket from Kandan's side after its queued frames; the
    /// local server's close reply comes back as `forward_websocket_closed`.
    pub(super) fn close(&self, socket_id: &str, to: &Responder) {
        let entry = self.inner.lock().remove(socket_id);
        match entry {
            Some(entry) => {
                let _ = entry.stop.send(TaskStop::Closed);
            }
            None => {
                let err = ForwardError::UnknownSocket(socket_id.to_owned());
                refuse(to, ControlType::ForwardWebsocketClose, socket_id, err);
            }
        }
    }

    /// Closes every socket of `port` (its listener closed or its approval
    /// went); each reports `forward_websocket_closed` with `cause`'s code
    /// as the error.
    pub(super) fn close_port(&self, port: u16, cause: CloseCause) {
        let mut sockets = self.inner.lock();
        let ids: Vec<String> = sockets
            .iter()
            .filter(|(_, e)| e.port == Some(port))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(entry) = sockets.remove(&id) {
                let _ = entry.stop.send(TaskStop::Port(cause));
            }
        }
    }

    /// Closes every socket with 1001, each reporting its close (the runner stops).
    pub(super) fn shut_down(&self) {
        for (_, entry) in self.inner.lock().drain() {
            let _ = entry.stop.send(TaskStop::Shutdown);
        }
    }

    /// Waits (up to `patience`) until every socket has sent its last event.
    pub(super) async fn reported(&self, patience: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let reported = self.inner.reported.notified();
            if self.inner.unreported.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, reported).await.is_err() {
                return;
            }
        }
    }

    /// Closes every socket without reporting (the runner lost Kandan).
    pub(super) fn close_all(&self) {
        for (_, entry) in self.inner.lock().drain() {
            let _ = entry.stop.send(TaskStop::Silent);
        }
    }
}

fn to_message(opcode: Opcode, body: Bytes) -> Result<Message, ForwardError> {
    let control_too_long = || ForwardError::InvalidRequest {
        what: "control frame",
        detail: format!("{opcode:?} payload of {} bytes is over 125", body.len()),
    };
    Ok(match opcode {
        Opcode::Text => Message::Text(Utf8Bytes::try_from(body.clone()).map_err(|_| {
            ForwardError::InvalidRequest {
                what: "text frame",
                detail: "payload is not utf-8".to_owned(),
            }
        })?),
        Opcode::Binary => Message::Binary(body),
        Opcode::Ping if body.len() > 125 => return Err(control_too_long()),
        Opcode::Pong if body.len() > 125 => return Err(control_too_long()),
        Opcode::Ping => Message::Ping(body),
        Opcode::Pong => Message::Pong(body),
    })
}

mod handshake;
mod socket;

use socket::Socket;
