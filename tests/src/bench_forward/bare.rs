//! The bare forwarder: the least any runner has to do for a forwarded
//! request on this harness, and nothing more. It reads the control, makes
//! one HTTP/1.1 exchange with the local server over a pooled keep-alive
//! connection, and answers with the body in base64, batching its writes as
//! the runner does. It has none of what the runner adds for PROTOCOL.md
//! section 5 and for robustness: no approval or gate, no verified dial, no
//! limits, header policy, timeouts, control ordering, heartbeats or
//! reconnects. It is not a runner; its rate and CPU beside the runner's
//! show what the client, the simulator and the local server cost, which no
//! runner can remove (`comparison` in `run.rs`).
//!
//! `bench-forward connect` runs it with `kandan-runner connect`'s arguments,
//! so the bench starts either the same way.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::phoenix;

/// `kandan-runner connect`'s command line, as the bench starts it; the
/// bare forwarder uses the socket, the token, the id and the command.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub endpoint: phoenix::Endpoint,
    #[arg(long)]
    pub runner_id: String,
    /// Accepted for the runner's command line; unused.
    #[arg(long)]
    pub debounce_ms: Option<u64>,
    /// Accepted for the runner's command line; unused.
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// The payload of a `forward_http_request` control (other controls are
/// read as far as `type` and ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Control {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    query_string: Option<String>,
    #[serde(default)]
    body_base64: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: String,
    status: u16,
    headers: Vec<(String, String)>,
    body_base64: String,
}

type Pool = Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>;

/// Starts the command, joins `runner:<id>` and answers HTTP requests until
/// the socket closes.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (program, rest) = args.command.split_first().context("no command")?;
    let _command = tokio::process::Command::new(program)
        .args(rest)
        .kill_on_drop(true)
        .spawn()
        .context("starting the command")?;
    let topic = format!("runner:{}", args.runner_id);
    let mut ws = phoenix::join(&args.endpoint, &topic).await?;
    let pool = Pool::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Response>();
    let mut refs = 1u64;
    let mut unflushed = false;
    loop {
        if unflushed && rx.is_empty() {
            ws.flush().await?;
            unflushed = false;
        }
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => on_text(&text, &pool, &tx),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(()),
            },
            Some(response) = rx.recv() => {
                refs += 1;
                let frame = ("1", refs.to_string(), &topic, "event", response);
                ws.feed(Message::text(serde_json::to_string(&frame)?)).await?;
                unflushed = true;
            }
        }
    }
}

/// Starts the exchange a `forward_http_request` asks for; ignores the rest.
fn on_text(text: &str, pool: &Pool, tx: &mpsc::UnboundedSender<Response>) {
    let Some(control) = phoenix::control::<Control>(text) else {
        return;
    };
    if control.kind != "forward_http_request" {
        return;
    }
    let (pool, tx) = (pool.clone(), tx.clone());
    tokio::spawn(async move {
        let request_id = control.request_id.clone();
        let (status, headers, body) = match exchange(&pool, control).await {
            Ok(answer) => answer,
            Err(_) => (502, Vec::new(), Bytes::new()),
        };
        let _ = tx.send(Response {
            kind: "forward_http_response",
            request_id,
            status,
            headers,
            body_base64: STANDARD.encode(&body),
        });
    });
}

type Answer = (u16, Vec<(String, String)>, Bytes);

async fn exchange(pool: &Pool, control: Control) -> anyhow::Result<Answer> {
    let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut sender = match idle {
        Some(sender) => sender,
        None => super::load::connect(SocketAddr::from(([127, 0, 0, 1], control.port))).await?,
    };
    let uri = match &control.query_string {
        Some(query) => format!("{}?{query}", control.path),
        None => control.path,
    };
    let request = http::Request::builder()
        .method(control.method.as_str())
        .uri(uri)
        .header(http::header::HOST, format!("127.0.0.1:{}", control.port))
        .body(Full::new(Bytes::from(
            STANDARD.decode(control.body_base64)?,
        )))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let headers = (response.headers().iter())
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes();
    pool.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
    Ok((status, headers, body))
}
