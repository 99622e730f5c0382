//! What the approval module says to Kandan and hears from it, as plain
//! types; the control channel maps them to JSON (PROTOCOL.md section 4).

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use super::{ApprovalError, RequestId};

/// Kandan's answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

impl FromStr for Decision {
    type Err = ApprovalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "approve" => Ok(Decision::Approve),
            "deny" => Ok(Decision::Deny),
            other => Err(ApprovalError::BadDecision(other.to_string())),
        }
    }
}

/// Where a candidate stands, for `runner_ready.listeners[].state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
}

impl RequestState {
    pub(super) fn of(decision: Option<Decision>) -> Self {
        match decision {
            None => RequestState::Pending,
            Some(Decision::Approve) => RequestState::Approved,
            Some(Decision::Deny) => RequestState::Denied,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
        }
    }
}

/// A `resolve_port_forward_request` control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub request_id: String,
    pub decision: Decision,
    pub actor_user_id: Option<String>,
    pub actor_slug: Option<String>,
}

/// What to tell Kandan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOutput {
    /// `port_forward_request`. `state` is not in the protocol's field list
    /// (unknown fields are ignored): it says a `restarted` request is
    /// already approved, so Kandan need not prompt.
    Request {
        request_id: RequestId,
        port: u16,
        pid: u32,
        command: String,
        label: String,
        cwd: Option<PathBuf>,
        addresses: Vec<IpAddr>,
        restarted: bool,
        state: RequestState,
    },
    /// `port_forward_closed`.
    Closed { request_id: RequestId, port: u16 },
    /// `port_forward_resolved`.
    Resolved {
        request_id: RequestId,
        port: u16,
        decision: Decision,
        actor_user_id: Option<String>,
        actor_slug: Option<String>,
    },
}

/// One entry of `runner_ready.listeners`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerState {
    pub request_id: RequestId,
    pub port: u16,
    pub pid: u32,
    pub command: String,
    pub label: String,
    pub cwd: Option<PathBuf>,
    pub addresses: Vec<IpAddr>,
    pub state: RequestState,
}
