//! The bare relay: the least any runner has to do to relay a Codex turn on
//! this harness, and nothing more (the Codex counterpart of
//! `bench_forward::bare`). One task on a current-thread runtime, as the
//! runner's: it starts the app-server, makes the `initialize` and
//! `thread/start` handshake, sends `turn/start` for `start_turn`, and writes
//! every notification line as a `codex_notification` (`method` and the
//! `params` as raw JSON, a `seq`) in one frame each, flushing when nothing
//! more waits. It has none of what the runner adds for PROTOCOL.md sections
//! 5 and 7: no event budget or replay log, no `ids`, no batching, approvals
//! or redaction, no containment, no reconnects; one instance at a time. Its
//! latency and CPU beside the runner's show what the stand-in, the
//! simulator and the two cores cost, which no runner can remove.
//!
//! `bench-codex connect` runs it with `kandan-runner connect`'s arguments,
//! so the rig starts either the same way.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::Message;

use crate::bench::phoenix::{self, Socket as Ws};

/// `kandan-runner connect`'s command line as the rig starts it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub endpoint: phoenix::Endpoint,
    #[arg(long)]
    pub codex_bin: PathBuf,
    /// Accepted for the runner's command line; the relay never batches.
    #[arg(long)]
    pub stream_flush_ms: Option<u64>,
}

/// The controls the rig sends (the rest are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Control {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    instance_id: String,
    #[serde(default)]
    cwd: PathBuf,
    #[serde(default)]
    text: String,
}

/// An app-server line, borrowed from the read buffer.
#[derive(Deserialize)]
struct Line<'a> {
    id: Option<u64>,
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    instance_id: &'a str,
    seq: u64,
    method: &'a str,
    params: Option<&'a RawValue>,
}

/// The running app-server.
struct Instance {
    id: String,
    cwd: PathBuf,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    thread_id: Option<String>,
    seq: u64,
    next_id: u64,
    _child: Child,
}

/// Joins `runner:bare` and relays until the socket closes.
pub fn run(args: Args) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(relay(args))
}

async fn relay(args: Args) -> Result<()> {
    let topic = "runner:bare";
    let mut ws = phoenix::join(&args.endpoint, topic).await?;
    let mut out = Out {
        topic,
        refs: 1,
        unflushed: false,
    };
    let mut instance: Option<Instance> = None;
    loop {
        if out.unflushed {
            ws.flush().await?;
            out.unflushed = false;
        }
        let stdout = async {
            match &mut instance {
                Some(running) => running.stdout.next_line().await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            message = ws.next() => Next::Socket(message),
            read = stdout => Next::Line(read?),
        };
        match next {
            Next::Socket(Some(Ok(Message::Text(text)))) => {
                if let Some(control) = phoenix::control(&text) {
                    on_control(control, &args, &mut instance, &mut out, &mut ws).await?;
                }
            }
            Next::Socket(Some(Ok(_))) => {}
            Next::Socket(Some(Err(_)) | None) => return Ok(()),
            Next::Line(None) => instance = None,
            Next::Line(Some(line)) => {
                if let Some(running) = &mut instance {
                    on_line(&line, running, &mut out, &mut ws).await?;
                }
            }
        }
        // Whatever else the app-server already wrote goes in the same write.
        while let Some(running) = &mut instance
            && let Some(Ok(Some(line))) = running.stdout.next_line().now_or_never()
        {
            on_line(&line, running, &mut out, &mut ws).await?;
        }
    }
}

enum Next {
    Socket(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Line(Option<String>),
}

/// Frames the relay writes, fed now and flushed when nothing more waits.
struct Out {
    topic: &'static str,
    refs: u64,
    unflushed: bool,
}

impl Out {
    async fn push(&mut self, ws: &mut Ws, payload: impl Serialize) -> Result<()> {
        self.refs += 1;
        let frame = ("1", self.refs.to_string(), self.topic, "event", payload);
        ws.feed(Message::text(serde_json::to_string(&frame)?))
            .await?;
        self.unflushed = true;
        Ok(())
    }
}

async fn on_control(
    control: Control,
    args: &Args,
    instance: &mut Option<Instance>,
    out: &mut Out,
    ws: &mut Ws,
) -> Result<()> {
    match control.kind.as_str() {
        "update_runner_config" => out.push(ws, json!({"type": "runner_config_applied"})).await,
        "start_instance" => {
            let mut started = start(args, control)?;
            started
                .send(json!({"method": "initialize", "params": {
                    "clientInfo": {"name": "kandan-runner", "version": "0.1.0"},
                    "capabilities": {"experimentalApi": false}}}))
                .await?;
            *instance = Some(started);
            Ok(())
        }
        "start_turn" => {
            let Some(running) = instance else {
                return Ok(());
            };
            let thread_id = running.thread_id.clone().unwrap_or_default();
            running
                .send(json!({"method": "turn/start", "params": {
                    "threadId": thread_id,
                    "input": [{"type": "text", "text": control.text, "text_elements": []}]}}))
                .await
        }
        _ => Ok(()),
    }
}

fn start(args: &Args, control: Control) -> Result<Instance> {
    let mut child = tokio::process::Command::new(&args.codex_bin)
        .arg("app-server")
        .current_dir(&control.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the app-server")?;
    let stdin = child.stdin.take().context("no stdin")?;
    let stdout = child.stdout.take().context("no stdout")?;
    Ok(Instance {
        id: control.instance_id,
        cwd: control.cwd,
        stdin,
        stdout: BufReader::new(stdout).lines(),
        thread_id: None,
        seq: 0,
        next_id: 1,
        _child: child,
    })
}

impl Instance {
    /// Writes a request (`method` and `params`) with the next id.
    async fn send(&mut self, mut message: Value) -> Result<()> {
        message["id"] = self.next_id.into();
        self.next_id += 1;
        let mut text = serde_json::to_string(&message)?;
        text.push('\n');
        self.stdin.write_all(text.as_bytes()).await?;
        Ok(())
    }
}

/// A notification goes out as it is; the answers to `initialize` and
/// `thread/start` move the handshake on.
async fn on_line(text: &str, instance: &mut Instance, out: &mut Out, ws: &mut Ws) -> Result<()> {
    let Ok(line) = serde_json::from_str::<Line<'_>>(text) else {
        return Ok(());
    };
    match (line.method, line.id) {
        (Some(method), None) => {
            instance.seq += 1;
            let note = Notification {
                kind: "codex_notification",
                instance_id: &instance.id,
                seq: instance.seq,
                method,
                params: line.params,
            };
            out.push(ws, note).await
        }
        (None, Some(1)) => {
            instance
                .stdin
                .write_all(b"{\"method\":\"initialized\"}\n")
                .await?;
            let cwd = instance.cwd.clone();
            instance
                .send(json!({"method": "thread/start", "params": {"cwd": cwd}}))
                .await
        }
        (None, Some(2)) => {
            let result: Value = serde_json::from_str(line.result.map_or("null", RawValue::get))?;
            let thread_id = result["thread"]["id"].as_str().unwrap_or_default();
            instance.thread_id = Some(thread_id.to_owned());
            let started = json!({
                "type": "instance_started", "instanceId": instance.id,
                "threadId": thread_id, "cwd": instance.cwd,
            });
            out.push(ws, started).await
        }
        _ => Ok(()),
    }
}
