//! Forwarding one HTTP request to an approved local port over HTTP/1.1.
//!
//! One TCP connection per request, no pool: measured here (release build),
//! a forwarded GET takes ~180 us of which the loopback connect is ~80 us,
//! small beside the round trip through Kandan; and a fresh connection can
//! never be a stale keep-alive one that a restarted dev server closed.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::{ForwardConfig, ForwardError, ForwardOutput, HttpRequest, PortGate, dial, headers};

/// Runs one request to completion, emitting its outputs (a response, or
/// an `HttpError`).
pub(super) async fn forward(
    req: HttpRequest,
    gate: Arc<dyn PortGate>,
    config: Arc<ForwardConfig>,
    out: mpsc::Sender<ForwardOutput>,
) {
    let span = tracing::info_span!(
        "forward_http",
        request_id = %req.request_id,
        port = req.port,
        method = %req.method,
    );
    async move {
        let request_id = req.request_id.clone();
        if let Err(err) = exchange(req, &*gate, &config, &out).await {
            tracing::info!(code = %err.code(), error = %err.message(), "forward failed");
            let _ = out
                .send(ForwardOutput::HttpError {
                    request_id,
                    code: err.code(),
                    message: err.message(),
                })
                .await;
        }
    }
    .instrument(span)
    .await;
}

/// Builds the upstream request from the control, refusing bad input and
/// bodies over the limit before anything is sent.
fn build_request(
    req: &HttpRequest,
    config: &ForwardConfig,
) -> Result<http::Request<Full<Bytes>>, ForwardError> {
    if req.body.len() > config.max_request_body {
        return Err(ForwardError::RequestTooLarge {
            len: req.body.len(),
            limit: config.max_request_body,
        });
    }
    let method = http::Method::from_bytes(req.method.as_bytes()).map_err(|_| {
        ForwardError::InvalidRequest {
            what: "method",
            detail: format!("{:?}", req.method),
        }
    })?;
    let target = path_and_query(&req.path, req.query_string.as_deref())?;
    let mut map: HeaderMap = headers::parse(&req.headers)?;
    headers::strip_hop_by_hop(&mut map);
    // The body is whole here: hyper sets the length, and there is nothing
    // to wait for behind an `Expect: 100-continue`.
    map.remove(header::CONTENT_LENGTH);
    map.remove(header::EXPECT);
    headers::localize(&mut map, req.port);
    let mut request = http::Request::builder()
        .method(method)
        .uri(target)
        .body(Full::new(req.body.clone()))
        .map_err(|err| ForwardError::InvalidRequest {
            what: "request",
            detail: err.to_string(),
        })?;
    *request.headers_mut() = map;
    Ok(request)
}

/// The origin-form request target. A path must start with `/`, so a
/// control can never name another host in an absolute-form target.
pub(super) fn path_and_query(
    path: &str,
    query: Option<&str>,
) -> Result<PathAndQuery, ForwardError> {
    if !path.starts_with('/') {
        return Err(ForwardError::InvalidRequest {
            what: "path",
            detail: format!("{path:?} does not start with '/'"),
        });
    }
    let query = query.map(|q| q.strip_prefix('?').unwrap_or(q));
    let target = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    target
        .parse::<PathAndQuery>()
        .map_err(|err| ForwardError::InvalidRequest {
            what: "path",
            detail: format!("{target:?}: {err}"),
        })
}

/// Aborts the spawned connection task when the exchange ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(
    req: HttpRequest,
    gate: &dyn PortGate,
    config: &ForwardConfig,
    out: &mpsc::Sender<ForwardOutput>,
) -> Result<(), ForwardError> {
    let request = build_request(&req, config)?;
    let port = req.port;
    let deadline = Instant::now() + config.overall_timeout;
    let too_slow = || ForwardError::ResponseTimeout {
        port,
        after: config.overall_timeout,
    };

    let head = async {
        let stream = dial::connect(gate, port, config.connect_timeout).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ForwardError::Http)?;
        let conn = tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        let guard = AbortOnDrop(conn.abort_handle());
        let response = sender
            .send_request(request)
            .await
            .map_err(ForwardError::Http)?;
        Ok::<_, ForwardError>((response, guard))
    };
    let (response, _guard) = timeout_at(deadline, head).await.map_err(|_| too_slow())??;

    let (parts, body) = response.into_parts();
    let mut response_headers = parts.headers;
    headers::strip_hop_by_hop(&mut response_headers);
    let status = parts.status.as_u16();
    tracing::debug!(status, "response head");

    if req.accept_streaming && is_stream(&response_headers, &body) {
        return stream(req.request_id, status, &response_headers, body, out).await;
    }

    let limit = config.max_response_body;
    let declared = response_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ForwardError::ResponseTooLarge { limit });
    }
    let collected = timeout_at(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| too_slow())?
        .map_err(|err| {
            if err.is::<LengthLimitError>() {
                ForwardError::ResponseTooLarge { limit }
            } else {
                ForwardError::ResponseBody(err)
            }
        })?;
    let _ = out
        .send(ForwardOutput::HttpResponse {
            request_id: req.request_id,
            status,
            headers: headers::to_pairs(&response_headers),
            body: collected.to_bytes(),
            streaming: false,
        })
        .await;
    Ok(())
}

/// Server-sent events and bodies of unknown length stream; a body that
/// is already known to be empty (HEAD, 204, 304) never does.
fn is_stream(headers: &HeaderMap, body: &Incoming) -> bool {
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
/// bounded because every send waits for room in the bounded output
/// channel, which in turn stops reading from the local server.
async fn stream(
    request_id: String,
    status: u16,
    response_headers: &HeaderMap,
    mut body: Incoming,
    out: &mpsc::Sender<ForwardOutput>,
) -> Result<(), ForwardError> {
    let head = ForwardOutput::HttpResponse {
        request_id: request_id.clone(),
        status,
        headers: headers::to_pairs(response_headers),
        body: Bytes::new(),
        streaming: true,
    };
    if out.send(head).await.is_err() {
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
        let chunk = ForwardOutput::HttpChunk {
            request_id: request_id.clone(),
            seq,
            body: data,
            done,
        };
        if out.send(chunk).await.is_err() || done {
            tracing::debug!(chunks = seq + 1, "stream ended");
            return Ok(());
        }
        seq += 1;
    }
}
