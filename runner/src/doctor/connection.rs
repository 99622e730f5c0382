//! `doctor --url`: connects to Kandan as `connect` would and reports each
//! step (URL, DNS, TCP, TLS, WebSocket upgrade, Phoenix join) with its time,
//! stopping at the first that fails and saying the fix, like `ngrok
//! diagnose`. The token reaches no output: every detail is scrubbed of it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

use super::join::join_and_leave;
use super::report::{
    DoctorReport, EXIT_BAD_URL, EXIT_NETWORK, EXIT_REFUSED, Outcome, Step, StepName,
};
use crate::control::{JoinInfo, Refusal, connector, endpoint, mount};

/// How long one step may take (the connection's own connect timeout).
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a step failed.
pub(super) struct StepFailure {
    pub(super) detail: String,
    pub(super) fix: Option<String>,
    pub(super) exit: i32,
}

impl StepFailure {
    pub(super) fn network(detail: impl Into<String>, fix: impl Into<String>) -> Self {
        StepFailure {
            detail: detail.into(),
            fix: Some(fix.into()),
            exit: EXIT_NETWORK,
        }
    }
}

/// The first failing step ended the check.
struct Stopped;

/// Steps taken so far, and what must never be shown.
struct Run {
    steps: Vec<Step>,
    exit: i32,
    /// The token and its percent-encoded form.
    secrets: Vec<String>,
}

impl Run {
    fn scrub(&self, text: String) -> String {
        self.secrets
            .iter()
            .fold(text, |text, secret| text.replace(secret, "<redacted>"))
    }

    /// Records a step begun at `started`; a failure ends the check.
    fn record<T>(
        &mut self,
        step: StepName,
        started: Instant,
        result: Result<(T, String), StepFailure>,
    ) -> Result<T, Stopped> {
        let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        match result {
            Ok((value, detail)) => {
                let detail = self.scrub(detail);
                self.steps.push(Step {
                    step,
                    status: Outcome::Ok,
                    ms,
                    detail,
                    fix: None,
                });
                Ok(value)
            }
            Err(failure) => {
                let detail = self.scrub(failure.detail);
                let fix = failure.fix.map(|fix| self.scrub(fix));
                self.steps.push(Step {
                    step,
                    status: Outcome::Failed,
                    ms,
                    detail,
                    fix,
                });
                self.exit = failure.exit;
                Err(Stopped)
            }
        }
    }

    fn skip(&mut self, step: StepName, detail: &str) {
        self.steps.push(Step {
            step,
            status: Outcome::Skipped,
            ms: 0.0,
            detail: detail.to_owned(),
            fix: None,
        });
    }
}

/// Connects to `url` with `token`, joins as `join` says, leaves, and
/// reports; with `leave_out` (why), stops after the WebSocket handshake.
pub(crate) async fn check(
    url: &str,
    token: Option<&str>,
    join: JoinInfo,
    leave_out: Option<String>,
) -> DoctorReport {
    let mut secrets = Vec::new();
    // A very short token would scrub ordinary words; such a token is no
    // secret worth the noise.
    if let Some(token) = token.filter(|token| token.len() >= 4) {
        secrets.push(endpoint::percent_encode(token));
        secrets.push(token.to_owned());
    }
    let mut run = Run {
        steps: Vec::new(),
        exit: 0,
        secrets,
    };
    let _ = steps(&mut run, url, token, join, leave_out).await;
    DoctorReport {
        url: endpoint::redact(url),
        ok: run.exit == 0,
        steps: run.steps,
        exit: run.exit,
    }
}

/// Where to dial, read from `--url`.
struct DialTarget {
    host: String,
    port: u16,
    secure: bool,
}

async fn steps(
    run: &mut Run,
    url: &str,
    token: Option<&str>,
    join: JoinInfo,
    leave_out: Option<String>,
) -> Result<(), Stopped> {
    let started = Instant::now();
    let target = run.record(StepName::Url, started, target(url))?;

    let started = Instant::now();
    let addrs = run.record(StepName::Dns, started, resolve(&target).await)?;

    let started = Instant::now();
    let tcp = run.record(StepName::Tcp, started, dial(&target, &addrs).await)?;

    let stream: Box<dyn Io> = if target.secure {
        let started = Instant::now();
        run.record(StepName::Tls, started, tls(&target, tcp).await)?
    } else {
        run.skip(StepName::Tls, "ws:// is not encrypted (wss:// is)");
        Box::new(tcp)
    };

    let started = Instant::now();
    let socket_url = endpoint::socket_url(url, token);
    let ws = run.record(
        StepName::Websocket,
        started,
        upgrade(
            &socket_url,
            url,
            stream,
            token.is_some_and(|t| !t.is_empty()),
        )
        .await,
    )?;

    if let Some(why) = leave_out {
        run.skip(StepName::Join, &why);
        let mut ws = ws;
        let _ = tokio::time::timeout(STEP_TIMEOUT, ws.close(None)).await;
        return Ok(());
    }
    let started = Instant::now();
    let topic = format!("runner:{}", join.runner_id);
    run.record(
        StepName::Join,
        started,
        join_and_leave(ws, &topic, &join).await,
    )?;
    Ok(())
}

fn target(url: &str) -> Result<(DialTarget, String), StepFailure> {
    mount::check_mount(url).map_err(|err| StepFailure {
        detail: format!("--url {}: {err}", endpoint::redact(url)),
        fix: None,
        exit: EXIT_BAD_URL,
    })?;
    let uri: http::Uri = url
        .parse()
        .map_err(|err: http::uri::InvalidUri| StepFailure {
            detail: format!("--url: not a valid URL: {err}"),
            fix: None,
            exit: EXIT_BAD_URL,
        })?;
    let secure = uri
        .scheme_str()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss"));
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok((
        DialTarget { host, port, secure },
        endpoint::redacted_url(url),
    ))
}

async fn resolve(target: &DialTarget) -> Result<(Vec<SocketAddr>, String), StepFailure> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return Ok((
            vec![SocketAddr::new(ip, target.port)],
            format!("{ip} (an address: nothing to look up)"),
        ));
    }
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let fix = format!(
        "check the host name in --url, and this machine's DNS (/etc/resolv.conf, a VPN) for {}",
        target.host
    );
    match tokio::time::timeout(STEP_TIMEOUT, lookup).await {
        Err(_) => Err(StepFailure::network(
            format!(
                "{}: no answer within {} s",
                target.host,
                STEP_TIMEOUT.as_secs()
            ),
            fix,
        )),
        Ok(Err(err)) => Err(StepFailure::network(format!("{}: {err}", target.host), fix)),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return Err(StepFailure::network(
                    format!("{}: no address", target.host),
                    fix,
                ));
            }
            let shown: Vec<String> = addrs.iter().map(|addr| addr.ip().to_string()).collect();
            let detail = format!("{} -> {}", target.host, shown.join(", "));
            Ok((addrs, detail))
        }
    }
}

/// Tries each address in turn, as the connection does.
async fn dial(
    target: &DialTarget,
    addrs: &[SocketAddr],
) -> Result<(TcpStream, String), StepFailure> {
    let mut tried = Vec::new();
    let mut refused = false;
    for &addr in addrs {
        match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // As the connection does: small frames go out at once.
                let _ = stream.set_nodelay(true);
                return Ok((stream, format!("connected to {addr}")));
            }
            Ok(Err(err)) => {
                refused |= err.kind() == std::io::ErrorKind::ConnectionRefused;
                tried.push(format!("{addr}: {}", lowercase_io(&err)));
            }
            Err(_) => tried.push(format!(
                "{addr}: no answer within {} s",
                STEP_TIMEOUT.as_secs()
            )),
        }
    }
    let fix = if refused {
        format!(
            "nothing listens on port {} of {}: is Kandan running there, and is the port in --url right?",
            target.port, target.host
        )
    } else {
        format!(
            "check the network path to {}:{} (firewall, proxy, VPN)",
            target.host, target.port
        )
    };
    Err(StepFailure::network(tried.join("; "), fix))
}

/// `Connection refused (os error 111)` -> `connection refused (os error 111)`.
fn lowercase_io(err: &std::io::Error) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// A byte stream the WebSocket runs over: TCP, or TLS over TCP.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn tls(target: &DialTarget, tcp: TcpStream) -> Result<(Box<dyn Io>, String), StepFailure> {
    let handshake = crate::editor::fetch::tls::connect(&target.host, tcp);
    let fix = format!(
        "{}:{} must serve TLS with a certificate for {} from a public authority; if that port serves plain HTTP, use ws://",
        target.host, target.port, target.host
    );
    match tokio::time::timeout(STEP_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => Ok((
            Box::new(stream),
            format!("certificate of {} verified", target.host),
        )),
        Ok(Err(err)) => Err(StepFailure::network(err.to_string(), fix)),
        Err(_) => Err(StepFailure::network(
            format!("no TLS answer within {} s", STEP_TIMEOUT.as_secs()),
            fix,
        )),
    }
}

pub(super) type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

async fn upgrade(
    socket_url: &str,
    mount: &str,
    stream: Box<dyn Io>,
    with_token: bool,
) -> Result<(Ws, String), StepFailure> {
    let config = connector::websocket_config(connector::message_limit(16 << 20));
    let handshake = tokio_tungstenite::client_async_with_config(socket_url, stream, Some(config));
    let error = match tokio::time::timeout(STEP_TIMEOUT, handshake).await {
        Ok(Ok((ws, response))) => {
            return Ok((ws, format!("http {}", response.status().as_u16())));
        }
        Ok(Err(error)) => error,
        Err(_) => {
            return Err(StepFailure::network(
                format!(
                    "no answer to the upgrade within {} s",
                    STEP_TIMEOUT.as_secs()
                ),
                "a proxy in front of Kandan may hold WebSocket upgrades: check that it passes them",
            ));
        }
    };
    let refusal = Refusal::of(&error, mount);
    let refusal = if with_token {
        refusal
    } else {
        refusal.map(Refusal::without_token)
    };
    match refusal {
        Some(Refusal::NoToken { status, .. }) => Err(StepFailure {
            detail: format!("http {status}: Kandan refused the runner, and no token was given"),
            fix: Some(
                "pass the runner token from Kandan with --token-file, --token or KANDAN_TOKEN"
                    .to_owned(),
            ),
            exit: EXIT_REFUSED,
        }),
        Some(Refusal::Token { status, .. }) => Err(StepFailure {
            detail: format!("http {status}: Kandan rejected the token"),
            fix: Some(
                "check --token, --token-file or KANDAN_TOKEN: the runner token from Kandan, not expired or revoked"
                    .to_owned(),
            ),
            exit: EXIT_REFUSED,
        }),
        Some(Refusal::Path { .. }) => Err(StepFailure {
            detail: "http 404: no runner socket at this path".to_owned(),
            fix: Some(
                "--url should be the socket mount, e.g. wss://kandan.example/runner/socket".to_owned(),
            ),
            exit: EXIT_REFUSED,
        }),
        None => match error {
            tungstenite::Error::Http(response) => Err(StepFailure::network(
                format!("http {}: the upgrade was refused", response.status().as_u16()),
                "Kandan (or a proxy in front of it) did not accept the WebSocket: check that the proxy passes upgrades and Kandan is up",
            )),
            other => Err(StepFailure::network(
                other.to_string(),
                "the server there does not speak WebSocket: check the host and port in --url",
            )),
        },
    }
}
