//! A browser's side of the simulator's preview front, for the end-to-end
//! tests: one request per fresh connection, bodies read whole or streamed.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::simulator::{ERROR_CODE_HEADER, Simulator};

/// How long one whole preview exchange may take (10 MiB through base64
/// and JSON on a loaded machine is slow).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// A whole preview response.
#[derive(Debug)]
pub struct PreviewResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl PreviewResponse {
    /// The `control_error` code (or simulator reason) of a failed request.
    pub fn error_code(&self) -> Option<&str> {
        self.headers
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method /preview/<port><path>` and returns the response head, its
/// body still streaming.
pub async fn open(
    sim: &Simulator,
    method: Method,
    port: u16,
    path: &str,
    body: Bytes,
) -> Result<Response<Incoming>> {
    open_path(sim, method, &format!("/preview/{port}{path}"), body).await
}

/// Sends `method <path>` to the preview front (any of its routes: the
/// editor's, the API's).
pub async fn open_path(
    sim: &Simulator,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response<Incoming>> {
    let addr = sim.preview_addr();
    let uri = format!("http://{addr}{path}");
    let req = Request::builder()
        .method(method)
        .uri(&uri)
        .header("host", addr.to_string())
        .body(Full::new(body))?;
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        anyhow::Ok(sender.send_request(req).await?)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{uri}: no response head"))?
        .with_context(|| format!("{uri}: request failed"))
}

/// Sends a request and reads the whole response.
pub async fn request(
    sim: &Simulator,
    method: Method,
    port: u16,
    path: &str,
    body: Bytes,
) -> Result<PreviewResponse> {
    fetch(sim, method, &format!("/preview/{port}{path}"), body).await
}

/// `method <path>` on the preview front, read whole.
pub async fn fetch(
    sim: &Simulator,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<PreviewResponse> {
    let resp = open_path(sim, method, path, body).await?;
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(EXCHANGE_TIMEOUT, body.collect())
        .await
        .context("response body timed out")?
        .context("response body failed")?
        .to_bytes();
    Ok(PreviewResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `GET /preview/<port><path>`, read whole.
pub async fn get(sim: &Simulator, port: u16, path: &str) -> Result<PreviewResponse> {
    request(sim, Method::GET, port, path, Bytes::new()).await
}
