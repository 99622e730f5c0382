//! Asks Kandan before any port is forwarded (PROTOCOL.md sections 4 and 5).
//!
//! Candidates come in from the pipeline; what Kandan must be told goes out as
//! wire events (`port_forward_request`, `port_forward_closed`,
//! `port_forward_resolved`); Kandan's `resolve_port_forward_request` comes
//! back through [`Approval::resolve`]. Decisions go to the live [`Gate`], which
//! forwarding reads.
//!
//! Rules:
//! - Every candidate (`opened`, or `changed` to another program) gets a fresh
//!   request id. An approval binds to its identity (port, command, cwd).
//! - Decisions are kept per identity for the runner's lifetime: a dev server
//!   that restarts (same command, same cwd, same port) stays approved, or
//!   denied, even after its `closed`. A restart inside the debounce window
//!   (a new pid only) keeps its request as is and sends nothing; one that
//!   comes back after `closed` gets a new request with `restarted: true`
//!   (and `state` already approved when it was).
//! - A denied identity is not asked again: it gets a request id (it shows in
//!   `runner_ready`) but no `port_forward_request`.
//! - Another program taking the port gets a request of its own (the old one
//!   is closed); the gate refused it the moment its socket appeared.
//! - A decision for a request whose listener has gone still counts for its
//!   identity; if that identity is listening again under a newer request,
//!   that request is resolved too.
//! - The last decision wins: Kandan may approve what it denied, and back.
//! - A `silent` candidate (`[[ports]]` `on_detect`) is never requested nor
//!   listed in `runner_ready`; with no request it cannot be approved.

mod request_id;
#[cfg(test)]
mod tests;

pub(crate) use request_id::PortRequestId;

use std::collections::{HashMap, VecDeque};

use crate::config::OnDetect;
use crate::gate::{Gate, Identity};
use crate::pipeline::{Candidate, CandidateEvent};
use crate::redact::Redactor;
use crate::wire::{
    Decision, ErrorCode, Event, Failure, ListenerInfo, ListenerState, PortForwardClosed,
    PortForwardRequest, PortForwardResolved, ReadyListener, ResolvePortForwardRequest,
};

/// How many requests whose listener has gone are still resolvable (a user
/// answering a prompt just after a restart). Older ones become unknown.
const CLOSED_REQUESTS_KEPT: usize = 1024;

/// Errors of the approval module.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApprovalError {
    /// A `resolve_port_forward_request` named no request this runner made
    /// (or one closed too long ago).
    #[error("unknown request id {0:?}")]
    UnknownRequest(String),
    /// The OS random source failed, so no request id can be made.
    #[error("cannot read random bytes for a request id")]
    Random {
        #[source]
        source: getrandom::Error,
    },
}

impl From<ApprovalError> for Failure {
    /// Every error a control causes here is an invalid one.
    fn from(err: ApprovalError) -> Self {
        Failure::new(ErrorCode::InvalidControl, crate::error_chain(&err))
    }
}

/// Where a candidate stands, given its identity's decision.
fn state_of(decision: Option<Decision>) -> ListenerState {
    match decision {
        None => ListenerState::Pending,
        Some(Decision::Approve) => ListenerState::Approved,
        Some(Decision::Deny) => ListenerState::Denied,
    }
}

/// What Kandan is told about a candidate, from its request on: its
/// `instanceId` is the one it had when it was asked about. The command
/// line is redacted here, at the wire, and nowhere before: the identity
/// keeps the real one, so two different tokens stay two identities.
fn listener_info(
    redactor: &Redactor,
    request_id: &PortRequestId,
    instance_id: Option<String>,
    candidate: &Candidate,
) -> ListenerInfo {
    ListenerInfo {
        instance_id,
        request_id: request_id.to_string(),
        port: candidate.port,
        pid: candidate.pid,
        command: redactor.command(&candidate.process.command),
        label: candidate.process.label.clone(),
        cwd: (candidate.process.cwd.as_ref()).map(|cwd| cwd.display().to_string()),
        addresses: candidate.addresses.clone(),
    }
}

/// A candidate listening now.
#[derive(Debug)]
struct Live {
    request_id: PortRequestId,
    identity: Identity,
    /// As Kandan hears of it (pid and addresses kept current).
    listener: ListenerInfo,
    /// Kandan has heard of `request_id` (a request or `runner_ready`), so
    /// it must hear of its close.
    announced: bool,
}

/// The approval state machine. Owned by one task; it tells the [`Gate`]
/// which identities are approved.
#[derive(Debug)]
pub(crate) struct Approval {
    live: HashMap<u16, Live>,
    /// Every identity seen, with its decision (`None`: not decided yet).
    decisions: HashMap<Identity, Option<Decision>>,
    /// Every resolvable request: live ones and the last closed ones.
    requests: HashMap<PortRequestId, Identity>,
    closed: VecDeque<PortRequestId>,
    gate: Gate,
    redactor: Redactor,
}

impl Default for Approval {
    fn default() -> Self {
        Self::new(Redactor::default())
    }
}

impl Approval {
    /// `redactor` hides the secrets of the command lines Kandan is shown.
    pub(crate) fn new(redactor: Redactor) -> Self {
        Approval {
            redactor,
            live: HashMap::new(),
            decisions: HashMap::new(),
            requests: HashMap::new(),
            closed: VecDeque::new(),
            gate: Gate::new(),
        }
    }

    /// What hides the secrets of the command lines it shows.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The gate this approval decides for; the detector side feeds it the
    /// live sockets, forwarding reads it.
    pub(crate) fn gate(&self) -> Gate {
        self.gate.clone()
    }

    /// Takes a candidate event from the pipeline; `owner_of` names the
    /// instance a listener's pid belongs to.
    pub(crate) fn on_candidate(
        &mut self,
        event: CandidateEvent,
        owner_of: impl Fn(u32) -> Option<String>,
    ) -> Result<Vec<Event>, ApprovalError> {
        match event {
            CandidateEvent::Opened(candidate)
            | CandidateEvent::Changed(candidate)
            | CandidateEvent::AddressesChanged(candidate) => self.listening(candidate, owner_of),
            CandidateEvent::Closed { port, .. } => Ok(self.retire(port).into_iter().collect()),
        }
    }

    fn listening(
        &mut self,
        candidate: Candidate,
        owner_of: impl Fn(u32) -> Option<String>,
    ) -> Result<Vec<Event>, ApprovalError> {
        let port = candidate.port;
        if candidate.attributes.on_detect == OnDetect::Silent {
            // Never asked, so never approved: the gate refuses it. A
            // previous owner's request closes.
            tracing::debug!(port, command = %candidate.process.command, "silent: not asking Kandan");
            return Ok(self.retire(port).into_iter().collect());
        }
        let identity = Identity::new(port, &candidate.process);
        if let Some(live) = self.live.get_mut(&port)
            && live.identity == identity
        {
            // Same program (maybe a new pid, maybe new addresses): same
            // request, same decision, nothing to ask.
            let instance_id = live.listener.instance_id.take();
            live.listener =
                listener_info(&self.redactor, &live.request_id, instance_id, &candidate);
            return Ok(Vec::new());
        }

        // Made first, so a failure leaves everything as it was.
        let request_id = PortRequestId::generate()?;
        let mut out = Vec::new();
        if self.live.contains_key(&port) {
            // Another program took the port: its request closes.
            out.extend(self.retire(port));
        }
        let restarted = self.decisions.contains_key(&identity);
        let decision = *self.decisions.entry(identity.clone()).or_insert(None);
        let state = state_of(decision);
        let announced = decision != Some(Decision::Deny);
        let listener = listener_info(
            &self.redactor,
            &request_id,
            owner_of(candidate.pid),
            &candidate,
        );
        if announced {
            out.push(Event::PortForwardRequest(PortForwardRequest {
                listener: listener.clone(),
                restarted,
                state,
            }));
        } else {
            tracing::info!(port, command = %identity.command, "denied before: not asking again");
        }
        self.gate.set_offered(&identity);
        self.requests.insert(request_id.clone(), identity.clone());
        self.live.insert(
            port,
            Live {
                request_id,
                identity,
                listener,
                announced,
            },
        );
        Ok(out)
    }

    /// Drops the live entry of `port`; its request stays resolvable a while.
    fn retire(&mut self, port: u16) -> Option<Event> {
        let live = self.live.remove(&port)?;
        self.closed.push_back(live.request_id.clone());
        while self.closed.len() > CLOSED_REQUESTS_KEPT {
            if let Some(old) = self.closed.pop_front() {
                self.requests.remove(&old);
            }
        }
        live.announced.then(|| {
            Event::PortForwardClosed(PortForwardClosed {
                instance_id: live.listener.instance_id,
                request_id: live.listener.request_id,
                port,
            })
        })
    }

    /// Takes Kandan's decision. `Err` for a request id this runner does
    /// not know.
    pub(crate) fn resolve(
        &mut self,
        resolve: &ResolvePortForwardRequest,
    ) -> Result<Vec<Event>, ApprovalError> {
        let decision = resolve.decision;
        let Some((request_id, identity)) = self.requests.get_key_value(resolve.request_id.as_str())
        else {
            return Err(ApprovalError::UnknownRequest(resolve.request_id.clone()));
        };
        let (request_id, identity) = (request_id.clone(), identity.clone());
        tracing::info!(port = identity.port, decision = ?decision, %request_id, "resolved");
        self.decisions.insert(identity.clone(), Some(decision));
        self.gate
            .set_approved(&identity, decision == Decision::Approve);

        let resolved = |request_id: &PortRequestId| {
            Event::PortForwardResolved(PortForwardResolved {
                request_id: request_id.to_string(),
                port: identity.port,
                decision,
                actor_user_id: resolve.actor_user_id.clone(),
                actor_slug: resolve.actor_slug.clone(),
            })
        };
        let mut out = vec![resolved(&request_id)];
        // The same identity listening under a newer request: resolved too.
        if let Some(live) = self.live.get(&identity.port)
            && live.identity == identity
            && live.request_id != request_id
            && live.announced
        {
            out.push(resolved(&live.request_id));
        }
        Ok(out)
    }

    /// Every current candidate, for `runner_ready.listeners`, by port.
    /// Kandan hears of all their ids, so all their closes are sent later.
    pub(crate) fn snapshot(&mut self) -> Vec<ReadyListener> {
        for live in self.live.values_mut() {
            live.announced = true;
        }
        self.listeners()
    }

    /// Every current candidate with its state, by port, without telling
    /// Kandan (for `status` and the state lines).
    pub(crate) fn listeners(&self) -> Vec<ReadyListener> {
        let mut listeners: Vec<ReadyListener> = self
            .live
            .values()
            .map(|live| ReadyListener {
                listener: live.listener.clone(),
                state: state_of(self.decisions.get(&live.identity).copied().flatten()),
            })
            .collect();
        listeners.sort_by_key(|ready| ready.listener.port);
        listeners
    }
}
