//! The wire name of a value, read back from its serde attributes: the name
//! of a unit variant (`ErrorCode`, `ControlType`), or the `type` of an
//! event. So every name is written once, where serde reads and writes it.

use std::io::{self, Write};

use serde::Serialize;

/// `value`'s name: a unit variant's, or its `type` field's ("" for
/// anything else). The JSON is written only up to the name, so an event's
/// body after its `type` is never serialized.
pub(super) fn name_of<T: Serialize + ?Sized>(value: &T) -> String {
    let mut seen = Seen(Vec::new());
    let _ = serde_json::to_writer(&mut seen, value);
    let text = String::from_utf8_lossy(&seen.0);
    let name = match text.strip_prefix('{') {
        // `"type":"` can only be a key: in a string its quotes are escaped.
        Some(_) => text.find(TYPE_KEY).map(|at| &text[at + TYPE_KEY.len()..]),
        None => text.strip_prefix('"'),
    };
    let name = name.and_then(|name| name.split('"').next());
    name.unwrap_or_default().to_owned()
}

const TYPE_KEY: &str = "\"type\":\"";

/// The JSON written so far; refuses more once it holds a whole name.
struct Seen(Vec<u8>);

impl Seen {
    /// Whether the name is complete: a closed string, or a closed `type`
    /// value in an object.
    fn done(&self) -> bool {
        let text = &self.0;
        match text.first() {
            Some(b'"') => text.len() > 1 && text[1..].contains(&b'"'),
            Some(b'{') => find(text, TYPE_KEY.as_bytes())
                .is_some_and(|at| text[at + TYPE_KEY.len()..].contains(&b'"')),
            _ => false,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

impl Write for Seen {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.done() {
            return Err(io::Error::other("name found"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
