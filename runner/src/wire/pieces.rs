//! A body (of a response, a chunk or a WebSocket message) as the pieces
//! it was read in. On the wire it is one base64 string, encoded piece by
//! piece straight into the frame; it is never concatenated in memory (for
//! a 1 MiB body that copy cost as much as the base64 itself).

use base64_simd::{AppendBase64Encode, STANDARD};
use bytes::Bytes;
use serde::{Serialize, Serializer};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pieces(Vec<Bytes>);

impl Pieces {
    /// Appends a piece; empty ones are not kept.
    pub(crate) fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.0.push(piece);
        }
    }

    /// The body's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Appends the body's base64 (standard alphabet, padded) to `out`, as
    /// if the pieces were one buffer: the 1 or 2 bytes that end a piece
    /// between two 3-byte groups are carried into the next.
    pub(crate) fn append_base64<T: AppendBase64Encode>(&self, out: &mut T) {
        let mut carry = [0u8; 3];
        let mut carried = 0;
        for piece in &self.0 {
            let mut rest = &piece[..];
            if carried > 0 {
                let take = (3 - carried).min(rest.len());
                carry[carried..carried + take].copy_from_slice(&rest[..take]);
                carried += take;
                rest = &rest[take..];
                if carried < 3 {
                    continue;
                }
                STANDARD.encode_append(carry, out);
            }
            let whole = rest.len() / 3 * 3;
            STANDARD.encode_append(&rest[..whole], out);
            let tail = &rest[whole..];
            carry[..tail.len()].copy_from_slice(tail);
            carried = tail.len();
        }
        if carried > 0 {
            STANDARD.encode_append(&carry[..carried], out);
        }
    }

    /// The whole body in one buffer (a copy; tests).
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Bytes {
        self.0.concat().into()
    }
}

impl From<Bytes> for Pieces {
    fn from(piece: Bytes) -> Self {
        let mut pieces = Pieces::default();
        pieces.push(piece);
        pieces
    }
}

/// The same base64 through a string, for serializing an event as a whole
/// (tests, logs); frames take the body out and encode it in place instead
/// (`frame::event_frame`).
impl Serialize for Pieces {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::new();
        self.append_base64(&mut text);
        serializer.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_encode_as_their_concatenation_at_every_split() {
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for first in [0, 1, 2, 3, 4, 5, 7, 500] {
            for second in [0, 1, 2, 3, 11] {
                let (a, rest) = body.split_at(first);
                let (b, c) = rest.split_at(second);
                let mut pieces = Pieces::default();
                for piece in [a, b, c] {
                    pieces.push(Bytes::copy_from_slice(piece));
                }
                let mut text = String::new();
                pieces.append_base64(&mut text);
                assert_eq!(text, base64_simd::STANDARD.encode_to_string(&body));
                assert_eq!(pieces.len(), body.len());
            }
        }
        // One-byte pieces carry across several of them.
        let mut pieces = Pieces::default();
        for byte in b"hello" {
            pieces.push(Bytes::copy_from_slice(&[*byte]));
        }
        let mut text = String::new();
        pieces.append_base64(&mut text);
        assert_eq!(text, "aGVsbG8=");
        assert_eq!(serde_json::to_string(&pieces).unwrap(), "\"aGVsbG8=\"");
        assert_eq!(serde_json::to_string(&Pieces::default()).unwrap(), "\"\"");
    }
}
