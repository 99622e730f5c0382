//! One `GET` with a bearer token, over http or https: how the runner fetches
//! the collaboration assets from Kandan's HTTP origin. Bounded in size and
//! time; the token goes only in the `Authorization` header, never in an
//! error or a log line.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why a fetch failed (the URL is added by the caller).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Only `http` and `https` URLs with a host are fetched.
    #[error("not an http(s) URL with a host")]
    BadUrl,
    /// The TCP connection failed.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    /// The body could not be read, or was larger than allowed.
    #[error("cannot read the body (at most {limit} bytes)")]
    Body {
        limit: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with another status than 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Nothing came back in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// `GET url` with `Authorization: Bearer <token>`; the body when the answer
/// is 200 and at most `limit` bytes, all within `timeout`.
pub(crate) async fn get_with_bearer(
    url: &Uri,
    token: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    tokio::time::timeout(timeout, get(url, token, limit))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn get(url: &Uri, token: &str, limit: usize) -> Result<Bytes, FetchError> {
    let tls = match url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(FetchError::BadUrl),
    };
    let host = url.host().ok_or(FetchError::BadUrl)?;
    let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // `[::1]` in the URL, `::1` for the socket and the TLS name.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(FetchError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let authority = url.authority().ok_or(FetchError::BadUrl)?;
    // No user:password@ in the Host header.
    let host_header = match authority.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, host_header)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            header::USER_AGENT,
            concat!("kandan-runner/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::BadUrl)?;
    if tls {
        let stream = tls::connect(bare_host, tcp)
            .await
            .map_err(FetchError::Tls)?;
        exchange(stream, request, limit).await
    } else {
        exchange(tcp, request, limit).await
    }
}

async fn exchange<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
    limit: usize,
) -> Result<Bytes, FetchError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(FetchError::Http)?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(FetchError::Http)?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|source| FetchError::Body { limit, source })?;
        Ok(body.to_bytes())
    }
    .await;
    driver.abort();
    result
}

#[cfg(target_os = "linux")]
pub(crate) mod tls {
    use std::sync::Arc;

    use tokio::net::TcpStream;

    /// TLS with the webpki roots, as the control connection does.
    pub(crate) async fn connect(
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        // Installing the provider twice is harmless (see control::connector).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(std::io::Error::other)?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) mod tls {
    use tokio::net::TcpStream;

    /// The system's TLS, as the control connection uses on macOS.
    pub(crate) async fn connect(
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_native_tls::TlsStream<TcpStream>> {
        let connector = native_tls::TlsConnector::new().map_err(std::io::Error::other)?;
        tokio_native_tls::TlsConnector::from(connector)
            .connect(host, tcp)
            .await
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-shot server answering `response` to each connection; returns
    /// its port and the first request it read.
    async fn server(response: &'static [u8]) -> (u16, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if let Some(tx) = tx.take() {
                    let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                let _ = socket.write_all(response).await;
            }
        });
        (port, rx)
    }

    fn url(scheme: &str, port: u16, path: &str) -> Uri {
        format!("{scheme}://127.0.0.1:{port}{path}")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn sends_the_bearer_and_host_and_reads_the_body() {
        let (port, request) =
            server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await;
        let body = get_with_bearer(
            &url("http", port, "/a?b=1"),
            "tok",
            100,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(&body[..], b"hello");
        let request = request.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /a?b=1 http/1.1\r\n"), "{request}");
        assert!(
            request.contains("authorization: bearer tok\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{request}"
        );
    }

    #[tokio::test]
    async fn refuses_other_statuses_large_bodies_and_silence() {
        let (port, _) =
            server(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n").await;
        let err = get_with_bearer(&url("http", port, "/"), "t", 100, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Status(302)), "{err}");

        let (port, _) =
            server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789")
                .await;
        let err = get_with_bearer(&url("http", port, "/"), "t", 4, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Body { limit: 4, .. }), "{err}");

        // Accepts, reads, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let err = get_with_bearer(&url("http", port, "/"), "t", 4, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    }

    /// `https` really speaks TLS: against a plain server the handshake fails.
    #[tokio::test]
    async fn https_urls_speak_tls() {
        let (port, _) = server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        let err = get_with_bearer(&url("https", port, "/"), "t", 100, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Tls(_)), "{err}");
        let ftp: Uri = "ftp://127.0.0.1/x".parse().unwrap();
        let err = get_with_bearer(&ftp, "t", 100, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::BadUrl), "{err}");
    }
}
