//! The runner's own outgoing WebSocket frames. tungstenite copies every
//! message it sends into its write buffer and masks it there; for a 1 MiB
//! response (1.4 MB of base64) that copy cost as much as the base64 itself.
//! So the runner writes each text frame into one buffer with room for the
//! frame header in front, masks it in place and writes it to the socket
//! itself, several small frames in one write. tungstenite still reads,
//! answers pings and sends the close frame.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;

/// The longest client frame header: 2 bytes, an 8-byte length, the mask.
pub(crate) const HEADROOM: usize = 14;

/// Frames at least this long are written on their own, without a copy
/// into the batch buffer; shorter ones are batched.
const OWN_WRITE: usize = 64 << 10;

/// A masked text frame, ready to write.
#[derive(Debug)]
pub(crate) struct OutFrame {
    buf: Vec<u8>,
    start: usize,
}

impl OutFrame {
    /// A buffer for a frame's text: [`HEADROOM`] bytes, then the text.
    pub(crate) fn buffer(capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(HEADROOM + capacity);
        buf.resize(HEADROOM, 0);
        buf
    }

    /// Frames `buf` (from [`OutFrame::buffer`], the text after the
    /// headroom) as a final, masked text frame (RFC 6455 section 5.2; a
    /// client masks every frame with a fresh random key).
    pub(crate) fn text(buf: Vec<u8>) -> OutFrame {
        Self::text_with_key(buf, rand::random())
    }

    fn text_with_key(mut buf: Vec<u8>, key: [u8; 4]) -> OutFrame {
        let len = buf.len() - HEADROOM;
        let mut header = [0u8; HEADROOM];
        header[0] = 0x80 | 0x1; // FIN, text
        let n = match len {
            0..=125 => {
                header[1] = 0x80 | len as u8;
                2
            }
            126..=0xFFFF => {
                header[1] = 0x80 | 126;
                header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                header[1] = 0x80 | 127;
                header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        header[n..n + 4].copy_from_slice(&key);
        let header = &header[..n + 4];
        let start = HEADROOM - header.len();
        buf[start..HEADROOM].copy_from_slice(header);
        mask(&mut buf[HEADROOM..], key);
        OutFrame { buf, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// XORs `payload` with the repeated `key`, eight bytes at a time (the
/// compiler vectorizes the loop).
fn mask(payload: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let masked = u64::from_ne_bytes(chunk.try_into().unwrap_or_default()) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // The rest starts at a multiple of 8, so at key byte 0.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Frames queued for one write.
#[derive(Debug, Default)]
pub(crate) struct FrameWriter {
    batch: Vec<u8>,
}

impl FrameWriter {
    /// Queues `frame`; a large one is written at once, after what was
    /// queued before it.
    pub(crate) async fn queue<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        frame: OutFrame,
    ) -> Result<(), tungstenite::Error> {
        if frame.bytes().len() < OWN_WRITE {
            self.batch.extend_from_slice(frame.bytes());
            if self.batch.len() < OWN_WRITE {
                return Ok(());
            }
            return self.flush(ws).await;
        }
        self.write_batch(ws).await?;
        ws.get_mut().write_all(frame.bytes()).await?;
        Ok(())
    }

    /// Writes what is queued and flushes the socket.
    pub(crate) async fn flush<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
    ) -> Result<(), tungstenite::Error> {
        self.write_batch(ws).await?;
        ws.get_mut().flush().await?;
        Ok(())
    }

    async fn write_batch<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
    ) -> Result<(), tungstenite::Error> {
        // Whatever tungstenite has buffered (a pong) goes out first, whole,
        // so the two writers' bytes never interleave.
        futures_util::SinkExt::<tungstenite::Message>::flush(ws).await?;
        if !self.batch.is_empty() {
            let written = ws.get_mut().write_all(&self.batch).await;
            self.batch.clear();
            written?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn frame_of(text: &str, key: [u8; 4]) -> OutFrame {
        let mut buf = OutFrame::buffer(text.len());
        buf.extend_from_slice(text.as_bytes());
        OutFrame::text_with_key(buf, key)
    }

    #[test]
    fn masks_like_the_rfc_example() {
        // RFC 6455 section 5.7: a masked "Hello".
        let frame = frame_of("Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            frame.bytes(),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    /// Frames of every length class, batched and written alone, read back
    /// by tungstenite as the server: the same texts, in order.
    #[tokio::test]
    async fn tungstenite_reads_what_the_writer_wrote() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(16 << 20))
            .max_frame_size(Some(16 << 20));
        let mut server = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
        let texts: Vec<String> = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000, 3 << 20, 9]
            .iter()
            .map(|&n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
            .collect();
        let expected = texts.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < expected.len() {
                match server.next().await {
                    Some(Ok(Message::Text(text))) => got.push(text.as_str().to_owned()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(got, expected);
        });
        let mut writer = FrameWriter::default();
        for text in &texts {
            let mut buf = OutFrame::buffer(text.len());
            buf.extend_from_slice(text.as_bytes());
            writer
                .queue(&mut client, OutFrame::text(buf))
                .await
                .unwrap();
        }
        writer.flush(&mut client).await.unwrap();
        reader.await.unwrap();
    }
}
