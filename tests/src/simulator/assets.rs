//! Kandan's HTTP origin beside the runner socket (the `--url` origin): the
//! files the runner fetches with its token as a bearer, such as the
//! collaboration assets of `start_local_editor` (PROTOCOL.md section 8).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::state::Shared;

/// Serves one plain HTTP connection of the runner socket's port.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(answer(&shared, &req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: Bytes| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body))
            .unwrap_or_default()
    };
    let bearer = format!("Bearer {}", shared.config.token);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == bearer.as_bytes());
    let mut inner = shared.lock();
    inner
        .asset_fetches
        .push((req.uri().path().to_owned(), authorized));
    if !authorized {
        return respond(StatusCode::UNAUTHORIZED, Bytes::from_static(b"bad token"));
    }
    match inner.assets.get(req.uri().path()) {
        Some(body) => respond(StatusCode::OK, body.clone()),
        None => respond(StatusCode::NOT_FOUND, Bytes::from_static(b"no such asset")),
    }
}

/// True when the connection's first request is not for the socket mount:
/// a plain HTTP request for an asset.
pub(crate) async fn is_plain_http(stream: &TcpStream) -> bool {
    let mut head = [0u8; 64];
    let Ok(n) = stream.peek(&mut head).await else {
        return false;
    };
    let line = String::from_utf8_lossy(&head[..n]);
    let path = line.split(' ').nth(1).unwrap_or("");
    line.contains(' ') && !path.starts_with(super::runner_socket::MOUNT)
}
