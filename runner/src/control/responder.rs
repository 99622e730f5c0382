//! How a task answers Kandan: a [`Responder`] per session puts its events
//! on the connection's outbox, tagged with the session they answer.

use tokio::sync::mpsc;

use super::client::{Charged, Outgoing, Session};
#[cfg(test)]
use crate::wire::Event;

/// Answers to controls of one session, straight to the connection's
/// writer. Once that session has ended (the channel was lost or rejoined)
/// its answers are dropped there: Kandan forgot the request with it.
#[derive(Clone, Debug)]
pub(crate) struct Responder {
    outbox: mpsc::Sender<Outgoing>,
    session: Session,
}

impl Responder {
    pub(super) fn new(outbox: mpsc::Sender<Outgoing>, session: Session) -> Self {
        Responder { outbox, session }
    }

    /// Sends one answer; waits while the outbox is full. False once the
    /// client has stopped: nothing more will reach Kandan.
    pub(crate) async fn send(&self, event: impl Into<Charged>) -> bool {
        let sent = self
            .outbox
            .send(Outgoing::Reply(self.session, event.into()));
        if sent.await.is_err() {
            tracing::debug!("control client stopped; answer dropped");
            return false;
        }
        true
    }

    /// A responder whose answers a test reads from the receiver.
    #[cfg(test)]
    pub(crate) fn for_tests() -> (Responder, TestAnswers) {
        let (outbox, rx) = mpsc::channel(1024);
        (
            Responder {
                outbox,
                session: Session(1),
            },
            TestAnswers(rx),
        )
    }
}

/// What a test [`Responder`] was given.
#[cfg(test)]
pub(crate) struct TestAnswers(mpsc::Receiver<Outgoing>);

#[cfg(test)]
impl TestAnswers {
    /// The next answer, with its budget charge.
    pub(crate) async fn next_charged(&mut self) -> Option<Charged> {
        loop {
            match self.0.recv().await? {
                Outgoing::Reply(_, charged) | Outgoing::Tracked(charged, _) => {
                    return Some(charged);
                }
                Outgoing::State(event) => return Some(event.into()),
                Outgoing::Leave => continue,
            }
        }
    }

    /// The next answer.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        self.next_charged().await.map(|charged| charged.event)
    }

    /// An answer already waiting, if any.
    pub(crate) fn try_next_charged(&mut self) -> Option<Charged> {
        match self.0.try_recv().ok()? {
            Outgoing::Reply(_, charged) | Outgoing::Tracked(charged, _) => Some(charged),
            Outgoing::State(event) => Some(event.into()),
            Outgoing::Leave => None,
        }
    }
}
