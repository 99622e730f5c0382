//! One WebSocket connection: join the channel, heartbeat, route frames,
//! rejoin on channel errors. Returns when the socket is gone.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{debug, info, warn};

use super::client::{Ack, ControlInput, JoinInfo, Links, Session, Timing};
use super::frame::{self, Empty, Head, RefCounter};
use super::in_frame::{IncomingFrame, Payload, PhxReply};
use super::out_frame::FrameWriter;
use super::shortcut::Direct;
use crate::wire::{Control, ControlIds, ErrorCode, Failure};

/// How a connection ended.
pub(super) enum Ended {
    /// Every handle or the input receiver was dropped.
    Stopped,
    /// The socket is gone (or judged dead).
    Lost {
        /// The channel was joined at least once: the reconnect schedule restarts.
        ever_joined: bool,
        /// The runner was told `Joined` and not yet `Disconnected`.
        joined: bool,
        reason: String,
        /// Inputs read but not yet taken by the runner, in order.
        pending: VecDeque<ControlInput>,
    },
}

/// The channel's state on this socket.
enum Channel {
    /// `phx_join` sent with this ref, no reply yet.
    Joining { join_ref: String, deadline: Instant },
    Joined {
        join_ref: String,
        session: Session,
        ready: bool,
    },
    /// Waiting to rejoin; `join_ref` is the last (now stale) one.
    Waiting { join_ref: String, until: Instant },
}

impl Channel {
    fn join_ref(&self) -> &str {
        match self {
            Channel::Joining { join_ref, .. }
            | Channel::Joined { join_ref, .. }
            | Channel::Waiting { join_ref, .. } => join_ref,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Channel::Joining { deadline, .. } => Some(*deadline),
            Channel::Waiting { until, .. } => Some(*until),
            Channel::Joined { .. } => None,
        }
    }
}

/// Why the loop must stop.
enum ConnStop {
    Stopped,
    /// The runner stops: leave the channel first.
    Leave,
    Lost(String),
}

/// Most events written with one flush (see `Conn::on_outbox`).
const OUT_BATCH: usize = 64;

/// Most tracked pushes waiting for a reply.
const TRACKED: usize = 65_536;

/// How long the runner waits for Kandan's answers to its `phx_leave` and
/// to its close frame: the whole shutdown must take under 2 s.
const LEAVE_WAIT: Duration = Duration::from_millis(250);

struct Conn<'a, S> {
    ws: WebSocketStream<S>,
    timing: &'a Timing,
    topic: String,
    refs: RefCounter,
    channel: Channel,
    rejoin_attempt: usize,
    heartbeat_ref: Option<(String, Instant)>,
    pending: VecDeque<ControlInput>,
    ever_joined: bool,
    sessions: &'a mut u64,
    /// Tracked pushes waiting for their `phx_reply`, by ref (at most
    /// [`TRACKED`]; an older one is then forgotten and sent again after the
    /// next reconnect).
    tracked: BTreeMap<u64, Ack>,
    writer: FrameWriter,
    /// The controls that skip the main loop (see `super::shortcut`).
    direct: Arc<Direct>,
}

pub(super) async fn run<S, J>(
    ws: WebSocketStream<S>,
    timing: &Timing,
    join_info: J,
    links: &mut Links,
    sessions: &mut u64,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
    J: Fn() -> JoinInfo,
{
    let topic = format!("runner:{}", join_info().runner_id);
    let mut conn = Conn {
        ws,
        timing,
        topic,
        refs: RefCounter::default(),
        channel: Channel::Waiting {
            join_ref: String::new(),
            until: Instant::now(),
        },
        rejoin_attempt: 0,
        heartbeat_ref: None,
        pending: VecDeque::new(),
        ever_joined: false,
        sessions,
        tracked: BTreeMap::new(),
        writer: FrameWriter::default(),
        direct: links.direct.clone(),
    };
    let stop = match conn.join(&join_info).await {
        Ok(()) => conn.serve(&join_info, links).await,
        Err(stop) => stop,
    };
    match stop {
        ConnStop::Stopped | ConnStop::Leave => {
            if matches!(stop, ConnStop::Leave) {
                conn.leave().await;
            }
            conn.close_normally().await;
            Ended::Stopped
        }
        ConnStop::Lost(reason) => Ended::Lost {
            ever_joined: conn.ever_joined,
            joined: matches!(conn.channel, Channel::Joined { .. }),
            reason,
            pending: conn.pending,
        },
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    async fn serve(&mut self, join_info: &impl Fn() -> JoinInfo, links: &mut Links) -> ConnStop {
        let period = self.timing.heartbeat_interval;
        let mut heartbeat_at = Instant::now() + period;
        // One timer for every deadline, moved when the next one changes:
        // a timer per deadline was made again on every pass of the loop,
        // several passes per forwarded request.
        let timer = sleep_until(heartbeat_at);
        tokio::pin!(timer);
        loop {
            let wake = self.next_wake(heartbeat_at);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let result = tokio::select! {
                // Reading pauses while the runner has not taken what was read.
                message = self.ws.next(), if self.pending.is_empty() => match message {
                    None => Err(ConnStop::Lost("socket closed".into())),
                    Some(Err(error)) => Err(ConnStop::Lost(format!("socket error: {error}"))),
                    Some(Ok(message)) => self.on_message(message).await,
                },
                permit = links.inputs.reserve(), if !self.pending.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(input) = self.pending.pop_front() {
                            links.direct.giving();
                            permit.send(input);
                        }
                        Ok(())
                    }
                    Err(_) => Err(ConnStop::Stopped),
                },
                outgoing = links.outbox.recv() => match outgoing {
                    Some(outgoing) => self.on_outbox(outgoing, &mut links.outbox).await,
                    None => Err(ConnStop::Stopped),
                },
                () = &mut timer => self.on_wake(wake, &mut heartbeat_at, join_info).await,
            };
            if let Err(stop) = result {
                return stop;
            }
        }
    }

    /// The next moment the loop acts without input: a heartbeat due, the
    /// last one's reply overdue, or the channel's (re)join deadline.
    fn next_wake(&self, heartbeat_at: Instant) -> Instant {
        let mut wake = heartbeat_at;
        if let Some((_, deadline)) = &self.heartbeat_ref {
            wake = wake.min(*deadline);
        }
        if let Some(deadline) = self.channel.deadline() {
            wake = wake.min(deadline);
        }
        wake
    }

    /// Acts on what is due at `wake`; the deadline `wake` was taken from
    /// always moves or ends the loop, so the timer never fires twice for it.
    async fn on_wake(
        &mut self,
        wake: Instant,
        heartbeat_at: &mut Instant,
        join_info: &impl Fn() -> JoinInfo,
    ) -> Result<(), ConnStop> {
        if self
            .heartbeat_ref
            .as_ref()
            .is_some_and(|(_, deadline)| *deadline <= wake)
        {
            return Err(ConnStop::Lost("no heartbeat reply".into()));
        }
        if self
            .channel
            .deadline()
            .is_some_and(|deadline| deadline <= wake)
        {
            self.on_channel_deadline(join_info).await?;
        }
        if *heartbeat_at <= wake {
            // A late heartbeat delays the next one rather than bunching them.
            *heartbeat_at = Instant::now() + self.timing.heartbeat_interval;
            self.send_heartbeat().await?;
        }
        Ok(())
    }

    /// Sends `phx_leave` on a joined channel and waits briefly for its
    /// reply, so Kandan has handled it before the socket closes.
    async fn leave(&mut self) {
        let Channel::Joined { join_ref, .. } = &self.channel else {
            return;
        };
        let msg_ref = self.refs.next_ref();
        let head = Head::new(Some(join_ref), Some(&msg_ref), &self.topic, "phx_leave");
        let frame = frame::frame_of(head, &Empty {}, 64);
        debug!(topic = %self.topic, "leaving");
        if self.write_frame(frame).await.is_err() {
            return;
        }
        let replied = async {
            while let Some(Ok(message)) = self.ws.next().await {
                if let Message::Text(text) = message
                    && let Ok(frame) = IncomingFrame::parse(&text)
                    && frame.event() == "phx_reply"
                    && frame.msg_ref() == Some(msg_ref.as_str())
                {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LEAVE_WAIT, replied).await;
    }

    /// Closes with code 1000 and waits briefly for Kandan's close frame.
    async fn close_normally(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "kandan-runner stopping".into(),
        };
        if self.ws.close(Some(frame)).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(LEAVE_WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    async fn join(&mut self, join_info: &impl Fn() -> JoinInfo) -> Result<(), ConnStop> {
        let join_ref = self.refs.next_ref();
        let head = Head::new(Some(&join_ref), Some(&join_ref), &self.topic, "phx_join");
        let frame = frame::frame_of(head, &join_info(), 256);
        debug!(topic = %self.topic, %join_ref, "joining");
        self.channel = Channel::Joining {
            join_ref,
            deadline: Instant::now() + self.timing.join_timeout,
        };
        self.write_frame(frame).await
    }

    async fn send_heartbeat(&mut self) -> Result<(), ConnStop> {
        if self.heartbeat_ref.is_some() {
            // The previous one is still unanswered; its deadline decides.
            return Ok(());
        }
        let msg_ref = self.refs.next_ref();
        self.heartbeat_ref = Some((
            msg_ref.clone(),
            Instant::now() + self.timing.heartbeat_timeout,
        ));
        let frame = frame::frame_of(
            Head::new(None, Some(&msg_ref), "phoenix", "heartbeat"),
            &Empty {},
            48,
        );
        self.write_frame(frame).await
    }

    /// Leaves the joined state and schedules the next join attempt.
    fn schedule_rejoin(&mut self) {
        if let Channel::Joined { .. } = self.channel {
            self.pending.push_back(ControlInput::Disconnected);
        }
        let delay = self.timing.rejoin.delay(self.rejoin_attempt);
        self.rejoin_attempt = self.rejoin_attempt.saturating_add(1);
        let join_ref = self.channel.join_ref().to_owned();
        self.channel = Channel::Waiting {
            join_ref,
            until: Instant::now() + delay,
        };
    }

    async fn on_channel_deadline(
        &mut self,
        join_info: &impl Fn() -> JoinInfo,
    ) -> Result<(), ConnStop> {
        match self.channel {
            Channel::Joining { .. } => {
                warn!(topic = %self.topic, "join timed out");
                self.schedule_rejoin();
                Ok(())
            }
            Channel::Waiting { .. } => self.join(join_info).await,
            Channel::Joined { .. } => Ok(()),
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), ConnStop> {
        match message {
            Message::Text(text) => match IncomingFrame::read(&text) {
                Ok(frame) => self.on_frame(frame).await,
                Err(error) => self.refuse_frame(&error.to_string()).await,
            },
            Message::Binary(_) => self.refuse_frame("binary frames are not used").await,
            Message::Close(close) => {
                let reason = match close {
                    Some(close) => format!(
                        "closed by kandan: {} {}",
                        u16::from(close.code),
                        close.reason
                    ),
                    None => "closed by kandan".into(),
                };
                Err(ConnStop::Lost(reason))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    /// A frame that is not Phoenix v2: answered like a malformed control.
    async fn refuse_frame(&mut self, problem: &str) -> Result<(), ConnStop> {
        warn!(problem, "malformed frame from kandan");
        let message = format!("malformed frame: {problem}");
        let failure = Failure::new(ErrorCode::InvalidControl, message);
        self.push_now(ControlIds::default().error(failure)).await
    }

    async fn on_frame(&mut self, frame: IncomingFrame<'_, Payload<'_>>) -> Result<(), ConnStop> {
        if frame.topic() == "phoenix" {
            if frame.event() == "phx_reply"
                && let Some((pending, _)) = &self.heartbeat_ref
                && frame.msg_ref() == Some(pending.as_str())
            {
                self.heartbeat_ref = None;
            }
            return Ok(());
        }
        if frame.topic() != self.topic {
            debug!(topic = %frame.topic(), "frame for another topic ignored");
            return Ok(());
        }
        // Pushes from an earlier join of this topic (broadcasts carry no joinRef).
        if let Some(join_ref) = frame.join_ref()
            && join_ref != self.channel.join_ref()
        {
            debug!(event = %frame.event(), "stale joinRef: frame dropped");
            return Ok(());
        }
        match frame.event() {
            "phx_reply" => self.on_reply(&frame),
            "phx_error" | "phx_close" => {
                if matches!(
                    self.channel,
                    Channel::Joined { .. } | Channel::Joining { .. }
                ) {
                    warn!(topic = %self.topic, event = %frame.event(), "channel failed, rejoining");
                    self.schedule_rejoin();
                }
                Ok(())
            }
            "control" => self.on_control(frame.into_payload()).await,
            other => {
                debug!(event = other, "unexpected event ignored");
                Ok(())
            }
        }
    }

    fn on_reply(&mut self, frame: &IncomingFrame<'_, Payload<'_>>) -> Result<(), ConnStop> {
        // Only a `control` push's payload is read as a control.
        let Some(payload) = frame.raw() else {
            return Ok(());
        };
        // Any answer means Kandan has the event (an error would not change
        // by sending it again).
        let msg_ref = frame.msg_ref().and_then(|r| r.parse::<u64>().ok());
        if let Some(ack) = msg_ref.and_then(|r| self.tracked.remove(&r)) {
            self.pending.push_back(ControlInput::Acked(ack));
            return Ok(());
        }
        let Channel::Joining { join_ref, .. } = &self.channel else {
            // A reply to an untracked push: read only to log a refusal.
            if tracing::enabled!(tracing::Level::DEBUG) {
                let reply = PhxReply::read(payload);
                if !reply.ok() {
                    debug!(reason = %reply.reason(), "event refused by kandan");
                }
            }
            return Ok(());
        };
        let reply = PhxReply::read(payload);
        if frame.msg_ref() != Some(join_ref.as_str()) {
            return Ok(());
        }
        if reply.ok() {
            *self.sessions += 1;
            let session = Session(*self.sessions);
            info!(topic = %self.topic, "joined");
            self.channel = Channel::Joined {
                join_ref: join_ref.clone(),
                session,
                ready: false,
            };
            self.rejoin_attempt = 0;
            self.ever_joined = true;
            self.pending.push_back(ControlInput::Joined(session));
        } else {
            warn!(topic = %self.topic, reason = %reply.reason(), "join refused");
            self.schedule_rejoin();
        }
        Ok(())
    }

    async fn on_control(&mut self, payload: Payload<'_>) -> Result<(), ConnStop> {
        let Channel::Joined { session, .. } = self.channel else {
            debug!("control before join dropped");
            return Ok(());
        };
        let parsed = match payload {
            Payload::Control(control) => Ok(control),
            Payload::Raw(raw) => Control::parse(raw),
        };
        match parsed {
            Ok(control) => {
                let queued = !self.pending.is_empty();
                if let Some(control) = self.direct.take(session, control, queued) {
                    let control = Box::new(control);
                    self.pending
                        .push_back(ControlInput::Control { session, control });
                }
                Ok(())
            }
            Err(rejection) => {
                warn!(control_type = rejection.ids.control_type, code = %rejection.code(), problem = %rejection.problem, "control refused");
                self.push_now(rejection.to_event()).await
            }
        }
    }
}

mod outbox;
