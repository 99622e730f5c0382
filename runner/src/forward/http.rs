//! Forwarding one HTTP request to an approved local port over HTTP/1.1.
//!
//! Connections are kept alive and reused through the [`Pool`]: a fresh
//! loopback connection per request was the largest share of the runner's
//! CPU per forwarded request. A reused connection that turns out closed is
//! replaced by a fresh one once, when nothing was sent on it or the method
//! is idempotent, so a server closing idle connections costs no request.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::pool::{AbortOnDrop, Pool, Upstream};
use super::scheme::{Scheme, Schemes, Seen};
use super::sniff::{FirstByte, Sniffed};
use super::streaming::{is_stream, stream};
use super::{ForwardConfig, ForwardError, dial, headers, tls};
use crate::control::budget::wire_cost;
use crate::control::{Charged, Responder};
use crate::gate::PortGate;
use crate::wire::{ControlType, Event, ForwardHttpRequest, ForwardHttpResponse, Headers, Pieces};

/// How long a finished connection may take to be ready for the next request
/// before it is closed instead of pooled.
const READY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a port's requests share.
pub(super) struct Context {
    pub(crate) gate: Arc<dyn PortGate>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) schemes: Arc<Schemes>,
    pub(crate) config: Arc<ForwardConfig>,
}

/// Runs one request to completion and answers Kandan: a response, or a
/// `control_error`.
pub(super) async fn forward(req: ForwardHttpRequest, port: u16, to: Responder, ctx: Arc<Context>) {
    // A debug span: at the default level a span per request costs more
    // than the request's own parsing; the one info line names the request.
    let span = tracing::debug_span!(
        "forward_http",
        request_id = %req.request_id,
        port,
        method = %req.method.0,
    );
    async move {
        let request_id = req.request_id.clone();
        let method = req.method.0.clone();
        if let Err(err) = exchange(req, port, &to, &ctx).await {
            tracing::info!(%request_id, port, %method, code = %err.code(), error = %err.message(), "forward failed");
            to.send(failed(request_id, &err)).await;
        }
    }
    .instrument(span)
    .await;
}

/// The `control_error` that ends a `forward_http_request`.
pub(super) fn failed(request_id: String, err: &ForwardError) -> Event {
    let ids = ControlType::ForwardHttpRequest.ids().request(request_id);
    ids.error(err.failure())
}

/// Builds the upstream request from the control, refusing bad input and
/// bodies over the limit before anything is sent.
fn build_request(
    req: &ForwardHttpRequest,
    local: Localize,
    config: &ForwardConfig,
) -> Result<http::Request<Full<Bytes>>, ForwardError> {
    let body = &req.body.0;
    if body.len() > config.max_request_body {
        return Err(ForwardError::RequestTooLarge {
            len: body.len(),
            limit: config.max_request_body,
        });
    }
    let target = path_and_query(&req.path.0, req.query_string.as_deref())?;
    let mut map: HeaderMap = req.headers.0.clone();
    headers::strip_hop_by_hop(&mut map);
    // The body is whole here: hyper sets the length, and there is nothing
    // to wait for behind an `Expect: 100-continue`.
    map.remove(header::CONTENT_LENGTH);
    map.remove(header::EXPECT);
    match local {
        Localize::Port(port) => headers::localize(&mut map, &headers::local_host(port)),
        Localize::Editor => {
            headers::localize_host(&mut map, &HeaderValue::from_static("localhost"))
        }
    }
    let mut request = http::Request::builder()
        .method(req.method.0.clone())
        .uri(target)
        .body(Full::new(body.clone()))
        .map_err(|err| ForwardError::InvalidRequest {
            what: "request",
            detail: err.to_string(),
        })?;
    *request.headers_mut() = map;
    Ok(request)
}

/// How a request is made to look local: for a dev server's port, `Host`
/// and `Origin`; for an editor, `Host` alone (see [`headers::localize_host`]).
#[derive(Clone, Copy)]
enum Localize {
    Port(u16),
    Editor,
}

/// The origin-form request target (the path starts with `/`: a typed
/// control's [`crate::wire::UrlPath`] does).
pub(super) fn path_and_query(
    path: &str,
    query: Option<&str>,
) -> Result<PathAndQuery, ForwardError> {
    let query = query.map(|q| q.strip_prefix('?').unwrap_or(q));
    let target = || match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    // From the string's own buffer (parsing a `&str` copies it again).
    PathAndQuery::from_maybe_shared(Bytes::from(target())).map_err(|err| {
        ForwardError::InvalidRequest {
            what: "path",
            detail: format!("{:?}: {err}", target()),
        }
    })
}

/// Opens a new HTTP/1.1 connection to the first of `targets` that
/// accepts, over TLS with `tls`; also returns the first byte the server
/// will have sent.
async fn open(
    gate: &dyn PortGate,
    targets: &[IpAddr],
    port: u16,
    timeout: Duration,
    tls: bool,
) -> Result<(Upstream, FirstByte), ForwardError> {
    let (stream, addr) = dial::connect_port(gate, targets, port, timeout, tls).await?;
    let (stream, first) = Sniffed::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ForwardError::Http)?;
    let task = tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    let up = Upstream {
        sender,
        addr,
        _task: AbortOnDrop(task.abort_handle()),
    };
    Ok((up, first))
}

/// What one request needs to reach its port.
struct Route<'a> {
    gate: &'a dyn PortGate,
    req: &'a ForwardHttpRequest,
    port: u16,
    targets: &'a [IpAddr],
    schemes: &'a Schemes,
    seen: Seen,
    config: &'a ForwardConfig,
}

/// Sends `request` on a pooled connection if there is one, else on a fresh
/// one. A pooled connection that fails is retried once on a fresh
/// connection when hyper gives the request back unsent, or when the method
/// is idempotent (the server cannot have acted on it twice to any effect).
async fn send(
    route: &Route<'_>,
    request: http::Request<Full<Bytes>>,
    pooled: Option<Upstream>,
) -> Result<(http::Response<Incoming>, Upstream), ForwardError> {
    // Boxed: the fresh connection's future (dial, verify, TLS probe) is
    // large and rare; inline, every request's task would carry its size.
    let Some(mut up) = pooled else {
        return Box::pin(send_fresh(route, request)).await;
    };
    let idempotent = request.method().is_idempotent();
    let mut failed = match up.sender.try_send_request(request).await {
        Ok(response) => return Ok((response, up)),
        Err(failed) => failed,
    };
    drop(up);
    let retry = match failed.take_message() {
        Some(unsent) => unsent,
        None if idempotent => build_request(route.req, Localize::Port(route.port), route.config)?,
        None => return Err(ForwardError::Http(failed.into_error())),
    };
    tracing::debug!(error = %failed.error(), "pooled connection failed, retrying on a fresh one");
    Box::pin(send_fresh(route, retry)).await
}

/// Sends `request` on a fresh connection. When a plain one to a port whose
/// scheme is unknown is reset or closed with no answer, or answered with a
/// TLS record, the port is
/// probed with TLS: if it answers, that is remembered and the request is
/// resent over TLS when that is safe (unsent, or idempotent).
async fn send_fresh(
    route: &Route<'_>,
    mut request: http::Request<Full<Bytes>>,
) -> Result<(http::Response<Incoming>, Upstream), ForwardError> {
    let (port, config) = (route.port, route.config);
    let tls = route.seen.tls();
    if tls {
        headers::secure_origin(request.headers_mut());
    }
    let timeout = config.connect_timeout;
    let (mut up, first) = open(route.gate, route.targets, port, timeout, tls).await?;
    let method = request.method().clone();
    let mut failed = match up.sender.try_send_request(request).await {
        Ok(response) => {
            if !tls {
                route.schemes.learn(route.seen, Scheme::Http);
            }
            return Ok((response, up));
        }
        Err(failed) => failed,
    };
    drop(up);
    let error = failed.error();
    let looks_like_tls = match first.get() {
        Some(byte) => tls::is_record_start(byte),
        // Vite's HTTPS server closes a plain connection without a word,
        // Node's TLS servers may reset it.
        None => error.is_incomplete_message() || tls::is_reset(error),
    };
    if tls || !route.seen.may_probe() || !looks_like_tls {
        return Err(ForwardError::Http(failed.into_error()));
    }
    tracing::debug!(%error, "plain HTTP failed, probing with TLS");
    let probe = config.connect_timeout.min(tls::PROBE_TIMEOUT);
    let (mut up, _) = match open(route.gate, route.targets, port, probe, true).await {
        Ok(opened) => opened,
        Err(probe) => {
            tracing::debug!(error = %probe.message(), "the TLS probe failed too");
            return Err(ForwardError::Http(failed.into_error()));
        }
    };
    route.schemes.learn(route.seen, Scheme::Https);
    let mut retry = match failed.take_message() {
        Some(unsent) => unsent,
        None if method.is_idempotent() => build_request(route.req, Localize::Port(port), config)?,
        None => return Err(ForwardError::SpeaksHttps { port, method }),
    };
    headers::secure_origin(retry.headers_mut());
    let response = up
        .sender
        .send_request(retry)
        .await
        .map_err(ForwardError::Http)?;
    Ok((response, up))
}

async fn exchange(
    req: ForwardHttpRequest,
    port: u16,
    to: &Responder,
    ctx: &Context,
) -> Result<(), ForwardError> {
    let (gate, config) = (&*ctx.gate, &*ctx.config);
    let mut request = build_request(&req, Localize::Port(port), config)?;
    let deadline = Instant::now() + config.overall_timeout;

    // The gate decides on every request, pooled connection or not.
    let targets = dial::targets(gate, port)?;
    let seen = ctx.schemes.seen(port);
    if seen.tls() {
        headers::secure_origin(request.headers_mut());
    }
    let (pooled, ticket) = ctx.pool.take(port, &targets);
    let route = Route {
        gate,
        req: &req,
        port,
        targets: &targets,
        schemes: &ctx.schemes,
        seen,
        config,
    };
    let head = send(&route, request, pooled);
    let (response, mut up) = timeout_at(deadline, head)
        .await
        .map_err(|_| too_slow(config))??;
    if deliver(req, response, to, config, deadline).await? {
        // The whole body was read: once hyper has seen the connection
        // through to idle (or closed, for `Connection: close`), it can be
        // reused.
        if let Ok(Ok(())) = tokio::time::timeout(READY_GRACE, up.sender.ready()).await {
            ctx.pool.put(ticket, up);
        }
    }
    Ok(())
}

/// Runs one request to an editor on its Unix socket and answers Kandan;
/// editors get a fresh connection per request (no gate: Kandan asked for
/// the editor, and only the runner's user can reach its socket).
pub(super) async fn forward_editor(
    req: ForwardHttpRequest,
    socket: PathBuf,
    to: Responder,
    config: Arc<ForwardConfig>,
) {
    let span = tracing::debug_span!("forward_editor", request_id = %req.request_id);
    async move {
        let request_id = req.request_id.clone();
        if let Err(err) = exchange_editor(req, &socket, &to, &config).await {
            tracing::info!(%request_id, code = %err.code(), error = %err.message(), "forward failed");
            to.send(failed(request_id, &err)).await;
        }
    }
    .instrument(span)
    .await;
}

async fn exchange_editor(
    req: ForwardHttpRequest,
    socket: &Path,
    to: &Responder,
    config: &ForwardConfig,
) -> Result<(), ForwardError> {
    let request = build_request(&req, Localize::Editor, config)?;
    let deadline = Instant::now() + config.overall_timeout;
    let stream = dial::connect_editor(socket, config.connect_timeout).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ForwardError::Http)?;
    let _task = AbortOnDrop(
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "editor connection ended with an error");
            }
        })
        .abort_handle(),
    );
    let response = timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(|_| too_slow(config))?
        .map_err(ForwardError::Http)?;
    deliver(req, response, to, config, deadline).await?;
    Ok(())
}

fn too_slow(config: &ForwardConfig) -> ForwardError {
    ForwardError::ResponseTimeout {
        after: config.overall_timeout,
    }
}

/// Answers Kandan with `response`: whole (within the body limit), or as a
/// stream of chunks. True when the body was read to its end, so the
/// connection may be reused.
async fn deliver(
    req: ForwardHttpRequest,
    response: http::Response<Incoming>,
    to: &Responder,
    config: &ForwardConfig,
    deadline: Instant,
) -> Result<bool, ForwardError> {
    let (parts, body) = response.into_parts();
    let mut response_headers = parts.headers;
    headers::strip_hop_by_hop(&mut response_headers);
    let status = parts.status.as_u16();
    tracing::debug!(status, "response head");

    if req.accept_streaming && is_stream(&response_headers, &body) {
        let budget = &config.event_budget;
        Box::pin(stream(
            req.request_id,
            status,
            response_headers,
            body,
            budget,
            to,
        ))
        .await?;
        return Ok(false);
    }

    let limit = config.max_response_body;
    let declared = response_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ForwardError::ResponseTooLarge { limit });
    }
    // The body's bytes are reserved before it is read, all at once: a body
    // of unknown length reserves the limit and gives back the rest. Partial
    // reservations could fill the budget with bodies none of which can
    // finish; waiting here leaves the body unread in the local server.
    let reserve = declared.map_or(limit, |len| len as usize);
    let mut charge = timeout_at(deadline, config.event_budget.charge(wire_cost(reserve)))
        .await
        .map_err(|_| too_slow(config))?;
    let body = timeout_at(deadline, read_body(body, limit))
        .await
        .map_err(|_| too_slow(config))??;
    charge.shrink_to(wire_cost(body.len()));
    let response = Event::ForwardHttpResponse(ForwardHttpResponse {
        request_id: req.request_id,
        status,
        headers: Headers(response_headers),
        streaming: None,
        body,
    });
    to.send(Charged {
        event: response,
        charge,
    })
    .await;
    Ok(true)
}

/// Reads a whole body of at most `limit` bytes, as the pieces it arrives
/// in (see [`Pieces`]).
async fn read_body(mut body: Incoming, limit: usize) -> Result<Pieces, ForwardError> {
    let mut pieces = Pieces::default();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| ForwardError::ResponseBody(Box::new(err)))?;
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > limit {
                return Err(ForwardError::ResponseTooLarge { limit });
            }
            pieces.push(data);
        }
    }
    Ok(pieces)
}
