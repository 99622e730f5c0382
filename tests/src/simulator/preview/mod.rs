//! The browser's side: `/preview/<port>/<path>`, each port's own origin
//! `http://p<port>.localhost:<front>/<path>`, and `/editor/<editorId>/<path>`
//! (HTTP and WebSocket) turned into controls, plus a small JSON API under
//! `/api/` for use by hand.

mod api;
mod body;
mod http_forward;
mod websocket;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

use super::error::SimError;
use super::state::Shared;

/// The page at `/`: runners, ports, a Codex panel, the editor.
const PAGE: &str = include_str!("../page.html");

pub(crate) type Body = UnsyncBoxBody<Bytes, SimError>;

/// Header naming the `control_error` code (or the simulator's own reason)
/// of a failed preview request.
pub const ERROR_CODE_HEADER: &str = "x-kandan-error-code";
/// Header carrying the `requestId` the preview request was forwarded as.
pub const REQUEST_ID_HEADER: &str = "x-kandan-request-id";

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "preview accept failed");
                continue;
            }
        };
        // Like Phoenix's servers: small frames go out at once.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = service_fn(move |req| route(shared.clone(), req));
        tokio::spawn(
            async move {
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(error) = conn.await {
                    debug!(%error, "preview connection ended");
                }
            }
            .instrument(info_span!("preview", %peer)),
        );
    }
}

/// What a preview path forwards to: a listener's port, or an editor.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Port(u16),
    Editor(String),
}

impl Target {
    /// Adds `port` or `editorId` to a control.
    pub(crate) fn name_in(&self, control: &mut serde_json::Value) {
        match self {
            Target::Port(port) => control["port"] = serde_json::json!(port),
            Target::Editor(id) => control["editorId"] = serde_json::json!(id),
        }
    }

    /// Where its pages live on this front.
    fn prefix(&self) -> String {
        match self {
            Target::Port(port) => format!("/preview/{port}/"),
            Target::Editor(id) => format!("/editor/{id}/"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Port(port) => write!(f, "port {port}"),
            Target::Editor(id) => write!(f, "editor {id}"),
        }
    }
}

/// The port a per-port origin names: `p<port>.localhost[:<front>]` in
/// `Host` (browsers resolve `*.localhost` to loopback), as Codespaces gives
/// each port its own domain.
pub(crate) fn port_origin(req: &Request<Incoming>) -> Option<u16> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())?;
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = name.to_ascii_lowercase();
    let label = name.strip_suffix(".localhost")?.strip_prefix('p')?;
    if !label.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    label.parse::<u16>().ok().filter(|p| *p != 0)
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(port) = port_origin(&req) {
        // The whole origin is the port's: paths go as they are, so an app's
        // absolute URLs (`/@vite/client`, `/api/...`) work with no base.
        let target = Target::Port(port);
        if websocket::is_upgrade(&req) {
            return Ok(websocket::open(shared, req, target, path).await);
        }
        return Ok(http_forward::forward(shared, req, target, path).await);
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        return Ok(api::handle(&shared, req, rest).await);
    }
    if path == "/" {
        // Kandan's stand-in page: plain HTML and JavaScript over `/api/`.
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(full(PAGE))
            .unwrap_or_default());
    }
    let (target, rest) = if let Some(rest) = path.strip_prefix("/preview/") {
        let (port, _) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(port) = port.parse::<u16>().ok().filter(|p| *p != 0) else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "bad_port",
                "bad port in the preview path",
            ));
        };
        (Target::Port(port), rest)
    } else if let Some(rest) = path.strip_prefix("/editor/") {
        let (id, _) = rest.split_once('/').unwrap_or((rest, ""));
        (Target::Editor(id.to_owned()), rest)
    } else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "not_found",
            "try /, /preview/<port>/, /editor/<editorId>/ or /api/",
        ));
    };
    let tail = rest.split_once('/').map_or("", |(_, tail)| tail);
    if !rest.contains('/') {
        // Relative asset paths need the trailing slash.
        let mut location = target.prefix();
        if let Some(q) = req.uri().query() {
            location = format!("{location}?{q}");
        }
        return Ok(Response::builder()
            .status(StatusCode::PERMANENT_REDIRECT)
            .header(header::LOCATION, location)
            .body(empty())
            .unwrap_or_default());
    }
    // Editors always get the prefix stripped: their URLs are relative.
    let forwarded_path = match target {
        Target::Port(_) if shared.config.keep_preview_prefix => path.clone(),
        _ => format!("/{tail}"),
    };
    if websocket::is_upgrade(&req) {
        return Ok(websocket::open(shared, req, target, forwarded_path).await);
    }
    Ok(http_forward::forward(shared, req, target, forwarded_path).await)
}

pub(crate) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A plain-text error with its code in `x-kandan-error-code`.
pub(crate) fn text(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(ERROR_CODE_HEADER, code)
        .body(full(format!("{code}: {message}\n")))
        .unwrap_or_default()
}

/// Request headers as `[name, value]` pairs, the way controls carry them.
pub(crate) fn header_pairs(headers: &http::HeaderMap) -> Vec<[String; 2]> {
    headers
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect()
}

/// The HTTP status for a runner `control_error` code.
pub(crate) fn status_for(code: &str) -> StatusCode {
    match code {
        "port_not_approved" => StatusCode::FORBIDDEN,
        "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "port_not_listening" | "unknown_editor" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The response for a runner `control_error` event.
pub(crate) fn control_error(event: &serde_json::Value) -> Response<Body> {
    let code = event
        .get("code")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    let message = event.get("message").and_then(|v| v.as_str()).unwrap_or("");
    text(status_for(code), code, message)
}

/// The response when the runner cannot be asked at all.
/// The runner's first answer to a control, or the response the preview
/// front gives when there is none in time (504) or the runner went away (502).
pub(crate) async fn first_answer(
    shared: &Shared,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> Result<serde_json::Value, Response<Body>> {
    match tokio::time::timeout(shared.config.forward_timeout, rx.recv()).await {
        Err(_) => Err(text(
            StatusCode::GATEWAY_TIMEOUT,
            "runner_timeout",
            "no answer from the runner",
        )),
        Ok(None) => Err(text(
            StatusCode::BAD_GATEWAY,
            "runner_disconnected",
            "runner went away",
        )),
        Ok(Some(event)) => Ok(event),
    }
}

pub(crate) fn sim_error(error: &SimError) -> Response<Body> {
    let code = match error {
        SimError::NotConnected => "runner_not_connected",
        SimError::NotJoined => "runner_not_joined",
        _ => "simulator_error",
    };
    text(StatusCode::SERVICE_UNAVAILABLE, code, &error.to_string())
}
