//! The readiness probe: `GET /healthz` over the editor's Unix socket. Only
//! the status counts: the body says `expired` until traffic flows.

use std::path::Path;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// The status code of `GET path` on the socket, or why there is none.
pub(crate) async fn status(socket: &Path, path: &str) -> Result<u16, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake: {err}"))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let result = sender
        .send_request(request)
        .await
        .map(|response| response.status().as_u16())
        .map_err(|err| format!("request: {err}"));
    driver.abort();
    result
}
