//! A stand-in for the OpenAI Responses API (the model Codex talks to), so
//! the real `codex app-server` runs fully offline. `POST /v1/responses` is
//! answered with server-sent events from a script the test sets, one
//! [`Reply`] per request (a plain "ok" text when the script is empty); every
//! request body is recorded.
//!
//! Codex is pointed at it with [`FakeModel::codex_args`]: a `fake` model
//! provider whose `base_url` is this server, `wire_api = "responses"`.

mod sse;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use sse::{Reply, Step};

/// The model name Codex knows the tools of (an unknown name loses
/// `apply_patch`).
pub const MODEL: &str = "gpt-5.5";

/// Picks the reply to a request body when the script is empty.
pub type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

#[derive(Default)]
struct Shared {
    script: VecDeque<Reply>,
    requests: Vec<Value>,
    responder: Option<Responder>,
}

/// The running server; dropping it stops it.
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl FakeModel {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<FakeModel> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the fake model")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(FakeModel { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Codex settings that make this server its model, as
    /// `(key, TOML value)`.
    fn provider_settings(&self) -> [(&'static str, String); 6] {
        [
            ("model_provider", "\"fake\"".to_string()),
            ("model_providers.fake.name", "\"fake\"".to_string()),
            (
                "model_providers.fake.base_url",
                format!("\"{}\"", self.base_url()),
            ),
            ("model_providers.fake.wire_api", "\"responses\"".to_string()),
            // One try: a failing test should fail fast, not retry for minutes.
            ("model_providers.fake.request_max_retries", "0".to_string()),
            ("model_providers.fake.stream_max_retries", "0".to_string()),
        ]
    }

    /// `codex app-server` arguments that make this server its model.
    pub fn codex_args(&self) -> Vec<String> {
        self.provider_settings()
            .into_iter()
            .flat_map(|(key, value)| ["-c".to_string(), format!("{key}={value}")])
            .collect()
    }

    /// `config.toml` for a `CODEX_HOME` that makes this server the model
    /// (the same settings as [`FakeModel::codex_args`], for a `codex
    /// app-server` the runner starts); dotted keys are TOML too.
    pub fn config_toml(&self) -> String {
        self.provider_settings()
            .into_iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect()
    }

    /// Appends replies, one per coming request.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().unwrap().script.extend(replies);
    }

    /// Answers requests the script has no reply for with `responder`'s
    /// pick (the demo's replies follow the prompt, not a fixed order).
    pub fn set_responder(&self, responder: Responder) {
        self.shared.lock().unwrap().responder = Some(responder);
    }

    /// The bodies of the requests so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        let service = service_fn(move |req| route(req, shared.clone()));
        connections.spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn route(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
) -> Result<Response<Body>, Infallible> {
    let plain = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = status;
        response
    };
    if req.method() != http::Method::POST || !req.uri().path().ends_with("/responses") {
        return Ok(plain(StatusCode::NOT_FOUND));
    }
    let Ok(body) = req.into_body().collect().await else {
        return Ok(plain(StatusCode::BAD_REQUEST));
    };
    let body: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
    let (reply, index) = {
        let mut shared = shared.lock().unwrap();
        let reply = match (shared.script.pop_front(), &shared.responder) {
            (Some(reply), _) => reply,
            (None, Some(responder)) => responder(&body),
            (None, None) => Reply::text(&["ok"]),
        };
        shared.requests.push(body);
        (reply, shared.requests.len())
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(reply.play(format!("resp_{index}"), tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "text/event-stream".parse().unwrap(),
    );
    Ok(response)
}

/// How long a [`Step::Hang`] holds the response open at most.
const HANG_LIMIT: Duration = Duration::from_secs(600);
