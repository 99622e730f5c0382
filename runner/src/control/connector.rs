//! How the client gets a WebSocket: TCP (and TLS when enabled) in the runner,
//! an in-memory pipe in tests.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

/// Opens a WebSocket to a URL.
pub trait Connector: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(
        &mut self,
        url: &str,
    ) -> impl Future<Output = Result<WebSocketStream<Self::Stream>, tungstenite::Error>> + Send;
}

/// `ws://` over TCP; `wss://` over rustls with the webpki roots on Linux,
/// over the system's TLS on macOS.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = MaybeTlsStream<TcpStream>;

    async fn connect(
        &mut self,
        url: &str,
    ) -> Result<WebSocketStream<Self::Stream>, tungstenite::Error> {
        // rustls needs a process-wide crypto provider; installing it twice
        // is harmless (the second attempt just reports the first).
        #[cfg(target_os = "linux")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Nagle off: every forwarded answer is a small write the other side
        // waits for; with Nagle a request/response exchange stalls for the
        // peer's delayed ACK (~40 ms a round trip, measured by bench forward).
        let (ws, _response) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::UrlError;

    /// `wss://` is really attempted: against a plain TCP server the TLS
    /// handshake fails, instead of "TLS support not compiled in".
    #[tokio::test]
    async fn wss_urls_speak_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let err = TcpConnector
            .connect(&format!("wss://127.0.0.1:{port}/runner/socket/websocket"))
            .await
            .map(|_| ())
            .expect_err("a plain TCP server cannot complete a TLS handshake");
        assert!(
            !matches!(err, tungstenite::Error::Url(UrlError::TlsFeatureNotEnabled)),
            "{err}"
        );
    }
}
