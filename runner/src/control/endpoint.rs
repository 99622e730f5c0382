//! The socket URL: `<url>/websocket?vsn=2.0.0&token=<token>`.

use std::fmt::Write as _;

/// The URL to dial. The token is percent-encoded; never log the result.
pub(crate) fn socket_url(mount: &str, token: Option<&str>) -> String {
    let mut url = format!("{}/websocket?vsn=2.0.0", mount.trim_end_matches('/'));
    if let Some(token) = token {
        url.push_str("&token=");
        url.push_str(&percent_encode(token));
    }
    url
}

/// The URL without its token, for logs.
pub(crate) fn redacted_url(mount: &str) -> String {
    redact(&format!(
        "{}/websocket?vsn=2.0.0",
        mount.trim_end_matches('/')
    ))
}

/// `url` fit for a log line: a `user:password@` and the value of any
/// `token` query parameter replaced by `<redacted>`.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("<redacted>@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let (tail, fragment) = match tail.find('#') {
        Some(hash) => tail.split_at(hash),
        None => (tail, ""),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("token") => {
                        format!("{key}=<redacted>")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}{fragment}")
}

/// RFC 3986: everything but unreserved characters is escaped.
pub(crate) fn percent_encode(text: &str) -> String {
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
    fn redacts_userinfo_and_tokens() {
        assert_eq!(
            redacted_url("wss://ann:s3cret@k.example:4000/runner/socket"),
            "wss://<redacted>@k.example:4000/runner/socket/websocket?vsn=2.0.0"
        );
        assert_eq!(
            redact("ws://h/s?token=abc&vsn=2&TOKEN=x#frag"),
            "ws://h/s?token=<redacted>&vsn=2&TOKEN=<redacted>#frag"
        );
        assert_eq!(
            redact("ws://h/a@b"),
            "ws://h/a@b",
            "an @ in the path is no userinfo"
        );
        assert_eq!(redacted_url("ws://h/s"), "ws://h/s/websocket?vsn=2.0.0");
    }

    #[test]
    fn encodes_the_token() {
        assert_eq!(
            socket_url("ws://h/s", Some("a+b/c=d&e f~é")),
            "ws://h/s/websocket?vsn=2.0.0&token=a%2Bb%2Fc%3Dd%26e%20f~%C3%A9"
        );
    }
}
