//! What the connection writes: the runner's events by the outbound policy
//! (see `client`), batched, each frame built as it is written.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::debug;

use super::super::client::{Charged, Outgoing};
use super::super::frame::{self, Head};
use super::super::out_frame::OutFrame;
use super::{Channel, Conn, ConnStop, OUT_BATCH, TRACKED};
use crate::wire::Event;

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// Writes a frame now.
    pub(super) async fn write_frame(&mut self, frame: OutFrame) -> Result<(), ConnStop> {
        self.queue(frame).await?;
        self.flush().await
    }

    /// Queues a frame; [`Self::flush`] writes it (a large one, or a full
    /// batch, is written at once).
    async fn queue(&mut self, frame: OutFrame) -> Result<(), ConnStop> {
        self.writer
            .queue(&mut self.ws, frame)
            .await
            .map_err(|error| ConnStop::Lost(format!("socket write failed: {error}")))
    }

    async fn flush(&mut self) -> Result<(), ConnStop> {
        self.writer
            .flush(&mut self.ws)
            .await
            .map_err(|error| ConnStop::Lost(format!("socket write failed: {error}")))
    }

    /// Answers the current session directly (the runner is not involved).
    pub(super) async fn push_now(&mut self, event: Event) -> Result<(), ConnStop> {
        if let Channel::Joined { .. } = self.channel {
            self.push(event.into()).await?;
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Queues an event's frame (see [`Self::queue`]). Its body may be
    /// large: the event is dropped once its frame exists, and its charge
    /// once the frame is written or in the batch (which holds small frames
    /// only).
    async fn push(&mut self, charged: Charged) -> Result<(), ConnStop> {
        let Charged { event, charge } = charged;
        let msg_ref = self.refs.next_ref();
        let join_ref = self.channel.join_ref();
        let frame = frame::event_frame(Head::push(join_ref, &msg_ref, &self.topic), event);
        let written = self.queue(frame).await;
        drop(charge);
        written
    }

    /// Writes `first` and whatever else the outbox already holds (up to
    /// [`OUT_BATCH`] events) with one flush: under load, answers that are
    /// ready together leave in one write instead of a write each.
    pub(super) async fn on_outbox(
        &mut self,
        first: Outgoing,
        outbox: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), ConnStop> {
        let mut result = self.on_outgoing(first).await;
        for _ in 1..OUT_BATCH {
            if result.is_err() {
                break;
            }
            match outbox.try_recv() {
                Ok(next) => result = self.on_outgoing(next).await,
                Err(_) => break,
            }
        }
        // What was queued before a `Leave` still goes out.
        let flushed = self.flush().await;
        result.and(flushed)
    }

    /// The outbound policy of the module docs in `client`.
    async fn on_outgoing(&mut self, outgoing: Outgoing) -> Result<(), ConnStop> {
        let Channel::Joined { session, ready, .. } = &mut self.channel else {
            match outgoing.event() {
                Some(event) => debug!(event = event.kind(), "not joined: event dropped"),
                None => return Err(ConnStop::Leave),
            }
            return Ok(());
        };
        let (charged, current, ack) = match outgoing {
            Outgoing::State(event) => (Charged::from(event), true, None),
            Outgoing::Tracked(charged, ack) => (charged, true, Some(ack)),
            Outgoing::Reply(of, charged) => (charged, of == *session, None),
            Outgoing::Leave => return Err(ConnStop::Leave),
        };
        let is_ready = matches!(charged.event, Event::RunnerReady(_));
        if !current || !(*ready || is_ready) {
            debug!(
                event = charged.event.kind(),
                current, "stale or before runner_ready: event dropped"
            );
            return Ok(());
        }
        *ready = true;
        if let Some(ack) = ack {
            // The ref `push` is about to take.
            self.tracked.insert(self.refs.peek_next(), ack);
            if self.tracked.len() > TRACKED {
                self.tracked.pop_first();
            }
        }
        self.push(charged).await
    }
}
