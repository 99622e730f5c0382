//! How a simulator starts.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one simulator; `SimConfig::default()` suits most tests.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the runner socket listens (default `127.0.0.1:0`).
    pub runner_addr: SocketAddr,
    /// Where the preview front and HTTP API listen (default `127.0.0.1:0`).
    pub preview_addr: SocketAddr,
    /// The token the runner must present (default: a fresh one).
    pub token: String,
    /// Accept only `runner:<id>`; `None` accepts any `runner:*` topic.
    pub runner_id: Option<String>,
    /// `instanceId` put into controls that carry one.
    pub instance_id: String,
    /// `actorUserId` of approvals and denials.
    pub actor_user_id: Option<String>,
    /// `actorSlug` of approvals and denials.
    pub actor_slug: Option<String>,
    /// Approve every `port_forward_request` as it arrives.
    pub auto_approve: bool,
    /// Reply to every join with this error reason (changeable at run time).
    pub reject_joins: Option<String>,
    /// Keep the `/preview/<port>` prefix in the forwarded path (for dev
    /// servers started with `--base /preview/<port>/`); by default it is
    /// stripped, so `/preview/8000/a?b` asks the runner for `/a`.
    pub keep_preview_prefix: bool,
    /// How long the preview front waits for the runner's answer to a request
    /// or a WebSocket open before answering 504.
    pub forward_timeout: Duration,
    /// Keep `forward_*` events in [`super::Simulator::events`] (default
    /// true); a benchmark turns it off so megabyte bodies are not retained.
    pub record_forward_events: bool,
    /// Strings longer than this in the runner's frames are recorded as
    /// their digest ([`super::digest_of`]); `None` keeps them whole.
    pub digest_strings_over: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            runner_addr: loopback,
            preview_addr: loopback,
            token: fresh_token(),
            runner_id: None,
            instance_id: "sim-instance".to_owned(),
            actor_user_id: Some("sim-user".to_owned()),
            actor_slug: Some("sim".to_owned()),
            auto_approve: false,
            reject_joins: None,
            keep_preview_prefix: false,
            forward_timeout: Duration::from_secs(90),
            record_forward_events: true,
            digest_strings_over: None,
        }
    }
}

/// Unique enough per simulator; not a secret worth a CSPRNG.
fn fresh_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("sim-{:x}-{:x}", std::process::id(), nanos)
}
