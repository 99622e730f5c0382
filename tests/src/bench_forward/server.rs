//! The local server the runner forwards to: small and 1 MiB responses, an
//! upload sink and a WebSocket echo, on one loopback port.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Size of `/small`.
pub const SMALL: usize = 100;
/// Size of `/big`.
pub const BIG: usize = 1 << 20;

/// Serves on `127.0.0.1:<port>` until killed.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let small = Bytes::from(vec![b's'; SMALL]);
    let big = Bytes::from(vec![b'b'; BIG]);
    loop {
        let (stream, _) = listener.accept().await.context("accepting")?;
        let _ = stream.set_nodelay(true);
        let (small, big) = (small.clone(), big.clone());
        let service = service_fn(move |req| route(req, small.clone(), big.clone()));
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn route(
    req: Request<Incoming>,
    small: Bytes,
    big: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp
    };
    Ok(match req.uri().path() {
        "/small" => reply(StatusCode::OK, small),
        "/big" => reply(StatusCode::OK, big),
        "/upload" => {
            // Count without keeping: the sink itself must not be the memory hog.
            let mut body = req.into_body();
            let mut len = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                len += frame.data_ref().map_or(0, Bytes::len);
            }
            reply(StatusCode::OK, Bytes::from(len.to_string()))
        }
        "/ws" => echo(req),
        _ => reply(StatusCode::NOT_FOUND, Bytes::new()),
    })
}

/// Answers the upgrade and echoes every data frame.
fn echo(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not a websocket")));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}
