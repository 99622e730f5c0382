//! The connection manager: one tokio task that keeps a Phoenix channel to
//! Kandan joined, delivers controls to the runner and sends its events.
//!
//! Outbound policy ("nothing stale is replayed"): after every join the
//! runner's first event must be `runner_ready` with the whole current state,
//! so nothing is queued across connections. While the channel is not joined,
//! and after a join until `runner_ready` goes out, every event is dropped:
//! state events are superseded by that `runner_ready`, and answers to
//! controls are useless because Kandan forgets its requests when the
//! connection goes. Answers are tied to the [`Session`] whose control they
//! answer ([`ControlHandle::reply`]) and are dropped once that session ended.
//! The queue between the handle and the socket is bounded (default 1024
//! events); while joined, a full queue makes `send` wait; otherwise the task
//! drains and drops, so `send` never waits long. Events with bodies are
//! also bounded in bytes: they carry a [`Charge`] of a shared budget, given
//! back once their frame is written.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

use super::budget::Charge;
use super::connection::{self, Ended};
use super::connector::{Connector, TcpConnector};
use super::endpoint;
use super::responder::Responder;
use super::schedule::Backoff;
use super::shortcut::Direct;
use crate::wire::Control;
use crate::wire::Event;

/// What the runner says about itself when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinInfo {
    pub runner_id: String,
    pub version: String,
    pub hostname: String,
    pub os: String,
    pub backend: String,
    pub config_version: u64,
}

/// Intervals; the defaults are the contract's, tests shorten them.
#[derive(Clone, Debug)]
pub struct Timing {
    pub heartbeat_interval: Duration,
    /// No heartbeat reply within this: the connection is dead.
    pub heartbeat_timeout: Duration,
    /// No join reply within this: retried on the rejoin schedule.
    pub join_timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect: Backoff,
    pub rejoin: Backoff,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect: Backoff::reconnect(),
            rejoin: Backoff::rejoin(),
        }
    }
}

/// Everything the client needs.
#[derive(Clone)]
pub struct ControlConfig {
    /// The socket mount, e.g. `ws://host/runner/socket`.
    pub url: String,
    pub token: Option<String>,
    pub join: JoinInfo,
    pub timing: Timing,
    /// Events between the handle and the socket.
    pub outbox_capacity: usize,
    /// Inputs not yet taken by the runner; a full queue pauses reading.
    pub input_capacity: usize,
    /// Largest message read from Kandan (see [`super::connector::message_limit`]).
    pub max_message: usize,
    /// Where the connection hands the controls it can act on without the
    /// main loop (see [`super::shortcut`]); the main loop gets them all
    /// without one.
    pub(crate) shortcut: Option<Arc<dyn super::Shortcut>>,
}

impl ControlConfig {
    pub fn new(url: impl Into<String>, token: Option<String>, join: JoinInfo) -> Self {
        ControlConfig {
            url: url.into(),
            token,
            join,
            timing: Timing::default(),
            outbox_capacity: 1024,
            input_capacity: 256,
            max_message: super::connector::message_limit(16 << 20),
            shortcut: None,
        }
    }
}

impl std::fmt::Debug for ControlConfig {
    // By hand, so that the token never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("join", &self.join)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// One successful join. Answers carry the session of the control they answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Session(pub(super) u64);

/// What the client tells the runner.
#[derive(Debug)]
pub enum ControlInput {
    /// The channel is joined. Answer first with `runner_ready` carrying the
    /// whole current state (`handle.reply(session, Event::RunnerReady(..))`);
    /// everything sent before it in this session is dropped.
    Joined(Session),
    /// A well-formed control. Malformed and unknown ones never get here: the
    /// client answers them with a `control_error` itself.
    Control {
        session: Session,
        control: Box<Control>,
    },
    /// The channel is no longer joined (socket lost, or the channel failed);
    /// a `Joined` follows when it is back.
    Disconnected,
    /// Kandan refused the handshake in a way no retry can change (token,
    /// path). The client has stopped; the runner should too.
    Refused(super::Refusal),
    /// Kandan answered the push of an event sent with
    /// [`ControlHandle::send_tracked`]: it has that event.
    Acked(Ack),
    /// Connecting failed or the connection was lost (`reason`); attempt
    /// `attempt` (from 1) is made in `delay`. For the person (the state
    /// line, `status`): in order with `Joined`, so what they see is never
    /// an outage that already ended.
    Reconnecting {
        attempt: usize,
        delay: Duration,
        reason: String,
    },
}

/// Which event a tracked push carried: an instance's event by its `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub instance_id: String,
    pub seq: u64,
}

/// The control client is gone (its task ended).
#[derive(Debug, thiserror::Error)]
#[error("control client stopped")]
pub struct ClientStopped;

pub(super) enum Outgoing {
    /// State-bearing: sent whenever the current session is ready.
    State(Event),
    /// Like `State`, and Kandan's `phx_reply` to its push comes back as
    /// [`ControlInput::Acked`] with this tag.
    Tracked(Charged, Ack),
    /// An answer to a control of this session.
    Reply(Session, Charged),
    /// The runner stops: `phx_leave`, a normal close, and the client ends.
    Leave,
}

impl Outgoing {
    /// The event it carries (`Leave` carries none).
    pub(super) fn event(&self) -> Option<&Event> {
        match self {
            Outgoing::State(event)
            | Outgoing::Tracked(Charged { event, .. }, _)
            | Outgoing::Reply(_, Charged { event, .. }) => Some(event),
            Outgoing::Leave => None,
        }
    }
}

/// An event and the budget bytes it holds until its frame is written to
/// Kandan's socket (or dropped): see [`super::budget`].
#[derive(Debug)]
pub struct Charged {
    pub event: Event,
    pub charge: Charge,
}

impl From<Event> for Charged {
    fn from(event: Event) -> Self {
        Charged {
            event,
            charge: Charge::default(),
        }
    }
}

/// Sends events; cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    outbox: mpsc::Sender<Outgoing>,
    join: Arc<Mutex<JoinInfo>>,
    /// Inputs given to the runner and not yet handled (see [`super::shortcut`]).
    unhandled: Arc<AtomicUsize>,
}

impl ControlHandle {
    /// The runner has handled an input it took from `inputs`: the controls
    /// read after it may take the shortcut again.
    pub(crate) fn handled(&self) {
        super::shortcut::handled(&self.unhandled);
    }

    /// Sends a state event (`port_forward_request`, `port_forward_closed`,
    /// `port_forward_resolved`, `runner_config_applied`, `runner_ready`).
    /// Dropped while not joined: the next `runner_ready` carries the state.
    pub async fn send(&self, event: Event) -> Result<(), ClientStopped> {
        self.outbox
            .send(Outgoing::State(event))
            .await
            .map_err(|_| ClientStopped)
    }

    /// Sends a state event whose arrival the runner tracks: Kandan's
    /// `phx_reply` comes back as [`ControlInput::Acked`]`(ack)`. Dropped
    /// while not joined, like [`ControlHandle::send`]; the runner sends it
    /// again after the next `runner_ready` if it was never acked.
    /// A [`Charged`] event gives its bytes back once written.
    pub async fn send_tracked(
        &self,
        event: impl Into<Charged>,
        ack: Ack,
    ) -> Result<(), ClientStopped> {
        self.outbox
            .send(Outgoing::Tracked(event.into(), ack))
            .await
            .map_err(|_| ClientStopped)
    }

    /// Sends an answer to a control of `session` (forwarding responses,
    /// `control_error`, `local_editor_started`, the `runner_ready` that
    /// answers `Joined`). Dropped when that session has ended.
    /// A [`Charged`] event gives its bytes back once written.
    pub async fn reply(
        &self,
        session: Session,
        event: impl Into<Charged>,
    ) -> Result<(), ClientStopped> {
        self.outbox
            .send(Outgoing::Reply(session, event.into()))
            .await
            .map_err(|_| ClientStopped)
    }

    /// Where answers to a control of `session` go: handed to the task that
    /// acts on it, which answers Kandan without passing the main loop.
    pub(crate) fn responder(&self, session: Session) -> Responder {
        Responder::new(self.outbox.clone(), session)
    }

    /// Leaves Kandan (PROTOCOL.md section 9) once everything sent before
    /// has gone out: `phx_leave` on the joined channel, then a close with
    /// code 1000. The client task ends after it; await its `task`.
    pub async fn leave(&self) -> Result<(), ClientStopped> {
        self.outbox
            .send(Outgoing::Leave)
            .await
            .map_err(|_| ClientStopped)
    }

    /// The `configVersion` of the next join payload.
    pub(crate) fn set_config_version(&self, config_version: u64) {
        self.join
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .config_version = config_version;
    }
}

/// The running client.
#[derive(Debug)]
pub struct ControlChannel {
    pub handle: ControlHandle,
    pub inputs: mpsc::Receiver<ControlInput>,
    /// Ends when every handle or the input receiver is dropped.
    pub task: JoinHandle<()>,
}

/// Entry point.
pub struct ControlClient;

impl ControlClient {
    /// Starts the client over TCP.
    pub fn spawn(config: ControlConfig) -> ControlChannel {
        let connector = TcpConnector {
            max_message: config.max_message,
        };
        Self::spawn_with(config, connector)
    }

    /// Starts the client over any transport.
    pub(crate) fn spawn_with<C: Connector>(config: ControlConfig, connector: C) -> ControlChannel {
        let (outbox_tx, outbox_rx) = mpsc::channel(config.outbox_capacity.max(1));
        let (input_tx, input_rx) = mpsc::channel(config.input_capacity.max(1));
        let join = Arc::new(Mutex::new(config.join.clone()));
        let unhandled = Arc::new(AtomicUsize::new(0));
        let direct = Direct::new(config.shortcut.clone(), &outbox_tx, unhandled.clone());
        let handle = ControlHandle {
            outbox: outbox_tx,
            join: join.clone(),
            unhandled,
        };
        let links = Links {
            outbox: outbox_rx,
            inputs: input_tx,
            direct: Arc::new(direct),
        };
        let task = tokio::spawn(run(config, join, connector, links));
        ControlChannel {
            handle,
            inputs: input_rx,
            task,
        }
    }
}

/// The task's ends of the two queues.
pub(super) struct Links {
    pub outbox: mpsc::Receiver<Outgoing>,
    pub inputs: mpsc::Sender<ControlInput>,
    pub direct: Arc<Direct>,
}

impl Links {
    /// Runs `future` while not joined: drains (and drops) events so that
    /// senders never block, and stops when the runner is gone.
    pub(crate) async fn offline<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Some(output),
                outgoing = self.outbox.recv() => match outgoing {
                    // Not connected: nothing to leave, the client just ends.
                    Some(Outgoing::Leave) | None => return None,
                    Some(outgoing) => drop_offline(&outgoing),
                },
                () = self.inputs.closed() => return None,
            }
        }
    }
}

fn drop_offline(outgoing: &Outgoing) {
    if let Some(event) = outgoing.event() {
        tracing::debug!(event = event.kind(), "not joined: event dropped");
    }
}

/// After a lost connection: the controls already read are still the
/// runner's to act on (an approval stays valid); then it hears the channel
/// is gone. False when the runner is gone.
async fn hand_over(links: &mut Links, pending: VecDeque<ControlInput>, joined: bool) -> bool {
    let inputs = pending
        .into_iter()
        .chain(joined.then_some(ControlInput::Disconnected));
    for input in inputs {
        let to_runner = links.inputs.clone();
        links.direct.giving();
        if !matches!(links.offline(to_runner.send(input)).await, Some(Ok(()))) {
            return false;
        }
    }
    true
}

async fn run<C: Connector>(
    config: ControlConfig,
    join: Arc<Mutex<JoinInfo>>,
    mut connector: C,
    mut links: Links,
) {
    let url = endpoint::socket_url(&config.url, config.token.as_deref());
    let shown = endpoint::redacted_url(&config.url);
    let timing = config.timing.clone();
    let mut attempt = 0usize;
    let mut sessions = 0u64;
    loop {
        // Why this attempt failed, for the state line (report collapses them).
        let failure: String;
        let connect = tokio::time::timeout(timing.connect_timeout, connector.connect(&url));
        let Some(connected) = links.offline(connect).await else {
            return;
        };
        match connected {
            Ok(Ok(ws)) => {
                info!(url = %shown, "connected to kandan");
                let join_info = || join.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let ended =
                    connection::run(ws, &timing, join_info, &mut links, &mut sessions).await;
                match ended {
                    Ended::Stopped => return,
                    Ended::Lost {
                        ever_joined,
                        joined,
                        reason,
                        pending,
                    } => {
                        info!(url = %shown, %reason, "connection to kandan lost");
                        if ever_joined {
                            attempt = 0;
                        }
                        failure = reason;
                        if !hand_over(&mut links, pending, joined).await {
                            return;
                        }
                    }
                }
            }
            Ok(Err(error)) => {
                if let Some(mut refusal) = super::Refusal::of(&error, &config.url) {
                    if config.token.as_deref().is_none_or(str::is_empty) {
                        refusal = refusal.without_token();
                    }
                    let inputs = links.inputs.clone();
                    let _ = links
                        .offline(inputs.send(ControlInput::Refused(refusal)))
                        .await;
                    return;
                }
                // Once per outage on stderr (the state line), every time here.
                tracing::debug!(url = %shown, %error, "cannot connect to kandan");
                failure = error.to_string();
            }
            Err(_) => {
                tracing::debug!(url = %shown, "connecting to kandan timed out");
                failure = format!("no answer within {:?}", timing.connect_timeout);
            }
        }
        let delay = timing.reconnect.delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::debug!(?delay, attempt, "reconnecting");
        let retry = ControlInput::Reconnecting {
            attempt,
            delay,
            reason: failure,
        };
        let inputs = links.inputs.clone();
        if !matches!(links.offline(inputs.send(retry)).await, Some(Ok(()))) {
            return;
        }
        if links.offline(tokio::time::sleep(delay)).await.is_none() {
            return;
        }
    }
}
