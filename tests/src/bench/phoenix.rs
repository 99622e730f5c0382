//! The socket of a bare stand-in for the runner (the bare forwarder, the
//! bare relay): connected to the simulator as the runner connects, and
//! joined to its topic.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `url` with `token` (Nagle off, as the runner's) and sends
/// the `phx_join` of `topic` with join ref and ref `1`.
pub async fn join(url: &str, token: &str, topic: &str) -> anyhow::Result<Socket> {
    // The simulator's tokens are URL-safe (`sim-<hex>-<hex>`).
    let url = format!("{url}/websocket?vsn=2.0.0&token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream.set_nodelay(true)?;
    }
    let join = ("1", "1", topic, "phx_join", serde_json::json!({}));
    ws.send(Message::text(serde_json::to_string(&join)?))
        .await?;
    Ok(ws)
}
