//! Forwarding HTTP requests and WebSockets from Kandan to approved local
//! ports (PROTOCOL.md sections 3 to 5).
//!
//! Typed in, typed out, raw bytes: the control layer turns wire controls into
//! [`HttpRequest`] / [`WsOpen`] and calls a [`Forwarder`]; everything the
//! forwarder has to say comes back as [`ForwardOutput`]s on one bounded
//! channel, in order per request and per socket. Every connection first asks
//! the [`PortGate`] where it may go, and goes only to loopback.

mod config;
mod dial;
mod error;
mod gate;
mod headers;
mod http;
mod output;
mod pool;
mod websocket;

#[cfg(test)]
mod test_servers;
#[cfg(test)]
mod tests_http;
#[cfg(test)]
mod tests_pool;
#[cfg(test)]
mod tests_websocket;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use pool::Pool;

use crate::control::ErrorCode;
use crate::control::controls::Opcode;

pub use config::ForwardConfig;
pub use dial::loopback_targets;
pub use error::ForwardError;
pub use gate::{GateRefusal, PortGate};
pub use output::{ForwardOutput, HttpRequest, WsFailure, WsOpen};
pub use pool::PoolConfig;
pub use websocket::SocketTable;

/// Why forwarding to a port stopped (see [`Forwarder::close_port`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The port's listener closed.
    ListenerClosed,
    /// Kandan's approval no longer holds (revoked, or the listener's identity changed).
    ApprovalRevoked,
}

impl CloseCause {
    /// The code reported to Kandan for requests cut short.
    pub fn code(self) -> ErrorCode {
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
enum Stop {
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

/// In-flight HTTP requests, so a port's can be cut short.
#[derive(Default)]
struct HttpTasks {
    next: AtomicU64,
    running: Mutex<HashMap<u64, (u16, oneshot::Sender<Stop>)>>,
}

impl HttpTasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u16, oneshot::Sender<Stop>)>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_port(&self, port: u16, stop: Stop) {
        let mut running = self.lock();
        let keys: Vec<u64> = running
            .iter()
            .filter(|(_, (p, _))| *p == port)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some((_, tx)) = running.remove(&key) {
                let _ = tx.send(stop);
            }
        }
    }

    fn stop_all(&self) {
        for (_, (_, tx)) in self.lock().drain() {
            let _ = tx.send(Stop::Silent);
        }
    }
}

/// Runs forwarded HTTP requests and WebSockets. Cheap to clone; must be
/// used inside a tokio runtime.
#[derive(Clone)]
pub struct Forwarder {
    gate: Arc<dyn PortGate>,
    config: Arc<ForwardConfig>,
    out: mpsc::Sender<ForwardOutput>,
    http: Arc<HttpTasks>,
    pool: Arc<Pool>,
    sockets: SocketTable,
}

impl Forwarder {
    /// A forwarder that asks `gate` before every connection and reports on
    /// `out`. Give `out` a bounded capacity: a full channel slows the local
    /// servers down instead of growing memory.
    pub fn new(
        gate: Arc<dyn PortGate>,
        config: ForwardConfig,
        out: mpsc::Sender<ForwardOutput>,
    ) -> Self {
        let config = Arc::new(config);
        let sockets = SocketTable::new(gate.clone(), config.clone(), out.clone());
        let pool = Arc::new(Pool::new(config.pool));
        Self {
            gate,
            config,
            out,
            http: Arc::default(),
            pool,
            sockets,
        }
    }

    /// Starts `req` on its own task; its outputs follow on the channel.
    pub fn http(&self, req: HttpRequest) {
        let key = self.http.next.fetch_add(1, Ordering::Relaxed);
        let (stop_tx, stop_rx) = oneshot::channel();
        self.http.lock().insert(key, (req.port, stop_tx));
        let (gate, pool, config, out, tasks) = (
            self.gate.clone(),
            self.pool.clone(),
            self.config.clone(),
            self.out.clone(),
            self.http.clone(),
        );
        tokio::spawn(async move {
            let (request_id, port) = (req.request_id.clone(), req.port);
            tokio::select! {
                () = http::forward(req, gate, pool, config, out.clone()) => {}
                stop = stop_rx => {
                    if let Ok(Stop::Port(cause)) = stop {
                        let err = ForwardError::PortClosed { port, cause };
                        let _ = out.send(ForwardOutput::HttpError {
                            request_id,
                            code: err.code(),
                            message: err.message(),
                        }).await;
                    }
                }
            }
            tasks.lock().remove(&key);
        });
    }

    /// Opens a WebSocket to the local server; `WsOpened` or `WsClosed` follows.
    pub async fn ws_open(&self, open: WsOpen) {
        self.sockets.open(open).await;
    }

    /// Queues a frame for the local server.
    pub async fn ws_send(&self, socket_id: &str, opcode: Opcode, body: Bytes) {
        self.sockets.send(socket_id, opcode, body).await;
    }

    /// Closes a socket from Kandan's side; `WsClosed` follows.
    pub async fn ws_close(&self, socket_id: &str) {
        self.sockets.close(socket_id).await;
    }

    /// Stops everything forwarded to `port`: its sockets close (`WsClosed`)
    /// and its in-flight requests end with an `HttpError` carrying
    /// `cause`'s code. Its idle keep-alive connections close, so a
    /// restarted server is never sent a request on a stale one.
    pub fn close_port(&self, port: u16, cause: CloseCause) {
        self.pool.purge(port);
        self.http.stop_port(port, Stop::Port(cause));
        self.sockets.close_port(port, cause);
    }

    /// Stops everything without a word (the runner lost Kandan).
    pub fn close_all(&self) {
        self.pool.purge_all();
        self.http.stop_all();
        self.sockets.close_all();
    }

    /// The runner is stopping (PROTOCOL.md section 9): every socket closes
    /// with 1001 and reports `WsClosed` with that code and no error;
    /// requests in flight stop without a word (Kandan learns from the leave).
    pub fn shut_down(&self) {
        self.pool.purge_all();
        self.http.stop_all();
        self.sockets.shut_down();
    }

    /// The number of open (or opening) sockets.
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }
}
