//! Leaving Kandan when the command ends or a signal comes (PROTOCOL.md
//! section 9): forwarded sockets closed with 1001 (while their servers still
//! run), the command's tree ended, `port_forward_closed` for every reported
//! port that no longer listens (no debounce window), `phx_leave`, a normal
//! close, all within 2 s.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use super::Runner;
use crate::pipeline::CandidateEvent;
use crate::supervise::{self, RootCommand, RunnerStop, Signals};
use crate::trees::Finisher;

/// The whole shutdown, from the stop to the exit: under the contract's 2 s.
const BUDGET: Duration = Duration::from_millis(1950);
/// How long the sockets' close reports may take.
const SOCKETS_CLOSED: Duration = Duration::from_millis(150);
/// How long the final `closed` candidates may take.
const FINAL_EVENTS: Duration = Duration::from_millis(200);

/// What the main loop hands over when it stops.
pub(super) struct Ends {
    pub(crate) command: Option<RootCommand>,
    pub(crate) signals: Signals,
    pub(crate) finisher: Finisher,
    pub(crate) candidates: mpsc::Receiver<CandidateEvent>,
    pub(crate) editor_events: mpsc::UnboundedReceiver<crate::wire::Event>,
    pub(crate) instance_events: mpsc::Receiver<super::instances::Queued>,
    pub(crate) client: JoinHandle<()>,
}

impl Runner {
    /// Shuts down and returns the exit code (the command's status).
    pub(super) async fn shut_down(&mut self, stop: RunnerStop, mut ends: Ends) -> i32 {
        let deadline = Instant::now() + BUDGET;

        // Every forwarded socket closes with 1001 and reports it itself.
        self.forwarder.shut_down();
        self.forwarder.sockets_closed(SOCKETS_CLOSED).await;

        // The command's tree, the editors and the instances end side by side.
        let editors = async {
            if let Ok(editors) = &self.editors {
                editors.stop_all().await;
            }
        };
        let finish = supervise::finish(ends.command.take(), stop, &ends.signals);
        let instances = timeout_at(deadline, self.stop_instances());
        let (code, (), _) = tokio::join!(finish, editors, instances);
        while let Ok(event) = ends.editor_events.try_recv() {
            self.send(event).await;
        }
        while let Ok(emitted) = ends.instance_events.try_recv() {
            self.on_instance_event(emitted).await;
        }

        // The final `closed` candidates become `port_forward_closed`.
        ends.finisher.finish().await;
        let events_by = deadline.min(Instant::now() + FINAL_EVENTS);
        while let Ok(Some(event)) = timeout_at(events_by, ends.candidates.recv()).await {
            self.on_candidate(event).await;
        }

        match timeout_at(deadline, self.handle.leave()).await {
            Ok(Ok(())) => {
                if timeout_at(deadline, &mut ends.client).await.is_err() {
                    tracing::warn!("leaving kandan timed out");
                    ends.client.abort();
                }
            }
            _ => ends.client.abort(),
        }
        code
    }
}
