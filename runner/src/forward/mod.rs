//! Forwarding HTTP requests and WebSockets from Kandan to approved local
//! ports (PROTOCOL.md sections 3 to 5).
//!
//! The typed controls go in as they were read, with a [`Responder`] bound
//! to the session they came on; each request and socket runs on its own
//! task and answers Kandan through it, in order, without passing the main
//! loop. Every connection first asks the [`PortGate`] where it may go, goes
//! only to loopback, and is verified before its first byte.

mod config;
mod dial;
mod error;
mod headers;
mod http;
mod pool;
mod scheme;
mod sniff;
mod streaming;
mod tls;
mod websocket;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use pool::Pool;

use crate::control::{Responder, Shortcut};
use crate::fast_hash::FastMap;
use crate::gate::PortGate;
use crate::wire::{
    Control, ErrorCode, ForwardHttpRequest, ForwardWebsocketClose, ForwardWebsocketOpen,
    ForwardWebsocketSend, Target,
};

pub(crate) use config::ForwardConfig;
pub(crate) use error::ForwardError;
pub(crate) use pool::PoolConfig;
use scheme::Schemes;
pub(crate) use scheme::{Protocol, Scheme};
use websocket::SocketTable;

/// Where the runner's editors listen (PROTOCOL.md section 8): each one's
/// private Unix socket, by `editorId`. Implemented by the editor registry.
pub(crate) trait EditorSockets: Send + Sync {
    fn socket(&self, editor_id: &str) -> Option<PathBuf>;
}

/// No editors (tests of ports alone).
#[cfg(test)]
pub(crate) struct NoEditors;

#[cfg(test)]
impl EditorSockets for NoEditors {
    fn socket(&self, _: &str) -> Option<PathBuf> {
        None
    }
}

/// A request's or socket's target, resolved.
#[derive(Clone, Debug)]
enum Local {
    Port(u16),
    Editor(PathBuf),
}

/// Why forwarding to a port stopped (see [`Forwarder::close_port`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The port's listener closed.
    ListenerClosed,
    /// Kandan's approval no longer holds (revoked, or the listener's identity changed).
    ApprovalRevoked,
}

impl CloseCause {
    /// The code reported to Kandan for requests cut short.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::ListenerClosed => ErrorCode::PortNotListening,
            Self::ApprovalRevoked => ErrorCode::PortNotApproved,
        }
    }
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ListenerClosed => "its listener closed",
            Self::ApprovalRevoked => "its approval was revoked",
        })
    }
}

/// How a running request or socket is told to stop.
#[derive(Debug, Clone, Copy)]
enum TaskStop {
    /// The port closed: tell Kandan.
    Port(CloseCause),
    /// The runner lost Kandan: stop quietly, there is nobody to tell (and
    /// nothing stale may be replayed after a reconnect).
    Silent,
    /// Kandan sent faster than the local server reads (WebSocket only).
    Overflow,
    /// Kandan closed the socket (WebSocket only).
    Closed,
    /// The runner is stopping: close with 1001 and report a plain close
    /// (WebSocket only).
    Shutdown,
}

/// One in-flight HTTP request: where it goes (None for an editor) and
/// Kandan's id for it.
struct InFlight {
    port: Option<u16>,
    request_id: String,
    stop: oneshot::Sender<TaskStop>,
}

/// In-flight HTTP requests, so a port's can be cut short and one can be
/// cancelled by its `requestId`.
#[derive(Default)]
struct HttpTasks {
    next: AtomicU64,
    running: Mutex<FastMap<u64, InFlight>>,
}

impl HttpTasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<u64, InFlight>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_where(&self, stop: TaskStop, matches: impl Fn(&InFlight) -> bool) {
        let mut running = self.lock();
        let keys: Vec<u64> = running
            .iter()
            .filter(|(_, task)| matches(task))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(task) = running.remove(&key) {
                let _ = task.stop.send(stop);
            }
        }
    }

    fn stop_port(&self, port: u16, stop: TaskStop) {
        self.stop_where(stop, |task| task.port == Some(port));
    }

    fn stop_all(&self) {
        for (_, task) in self.lock().drain() {
            let _ = task.stop.send(TaskStop::Silent);
        }
    }
}

/// Runs forwarded HTTP requests and WebSockets; must be used inside a
/// tokio runtime.
pub(crate) struct Forwarder {
    editors: Arc<dyn EditorSockets>,
    http: Arc<HttpTasks>,
    /// The gate, the pool, the schemes and the configuration, shared with
    /// each request's task: one reference to count per request.
    requests: Arc<http::Context>,
    sockets: SocketTable,
}

impl Forwarder {
    /// A forwarder that asks `gate` before every connection to a port, and
    /// finds editors through `editors`.
    pub(crate) fn new(
        gate: Arc<dyn PortGate>,
        editors: Arc<dyn EditorSockets>,
        config: ForwardConfig,
    ) -> Self {
        let config = Arc::new(config);
        let schemes = Arc::new(Schemes::default());
        let sockets = SocketTable::new(gate.clone(), config.clone(), schemes.clone());
        let requests = Arc::new(http::Context {
            gate,
            pool: Arc::new(Pool::new(config.pool)),
            schemes,
            config,
        });
        Self {
            editors,
            http: Arc::default(),
            requests,
            sockets,
        }
    }

    /// Sets how `port`'s scheme is chosen (the per-port `protocol`
    /// setting; [`Protocol::Auto`] unless set). A change closes the port's
    /// idle connections, which were made under the old setting.
    pub(crate) fn set_protocol(&self, port: u16, protocol: Protocol) {
        if self.requests.schemes.set_protocol(port, protocol) {
            self.requests.pool.purge(port);
        }
    }

    /// Calls `tell` with each scheme a request learns about a port's
    /// server (set once, before requests run).
    pub(crate) fn on_scheme_learned(&self, tell: impl Fn(u16, Scheme) + Send + Sync + 'static) {
        self.requests.schemes.on_learned(Box::new(tell));
    }

    /// What `port`'s server speaks, once set or learned; None until the
    /// first exchange with its current listener tells.
    pub(crate) fn scheme(&self, port: u16) -> Option<Scheme> {
        self.requests.schemes.scheme(port)
    }

    /// Starts `req` on its own task, which answers through `to`.
    fn resolve(&self, target: &Target) -> Result<Local, ForwardError> {
        match target {
            Target::Port(port) => Ok(Local::Port(*port)),
            Target::Editor(id) => (self.editors.socket(id))
                .map(Local::Editor)
                .ok_or_else(|| ForwardError::UnknownEditor(id.clone())),
        }
    }

    pub(crate) fn http(&self, req: ForwardHttpRequest, to: Responder) {
        let local = match self.resolve(&req.target) {
            Ok(local) => local,
            Err(err) => {
                tokio::spawn(async move { to.send(http::failed(req.request_id, &err)).await });
                return;
            }
        };
        let key = self.http.next.fetch_add(1, Ordering::Relaxed);
        let (stop_tx, stop_rx) = oneshot::channel();
        let port = match local {
            Local::Port(port) => Some(port),
            Local::Editor(_) => None,
        };
        let running = InFlight {
            port,
            request_id: req.request_id.clone(),
            stop: stop_tx,
        };
        self.http.lock().insert(key, running);
        let ctx = self.requests.clone();
        let tasks = self.http.clone();
        // Boxed whole (the request's state is kilobytes): the task itself
        // is then a pointer, which spawning and finishing it copy several
        // times each.
        tokio::spawn(Box::pin(async move {
            let request_id = req.request_id.clone();
            let answers = to.clone();
            let work = async move {
                match local {
                    Local::Port(port) => http::forward(req, port, answers, ctx).await,
                    Local::Editor(socket) => {
                        let config = ctx.config.clone();
                        Box::pin(http::forward_editor(req, socket, answers, config)).await;
                    }
                }
            };
            tokio::select! {
                () = work => {}
                stop = stop_rx => {
                    if let (Ok(TaskStop::Port(cause)), Some(port)) = (stop, port) {
                        let err = ForwardError::PortClosed { port, cause };
                        to.send(http::failed(request_id, &err)).await;
                    }
                }
            }
            tasks.lock().remove(&key);
        }));
    }

    /// `forward_http_cancel`: the person left. The request's task is
    /// dropped with its upstream connection (the local server sees it
    /// close) and nothing more is sent for it; an unknown or finished
    /// `requestId` is ignored.
    pub(crate) fn cancel(&self, request_id: &str) {
        self.http
            .stop_where(TaskStop::Silent, |task| task.request_id == request_id);
    }

    /// Opens a WebSocket to the local server; `forward_websocket_opened` or
    /// `forward_websocket_closed` follows through `to`, and so does every
    /// message of the socket.
    pub(crate) fn ws_open(&self, open: ForwardWebsocketOpen, to: Responder) {
        let local = self.resolve(&open.target);
        self.sockets.open(open, local, to);
    }

    /// Queues a frame for the local server.
    pub(crate) fn ws_send(&self, send: ForwardWebsocketSend, to: &Responder) {
        self.sockets.send(send, to);
    }

    /// Closes a socket from Kandan's side; `forward_websocket_closed` follows.
    pub(crate) fn ws_close(&self, close: ForwardWebsocketClose, to: &Responder) {
        self.sockets.close(&close.socket_id, to);
    }

    /// Stops everything forwarded to `port`: its sockets close and its
    /// in-flight requests end with a `control_error` carrying `cause`'s
    /// code. Its idle keep-alive connections close, so a restarted server
    /// is never sent a request on a stale one.
    pub(crate) fn close_port(&self, port: u16, cause: CloseCause) {
        self.requests.pool.purge(port);
        // A new listener may speak the other scheme.
        self.requests.schemes.forget(port);
        self.http.stop_port(port, TaskStop::Port(cause));
        self.sockets.close_port(port, cause);
    }

    /// Stops everything without a word (the runner lost Kandan).
    pub(crate) fn close_all(&self) {
        self.requests.pool.purge_all();
        self.requests.schemes.forget_all();
        self.http.stop_all();
        self.sockets.close_all();
    }

    /// The runner is stopping (PROTOCOL.md section 9): every socket closes
    /// with 1001 and reports `WsClosed` with that code and no error;
    /// requests in flight stop without a word (Kandan learns from the leave).
    pub(crate) fn shut_down(&self) {
        self.requests.pool.purge_all();
        self.requests.schemes.forget_all();
        self.http.stop_all();
        self.sockets.shut_down();
    }

    /// Waits (up to `patience`) until every socket has reported its close.
    pub(crate) async fn sockets_closed(&self, patience: std::time::Duration) {
        self.sockets.reported(patience).await;
    }

    /// The number of open (or opening) sockets.
    #[cfg(test)]
    pub(crate) fn socket_count(&self) -> usize {
        self.sockets.len()
    }
}

/// The `forward_*` controls, straight from the connection task (or from
/// the main loop when they wait behind its work). None waits: each starts
/// its own task or queues its frame. Which ports may be reached is the
/// gate's to say, in the request's or socket's own task.
impl Shortcut for Forwarder {
    fn take(&self, control: Control, to: Responder) -> Option<Control> {
        match control {
            Control::ForwardHttpRequest(req) => self.http(req, to),
            Control::ForwardHttpCancel(cancel) => self.cancel(&cancel.request_id),
            Control::ForwardWebsocketOpen(open) => self.ws_open(open, to),
            Control::ForwardWebsocketSend(send) => self.ws_send(send, &to),
            Control::ForwardWebsocketClose(close) => self.ws_close(close, &to),
            other => return Some(other),
        }
        None
    }
}
