//! The Kandan simulator: Kandan's side of PROTOCOL.md sections 2 to 4, on
//! loopback, driven by tests (shaped after linkerd2-proxy's mock controller).
//!
//! - A Phoenix Channels v2 socket for the runner at [`Simulator::url`]
//!   (`/runner/socket`, the runner adds `/websocket?vsn=2.0.0&token=...`).
//!   It answers joins, heartbeats and pushes, records every event, pushes
//!   controls, and injects faults on demand.
//! - A preview front at [`Simulator::preview_url`]: `/preview/<port>/<path>`
//!   becomes `forward_http_request` / `forward_websocket_open` and the
//!   runner's answers become the HTTP response or WebSocket frames. Each
//!   port also has its own origin, [`Simulator::port_origin_url`]
//!   (`http://p<port>.localhost:<front>/`), where paths go as they are.
//! - A JSON API under `/api/` on the preview port (see `preview/api.rs`).

mod assets;
mod config;
mod digest;
mod error;
mod frame;
mod preview;
mod runner_socket;
mod state;
pub mod test_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::SimConfig;
pub use digest::{digest_of, fnv1a64};
pub use error::SimError;
pub use frame::{Frame, FrameError};
pub use preview::{ERROR_CODE_HEADER, REQUEST_ID_HEADER};
pub use state::{Limits, PortForwardRequest, RequestState};

use state::{Outgoing, Shared};

/// An instance's events in `events` as Kandan keeps them: by `seq`, a
/// `seq` seen before dropped. An error names a gap or a step back.
pub(crate) fn transcript_of(events: &[Value], instance_id: &str) -> Result<Vec<Value>, String> {
    let mut kept: Vec<Value> = Vec::new();
    for event in events {
        if event["instanceId"] != instance_id {
            continue;
        }
        let Some(seq) = event["seq"].as_u64() else {
            continue;
        };
        let last = kept.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        if seq <= last {
            // Already had it: a resend after a reconnect.
            continue;
        }
        if seq != last + 1 && event["gap"] != true {
            return Err(format!("seq {seq} after {last} without gap: {event}"));
        }
        kept.push(event.clone());
    }
    Ok(kept)
}

/// A running simulator; dropping it stops both fronts and drops the runner.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    runner_addr: SocketAddr,
    preview_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds both fronts and starts serving.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind { what, addr, source })
        };
        let runner = bind("runner socket", config.runner_addr).await?;
        let preview = bind("preview", config.preview_addr).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| SimError::Bind { what, addr, source })
        };
        let runner_addr = local(&runner, "runner socket", config.runner_addr)?;
        let preview_addr = local(&preview, "preview", config.preview_addr)?;
        let shared = Arc::new(Shared::new(config));
        let tasks = vec![
            tokio::spawn(runner_socket::serve(shared.clone(), runner)),
            tokio::spawn(preview::serve(shared.clone(), preview)),
        ];
        tracing::info!(%runner_addr, %preview_addr, "simulator started");
        Ok(Self {
            shared,
            runner_addr,
            preview_addr,
            tasks,
        })
    }

    // ----- addresses -----

    /// The socket mount to give the runner's `--url`: `ws://127.0.0.1:<port>/runner/socket`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.runner_addr, runner_socket::MOUNT)
    }

    /// The full WebSocket URL a Phoenix client opens (with `vsn` and token).
    pub fn websocket_url(&self) -> String {
        let token = runner_socket::percent_encode(self.token());
        format!("{}/websocket?vsn=2.0.0&token={token}", self.url())
    }

    /// The token the runner must present (`--token`).
    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    /// Where the runner socket listens.
    pub fn runner_addr(&self) -> SocketAddr {
        self.runner_addr
    }

    /// Where the preview front and the API listen.
    pub fn preview_addr(&self) -> SocketAddr {
        self.preview_addr
    }

    /// `http://127.0.0.1:<preview>/preview/<port>/`.
    pub fn preview_url(&self, port: u16) -> String {
        format!("http://{}/preview/{port}/", self.preview_addr)
    }

    /// `http://p<port>.localhost:<preview>/`: the port on its own origin
    /// (Chromium resolves `*.localhost` to loopback), so a stock app's
    /// absolute paths work with no `--base`.
    pub fn port_origin_url(&self, port: u16) -> String {
        format!("http://p{port}.localhost:{}/", self.preview_addr.port())
    }

    /// `http://127.0.0.1:<preview>/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.preview_addr)
    }

    // ----- what the runner did -----

    /// Every event payload the runner pushed, in order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// How many events the runner pushed so far (a cursor for
    /// [`Simulator::wait_for_event_after`]).
    pub fn event_count(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// Events of one `type`, in order.
    pub fn events_of(&self, ty: &str) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .events
            .iter()
            .filter(|e| is_type(e, ty))
            .cloned()
            .collect()
    }

    /// Every well-formed frame the runner sent (heartbeats and joins too).
    pub fn frames(&self) -> Vec<Frame> {
        self.shared.lock().frames.clone()
    }

    /// Payloads of every `phx_join`, accepted or not.
    pub fn joins(&self) -> Vec<Value> {
        self.shared.lock().joins.clone()
    }

    /// How many joins were accepted.
    pub fn join_count(&self) -> usize {
        self.shared.lock().join_count
    }

    /// How many WebSocket connections the runner opened.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().connection_count
    }

    /// How many heartbeats arrived.
    pub fn heartbeat_count(&self) -> usize {
        self.shared.lock().heartbeats
    }

    /// Protocol breaches seen: unparsable frames, stale join refs, binary
    /// frames, non-object event payloads. Tests usually assert it is empty.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// How the runner's connections ended so far: the close code it sent
    /// (1005 when its close frame had none), 1006 for no close frame.
    pub fn close_codes(&self) -> Vec<u16> {
        self.shared.lock().close_codes.clone()
    }

    /// True while a runner connection is open.
    pub fn connected(&self) -> bool {
        self.shared.lock().current.is_some()
    }

    /// The joined topic (`runner:<id>`) of the current connection.
    pub fn joined_topic(&self) -> Option<String> {
        let inner = self.shared.lock();
        let conn = inner.current.as_ref()?;
        conn.joined.as_ref().map(|(_, topic)| topic.clone())
    }

    /// The joined topics of every open runner connection, oldest first
    /// (several runners may be connected at once).
    pub fn joined_topics(&self) -> Vec<String> {
        self.shared.lock().joined_topics()
    }

    /// Waits until the current connection has joined its channel.
    pub async fn wait_joined(&self, timeout: Duration) -> Result<String, SimError> {
        self.shared
            .wait_until("a joined runner", timeout, |inner| {
                let conn = inner.current.as_ref()?;
                conn.joined.as_ref().map(|(_, topic)| topic.clone())
            })
            .await
    }

    /// Waits until `n` joins were accepted in total.
    pub async fn wait_join_count(&self, n: usize, timeout: Duration) -> Result<(), SimError> {
        self.shared
            .wait_until(format!("{n} joins"), timeout, |i| {
                (i.join_count >= n).then_some(())
            })
            .await
    }

    /// Waits until `n` joins were attempted in total (accepted or not).
    pub async fn wait_join_attempts(&self, n: usize, timeout: Duration) -> Result<(), SimError> {
        self.shared
            .wait_until(format!("{n} join attempts"), timeout, |i| {
                (i.joins.len() >= n).then_some(())
            })
            .await
    }

    /// Waits until `n` heartbeats arrived in total.
    pub async fn wait_heartbeat_count(&self, n: usize, timeout: Duration) -> Result<(), SimError> {
        self.shared
            .wait_until(format!("{n} heartbeats"), timeout, |i| {
                (i.heartbeats >= n).then_some(())
            })
            .await
    }

    /// Waits until `n` events of `type` were recorded in total.
    pub async fn wait_for_event_type_count(
        &self,
        ty: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.shared
            .wait_until(format!("{n} {ty} events"), timeout, |i| {
                (i.events.iter().filter(|e| is_type(e, ty)).count() >= n).then_some(())
            })
            .await
    }

    /// Waits until `n` events of `type` arrived in total, counting those
    /// not recorded (`record_forward_events: false`).
    pub async fn wait_for_seen_count(
        &self,
        ty: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), SimError> {
        self.shared
            .wait_until(format!("{n} {ty} events seen"), timeout, |i| {
                (i.seen.get(ty).copied().unwrap_or(0) >= n).then_some(())
            })
            .await
    }

    /// How many events of `type` arrived, recorded or not.
    pub fn seen_count(&self, ty: &str) -> usize {
        self.shared.lock().seen.get(ty).copied().unwrap_or(0)
    }

    /// Waits until no runner is connected.
    pub async fn wait_disconnected(&self, timeout: Duration) -> Result<(), SimError> {
        self.shared
            .wait_until("the runner to disconnect", timeout, |i| {
                i.current.is_none().then_some(())
            })
            .await
    }

    /// Waits until `n` connections were opened in total.
    pub async fn wait_connection_count(&self, n: usize, timeout: Duration) -> Result<(), SimError> {
        self.shared
            .wait_until(format!("{n} connections"), timeout, |i| {
                (i.connection_count >= n).then_some(())
            })
            .await
    }

    /// The first event (ever) of `type` that `matches`, waiting for it.
    pub async fn wait_for_event(
        &self,
        ty: &str,
        matches: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, SimError> {
        self.wait_for_event_after(0, ty, matches, timeout)
            .await
            .map(|(_, event)| event)
    }

    /// The first event of `type` at index `>= after` that `matches`, with
    /// its index; take `after` from [`Simulator::event_count`].
    pub async fn wait_for_event_after(
        &self,
        after: usize,
        ty: &str,
        matches: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<(usize, Value), SimError> {
        self.shared
            .wait_until(format!("a {ty} event"), timeout, |inner| {
                inner
                    .events
                    .iter()
                    .enumerate()
                    .skip(after)
                    .find(|(_, e)| is_type(e, ty) && matches(e))
                    .map(|(i, e)| (i, e.clone()))
            })
            .await
    }

    /// Waits until at least `n` events were recorded; returns them all.
    pub async fn wait_for_event_count(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>, SimError> {
        self.shared
            .wait_until(format!("{n} events"), timeout, |i| {
                (i.events.len() >= n).then(|| i.events.clone())
            })
            .await
    }

    /// Takes the forwarding latencies measured so far: per preview HTTP
    /// request, from handing `forward_http_request` to the runner's socket
    /// task until the runner's first answer (or the timeout) reached the
    /// front. This is the round trip through the Phoenix socket and the
    /// runner, local server included, without the browser's own hop.
    pub fn take_forward_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut self.shared.lock().forward_latencies)
    }

    // ----- port forwarding -----

    /// Every port the runner asked about, with its state.
    pub fn port_forward_requests(&self) -> Vec<PortForwardRequest> {
        self.shared.lock().requests.clone()
    }

    /// Waits for a pending request on `port`.
    pub async fn wait_for_request(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<PortForwardRequest, SimError> {
        self.shared
            .wait_until(format!("a request for port {port}"), timeout, |i| {
                i.requests
                    .iter()
                    .find(|r| r.port == port && r.state == RequestState::Pending)
                    .cloned()
            })
            .await
    }

    /// Waits for a pending request on `port` and approves it.
    pub async fn approve_port(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<PortForwardRequest, SimError> {
        let request = self.wait_for_request(port, timeout).await?;
        self.approve(&request.request_id)?;
        Ok(request)
    }

    /// Sends `resolve_port_forward_request` with `approve`.
    pub fn approve(&self, request_id: &str) -> Result<(), SimError> {
        self.shared.resolve(request_id, true)
    }

    /// Sends `resolve_port_forward_request` with `deny`.
    pub fn deny(&self, request_id: &str) -> Result<(), SimError> {
        self.shared.resolve(request_id, false)
    }

    /// Approves every later `port_forward_request` as it arrives.
    pub fn set_auto_approve(&self, on: bool) {
        self.shared.update(|i| i.auto_approve = on);
    }

    /// Pushes one control (an object with a string `type`) to the runner.
    pub fn send_control(&self, control: Value) -> Result<(), SimError> {
        self.shared.send_control(control)
    }

    // ----- Codex instances -----

    /// Records events without answering them (`phx_reply`), as if the
    /// replies were lost: the runner keeps instance events until answered.
    pub fn hold_event_replies(&self, on: bool) {
        self.shared.update(|i| i.hold_event_replies = on);
    }

    /// The instance's events as Kandan keeps them: by `seq`, a `seq` seen
    /// before dropped. An error names a gap or a step back.
    pub fn transcript(&self, instance_id: &str) -> Result<Vec<Value>, String> {
        transcript_of(&self.events(), instance_id)
    }

    /// The concatenated agent text of an instance's transcript (every
    /// `item/agentMessage/delta`).
    pub fn agent_text(&self, instance_id: &str) -> Result<String, String> {
        Ok(self
            .transcript(instance_id)?
            .iter()
            .filter(|e| e["method"] == "item/agentMessage/delta")
            .filter_map(|e| e["params"]["delta"].as_str().map(str::to_owned))
            .collect())
    }

    /// The recorded events from index `from` on.
    pub fn events_since(&self, from: usize) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .events
            .get(from..)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }

    /// Every recorded event with the CLOCK_MONOTONIC time (ns) it arrived.
    pub fn timed_events(&self) -> Vec<(u64, Value)> {
        let inner = self.shared.lock();
        inner
            .event_clock
            .iter()
            .copied()
            .zip(inner.events.iter().cloned())
            .collect()
    }

    // ----- Kandan's HTTP origin -----

    /// Serves `body` at `path` on the runner socket's origin, to requests
    /// that carry the token as a bearer.
    pub fn serve_asset(&self, path: &str, body: impl Into<bytes::Bytes>) {
        self.shared
            .lock()
            .assets
            .insert(path.to_owned(), body.into());
    }

    /// Every asset request so far: its path and whether it had the token.
    pub fn asset_fetches(&self) -> Vec<(String, bool)> {
        self.shared.lock().asset_fetches.clone()
    }

    /// The editor's page on the preview front: `/editor/<editorId>/`.
    pub fn editor_url(&self, editor_id: &str) -> String {
        format!("http://{}/editor/{editor_id}/", self.preview_addr)
    }

    // ----- faults -----

    /// Drops the runner's TCP connection without a close frame.
    pub fn drop_connection(&self) -> Result<(), SimError> {
        self.shared.send_outgoing(Outgoing::Drop)
    }

    /// Closes the runner's WebSocket with `code` (1011: server error).
    pub fn close_connection(&self, code: u16, reason: &str) -> Result<(), SimError> {
        self.shared
            .send_outgoing(Outgoing::Close(code, reason.to_owned()))
    }

    /// Holds heartbeat replies while on; turning it off sends the held
    /// replies of the current connection.
    pub fn hold_heartbeats(&self, on: bool) {
        self.shared.update(|i| i.hold_heartbeats = on);
        if !on {
            runner_socket::release_heartbeats(&self.shared);
        }
    }

    /// Sends `phx_error` on the joined channel (a crashed channel); the
    /// runner must rejoin before controls flow again.
    pub fn send_phx_error(&self) -> Result<(), SimError> {
        runner_socket::phx_error(&self.shared)
    }

    /// Sends this text frame as is.
    pub fn send_raw(&self, text: &str) -> Result<(), SimError> {
        self.shared.send_outgoing(Outgoing::Raw(text.to_owned()))
    }

    /// Sends a binary frame (Phoenix v2 JSON has none).
    pub fn send_binary(&self, bytes: &[u8]) -> Result<(), SimError> {
        self.shared.send_outgoing(Outgoing::Binary(bytes.to_vec()))
    }

    /// Sends a volley of malformed frames: not JSON, wrong shapes, unknown
    /// topic, a control with no type and one with an unknown type.
    pub fn send_garbage(&self) -> Result<(), SimError> {
        let joined = {
            let inner = self.shared.lock();
            inner.current.as_ref().and_then(|c| c.joined.clone())
        };
        let (join_ref, topic) =
            joined.unwrap_or_else(|| ("0".to_owned(), "runner:unknown".to_owned()));
        for text in garbage_frames(&join_ref, &topic) {
            self.send_raw(&text)?;
        }
        Ok(())
    }

    /// Replies to later joins with this error reason (`None`: accept again).
    pub fn reject_joins(&self, reason: Option<&str>) {
        self.shared
            .update(|i| i.reject_joins = reason.map(str::to_owned));
    }

    /// Stops reading the runner's socket while on (a Kandan that no longer
    /// reads: the runner's writes block once the TCP buffers are full).
    pub fn pause_reading(&self, on: bool) -> Result<(), SimError> {
        self.shared.send_outgoing(Outgoing::PauseReading(on))
    }

    /// The `limits` of the runner's last `runner_ready`.
    pub fn limits(&self) -> Option<Limits> {
        self.shared.lock().limits
    }

    /// Refuses WebSocket upgrades with 503 while on.
    pub fn refuse_connections(&self, on: bool) {
        self.shared.update(|i| i.refuse_upgrades = on);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.shared.send_outgoing(Outgoing::Drop);
    }
}

fn is_type(event: &Value, ty: &str) -> bool {
    event.get("type").and_then(Value::as_str) == Some(ty)
}

/// The frames of [`Simulator::send_garbage`] for a channel joined as
/// `join_ref` on `topic`: the last three reach the runner's control handler
/// and must each get a `control_error`.
pub fn garbage_frames(join_ref: &str, topic: &str) -> Vec<String> {
    vec![
        "this is not json".to_owned(),
        "{\"an\":\"object\"}".to_owned(),
        "[1,2,3]".to_owned(),
        format!("[null,null,\"{topic}\",\"control\"]"),
        "[null,null,\"elsewhere:1\",\"control\",{\"type\":\"stop_instance\"}]".to_owned(),
        format!("[\"{join_ref}\",null,\"{topic}\",\"control\",\"a string payload\"]"),
        format!("[\"{join_ref}\",null,\"{topic}\",\"control\",{{\"no\":\"type\"}}]"),
        format!("[\"{join_ref}\",null,\"{topic}\",\"control\",{{\"type\":\"no_such_control\"}}]"),
    ]
}
