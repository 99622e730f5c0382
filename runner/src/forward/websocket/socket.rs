//! One socket's task: messages both ways until either side closes, the
//! runner stops it, or it breaks; then the close handshake and the one
//! `forward_websocket_closed` Kandan gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::super::{ForwardError, Local, TaskStop};
use super::handshake::connect;
use super::{Inner, Ws};
use crate::control::budget::{Budget, wire_cost};
use crate::control::{Charged, Responder};
use crate::wire::{
    ErrorCode, Event, Failure, ForwardWebsocketClosed, ForwardWebsocketMessage,
    ForwardWebsocketOpen, ForwardWebsocketOpened, Opcode,
};

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

pub(super) fn failure(err: &ForwardError) -> Failure {
    Failure::new(err.code(), err.message())
}

/// One socket's task: what it needs to answer Kandan.
pub(super) struct Socket<'a> {
    pub(super) inner: &'a Inner,
    pub(super) to: &'a Responder,
    pub(super) socket_id: &'a str,
    pub(super) port: Option<u16>,
    /// Its last event is out (or will never be).
    pub(super) reported: AtomicBool,
}

impl Socket<'_> {
    async fn emit(&self, event: impl Into<Charged>) {
        self.to.send(event).await;
    }

    pub(super) fn mark_reported(&self) {
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

    pub(super) async fn run(
        &self,
        open: &ForwardWebsocketOpen,
        local: &Local,
        mut frames: mpsc::Receiver<(Message, usize)>,
        queued: Arc<AtomicUsize>,
        mut stop: oneshot::Receiver<TaskStop>,
    ) {
        let connected = tokio::select! {
            result = connect(self.inner, open, local) => result,
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
        let end = tokio::select! {
            biased;
            why = &mut stop => End::TaskStop(why.unwrap_or(TaskStop::Silent)),
            end = self.to_kandan(&mut stream) => end,
            end = to_local(&mut sink, &mut frames, &queued) => end,
        };
        self.finish(end, &mut sink, &mut stream, &mut frames).await;
        tracing::debug!("websocket task ended");
    }

    /// The local server's messages to Kandan until it closes or breaks.
    async fn to_kandan(&self, stream: &mut SplitStream<Ws>) -> End {
        // This socket's messages waiting for Kandan, on top of the shared budget.
        let to_kandan = Budget::new(self.inner.config.ws_queue_bytes);
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
                Some(Err(err)) => return End::Failed(ForwardError::WebSocket(Box::new(err))),
                None => return End::Vanished,
            };
            // Waiting for room stops reading from the local server.
            let cost = wire_cost(body.len());
            let mut charge = to_kandan.charge(cost).await;
            charge.merge(self.inner.config.event_budget.charge(cost).await);
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
    }

    /// Reports how the socket ended and, when the runner or Kandan ended
    /// it, closes it with the local server first.
    async fn finish(
        &self,
        end: End,
        sink: &mut SplitSink<Ws, Message>,
        stream: &mut SplitStream<Ws>,
        frames: &mut mpsc::Receiver<(Message, usize)>,
    ) {
        match end {
            End::ServerClosed(frame) => {
                tracing::debug!(?frame, "local server closed");
                // Sends tungstenite's queued close reply.
                let _ = tokio::time::timeout(self.inner.config.ws_close_grace, sink.flush()).await;
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
            End::TaskStop(why) => self.close_local(why, sink, stream, frames).await,
        }
    }

    /// The runner or Kandan stopped the socket: the close handshake with
    /// the local server, and the report.
    async fn close_local(
        &self,
        why: TaskStop,
        sink: &mut SplitSink<Ws, Message>,
        stream: &mut SplitStream<Ws>,
        frames: &mut mpsc::Receiver<(Message, usize)>,
    ) {
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
            // The runner stops and ends the local server right after: the
            // closing handshake first (briefly), then the report.
            let handshake = async {
                sink.send(Message::Close(Some(ours.clone()))).await?;
                close_reply(stream).await
            };
            let _ = tokio::time::timeout(SHUTDOWN_CLOSE, handshake).await;
            self.stopped(why, Some(ours)).await;
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
            close_reply(stream).await
        };
        let reply = tokio::time::timeout(self.inner.config.ws_close_grace, handshake).await;
        if let TaskStop::Closed = why {
            let frame = match reply {
                Ok(Ok(Some(frame))) => frame,
                _ => ours,
            };
            self.stopped(why, Some(frame)).await;
        }
    }
}

/// Kandan's frames to the local server, in order.
async fn to_local(
    sink: &mut SplitSink<Ws, Message>,
    frames: &mut mpsc::Receiver<(Message, usize)>,
    queued: &AtomicUsize,
) -> End {
    while let Some((message, len)) = frames.recv().await {
        queued.fetch_sub(len, Ordering::Relaxed);
        if let Err(err) = sink.send(message).await {
            if dropped(&err) {
                return End::Vanished;
            }
            return End::Failed(ForwardError::WebSocket(Box::new(err)));
        }
    }
    // The table dropped the entry, and with it this sender; the stop signal
    // that always comes with that decides how to end.
    std::future::pending::<End>().await
}

/// The local server's answer to our close frame (`None`: it just went).
async fn close_reply(
    stream: &mut SplitStream<Ws>,
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
