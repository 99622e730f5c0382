//! What the approval module says to Kandan and hears from it, as plain
//! types; the control channel maps them to JSON (PROTOCOL.md section 4).
//! The protocol's own words (decision, state, actor id) are the control
//! module's types.

use std::net::IpAddr;
use std::path::PathBuf;

use super::RequestId;
use crate::control::controls::{ActorId, Decision};
use crate::control::events::ListenerState;

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
        state: ListenerState,
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

/// One entry of `runner_ready.listeners`.
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
