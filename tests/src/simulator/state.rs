//! State shared by the runner socket, the preview front and the `Simulator`
//! handle: what the runner sent, who is connected, and who waits for what.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::config::SimConfig;
use super::error::SimError;
use super::frame::Frame;

/// Where a `port_forward_request` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Nobody decided yet.
    Pending,
    /// Approved (by the simulator's API or the runner's `runner_ready`).
    Approved,
    /// Denied.
    Denied,
}

/// One port the runner asked to expose, as the simulator last saw it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortForwardRequest {
    /// The runner's `requestId`.
    pub request_id: String,
    /// The port.
    pub port: u16,
    /// The decision so far.
    pub state: RequestState,
    /// The last `port_forward_request` event (or `runner_ready` listener) for it.
    pub event: Value,
}

/// A fault the connection task carries out on the current connection.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Send this frame.
    Frame(Frame),
    /// Send this text as is (garbage included).
    Raw(String),
    /// Send a binary frame (the contract has none: the runner refuses it).
    Binary(Vec<u8>),
    /// Send a close frame with this code and reason, then end.
    Close(u16, String),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stop (true) or resume (false) reading the socket: the runner's
    /// writes then fill the TCP buffers and block, as with a stalled Kandan.
    PauseReading(bool),
}

/// The live runner connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<Outgoing>,
    /// `(joinRef, topic)` of the joined channel.
    pub joined: Option<(String, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub events: Vec<Value>,
    pub frames: Vec<Frame>,
    pub joins: Vec<Value>,
    pub join_count: usize,
    pub heartbeats: usize,
    pub connection_count: usize,
    pub violations: Vec<String>,
    /// The default runner connection: the latest one still open. Controls,
    /// faults and the preview front go to it.
    pub current: Option<Connection>,
    /// Other runner connections still open, oldest first: several runners
    /// (by runner id) are held at once, as Kandan does.
    pub others: Vec<Connection>,
    pub requests: Vec<PortForwardRequest>,
    /// Runner events for a preview request or socket waiting on them.
    pub waiters: HashMap<String, mpsc::UnboundedSender<Value>>,
    pub hold_heartbeats: bool,
    /// Events are recorded but get no `phx_reply`.
    pub hold_event_replies: bool,
    pub held_replies: Vec<(u64, Frame)>,
    pub reject_joins: Option<String>,
    pub refuse_upgrades: bool,
    pub auto_approve: bool,
    /// Per forwarded HTTP request: from handing `forward_http_request` to
    /// the connection task until the runner's first answer reached the front.
    pub forward_latencies: Vec<Duration>,
    /// How each runner connection ended, in order: the close code the
    /// runner sent (1005 for a close frame without one), or 1006 when the
    /// socket ended without a close frame.
    pub close_codes: Vec<u16>,
    /// CLOCK_MONOTONIC (ns) when each of `events` was recorded.
    pub event_clock: Vec<u64>,
    /// Events received per `type`, recorded or not.
    pub seen: HashMap<String, usize>,
    /// `limits` of the last `runner_ready`: the preview front refuses
    /// larger uploads itself, as Kandan does.
    pub limits: Option<Limits>,
    /// Files on Kandan's HTTP origin, by path (see `assets.rs`).
    pub assets: HashMap<String, bytes::Bytes>,
    /// Every asset request: its path and whether it carried the token.
    pub asset_fetches: Vec<(String, bool)>,
}

impl Inner {
    /// Connection `id`, the default one or another.
    pub(crate) fn connection(&self, id: u64) -> Option<&Connection> {
        (self.current.iter())
            .chain(self.others.iter())
            .find(|c| c.id == id)
    }

    pub(crate) fn connection_mut(&mut self, id: u64) -> Option<&mut Connection> {
        (self.current.iter_mut())
            .chain(self.others.iter_mut())
            .find(|c| c.id == id)
    }

    /// The joined topics of every open connection, oldest first.
    pub(crate) fn joined_topics(&self) -> Vec<String> {
        (self.others.iter())
            .chain(self.current.iter())
            .filter_map(|c| c.joined.as_ref().map(|(_, topic)| topic.clone()))
            .collect()
    }
}

/// The runner's announced limits, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_request_body: u64,
    pub max_response_body: u64,
    pub max_web_socket_message: u64,
}

impl Limits {
    fn from_ready(ready: &Value) -> Option<Self> {
        let limits = ready.get("limits")?;
        let get = |name: &str| limits.get(name).and_then(Value::as_u64);
        Some(Self {
            max_request_body: get("maxRequestBody")?,
            max_response_body: get("maxResponseBody")?,
            max_web_socket_message: get("maxWebSocketMessage")?,
        })
    }
}

/// Shared by every task of one simulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(config: SimConfig) -> Self {
        let inner = Inner {
            reject_joins: config.reject_joins.clone(),
            auto_approve: config.auto_approve,
            ..Inner::default()
        };
        Self {
            config,
            inner: Mutex::new(inner),
            changed: watch::Sender::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh id such as `req-3` or `sock-4`.
    pub fn fresh_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking holder leaves plain data behind; keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state and wakes every waiter.
    pub fn update<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.send_modify(|v| *v += 1);
        out
    }

    /// Waits until `f` finds something, or `timeout` passes.
    pub async fn wait_until<T>(
        &self,
        what: impl Into<String>,
        timeout: Duration,
        mut f: impl FnMut(&Inner) -> Option<T>,
    ) -> Result<T, SimError> {
        // Subscribe before looking, so no change between the two is missed.
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if let Some(found) = f(&self.lock()) {
                    return found;
                }
                // The sender lives in `self`, so this cannot fail while we wait.
                let _ = rx.changed().await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SimError::Timeout {
                what: what.into(),
                timeout,
            })
    }

    /// Sends one control to the joined runner channel.
    pub fn send_control(&self, control: Value) -> Result<(), SimError> {
        if !control.get("type").is_some_and(Value::is_string) {
            return Err(SimError::InvalidControl);
        }
        let inner = self.lock();
        let conn = inner.current.as_ref().ok_or(SimError::NotConnected)?;
        let (join_ref, topic) = conn.joined.as_ref().ok_or(SimError::NotJoined)?;
        let frame = Frame::new(Some(join_ref), None, topic, "control", control);
        tracing::debug!(frame = %frame.to_text(), "control to runner");
        conn.tx
            .send(Outgoing::Frame(frame))
            .map_err(|_| SimError::NotConnected)
    }

    /// Hands a fault or raw frame to the current connection.
    pub fn send_outgoing(&self, out: Outgoing) -> Result<(), SimError> {
        let inner = self.lock();
        let conn = inner.current.as_ref().ok_or(SimError::NotConnected)?;
        conn.tx.send(out).map_err(|_| SimError::NotConnected)
    }

    /// Sends `resolve_port_forward_request` and records the decision.
    pub fn resolve(&self, request_id: &str, approve: bool) -> Result<(), SimError> {
        let decision = if approve { "approve" } else { "deny" };
        let mut control = json!({
            "type": "resolve_port_forward_request",
            "instanceId": self.config.instance_id,
            "requestId": request_id,
            "decision": decision,
        });
        if let Some(actor) = &self.config.actor_user_id {
            control["actorUserId"] = json!(actor);
        }
        if let Some(slug) = &self.config.actor_slug {
            control["actorSlug"] = json!(slug);
        }
        self.send_control(control)?;
        let state = if approve {
            RequestState::Approved
        } else {
            RequestState::Denied
        };
        self.update(|inner| {
            if let Some(r) = inner
                .requests
                .iter_mut()
                .find(|r| r.request_id == request_id)
            {
                r.state = state;
            }
        });
        Ok(())
    }

    /// Registers who waits for runner events naming `id` (a requestId or socketId).
    pub fn register_waiter(&self, id: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().waiters.insert(id.to_owned(), tx);
        rx
    }

    pub fn remove_waiter(&self, id: &str) {
        self.lock().waiters.remove(id);
    }

    /// Records one runner event and routes it; returns the requests to
    /// auto-approve: a new `port_forward_request`, or the pending listeners
    /// of `runner_ready` (a listener stable before the join is only
    /// announced there, as Kandan's UI would prompt for it).
    pub fn record_event(&self, event: Value) -> Vec<String> {
        self.update(|inner| {
            let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
            *inner.seen.entry(ty.to_owned()).or_default() += 1;
            let approve = match ty {
                "port_forward_request" => {
                    // A restart of an approved server says so (`state`).
                    let state = listener_state(&event);
                    let id = track_request(inner, &event, state);
                    id.filter(|_| inner.auto_approve && state == RequestState::Pending)
                        .into_iter()
                        .collect()
                }
                "runner_ready" => {
                    inner.limits = Limits::from_ready(&event);
                    let listeners = event.get("listeners").and_then(Value::as_array);
                    let mut pending = Vec::new();
                    for listener in listeners.into_iter().flatten() {
                        let state = listener_state(listener);
                        let id = track_request(inner, listener, state);
                        if state == RequestState::Pending && inner.auto_approve {
                            pending.extend(id);
                        }
                    }
                    pending
                }
                "port_forward_resolved" => {
                    let id = event.get("requestId").and_then(Value::as_str);
                    let approved = event.get("decision").and_then(Value::as_str) == Some("approve");
                    if let Some(r) = inner
                        .requests
                        .iter_mut()
                        .find(|r| Some(&*r.request_id) == id)
                    {
                        r.state = if approved {
                            RequestState::Approved
                        } else {
                            RequestState::Denied
                        };
                    }
                    Vec::new()
                }
                _ => Vec::new(),
            };
            let keep = self.config.record_forward_events || !ty.starts_with("forward_");
            let id = event
                .get("requestId")
                .or_else(|| event.get("socketId"))
                .and_then(Value::as_str);
            let waiter = id.and_then(|id| inner.waiters.get(id)).cloned();
            match (keep, waiter) {
                (true, Some(tx)) => {
                    let _ = tx.send(event.clone());
                    inner.events.push(event);
                    inner.event_clock.push(crate::bench::clock::monotonic_ns());
                }
                (true, None) => {
                    inner.events.push(event);
                    inner.event_clock.push(crate::bench::clock::monotonic_ns());
                }
                // Unrecorded: the waiter gets the event itself, no copy.
                (false, Some(tx)) => {
                    let _ = tx.send(event);
                }
                (false, None) => {}
            }
            approve
        })
    }
}

/// The runner's `state` of a listener or request; pending when absent.
fn listener_state(listener: &Value) -> RequestState {
    match listener.get("state").and_then(Value::as_str) {
        Some("approved") => RequestState::Approved,
        Some("denied") => RequestState::Denied,
        _ => RequestState::Pending,
    }
}

/// Adds or refreshes a request from a `port_forward_request` or a listener of
/// `runner_ready`; a new identity (fresh `port_forward_request`) starts pending.
fn track_request(inner: &mut Inner, event: &Value, state: RequestState) -> Option<String> {
    let id = event.get("requestId")?.as_str()?.to_owned();
    let port = event
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    match inner.requests.iter_mut().find(|r| r.request_id == id) {
        Some(r) => {
            r.port = port;
            r.event = event.clone();
            r.state = state;
        }
        None => inner.requests.push(PortForwardRequest {
            request_id: id.clone(),
            port,
            state,
            event: event.clone(),
        }),
    }
    Some(id)
}
