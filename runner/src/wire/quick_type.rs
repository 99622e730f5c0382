//! A control's `type`, found by one scan of its text instead of a parse.
//!
//! [`Control::parse`](super::Control) reads a control's ids leniently
//! before its fields, so that a broken control is still answered with
//! them. That is a whole second parse of every control, mostly skipping
//! values. Well-formed controls need only the `type` to pick the fields
//! to read, so this scan finds it, and the lenient read runs only when the
//! typed read fails. The scan answers only when the lenient read would
//! have found the same: exactly one top-level `type` with a plain string
//! value, no top-level id key written twice, no escaped top-level key
//! (which could spell one of them). Otherwise it answers `None` and the
//! control takes the lenient path, as before.

/// Which of the top-level keys the lenient read looks at `key` is (a
/// second one fails that read): `type` is 0.
fn id_key(key: &[u8]) -> Option<usize> {
    match key {
        b"type" => Some(0),
        b"requestId" => Some(1),
        b"socketId" => Some(2),
        b"instanceId" => Some(3),
        b"editorId" => Some(4),
        _ => None,
    }
}

/// The `type` of the JSON object `text`, when the scan can vouch for it;
/// only meaningful for well-formed JSON (the typed read checks that).
pub(super) fn control_type(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut at = skip_space(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    let (mut depth, mut seen, mut found) = (1usize, [false; 5], None);
    // At depth 1, a string right after `{` or `,` is a key.
    let mut expect_key = true;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                let end = string_end(bytes, at + 1)?;
                if depth == 1 && expect_key {
                    let key = &bytes[at + 1..end];
                    if key.contains(&b'\\') {
                        return None;
                    }
                    if let Some(i) = id_key(key) {
                        if std::mem::replace(&mut seen[i], true) {
                            return None;
                        }
                        if i == 0 {
                            found = Some(string_value(text, end + 1)?);
                        }
                    }
                }
                expect_key = false;
                at = end;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' => expect_key = depth == 1,
            _ => {}
        }
        at += 1;
    }
    found
}

/// The index of the `"` that ends the string whose text starts at `at`
/// (a body's base64 can be megabytes: `memchr` skips through it).
fn string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        if bytes[at] == b'"' {
            return Some(at);
        }
        at += 2;
    }
}

/// The value after a key that ends before `at`: a string without escapes
/// (`:` and spaces first), or `None`.
fn string_value(text: &str, at: usize) -> Option<&str> {
    let bytes = text.as_bytes();
    let at = skip_space(bytes, at);
    if bytes.get(at) != Some(&b':') {
        return None;
    }
    let start = skip_space(bytes, at + 1);
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let end = string_end(bytes, start + 1)?;
    let value = &text[start + 1..end];
    (!value.contains('\\')).then_some(value)
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::control_type;

    #[test]
    fn finds_the_top_level_type_wherever_it_is() {
        for text in [
            r#"{"type":"forward_http_request","port":3000}"#,
            r#" { "port" : 3000 , "type" : "forward_http_request" } "#,
            r#"{"headers":{"type":["x"]},"body":"\"type\":\"no\"","type":"forward_http_request"}"#,
            r#"{"a":[{"type":"inner"},"type"],"type":"forward_http_request"}"#,
        ] {
            assert_eq!(control_type(text), Some("forward_http_request"), "{text}");
        }
    }

    #[test]
    fn leaves_to_the_lenient_read_what_it_cannot_vouch_for() {
        for text in [
            // Not an object, or no top-level `type`.
            r#"["type","x"]"#,
            r#"{"a":{"type":"x"}}"#,
            // A `type` that is not a plain string.
            r#"{"type":1}"#,
            r#"{"type":"a\u0062"}"#,
            // An escaped key might spell `type` or an id.
            r#"{"typ\u0065":"x","type":"y"}"#,
            // A key the lenient read looks at, twice.
            r#"{"type":"x","type":"y"}"#,
            r#"{"type":"x","requestId":"1","requestId":"2"}"#,
            r#"{"type":"x","socketId":1,"socketId":2}"#,
        ] {
            assert_eq!(control_type(text), None, "{text}");
        }
    }
}
