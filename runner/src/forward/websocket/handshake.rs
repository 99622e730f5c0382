//! Opening a socket to the local server: the verified dial, the
//! handshake with the browser's subprotocol, origin and cookies kept, and
//! TLS where the port speaks it.

use ::http::header::{self, HeaderValue};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::super::dial::LocalStream;
use super::super::scheme::Scheme;
use super::super::{ForwardConfig, ForwardError, Local, dial, headers, http, tls};
use super::{HANDSHAKE_HEADERS, Inner, READ_BUFFER, Ws};
use crate::wire::ForwardWebsocketOpen;

/// Connects and performs the handshake, keeping the browser's subprotocol,
/// origin and cookies; returns the socket and the chosen subprotocol.
pub(super) async fn connect(
    inner: &Inner,
    open: &ForwardWebsocketOpen,
    local: &Local,
) -> Result<(Ws, Option<String>), ForwardError> {
    let host = match local {
        Local::Port(port) => headers::local_host(*port),
        Local::Editor(_) => HeaderValue::from_static("localhost"),
    };
    let config = &inner.config;
    let target = http::path_and_query(&open.path.0, open.query_string.as_deref())?;
    let mut map = open.headers.0.clone();
    headers::strip_hop_by_hop(&mut map);
    for name in HANDSHAKE_HEADERS {
        map.remove(name);
    }
    // tungstenite reads the offered subprotocols from one header.
    let offered: Vec<String> = map
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    if offered.len() > 1 {
        map.remove(header::SEC_WEBSOCKET_PROTOCOL);
        let joined = HeaderValue::from_str(&offered.join(", ")).expect("joined valid values");
        map.insert(header::SEC_WEBSOCKET_PROTOCOL, joined);
    }
    match local {
        Local::Port(_) => headers::localize(&mut map, &host),
        Local::Editor(_) => headers::localize_host(&mut map, &host),
    }
    map.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    map.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    map.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    map.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&generate_key()).expect("base64 key"),
    );
    let mut request = ::http::Request::builder()
        .uri(format!(
            "ws://{}{target}",
            host.to_str().unwrap_or("localhost")
        ))
        .body(())
        .map_err(|err| ForwardError::InvalidRequest {
            what: "websocket request",
            detail: err.to_string(),
        })?;
    *request.headers_mut() = map;

    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.ws_max_message))
        .max_frame_size(Some(config.ws_max_message))
        .read_buffer_size(READ_BUFFER);
    let (ws, response) = match local {
        Local::Port(port) => handshake_port(inner, *port, request, ws_config).await?,
        Local::Editor(path) => {
            let stream =
                LocalStream::Unix(dial::connect_editor(path, config.connect_timeout).await?);
            handshake(config, request, stream, ws_config).await?
        }
    };
    let protocol = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, protocol))
}

type Handshaken = (Ws, tungstenite::handshake::client::Response);

async fn handshake(
    config: &ForwardConfig,
    request: ::http::Request<()>,
    stream: LocalStream,
    ws_config: WebSocketConfig,
) -> Result<Handshaken, ForwardError> {
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config));
    tokio::time::timeout(config.overall_timeout, handshake)
        .await
        .map_err(|_| ForwardError::ResponseTimeout {
            after: config.overall_timeout,
        })?
        .map_err(|err| ForwardError::WebSocket(Box::new(err)))
}

/// Connects to `port` (through the verified dial, over TLS when the port
/// speaks it) and performs the handshake. A plain handshake to a port whose
/// scheme is unknown that is reset or answered with something other than
/// HTTP is retried over TLS (a handshake is a GET: resending it is safe).
async fn handshake_port(
    inner: &Inner,
    port: u16,
    mut request: ::http::Request<()>,
    ws_config: WebSocketConfig,
) -> Result<Handshaken, ForwardError> {
    let config = &inner.config;
    let seen = inner.schemes.seen(port);
    let targets = dial::targets(&*inner.gate, port)?;
    let dial = |tls, timeout| dial::connect_port(&*inner.gate, &targets, port, timeout, tls);
    let tls = seen.tls();
    if tls {
        headers::secure_origin(request.headers_mut());
    }
    let (stream, _) = dial(tls, config.connect_timeout).await?;
    let err = match handshake(config, request.clone(), stream, ws_config).await {
        Ok(done) => {
            if !tls {
                inner.schemes.learn(seen, Scheme::Http);
            }
            return Ok(done);
        }
        Err(err) => err,
    };
    if tls || !seen.may_probe() || !looks_like_tls(&err) {
        return Err(err);
    }
    tracing::debug!(error = %err.message(), "plain handshake failed, probing with TLS");
    let Ok((stream, _)) = dial(true, config.connect_timeout.min(tls::PROBE_TIMEOUT)).await else {
        return Err(err);
    };
    inner.schemes.learn(seen, Scheme::Https);
    headers::secure_origin(request.headers_mut());
    handshake(config, request, stream, ws_config).await
}

/// Whether a failed plain handshake may have reached a TLS server: the
/// connection was reset, or the answer was not HTTP (a TLS record).
fn looks_like_tls(err: &ForwardError) -> bool {
    use tungstenite::error::ProtocolError;
    let ForwardError::WebSocket(ws) = err else {
        return false;
    };
    match &**ws {
        tungstenite::Error::Protocol(
            ProtocolError::HttparseError(_) | ProtocolError::HandshakeIncomplete,
        ) => true,
        // tungstenite gives no `source()` for its I/O errors.
        tungstenite::Error::Io(io) => tls::is_reset(io),
        other => tls::is_reset(other),
    }
}
