//! Moving JSON-RPC lines between the instance's task and the app-server:
//! a reader task that parses each line (a malformed one is logged and
//! skipped) and a writer task, so the instance never blocks on a pipe.
//!
//! Memory (PROTOCOL.md section 5): each line read is charged to the
//! runner's event budget before it is parsed, and the charge travels with
//! the message until its event is written to Kandan. A full budget stops
//! the reader, so the app-server's stdout pipe fills and it waits. Beyond
//! the budget a reader holds at most the one line it is reading, of at most
//! [`MAX_LINE`] bytes: a longer line fails the instance.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::rpc::{Incoming, parse_line};
use crate::control::budget::{Budget, Charge};

/// The longest line read (a `thread/read` with many turns is large); the
/// instance fails on a longer one, before reading past this.
pub(crate) const MAX_LINE: usize = 64 << 20;
/// Parsed messages waiting for the instance (also bounded in bytes by
/// their charges).
const INCOMING_QUEUE: usize = 256;
/// Read size: a pipe's default capacity, so one read empties it.
const READ_BUFFER: usize = 64 << 10;
/// A line buffer grown past this is given back after its line.
const KEEP_LINE_CAPACITY: usize = 4 << 20;
/// Memory a parsed JSON value takes per element beyond its text (a
/// `serde_json::Value` is 32 bytes, plus its slot in a map or array).
const VALUE_OVERHEAD: usize = 64;

/// What the reader hands the instance.
#[derive(Debug)]
pub(crate) enum Received {
    /// A message and the budget bytes it holds until its event is written.
    Message(Incoming, Charge),
    /// The app-server wrote a line over [`MAX_LINE`]: nothing more is read.
    LineTooLong,
}

/// The instance's ends of the connection.
pub(crate) struct Transport {
    /// `None` once the app-server's output ended.
    pub(crate) incoming: mpsc::Receiver<Received>,
    /// Dropping it closes the app-server's stdin.
    pub(crate) outgoing: mpsc::UnboundedSender<String>,
}

/// A transport over a child's stdout and stdin.
pub(crate) fn stdio(
    stdout: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    stdin: impl AsyncWrite + Unpin + Send + 'static,
    budget: Budget,
) -> Transport {
    let (in_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let (outgoing, out_rx) = mpsc::unbounded_channel();
    let reader = BufReader::with_capacity(READ_BUFFER, stdout);
    tokio::spawn(read_lines(reader, in_tx, budget));
    tokio::spawn(write_lines(stdin, out_rx));
    Transport { incoming, outgoing }
}

async fn read_lines(
    mut reader: impl AsyncBufRead + Unpin,
    tx: mpsc::Sender<Received>,
    budget: Budget,
) {
    let mut line = Vec::new();
    loop {
        if line.capacity() > KEEP_LINE_CAPACITY {
            line = Vec::new();
        }
        match read_line(&mut reader, &mut line).await {
            Ok(LineRead::End) => break,
            Ok(LineRead::TooLong) => {
                tracing::error!(
                    "the codex app-server wrote a line over {} MiB: the instance stops",
                    MAX_LINE >> 20
                );
                let _ = tx.send(Received::LineTooLong).await;
                break;
            }
            Ok(LineRead::Full) => {
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                // Waits while the budget is full: the pipe fills meanwhile.
                let charge = budget.charge(parsed_cost(text)).await;
                match parse_line(text) {
                    Ok(message) => {
                        if tx.send(Received::Message(message, charge)).await.is_err() {
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

enum LineRead {
    Full,
    TooLong,
    End,
}

/// Reads up to the next newline into `line`, never holding more than
/// [`MAX_LINE`] bytes: a longer line is not read further.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    line.clear();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::End
            } else {
                LineRead::Full
            });
        }
        let (chunk, found) = match memchr::memchr(b'\n', buf) {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > MAX_LINE {
            line.clear();
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(chunk);
        let used = found.unwrap_or(buf.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(LineRead::Full);
        }
    }
}

/// What the message parsed from `text` holds in memory, about: its text
/// plus [`VALUE_OVERHEAD`] per JSON element (counted by the separators and
/// openings outside strings), so a line of many tiny values is not
/// charged as if it were one string.
fn parsed_cost(text: &[u8]) -> usize {
    // Most of a line is inside strings (a delta's text, ids): `memchr`
    // skips through them; the rest is counted byte by byte.
    let (mut elements, mut at) = (1usize, 0);
    while let Some(rest) = text.get(at..) {
        let quote = memchr::memchr(b'"', rest).unwrap_or(rest.len());
        let structural = |b: &&u8| matches!(b, b',' | b':' | b'[' | b'{');
        elements += rest[..quote].iter().filter(structural).count();
        at += quote + 1;
        // Inside a string: to its closing quote, over escapes.
        while let Some(rest) = text.get(at..) {
            match memchr::memchr2(b'"', b'\\', rest) {
                Some(i) if rest[i] == b'\\' => at += i + 2,
                Some(i) => {
                    at += i + 1;
                    break;
                }
                None => at = text.len() + 1,
            }
        }
    }
    text.len()
        .saturating_add(elements.saturating_mul(VALUE_OVERHEAD))
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
pub(crate) async fn websocket(
    url: &str,
    token: &str,
    budget: Budget,
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
            // Not read further while the budget is full (TCP holds it back).
            let charge = budget.charge(parsed_cost(text.as_bytes())).await;
            match parse_line(text.as_bytes()) {
                Ok(message) => {
                    if in_tx
                        .send(Received::Message(message, charge))
                        .await
                        .is_err()
                    {
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
    use std::time::Duration;

    use super::*;

    fn unlimited() -> Budget {
        Budget::new(1 << 30)
    }

    #[tokio::test]
    async fn malformed_lines_are_skipped_and_the_rest_arrives_in_order() {
        let (mut app, ours) = tokio::io::duplex(1 << 16);
        let (stdin, _keep) = tokio::io::duplex(64);
        let mut transport = stdio(ours, stdin, unlimited());
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
        while let Some(received) = transport.incoming.recv().await {
            if let Received::Message(Incoming::Notification { method, .. }, _) = received {
                methods.push(method);
            }
        }
        assert_eq!(methods, ["a", "b", "c"]);
    }

    /// A line of `size` bytes: a notification whose `params.t` pads it.
    fn line_of(size: usize) -> Vec<u8> {
        let head = b"{\"method\":\"n\",\"params\":{\"t\":\"";
        let mut line = head.to_vec();
        line.resize(size - 4, b'x');
        line.extend_from_slice(b"\"}}\n");
        line
    }

    #[tokio::test]
    async fn a_full_budget_stops_the_reader_until_charges_come_back() {
        let budget = Budget::new(3 * 100_000);
        let (mut app, ours) = tokio::io::duplex(1 << 16);
        let (stdin, _keep) = tokio::io::duplex(64);
        let mut transport = stdio(ours, stdin, budget.clone());
        let writer = tokio::spawn(async move {
            for _ in 0..20 {
                app.write_all(&line_of(100_000)).await?;
            }
            std::io::Result::Ok(())
        });
        // Two fit (each costs its text and a little more); the third waits.
        let mut held = Vec::new();
        for _ in 0..2 {
            match transport.incoming.recv().await {
                Some(Received::Message(_, charge)) => held.push(charge),
                other => panic!("{other:?}"),
            }
        }
        let more = tokio::time::timeout(Duration::from_millis(200), transport.incoming.recv());
        assert!(more.await.is_err(), "read past a full budget");
        assert!(!writer.is_finished(), "the writer was never held back");
        // Giving the bytes back lets the rest through.
        drop(held);
        let mut count = 2;
        while count < 20 {
            match transport.incoming.recv().await {
                Some(Received::Message(_, charge)) => drop(charge),
                other => panic!("{other:?}"),
            }
            count += 1;
        }
        writer.await.unwrap().unwrap();
        assert_eq!(budget.available(), budget.total());
    }

    #[tokio::test]
    async fn a_line_over_the_limit_ends_the_reading_without_holding_it() {
        let (mut app, ours) = tokio::io::duplex(1 << 16);
        let (stdin, _keep) = tokio::io::duplex(64);
        let mut transport = stdio(ours, stdin, unlimited());
        let writer = tokio::spawn(async move {
            let written: std::io::Result<()> = async {
                app.write_all(&line_of(1000)).await?;
                // No newline, ever: only MAX_LINE of it is read.
                let chunk = vec![b'y'; 1 << 20];
                loop {
                    app.write_all(&chunk).await?;
                }
            }
            .await;
            written
        });
        assert!(matches!(
            transport.incoming.recv().await,
            Some(Received::Message(..))
        ));
        assert!(matches!(
            transport.incoming.recv().await,
            Some(Received::LineTooLong)
        ));
        assert!(transport.incoming.recv().await.is_none());
        // The reader let go of the pipe: the writer fails instead of waiting.
        assert!(writer.await.unwrap().is_err());
    }

    /// [`parsed_cost`] as a plain byte loop, to check the fast one against.
    fn parsed_cost_bytewise(text: &[u8]) -> usize {
        let (mut elements, mut in_string, mut escaped) = (1usize, false, false);
        for &byte in text {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match byte {
                    b'"' => in_string = true,
                    b',' | b':' | b'[' | b'{' => elements += 1,
                    _ => {}
                }
            }
        }
        text.len() + elements * VALUE_OVERHEAD
    }

    #[test]
    fn parsed_cost_skips_strings_as_the_byte_loop_does() {
        for text in [
            &br#"{"method":"item/agentMessage/delta","params":{"delta":"a, b: [c] {d}","n":[1,2]}}"#[..],
            br#"{"a":"\"","b":"x\\","c":[{"d":"\\\""},3]}"#,
            br#"{"unterminated":"abc, d"#,
            br#"{"ends in an escape":"\"#,
            br#"["\u0022,", ",", {"":""}]"#,
            b"",
            b"\"",
            b"{,:[",
        ] {
            let shown = String::from_utf8_lossy(text);
            assert_eq!(parsed_cost(text), parsed_cost_bytewise(text), "{shown}");
        }
    }

    #[test]
    fn parsed_cost_counts_elements_outside_strings() {
        let text = br#"{"a":[1,2,3],"b":"x,y:[{\"}"}"#;
        // `{`, `:`, `[`, `,`, `,`, `,`, `:` and the value itself: 8.
        assert_eq!(parsed_cost(text), text.len() + 8 * VALUE_OVERHEAD);
        assert_eq!(parsed_cost(b"\"abc\""), 5 + VALUE_OVERHEAD);
    }
}
