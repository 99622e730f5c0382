//! Header rewriting between Kandan and the local server.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1).
/// Names, not strings: a string is parsed again on every removal.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Forwarded-Host`: where the original `Host` goes.
pub(crate) const X_FORWARDED_HOST: &str = "x-forwarded-host";
/// `X-Forwarded-Origin`: where the original `Origin` goes.
pub(crate) const X_FORWARDED_ORIGIN: &str = "x-forwarded-origin";

/// Removes hop-by-hop headers: the fixed list, every `Proxy-*`, and those
/// the `Connection` header names.
pub(crate) fn strip_hop_by_hop(map: &mut HeaderMap) {
    // Most messages have none (a `Connection` header is one itself): one
    // look at each name is cheaper than a lookup of each of the list.
    if !map.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = map
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        map.remove(name);
    }
    for name in &HOP_BY_HOP {
        map.remove(name);
    }
    let proxy: Vec<HeaderName> = map
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        map.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// Makes the request look local to the dev server: `Host` becomes
/// `localhost:<port>` (Vite's allowed-hosts check and webpack's "Invalid
/// Host header" accept it) and the original goes to `X-Forwarded-Host`.
/// `Origin`, when present, becomes `http://localhost:<port>` with the
/// original in `X-Forwarded-Origin`: origin checks (Django CSRF, webpack's
/// WebSocket check) compare it with `Host`, and Kandan's approval is the
/// real gate here.
pub(crate) fn localize(map: &mut HeaderMap, host: &HeaderValue) {
    localize_host(map, host);
    if let Some(origin) = map.remove(header::ORIGIN) {
        map.insert(X_FORWARDED_ORIGIN, origin);
        let mut local = b"http://".to_vec();
        local.extend_from_slice(host.as_bytes());
        let local = HeaderValue::from_bytes(&local).expect("a host value with a scheme");
        map.insert(header::ORIGIN, local);
    }
}

/// For a local server that speaks HTTPS: the local `Origin` that
/// [`localize`] set says `https://` (origin checks compare schemes too).
pub(crate) fn secure_origin(map: &mut HeaderMap) {
    if !map.contains_key(X_FORWARDED_ORIGIN) {
        return;
    }
    let secure = map
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("http://"))
        .and_then(|host| HeaderValue::from_str(&format!("https://{host}")).ok());
    if let Some(secure) = secure {
        map.insert(header::ORIGIN, secure);
    }
}

/// Only `Host` becomes local (the original goes to `X-Forwarded-Host`);
/// `Origin` stays. For editors: code-server accepts a WebSocket whose
/// `Origin` matches `X-Forwarded-Host`, i.e. the page Kandan served.
pub(crate) fn localize_host(map: &mut HeaderMap, host: &HeaderValue) {
    if let Some(original) = map.remove(header::HOST) {
        map.insert(X_FORWARDED_HOST, original);
    }
    map.insert(header::HOST, host.clone());
}

/// `localhost:<port>`: the `Host` a dev server on `port` expects.
pub(crate) fn local_host(port: u16) -> HeaderValue {
    // On the stack: `format!` cost more than the rest of the rewrite.
    const PREFIX: &[u8] = b"localhost:";
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(port).as_bytes();
    let mut text = [0u8; PREFIX.len() + 5];
    text[..PREFIX.len()].copy_from_slice(PREFIX);
    text[PREFIX.len()..][..digits.len()].copy_from_slice(digits);
    HeaderValue::from_bytes(&text[..PREFIX.len() + digits.len()]).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut map = parse(&[
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic x"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Sum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("Accept", "text/html"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "cookie"]);
        assert_eq!(map.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn local_host_names_every_port() {
        for port in [0, 1, 9, 10, 99, 100, 5173, 9999, 10000, 65535] {
            assert_eq!(local_host(port), format!("localhost:{port}").as_str());
        }
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_as_they_are() {
        let list = [
            ("Accept", "text/html"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
        ];
        let mut map = parse(&list);
        strip_hop_by_hop(&mut map);
        assert_eq!(map, parse(&list));
        // One of them alone is enough to be found.
        for hop in [
            "Connection",
            "Keep-Alive",
            "TE",
            "Upgrade",
            "Proxy-Anything",
        ] {
            let mut map = parse(&[("Accept", "text/html"), (hop, "x")]);
            strip_hop_by_hop(&mut map);
            assert_eq!(map, parse(&[("Accept", "text/html")]), "{hop}");
        }
    }

    #[test]
    fn host_and_origin_become_local_and_originals_are_kept() {
        let mut map = parse(&[
            ("Host", "preview.kandan.dev"),
            ("Origin", "https://preview.kandan.dev"),
        ]);
        localize(&mut map, &local_host(5173));
        assert_eq!(map["host"], "localhost:5173");
        assert_eq!(map["x-forwarded-host"], "preview.kandan.dev");
        assert_eq!(map["origin"], "http://localhost:5173");
        assert_eq!(map["x-forwarded-origin"], "https://preview.kandan.dev");
    }
}
