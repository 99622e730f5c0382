//! The socket URL: `<url>/websocket?vsn=2.0.0&token=<token>`.

use std::fmt::Write as _;

/// The URL to dial. The token is percent-encoded; never log the result.
pub fn socket_url(mount: &str, token: Option<&str>) -> String {
    let mut url = format!("{}/websocket?vsn=2.0.0", mount.trim_end_matches('/'));
    if let Some(token) = token {
        url.push_str("&token=");
        url.push_str(&percent_encode(token));
    }
    url
}

/// The URL without its token, for logs.
pub fn redacted_url(mount: &str) -> String {
    format!("{}/websocket?vsn=2.0.0", mount.trim_end_matches('/'))
}

/// RFC 3986: everything but unreserved characters is escaped.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_url() {
        assert_eq!(
            socket_url("ws://h/runner/socket", Some("abc")),
            "ws://h/runner/socket/websocket?vsn=2.0.0&token=abc"
        );
        assert_eq!(
            socket_url("ws://h/socket/", None),
            "ws://h/socket/websocket?vsn=2.0.0"
        );
    }

    #[test]
    fn encodes_the_token() {
        assert_eq!(
            socket_url("ws://h/s", Some("a+b/c=d&e f~é")),
            "ws://h/s/websocket?vsn=2.0.0&token=a%2Bb%2Fc%3Dd%26e%20f~%C3%A9"
        );
    }
}
