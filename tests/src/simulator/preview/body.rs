//! A streamed preview response body fed by `forward_http_response_chunk`s.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::warn;

use super::super::error::SimError;
use super::super::state::Shared;
use std::sync::Arc;

/// Yields the chunks of one streamed response in arrival order, ends at the
/// chunk with `done: true`, and fails if the runner goes away before that.
pub(crate) struct ChunkBody {
    pub first: Option<Bytes>,
    pub rx: mpsc::UnboundedReceiver<Value>,
    pub done: bool,
    /// Unregisters the request when the browser or the stream goes away.
    pub _guard: WaiterGuard,
}

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = SimError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SimError>>> {
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let event = match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Some(Err(SimError::StreamCut))),
                Poll::Ready(Some(event)) => event,
            };
            if event.get("type").and_then(Value::as_str) != Some("forward_http_response_chunk") {
                // A control_error mid-stream: nothing sane to append, cut it.
                warn!(%event, "unexpected event during a streamed response");
                return Poll::Ready(Some(Err(SimError::BadChunk)));
            }
            self.done = event.get("done").and_then(Value::as_bool).unwrap_or(false);
            if self.done {
                self._guard.cancel = false;
            }
            let data = event
                .get("bodyBase64")
                .and_then(Value::as_str)
                .unwrap_or("");
            match STANDARD.decode(data) {
                Ok(bytes) if !bytes.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))));
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "bad base64 in a response chunk");
                    return Poll::Ready(Some(Err(SimError::BadChunk)));
                }
            }
        }
    }
}

/// Removes a waiter registration when dropped; for an HTTP request still
/// unanswered or streaming (the browser went away), also tells the runner
/// with `forward_http_cancel`, as Kandan does.
pub(crate) struct WaiterGuard {
    pub shared: Arc<Shared>,
    pub id: String,
    /// Send `forward_http_cancel` when dropped: true until the answer is whole.
    pub cancel: bool,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.shared.remove_waiter(&self.id);
        if self.cancel {
            let cancel = serde_json::json!({"type": "forward_http_cancel", "requestId": self.id});
            // The runner may be gone already: then there is nothing to cancel.
            let _ = self.shared.send_control(cancel);
        }
    }
}
