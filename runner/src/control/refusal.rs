//! WebSocket handshakes Kandan answers with a status no retry can change:
//! the runner reports them and stops instead of reconnecting forever.

use tokio_tungstenite::tungstenite;

/// Kandan refused the runner (exit 3).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// 401 or 403: the token is wrong, expired or revoked.
    #[error(
        "kandan at {url} rejected the token (http {status}): check --token, --token-file or KANDAN_TOKEN"
    )]
    Token { status: u16, url: String },
    /// 401/403 to a runner that sent no token at all: nothing was rejected,
    /// one is missing.
    #[error(
        "kandan at {url} refused the runner (http {status}): no token was given; pass --token, --token-file or KANDAN_TOKEN"
    )]
    NoToken { status: u16, url: String },
    /// 404: nothing serves the runner socket there.
    #[error(
        "kandan has no runner socket at {url} (http 404): --url should be the socket mount, e.g. ws://host/runner/socket"
    )]
    Path { url: String },
}

impl Refusal {
    /// The refusal of a handshake that carried no token: a token refusal
    /// says that none was given.
    pub(crate) fn without_token(self) -> Refusal {
        match self {
            Refusal::Token { status, url } => Refusal::NoToken { status, url },
            other => other,
        }
    }

    /// The refusal in a failed handshake to `mount` (the `--url`), if the
    /// failure is one; any other error keeps the reconnect schedule.
    pub(crate) fn of(error: &tungstenite::Error, mount: &str) -> Option<Refusal> {
        let tungstenite::Error::Http(response) = error else {
            return None;
        };
        let url = super::endpoint::redact(mount);
        match response.status().as_u16() {
            status @ (401 | 403) => Some(Refusal::Token { status, url }),
            404 => Some(Refusal::Path { url }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> tungstenite::Error {
        let response = http::Response::builder().status(status).body(None).unwrap();
        tungstenite::Error::Http(Box::new(response))
    }

    #[test]
    fn only_auth_and_path_answers_are_final() {
        let mount = "ws://ann:pw@h/runner/socket";
        for status in [401, 403] {
            let refusal = Refusal::of(&answered(status), mount).unwrap();
            assert_eq!(
                refusal,
                Refusal::Token {
                    status,
                    url: "ws://<redacted>@h/runner/socket".into()
                }
            );
            assert!(refusal.to_string().contains("rejected the token"));
            let missing = refusal.without_token().to_string();
            assert!(
                missing.contains("no token was given") && !missing.contains("rejected"),
                "{missing}"
            );
        }
        let path = Refusal::of(&answered(404), mount).unwrap().to_string();
        assert!(path.contains("--url should be the socket mount"), "{path}");
        for status in [400, 500, 502, 503] {
            assert_eq!(Refusal::of(&answered(status), mount), None, "{status}");
        }
        let io = tungstenite::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(Refusal::of(&io, mount), None);
    }
}
