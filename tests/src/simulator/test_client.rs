//! A minimal Phoenix v2 client, for testing the simulator itself (the
//! runner has its own). Blocking-free, one frame at a time, no reconnects.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frame::Frame;

/// What ended the connection, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// A close frame, with its code and reason when present.
    CloseFrame(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    Dropped,
}

/// One Phoenix connection.
pub struct TestClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    /// Frames read while waiting for something else.
    buffered: VecDeque<Frame>,
    /// Non-frame text messages received (garbage).
    pub raw: Vec<String>,
    /// Join ref of the last successful join.
    pub join_ref: Option<String>,
}

impl TestClient {
    /// Opens `url` (the full `.../websocket?vsn=2.0.0&token=...`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        // Large bodies travel base64 in one frame.
        let config = WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
            .await
            .with_context(|| "connecting the test client")?;
        Ok(Self {
            ws,
            next_ref: 1,
            buffered: VecDeque::new(),
            raw: Vec::new(),
            join_ref: None,
        })
    }

    /// Sends a frame with a fresh ref; returns the ref.
    pub async fn send(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> anyhow::Result<String> {
        let msg_ref = self.next_ref.to_string();
        self.next_ref += 1;
        let frame = Frame::new(join_ref, Some(&msg_ref), topic, event, payload);
        self.ws.send(Message::text(frame.to_text())).await?;
        Ok(msg_ref)
    }

    /// Sends a text message as is.
    pub async fn send_raw(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Joins `topic`; returns the reply payload (`{"status", "response"}`).
    pub async fn join(&mut self, topic: &str, payload: Value) -> anyhow::Result<Value> {
        let join_ref = self.next_ref.to_string();
        let msg_ref = self
            .send(Some(&join_ref), topic, "phx_join", payload)
            .await?;
        let reply = self.reply_to(&msg_ref).await?;
        if reply.payload["status"] == "ok" {
            self.join_ref = Some(join_ref);
        }
        Ok(reply.payload)
    }

    /// Sends a heartbeat; returns its ref.
    pub async fn heartbeat(&mut self) -> anyhow::Result<String> {
        self.send(
            None,
            "phoenix",
            "heartbeat",
            Value::Object(Default::default()),
        )
        .await
    }

    /// Pushes one event on the joined `topic`; returns its ref.
    pub async fn push_event(&mut self, topic: &str, event: Value) -> anyhow::Result<String> {
        let join_ref = self.join_ref.clone();
        self.send(join_ref.as_deref(), topic, "event", event).await
    }

    /// The `phx_reply` to `msg_ref` (other frames stay buffered).
    pub async fn reply_to(&mut self, msg_ref: &str) -> anyhow::Result<Frame> {
        self.next_matching(
            |f| f.event == "phx_reply" && f.msg_ref.as_deref() == Some(msg_ref),
            Duration::from_secs(10),
        )
        .await
    }

    /// The next frame that `matches` (earlier ones stay buffered).
    pub async fn next_matching(
        &mut self,
        matches: impl Fn(&Frame) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Frame> {
        if let Some(i) = self.buffered.iter().position(&matches) {
            return Ok(self.buffered.remove(i).expect("index from position"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.read()).await {
                Err(_) => bail!("timed out waiting for a frame"),
                Ok(frame) => frame?,
            };
            match frame {
                Ok(frame) if matches(&frame) => return Ok(frame),
                Ok(frame) => self.buffered.push_back(frame),
                Err(closed) => bail!("connection closed: {closed:?}"),
            }
        }
    }

    /// Reads until the connection ends; returns how it ended.
    pub async fn wait_closed(&mut self, timeout: Duration) -> anyhow::Result<Closed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Err(_) => bail!("timed out waiting for the close"),
                Ok(Ok(Ok(frame))) => self.buffered.push_back(frame),
                Ok(Ok(Err(closed))) => return Ok(closed),
                Ok(Err(error)) => return Err(error),
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// One frame, or how the connection ended.
    async fn read(&mut self) -> anyhow::Result<Result<Frame, Closed>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => match Frame::parse(&text) {
                    Ok(frame) => return Ok(Ok(frame)),
                    Err(_) => self.raw.push(text.to_string()),
                },
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame
                        .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
                    return Ok(Err(Closed::CloseFrame(frame)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(Err(Closed::Dropped)),
            }
        }
    }
}
