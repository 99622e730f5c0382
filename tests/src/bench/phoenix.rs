//! The socket of a bare stand-in for the runner (the bare forwarder, the
//! bare relay): connected to the simulator as the runner connects, joined
//! to its topic, and the controls read from it.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// `kandan-runner connect`'s `--url` and `--token`, as the bench passes them.
#[derive(Debug, clap::Args)]
pub struct Endpoint {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub token: String,
}

/// What tungstenite reads into at a time: the runner's size
/// (`control::connector::READ_BUFFER`). Its 128 KiB default is zeroed on
/// every read, which would make a bare stand-in cost more than it must.
const READ_BUFFER: usize = 16 * 1024;

/// Connects to the endpoint (Nagle off and the read buffer as the
/// runner's) and sends the `phx_join` of `topic` with join ref and ref `1`.
pub async fn join(endpoint: &Endpoint, topic: &str) -> anyhow::Result<Socket> {
    // The simulator's tokens are URL-safe (`sim-<hex>-<hex>`).
    let url = format!(
        "{}/websocket?vsn=2.0.0&token={}",
        endpoint.url, endpoint.token
    );
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(&url, Some(config), true).await?;
    let join = ("1", "1", topic, "phx_join", serde_json::json!({}));
    ws.send(Message::text(serde_json::to_string(&join)?))
        .await?;
    Ok(ws)
}

/// The payload of a `control` frame, read as `T`; `None` for other frames
/// and for controls that are not a `T`.
pub fn control<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    type Frame<'a, T> = (Option<&'a str>, Option<&'a str>, &'a str, &'a str, T);
    match serde_json::from_str::<Frame<'_, T>>(text) {
        Ok((_, _, _, "control", control)) => Some(control),
        _ => None,
    }
}
