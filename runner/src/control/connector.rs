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
#[derive(Clone, Copy, Debug)]
pub struct TcpConnector {
    /// Largest frame and message accepted from Kandan, in bytes.
    pub max_message: usize,
}

impl Default for TcpConnector {
    fn default() -> Self {
        TcpConnector {
            max_message: message_limit(16 << 20),
        }
    }
}

/// The largest Kandan message the runner reads when request bodies may be
/// `max_body` bytes: the body in base64 plus room for the JSON around it,
/// and at least 32 MiB so a body somewhat over a small limit is still read
/// and refused with `body_too_large` instead of costing the connection.
/// A larger frame ends the connection (tungstenite refuses it from its
/// header, before reading it), which bounds the runner's memory.
pub fn message_limit(max_body: usize) -> usize {
    const FLOOR: usize = 32 << 20;
    (max_body.div_ceil(3) * 4 + (1 << 20)).max(FLOOR)
}

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
        let (ws, _response) = tokio_tungstenite::connect_async_with_config(
            url,
            Some(websocket_config(self.max_message)),
            true,
        )
        .await?;
        Ok(ws)
    }
}

/// The WebSocket settings of every connection to Kandan (`connect`'s and
/// `doctor --url`'s): frames and messages up to `max_message` bytes.
pub(crate) fn websocket_config(max_message: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(READ_BUFFER)
}

/// What tungstenite reads into at a time. Its 128 KiB default is zeroed
/// on every read, which cost more than the rest of a small message's path.
pub(crate) const READ_BUFFER: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::UrlError;

    #[test]
    fn message_limit_fits_a_full_body_in_base64() {
        use base64::Engine;
        let body = vec![0xffu8; 16 << 20];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        let control = format!(
            r#"[null,null,"runner:dev","control",{{"type":"forward_http_request","requestId":"r1","port":5173,"method":"POST","path":"/upload","bodyBase64":"{encoded}"}}]"#
        );
        assert!(control.len() <= message_limit(body.len()));
        assert!(
            message_limit(body.len()) <= 32 << 20,
            "the limit bounds memory"
        );
        assert!(
            message_limit(64 << 20) > 64 << 20,
            "a raised body limit raises it"
        );
    }

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
        let err = TcpConnector::default()
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
