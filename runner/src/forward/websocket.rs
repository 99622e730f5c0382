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

use ::http::header::{self, HeaderValue};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tracing::Instrument;

use crate::control::budget::{Budget, wire_cost};
use crate::control::{Charged, Responder};
use crate::gate::PortGate;
use crate::wire::{
    ControlType, ErrorCode, Event, Failure, ForwardWebsocketClosed, ForwardWebsocketMessage,
    ForwardWebsocketOpen, ForwardWebsocketOpened, ForwardWebsocketSend, Opcode,
};

use super::dial::LocalStream;
use super::scheme::{Scheme, Schemes};
use super::{CloseCause, ForwardConfig, ForwardError, Local, TaskStop, dial, headers, http, tls};

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

/// Connects and performs the handshake, keeping the browser's subprotocol,
/// origin and cookies; returns the socket and the chosen subprotocol.
async fn connect(
    inner: &Inner,
    open: &ForwardWebsocketOpen,
    local: &Local,
) -> Result<(Ws, Option<String>), ForwardError> {
    let host = match local {
        Local::Port(port) => headers::local_host(*port),
        Local::Editor(_) => HeaderValue::from_static("localhost"),
    };
    let config = &inner.config;
    let target = http::path_and_query(&open.path.0, open.query_string.as_deref())?;
    let mut map = open.headers.0.clone();
    headers::strip_hop_by_hop(&mut map);
    for name in HANDSHAKE_HEADERS {
        map.remove(name);
    }
    // tungstenite reads the offered subprotocols from one header.
    let offered: Vec<String> = map
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    if offered.len() > 1 {
        map.remove(header::SEC_WEBSOCKET_PROTOCOL);
        let joined = HeaderValue::from_str(&offered.join(", ")).expect("joined valid values");
        map.insert(header::SEC_WEBSOCKET_PROTOCOL, joined);
    }
    match local {
        Local::Port(_) => headers::localize(&mut map, &host),
        Local::Editor(_) => headers::localize_host(&mut map, &host),
    }
    map.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    map.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    map.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    map.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&generate_key()).expect("base64 key"),
    );
    let mut request = ::http::Request::builder()
        .uri(format!(
            "ws://{}{target}",
            host.to_str().unwrap_or("localhost")
        ))
        .body(())
        .map_err(|err| ForwardError::InvalidRequest {
            what: "websocket request",
            detail: err.to_string(),
        })?;
    *request.headers_mut() = map;

    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.ws_max_message))
        .max_frame_size(Some(config.ws_max_message))
        .read_buffer_size(READ_BUFFER);
    let (ws, response) = match local {
        Local::Port(port) => handshake_port(inner, *port, request, ws_config).await?,
        Local::Editor(path) => {
            let stream =
                LocalStream::Unix(dial::connect_editor(path, config.connect_timeout).await?);
            handshake(config, request, stream, ws_config).await?
        }
    };
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, protocol))
}

type Handshaken = (Ws, tungstenite::handshake::client::Response);

async fn handshake(
    config: &ForwardConfig,
    request: ::http::Request<()>,
    stream: LocalStream,
    ws_config: WebSocketConfig,
) -> Result<Handshaken, ForwardError> {
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config));
    tokio::time::timeout(config.overall_timeout, handshake)
        .await
        .map_err(|_| ForwardError::ResponseTimeout {
            after: config.overall_timeout,
        })?
        .map_err(|err| ForwardError::WebSocket(Box::new(err)))
}

/// Connects to `port` (through the verified dial, over TLS when the port
/// speaks it) and performs the handshake. A plain handshake to a port whose
/// scheme is unknown that is reset or answered with something other than
/// HTTP is retried over TLS (a handshake is a GET: resending it is safe).
async fn handshake_port(
    inner: &Inner,
    port: u16,
    mut request: ::http::Request<()>,
    ws_config: WebSocketConfig,
) -> Result<Handshaken, ForwardError> {
    let config = &inner.config;
    let seen = inner.schemes.seen(port);
    let targets = dial::targets(&*inner.gate, port)?;
    let dial = |tls, timeout| dial::connect_port(&*inner.gate, &targets, port, timeout, tls);
    let tls = seen.tls();
    if tls {
        headers::secure_origin(request.headers_mut());
    }
    let (stream, _) = dial(tls, config.connect_timeout).await?;
    let err = match handshake(config, request.clone(), stream, ws_config).await {
        Ok(done) => {
            if !tls {
                inner.schemes.learn(seen, Scheme::Http);
            }
            return Ok(done);
        }
        Err(err) => err,
    };
    if tls || !seen.may_probe() || !looks_like_tls(&err) {
        return Err(err);
    }
    tracing::debug!(error = %err.message(), "plain handshake failed, probing with TLS");
    let Ok((stream, _)) = dial(true, config.connect_timeout.min(tls::PROBE_TIMEOUT)).await else {
        return Err(err);
    };
    inner.schemes.learn(seen, Scheme::Https);
    headers::secure_origin(request.headers_mut());
    handshake(config, request, stream, ws_config).await
}

/// Whether a failed plain handshake may have reached a TLS server: the
/// connection was reset, or the answer was not HTTP (a TLS record).
fn looks_like_tls(err: &ForwardError) -> bool {
    use tungstenite::error::ProtocolError;
    let ForwardError::WebSocket(ws) = err else {
        return false;
    };
    match &**ws {
        tungstenite::Error::Protocol(
            ProtocolError::HttparseError(_) | ProtocolError::HandshakeIncomplete,
        ) => true,
        // tungstenite gives no `source()` for its I/O errors.
        tungstenite::Error::Io(io) => tls::is_reset(io),
        other => tls::is_reset(other),
    }
}

/// How long the closing handshake of a runner that stops may take (a
/// stalled local server may never answer); within the shutdown's wait for
/// the sockets' reports.
const SHUTDOWN_CLOSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The code of a connection that ended without a closing handshake
/// (RFC 6455 section 7.1.5), never sent on the wire.
const ABNORMAL_CLOSE: u16 = 1006;

/// The local server dropped the connection (TCP end or reset) without a
/// closing handshake, as opposed to speaking WebSocket wrongly.
fn dropped(err: &tungstenite::Error) -> bool {
    use std::io::ErrorKind;
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => true,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        tungstenite::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// How a connected socket's pumping ended.
enum End {
    TaskStop(TaskStop),
    ServerClosed(Option<CloseFrame>),
    Failed(ForwardError),
    Vanished,
}

fn failure(err: &ForwardError) -> Failure {
    Failure::new(err.code(), err.message())
}

/// One socket's task: what it needs to answer Kandan.
struct Socket<'a> {
    inner: &'a Inner,
    to: &'a Responder,
    socket_id: &'a str,
    port: Option<u16>,
    /// Its last event is out (or will never be).
    reported: AtomicBool,
}

impl Socket<'_> {
    async fn emit(&self, event: impl Into<Charged>) {
        self.to.send(event).await;
    }

    fn mark_reported(&self) {
        if !self.reported.swap(true, Ordering::AcqRel) {
            self.inner.unreported.fetch_sub(1, Ordering::AcqRel);
            self.inner.reported.notify_waiters();
        }
    }

    /// `forward_websocket_closed`: the last event of every socket that was
    /// opened, whether it closed cleanly, failed to open, or broke.
    async fn closed(&self, code: Option<u16>, reason: Option<String>, error: Option<Failure>) {
        let event = Event::ForwardWebsocketClosed(ForwardWebsocketClosed {
            socket_id: self.socket_id.to_owned(),
            code,
            reason,
            error: error.map(|e| format!("{}: {}", e.code, e.message)),
        });
        self.emit(event).await;
        self.mark_reported();
    }

    /// The close report for a socket stopped by the runner or Kandan; none
    /// when the runner lost Kandan.
    async fn stopped(&self, why: TaskStop, frame: Option<CloseFrame>) {
        let (code, reason) = split_frame(frame);
        match why {
            TaskStop::Silent => self.mark_reported(),
            TaskStop::Closed | TaskStop::Shutdown => self.closed(code, reason, None).await,
            TaskStop::Port(cause) => {
                let err = ForwardError::PortClosed {
                    port: self.port.unwrap_or_default(),
                    cause,
                };
                self.closed(code, reason, Some(failure(&err))).await;
            }
            TaskStop::Overflow => {
                let failure = Failure::new(
                    ErrorCode::BodyTooLarge,
                    "kandan sent faster than the local server reads; send queue overflowed",
                );
                self.closed(code, reason, Some(failure)).await;
            }
        }
    }

    async fn run(
        &self,
        open: &ForwardWebsocketOpen,
        local: &Local,
        mut frames: mpsc::Receiver<(Message, usize)>,
        queued: Arc<AtomicUsize>,
        mut stop: oneshot::Receiver<TaskStop>,
    ) {
        let inner = self.inner;
        let connected = tokio::select! {
            result = connect(inner, open, local) => result,
            why = &mut stop => {
                tracing::debug!("stopped while connecting");
                self.stopped(why.unwrap_or(TaskStop::Silent), None).await;
                return;
            }
        };
        let (ws, protocol) = match connected {
            Ok(ok) => ok,
            Err(err) => {
                tracing::info!(code = %err.code(), error = %err.message(), "websocket open failed");
                self.closed(None, None, Some(failure(&err))).await;
                return;
            }
        };
        tracing::debug!(?protocol, "websocket opened");
        let opened = Event::ForwardWebsocketOpened(ForwardWebsocketOpened {
            socket_id: self.socket_id.to_owned(),
            protocol,
        });
        self.emit(opened).await;

        let (mut sink, mut stream) = ws.split();
        // This socket's messages waiting for Kandan, on top of the shared budget.
        let to_kandan = Budget::new(inner.config.ws_queue_bytes);
        let end = {
            let reader = async {
                loop {
                    let (opcode, body) = match stream.next().await {
                        Some(Ok(Message::Text(text))) => (Opcode::Text, Bytes::from(text)),
                        Some(Ok(Message::Binary(data))) => (Opcode::Binary, data),
                        // tungstenite already answered the ping; Kandan learns of it.
                        Some(Ok(Message::Ping(data))) => (Opcode::Ping, data),
                        Some(Ok(Message::Pong(data))) => (Opcode::Pong, data),
                        Some(Ok(Message::Close(frame))) => return End::ServerClosed(frame),
                        Some(Ok(Message::Frame(_))) => continue,
                        Some(Err(err)) if dropped(&err) => return End::Vanished,
                        Some(Err(err)) => {
                            return End::Failed(ForwardError::WebSocket(Box::new(err)));
                        }
                        None => return End::Vanished,
                    };
                    // Waiting for room stops reading from the local server.
                    let cost = wire_cost(body.len());
                    let mut charge = to_kandan.charge(cost).await;
                    charge.merge(inner.config.event_budget.charge(cost).await);
                    let message = Event::ForwardWebsocketMessage(ForwardWebsocketMessage {
                        socket_id: self.socket_id.to_owned(),
                        opcode,
                        body: body.into(),
                    });
                    self.emit(Charged {
                        event: message,
                        charge,
                    })
                    .await;
                }
            };
            let writer = async {
                while let Some((message, len)) = frames.recv().await {
                    queued.fetch_sub(len, Ordering::Relaxed);
                    if let Err(err) = sink.send(message).await {
                        if dropped(&err) {
                            return End::Vanished;
                        }
                        return End::Failed(ForwardError::WebSocket(Box::new(err)));
                    }
                }
                // The table dropped the entry, and with it this sender; the stop
                // signal that always comes with that decides how to end.
                std::future::pending::<End>().await
            };
            tokio::select! {
                biased;
                why = &mut stop => End::TaskStop(why.unwrap_or(TaskStop::Silent)),
                end = reader => end,
                end = writer => end,
            }
        };

        match end {
            End::ServerClosed(frame) => {
                tracing::debug!(?frame, "local server closed");
                // Sends tungstenite's queued close reply.
                let _ = tokio::time::timeout(inner.config.ws_close_grace, sink.flush()).await;
                let (code, reason) = split_frame(frame);
                self.closed(code, reason, None).await;
            }
            End::Failed(err) => {
                tracing::info!(error = %err.message(), "websocket failed");
                self.closed(None, None, Some(failure(&err))).await;
            }
            End::Vanished => {
                // It closed (it was reachable): 1006, as a browser reports a
                // connection that ended without a closing handshake.
                tracing::debug!("local server dropped the connection without a close frame");
                self.closed(Some(ABNORMAL_CLOSE), None, None).await;
            }
            End::TaskStop(why) => {
                let (code, reason) = match why {
                    TaskStop::Closed => (CloseCode::Normal, "closed by kandan"),
                    TaskStop::Overflow => (CloseCode::Again, "kandan-runner send queue overflowed"),
                    TaskStop::Shutdown => (CloseCode::Away, "kandan-runner stopping"),
                    TaskStop::Port(_) | TaskStop::Silent => {
                        (CloseCode::Away, "kandan-runner stopped forwarding")
                    }
                };
                let ours = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                if let TaskStop::Shutdown = why {
                    // The runner stops and ends the local server right after:
                    // the closing handshake first (briefly), then the report.
                    let handshake = async {
                        sink.send(Message::Close(Some(ours.clone()))).await?;
                        close_reply(&mut stream).await
                    };
                    let _ = tokio::time::timeout(SHUTDOWN_CLOSE, handshake).await;
                    self.stopped(why, Some(ours)).await;
                    tracing::debug!("websocket task ended");
                    return;
                }
                if !matches!(why, TaskStop::Closed) {
                    // The runner's decision is final: report it now, whatever the
                    // local server does with the close (a stalled one may never read it).
                    self.stopped(why, Some(ours.clone())).await;
                }
                let handshake = async {
                    if let TaskStop::Closed = why {
                        // Frames Kandan sent before closing still go out, in order.
                        while let Ok((message, _)) = frames.try_recv() {
                            sink.send(message).await?;
                        }
                    }
                    sink.send(Message::Close(Some(ours.clone()))).await?;
                    // The local server's reply carries the code Kandan sees.
                    close_reply(&mut stream).await
                };
                let reply = tokio::time::timeout(inner.config.ws_close_grace, handshake).await;
                if let TaskStop::Closed = why {
                    let frame = match reply {
                        Ok(Ok(Some(frame))) => frame,
                        _ => ours,
                    };
                    self.stopped(why, Some(frame)).await;
                }
            }
        }
        tracing::debug!("websocket task ended");
    }
}

/// The local server's answer to our close frame (`None`: it just went).
async fn close_reply(
    stream: &mut futures_util::stream::SplitStream<Ws>,
) -> Result<Option<CloseFrame>, tungstenite::Error> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Close(frame))) => return Ok(frame),
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err),
            None => return Ok(None),
        }
    }
}

fn split_frame(frame: Option<CloseFrame>) -> (Option<u16>, Option<String>) {
    match frame {
        Some(frame) => (
            Some(u16::from(frame.code)),
            Some(frame.reason.as_str().to_owned()).filter(|r| !r.is_empty()),
        ),
        None => (None, None),
    }
}
