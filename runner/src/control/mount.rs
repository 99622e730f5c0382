//! `--url` checked before anything starts: a URL the runner can never open
//! a WebSocket to is a bad flag value (exit 2), not something to retry.

/// Why `--url` cannot be Kandan's socket mount.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MountError {
    /// `127.0.0.1:4000`, `kandan.example/runner/socket`.
    #[error("no scheme: write ws://HOST/runner/socket (wss:// over TLS)")]
    NoScheme,
    /// `http://...`: the runner speaks WebSocket, not HTTP.
    #[error("scheme {scheme}:// is not supported: use ws:// or wss://, e.g. {suggestion}")]
    Scheme { scheme: String, suggestion: String },
    /// No host to dial, or characters a URL cannot hold.
    #[error("not a valid URL: {0}")]
    Invalid(String),
}

/// Checks that `url` is a `ws://` or `wss://` URL with a host.
pub(crate) fn check_mount(url: &str) -> Result<(), MountError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(MountError::NoScheme);
    };
    if !scheme.eq_ignore_ascii_case("ws") && !scheme.eq_ignore_ascii_case("wss") {
        // http -> ws, https -> wss: the usual slip, so say the fix.
        let secure = scheme.eq_ignore_ascii_case("https");
        let suggestion = format!("{}://{rest}", if secure { "wss" } else { "ws" });
        return Err(MountError::Scheme {
            scheme: scheme.to_owned(),
            suggestion: super::endpoint::redact(&suggestion),
        });
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|err: http::uri::InvalidUri| MountError::Invalid(err.to_string()))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(MountError::Invalid("no host".to_owned()));
    }
    // `http::Uri` keeps a port it cannot read (`:99999`) and reports none.
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest);
    let has_port = host_port
        .strip_prefix(host)
        .is_some_and(|rest| rest.starts_with(':'));
    if has_port && uri.port_u16().is_none() {
        return Err(MountError::Invalid(
            "the port is not a number up to 65535".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_websocket_mounts() {
        for url in [
            "ws://127.0.0.1:4000/runner/socket",
            "wss://kandan.example/runner/socket",
            "WSS://kandan.example/runner/socket/",
            "ws://[::1]:4000/runner/socket",
            "ws://ann:pw@host/runner/socket",
        ] {
            assert_eq!(check_mount(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn refuses_what_can_never_connect() {
        assert_eq!(check_mount("127.0.0.1:4000"), Err(MountError::NoScheme));
        assert_eq!(
            check_mount("kandan.example/runner/socket"),
            Err(MountError::NoScheme)
        );
        assert_eq!(
            check_mount("https://k.example/runner/socket"),
            Err(MountError::Scheme {
                scheme: "https".into(),
                suggestion: "wss://k.example/runner/socket".into()
            })
        );
        let http = check_mount("http://h:4000/s").unwrap_err().to_string();
        assert!(http.contains("ws://h:4000/s"), "{http}");
        for url in [
            "ws://",
            "ws:///runner/socket",
            "ws://h:99999999/s",
            "ws://h/a b",
        ] {
            assert!(
                matches!(check_mount(url), Err(MountError::Invalid(_))),
                "{url}: {:?}",
                check_mount(url)
            );
        }
    }

    #[test]
    fn a_password_in_the_url_is_not_repeated() {
        let err = check_mount("http://ann:s3cret@h/s")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
