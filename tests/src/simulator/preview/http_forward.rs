//! A preview HTTP request as `forward_http_request`, and the runner's answer
//! as the HTTP response.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span};

use super::body::{ChunkBody, WaiterGuard};
use super::{
    Body, REQUEST_ID_HEADER, Target, control_error, first_answer, full, header_pairs, sim_error,
    text,
};
use crate::simulator::state::Shared;

/// Headers the front sets itself (framing is hyper's business here).
const SKIPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "proxy-connection",
];

pub(crate) async fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    target: Target,
    path: String,
) -> Response<Body> {
    let request_id = shared.fresh_id("req");
    let span = info_span!("http", %request_id, %target, method = %req.method(), %path);
    async move {
        let mut resp = exchange(&shared, req, &target, path, &request_id).await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        resp
    }
    .instrument(span)
    .await
}

async fn exchange(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    target: &Target,
    path: String,
    request_id: &str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let head = parts.method == http::Method::HEAD;
    // Like Kandan: an upload over the runner's announced limit is refused
    // here, before it costs the runner's connection anything.
    let limit = shared.lock().limits.map(|l| l.max_request_body);
    let too_large = |what: &str| {
        let limit = limit.unwrap_or_default();
        let message = format!("{what} is over the runner's {limit} byte limit");
        text(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message)
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(len), Some(limit)) = (declared, limit)
        && len > limit
    {
        return too_large(&format!("request body of {len} bytes"));
    }
    let limit = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return too_large("request body"),
        Err(error) => {
            return text(
                StatusCode::BAD_REQUEST,
                "bad_request_body",
                &error.to_string(),
            );
        }
    };
    let mut control = json!({
        "type": "forward_http_request",
        "instanceId": shared.config.instance_id,
        "requestId": request_id,
        "method": parts.method.as_str(),
        "path": path,
        "headers": header_pairs(&parts.headers),
        "bodyBase64": STANDARD.encode(&body),
        "acceptStreaming": true,
    });
    target.name_in(&mut control);
    if let Some(query) = parts.uri.query() {
        control["queryString"] = json!(query);
    }
    let mut rx = shared.register_waiter(request_id);
    let mut guard = WaiterGuard {
        shared: shared.clone(),
        id: request_id.to_owned(),
        cancel: true,
    };
    let sent = tokio::time::Instant::now();
    if let Err(error) = shared.send_control(control) {
        return sim_error(&error);
    }
    let answer = first_answer(shared, &mut rx).await;
    shared.lock().forward_latencies.push(sent.elapsed());
    let first = match answer {
        Ok(event) => event,
        Err(response) => return response,
    };
    let ty = first.get("type").and_then(Value::as_str);
    if ty != Some("forward_http_response") {
        // Answered: there is nothing left to cancel.
        guard.cancel = false;
    }
    match ty {
        Some("forward_http_response") => respond(first, rx, guard, head),
        Some("control_error") => control_error(&first),
        _ => text(
            StatusCode::BAD_GATEWAY,
            "unexpected_event",
            &format!("runner answered with {first}"),
        ),
    }
}

fn respond(
    event: Value,
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    mut guard: WaiterGuard,
    head: bool,
) -> Response<Body> {
    let status = event
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        return text(
            StatusCode::BAD_GATEWAY,
            "bad_response",
            "bad status from the runner",
        );
    };
    let first = match STANDARD.decode(
        event
            .get("bodyBase64")
            .and_then(Value::as_str)
            .unwrap_or(""),
    ) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => {
            return text(
                StatusCode::BAD_GATEWAY,
                "bad_response",
                "bad base64 from the runner",
            );
        }
    };
    let streaming = event
        .get("streaming")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    debug!(%status, streaming, "runner answered");
    let body = if streaming {
        use http_body_util::BodyExt as _;
        ChunkBody {
            first: Some(first),
            rx,
            done: false,
            _guard: guard,
        }
        .boxed_unsync()
    } else {
        guard.cancel = false;
        drop(guard);
        full(first)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let pairs = event.get("headers").and_then(Value::as_array);
    for pair in pairs.into_iter().flatten() {
        let (Some(name), Some(value)) = (
            pair.get(0).and_then(Value::as_str),
            pair.get(1).and_then(Value::as_str),
        ) else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        // A HEAD answer has no body to measure: keep the upstream's length.
        if SKIPPED.contains(&lower.as_str()) && !(head && lower == "content-length") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}
