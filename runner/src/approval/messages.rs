//! What the approval module says to Kandan and hears from it, as plain
//! types; the control channel maps them to JSON (PROTOCOL.md section 4).
//! The protocol's own words (decision, state, actor id) are the control
//! module's types.

use std::net::IpAddr;
use std::path::PathBuf;

use super::RequestId;
use crate::control::controls::{ActorId, Decision};
use crate::control::events::ListenerState;
use crate::pipeline::Candidate;

/// Where a candidate stands, given its identity's decision.
pub(super) fn state_of(decision: Option<Decision>) -> ListenerState {
    match decision {
        None => ListenerState::Pending,
        Some(Decision::Approve) => ListenerState::Approved,
        Some(Decision::Deny) => ListenerState::Denied,
    }
}

/// A `resolve_port_forward_request` control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub request_id: String,
    pub decision: Decision,
    pub actor_user_id: Option<ActorId>,
    pub actor_slug: Option<String>,
}

/// What to tell Kandan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOutput {
    /// `port_forward_request`. The listener's `state` is not in the
    /// protocol's field list (unknown fields are ignored): it says a
    /// `restarted` request is already approved, so Kandan need not prompt.
    Request {
        listener: ListenerSnapshot,
        restarted: bool,
    },
    /// `port_forward_closed`.
    Closed { request_id: RequestId, port: u16 },
    /// `port_forward_resolved`.
    Resolved {
        request_id: RequestId,
        port: u16,
        decision: Decision,
        actor_user_id: Option<ActorId>,
        actor_slug: Option<String>,
    },
}

/// A candidate as Kandan hears of it: one entry of `runner_ready.listeners`,
/// and the body of a `port_forward_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSnapshot {
    pub request_id: RequestId,
    pub port: u16,
    pub pid: u32,
    pub command: String,
    pub label: String,
    pub cwd: Option<PathBuf>,
    pub addresses: Vec<IpAddr>,
    pub state: ListenerState,
}

impl ListenerSnapshot {
    pub(super) fn of(request_id: &RequestId, candidate: &Candidate, state: ListenerState) -> Self {
        ListenerSnapshot {
            request_id: request_id.clone(),
            port: candidate.port,
            pid: candidate.pid,
            command: candidate.process.command.clone(),
            label: candidate.process.label.clone(),
            cwd: candidate.process.cwd.clone(),
            addresses: candidate.addresses.clone(),
            state,
        }
    }
}
