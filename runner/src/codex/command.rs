//! The controls an instance takes, their outcomes, and its status.

use std::time::Duration;

use super::rpc::RpcError;
use crate::supervise::SpawnError;
use crate::wire::{InstanceState, InterruptTurn, ReadThread, ResolveApprovalRequest, StartTurn};

/// How long an answer to our requests may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A control for a running instance: Kandan's, as sent (its
/// `instanceId` picked the instance).
#[derive(Debug, PartialEq)]
pub enum InstanceCommand {
    /// Answered with [`Reply::TurnStarted`].
    StartTurn(StartTurn),
    /// The given turn, else the running one.
    Interrupt(InterruptTurn),
    /// Its actor is echoed in `approval_resolved`.
    ResolveApproval(ResolveApprovalRequest),
    /// The thread comes as [`InstanceEvent::ThreadRead`](super::InstanceEvent).
    ReadThread(ReadThread),
    /// `stop_instance`; answered once [`InstanceEvent::Stopped`](super::InstanceEvent) was sent.
    Stop,
}

/// A command's success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    TurnStarted { turn_id: String },
}

/// A command's failure; [`CommandError::code`] is its `control_error` code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No pending approval has this id (never made, answered, or withdrawn).
    #[error("no pending approval request `{request_id}`")]
    UnknownRequest { request_id: String },
    /// `interrupt_turn` without a turn id while no turn runs.
    #[error("no turn is running")]
    NoRunningTurn,
    /// The instance has stopped.
    #[error("the instance has stopped")]
    Stopped,
    /// The app-server answered with an error.
    #[error("`{method}` failed: {error}")]
    Rpc { method: String, error: RpcError },
    /// The app-server did not answer in time.
    #[error("`{method}` got no answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { method: String },
}

impl CommandError {
    pub fn code(&self) -> crate::wire::ErrorCode {
        use crate::wire::ErrorCode;
        match self {
            CommandError::UnknownRequest { .. } => ErrorCode::UnknownRequest,
            CommandError::NoRunningTurn => ErrorCode::InvalidControl,
            CommandError::Stopped => ErrorCode::UnknownInstance,
            CommandError::Rpc { .. } | CommandError::Timeout { .. } => ErrorCode::InstanceFailed,
        }
    }
}

/// Errors of starting an instance (`instance_failed`).
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The app-server could not be spawned.
    #[error("cannot start the codex app-server")]
    Spawn(#[from] SpawnError),
    /// No random bytes for the instance's marker.
    #[error("cannot draw random bytes")]
    Random(#[source] getrandom::Error),
    /// The `launchTui` token file could not be written.
    #[error("cannot write the TUI token file")]
    TuiToken(#[source] std::io::Error),
    /// The child has no stdin or stdout pipe.
    #[error("the codex app-server has no stdio pipes")]
    NoPipes,
}

/// What `runner_ready` lists for an instance (with the caller's `lastSeq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSnapshot {
    /// `None` once the instance has stopped (`runner_ready` leaves it out).
    pub state: Option<InstanceState>,
    pub thread_id: Option<String>,
    /// Runner-made ids of the approvals waiting for a decision.
    pub pending_approvals: Vec<String>,
}
