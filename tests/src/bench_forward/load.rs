//! The client side: keep-alive HTTP load, fresh-connection requests,
//! WebSocket echo round trips, many open WebSockets, one large upload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where requests go: the local server itself, or the preview front with
/// its `/preview/<port>` prefix.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub prefix: String,
}

impl Target {
    fn uri(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

/// The outcome of one load run.
#[derive(Debug)]
pub struct Load {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
}

impl Load {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// A keep-alive HTTP/1.1 connection to `addr` (no Nagle), its driver spawned.
pub(super) async fn connect<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    path: &str,
    expect_len: usize,
) -> anyhow::Result<()> {
    sender.ready().await?;
    let req = Request::get(target.uri(path))
        .header(http::header::HOST, target.addr.to_string())
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK || body.len() != expect_len {
        bail!(
            "GET {path}: {status} with {} bytes, expected 200 with {expect_len}: {}",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    Ok(())
}

/// `total` GETs of `path` from `clients` keep-alive connections at once.
pub async fn http_load(
    target: &Target,
    path: &str,
    expect_len: usize,
    total: usize,
    clients: usize,
) -> anyhow::Result<Load> {
    http_load_paced(target, path, expect_len, total, clients, None).await
}

/// Like [`http_load`], and with `rate` the GETs leave at that many per
/// second in all, each connection on its own clock (spread over the
/// period), instead of each as soon as the last is answered. Two
/// forwarders then see the same arrivals: at full speed the faster one
/// also gets more requests per wake-up, which lowers its CPU per request
/// apart from anything its code does. A forwarder that falls behind gets
/// requests late (the achieved rate is in the [`Load`]).
pub async fn http_load_paced(
    target: &Target,
    path: &str,
    expect_len: usize,
    total: usize,
    clients: usize,
    rate: Option<f64>,
) -> anyhow::Result<Load> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..clients {
        let (next, target, path) = (next.clone(), target.clone(), path.to_owned());
        let mut pace = rate.map(|rate| {
            let period = Duration::from_secs_f64(clients as f64 / rate);
            let first = tokio::time::Instant::now() + period.mul_f64(i as f64 / clients as f64);
            let mut ticks = tokio::time::interval_at(first, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        workers.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await?;
            let mut latencies = Vec::new();
            loop {
                if let Some(ticks) = &mut pace {
                    ticks.tick().await;
                }
                if next.fetch_add(1, Ordering::Relaxed) >= total {
                    break;
                }
                let t = Instant::now();
                get(&mut sender, &target, &path, expect_len).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Load {
        latencies,
        wall: started.elapsed(),
    })
}

/// `n` sequential GETs, each on a fresh connection (what the runner does
/// for every forwarded request).
pub async fn fresh_connection_gets(
    target: &Target,
    path: &str,
    expect_len: usize,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut sender = connect(target.addr).await?;
        get(&mut sender, target, path, expect_len).await?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket on `path`.
pub async fn ws_open(target: &Target, path: &str) -> anyhow::Result<Ws> {
    let url = format!("ws://{}{}", target.addr, target.uri(path));
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    Ok(ws)
}

/// Sends one text message and waits for its echo; the round trip.
pub async fn ws_round_trip(ws: &mut Ws, text: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    ws.send(Message::text(text)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(echo))) if echo.as_str() == text => return Ok(t.elapsed()),
            Some(Ok(Message::Text(other))) => bail!("echo {other:?} instead of {text:?}"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
            None => bail!("websocket closed before the echo"),
        }
    }
}

/// `n` sequential echo round trips of a 32-byte text message on one socket.
pub async fn ws_echo(target: &Target, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut ws = ws_open(target, "/ws").await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(ws_round_trip(&mut ws, &format!("{i:032}")).await?);
    }
    let _ = ws.close(None).await;
    Ok(out)
}

/// What became of one upload.
#[derive(Debug)]
pub struct Upload {
    pub status: Option<StatusCode>,
    /// `x-kandan-error-code` of a refused upload, or the transport error.
    pub detail: String,
    pub elapsed: Duration,
}

/// POSTs `len` bytes to `/upload` on a fresh connection.
pub async fn upload(target: &Target, len: usize) -> anyhow::Result<Upload> {
    let stream = TcpStream::connect(target.addr).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(target.uri("/upload"))
        .header(http::header::HOST, target.addr.to_string())
        .body(Full::new(Bytes::from(vec![b'u'; len])))?;
    let t = Instant::now();
    let resp = match sender.send_request(req).await {
        Ok(resp) => resp,
        Err(err) => {
            return Ok(Upload {
                status: None,
                detail: err.to_string(),
                elapsed: t.elapsed(),
            });
        }
    };
    let status = resp.status();
    let code = resp
        .headers()
        .get(crate::simulator::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    Ok(Upload {
        status: Some(status),
        detail: code.map_or(body.clone(), |c| format!("{c}: {body}")),
        elapsed: t.elapsed(),
    })
}
