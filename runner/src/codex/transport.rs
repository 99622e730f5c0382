//! Moving JSON-RPC lines between the instance's task and the app-server:
//! a reader task that parses each line (a malformed one is logged and
//! skipped) and a writer task, so the instance never blocks on a pipe.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::rpc::{Incoming, parse_line};

/// The longest line read (a `thread/read` with many turns is large); a
/// longer one is skipped whole.
const MAX_LINE: usize = 64 << 20;
/// Parsed messages waiting for the instance: when it is slow (Kandan not
/// reading), the app-server's stdout is not read either.
const INCOMING_QUEUE: usize = 256;

/// The instance's ends of the connection.
pub struct Transport {
    /// `None` once the app-server's output ended.
    pub incoming: mpsc::Receiver<Incoming>,
    /// Dropping it closes the app-server's stdin.
    pub outgoing: mpsc::UnboundedSender<String>,
}

/// A transport over a child's stdout and stdin.
pub fn stdio(
    stdout: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    stdin: impl AsyncWrite + Unpin + Send + 'static,
) -> Transport {
    let (in_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let (outgoing, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(read_lines(BufReader::new(stdout), in_tx));
    tokio::spawn(write_lines(stdin, out_rx));
    Transport { incoming, outgoing }
}

async fn read_lines(mut reader: impl AsyncBufRead + Unpin, tx: mpsc::Sender<Incoming>) {
    let mut line = Vec::new();
    loop {
        match read_line(&mut reader, &mut line).await {
            Ok(Line::End) => break,
            Ok(Line::TooLong) => {
                tracing::warn!("app-server output: a line over {MAX_LINE} bytes skipped");
            }
            Ok(Line::Full) => {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                match parse_line(text) {
                    Ok(message) => {
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(err) => {
                        let shown: String =
                            String::from_utf8_lossy(text).chars().take(200).collect();
                        tracing::warn!(
                            "app-server output: malformed line skipped ({err}): {shown}"
                        );
                    }
                }
            }
            Err(err) => {
                tracing::warn!("cannot read the app-server's output: {err}");
                break;
            }
        }
    }
}

enum Line {
    Full,
    TooLong,
    End,
}

/// Reads up to the next newline into `line`, never holding more than
/// [`MAX_LINE`] bytes.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                Line::End
            } else if too_long {
                Line::TooLong
            } else {
                Line::Full
            });
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(buf.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Full });
        }
    }
}

async fn write_lines(mut writer: impl AsyncWrite + Unpin, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(mut line) = rx.recv().await {
        line.push('\n');
        if let Err(err) = writer.write_all(line.as_bytes()).await {
            tracing::debug!("cannot write to the app-server: {err}");
            break;
        }
        if writer.flush().await.is_err() {
            break;
        }
    }
    // Dropping the writer closes the app-server's stdin.
}

/// A transport over the app-server's WebSocket listener (`launchTui`):
/// one JSON-RPC message per text frame, `token` as the bearer capability.
pub async fn websocket(
    url: &str,
    token: &str,
) -> Result<Transport, tokio_tungstenite::tungstenite::Error> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut request = url.into_client_request()?;
    let bearer = format!("Bearer {token}").parse().map_err(|_| {
        tokio_tungstenite::tungstenite::Error::Url(
            tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect("bad token".into()),
        )
    })?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, bearer);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut sink, mut stream) = socket.split();
    let (in_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let (outgoing, mut out_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match parse_line(text.as_bytes()) {
                Ok(message) => {
                    if in_tx.send(message).await.is_err() {
                        break;
                    }
                }
                Err(err) => tracing::warn!("app-server message: malformed, skipped ({err})"),
            }
        }
    });
    tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            if sink.send(Message::text(line)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    Ok(Transport { incoming, outgoing })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_lines_are_skipped_and_the_rest_arrives_in_order() {
        let (mut app, ours) = tokio::io::duplex(1 << 16);
        let (stdin, _keep) = tokio::io::duplex(64);
        let mut transport = stdio(ours, stdin);
        let input = concat!(
            "garbage\n",
            "{\"method\":\"a\"}\n",
            "\n",
            "{\"id\":1}\n",
            "\u{fffd}\u{1} binary?\n",
            "{\"method\":\"b\",\"params\":{\"x\":1}}\n",
            "{\"method\":\"c\"}"
        );
        app.write_all(input.as_bytes()).await.unwrap();
        drop(app);
        let mut methods = Vec::new();
        while let Some(message) = transport.incoming.recv().await {
            if let Incoming::Notification { method, .. } = message {
                methods.push(method);
            }
        }
        assert_eq!(methods, ["a", "b", "c"]);
    }
}
