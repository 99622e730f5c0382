//! The controls an instance takes, their outcomes, and its status.

use std::time::Duration;

use serde::Serialize;

use super::rpc::RpcError;
use crate::supervise::SpawnError;

/// How long an answer to our requests may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A control for a running instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `start_turn`; answered with [`Reply::TurnStarted`].
    StartTurn {
        text: String,
        client_turn_id: Option<String>,
    },
    /// `interrupt_turn`: the given turn, else the running one.
    Interrupt { turn_id: Option<String> },
    /// `resolve_approval_request`.
    ResolveApproval {
        request_id: String,
        approve: bool,
        for_session: bool,
        /// Echoed in `approval_resolved`.
        actor_user_id: Option<crate::wire::ActorId>,
        actor_slug: Option<String>,
    },
    /// `read_thread`; the thread comes as [`InstanceEvent::ThreadRead`].
    ReadThread {
        thread_id: String,
        include_turns: bool,
    },
    /// `stop_instance`; answered once [`InstanceEvent::Stopped`] was sent.
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

/// `runner_ready`'s `state` of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Idle,
    Running,
    Stopped,
}

/// What `runner_ready` lists for an instance (with the caller's `lastSeq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub state: InstanceState,
    pub thread_id: Option<String>,
    /// Runner-made ids of the approvals waiting for a decision.
    pub pending_approvals: Vec<String>,
}
