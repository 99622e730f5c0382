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

/// `ws://` over TCP (`wss://` needs a TLS feature of tokio-tungstenite).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = MaybeTlsStream<TcpStream>;

    async fn connect(
        &mut self,
        url: &str,
    ) -> Result<WebSocketStream<Self::Stream>, tungstenite::Error> {
        let (ws, _response) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }
}
