//! A response that streams: server-sent events and bodies of unknown
//! length go to Kandan as a head, then chunks as they arrive.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use super::ForwardError;
use crate::control::budget::{Budget, wire_cost};
use crate::control::{Charged, Responder};
use crate::wire::{Event, ForwardHttpResponse, ForwardHttpResponseChunk, Headers};

/// Server-sent events and bodies of unknown length stream; a body that
/// is already known to be empty (HEAD, 204, 304) never does.
pub(super) fn is_stream(headers: &HeaderMap, body: &Incoming) -> bool {
    if body.is_end_stream() {
        return false;
    }
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    sse || body.size_hint().exact().is_none()
}

/// Sends the head, then each piece of data as it arrives. Memory stays
/// bounded because every chunk waits for room in the event budget, which
/// in turn stops reading from the local server.
pub(super) async fn stream(
    request_id: String,
    status: u16,
    response_headers: HeaderMap,
    mut body: Incoming,
    budget: &Budget,
    to: &Responder,
) -> Result<(), ForwardError> {
    let head = Event::ForwardHttpResponse(ForwardHttpResponse {
        request_id: request_id.clone(),
        status,
        headers: Headers(response_headers),
        body: Default::default(),
        streaming: Some(true),
    });
    if !to.send(head).await {
        return Ok(());
    }
    let mut seq = 0u64;
    loop {
        let (data, done) = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => (data, false),
                // Empty data and trailers carry nothing for Kandan.
                _ => continue,
            },
            Some(Err(err)) => return Err(ForwardError::ResponseBody(Box::new(err))),
            None => (Bytes::new(), true),
        };
        // Waiting for room here stops reading from the local server.
        let charge = budget.charge(wire_cost(data.len())).await;
        let chunk = Event::ForwardHttpResponseChunk(ForwardHttpResponseChunk {
            request_id: request_id.clone(),
            seq,
            body: data.into(),
            done,
        });
        let sent = to.send(Charged {
            event: chunk,
            charge,
        });
        if !sent.await || done {
            tracing::debug!(chunks = seq + 1, "stream ended");
            return Ok(());
        }
        seq += 1;
    }
}
