//! OpenAI Codex instances (PROTOCOL.md section 7): each instance is one
//! `codex app-server` child driven over JSON-RPC by one task. It takes
//! Kandan's controls as they came ([`InstanceCommand`] wraps them), and sends its
//! [`InstanceEvent`]s (the wire events, less `instanceId` and `seq`),
//! tagged with its id, straight to the caller's channel; the caller
//! serializes each once and numbers it in a [`Replay`] log.
//!
//! ```text
//! let held = codex::spawn(options)?;          // held before exec
//! roots.add_root(held.pid())?;                // a watched root from its first fork
//! let handle = held.start_into(id, events)?;  // Started | Failed, then the stream
//! handle.call(InstanceCommand::StartTurn(turn)).await?;
//! ```
//!
//! The app-server's schema for the pinned version is kept in `schema/`
//! (the messages used here); a test regenerates it from the installed
//! binary and fails when it differs.

mod approvals;
mod backlog;
mod batch;
mod bin;
mod command;
mod instance;
mod messages;
mod options;
mod process;
mod replay;
mod rpc;
mod state;
mod transport;
mod tui;

// What the integration tests drive an instance with; the rest is the crate's.
pub use crate::wire::{ApprovalKind, ApprovalRequest, Decision, Ids, InstanceEvent, StopReason};
pub use command::{CommandError, InstanceCommand, InstanceError, InstanceSnapshot, Reply};
pub use instance::{Events, HeldInstance, InstanceHandle, spawn};
pub use options::InstanceOptions;
pub use rpc::RpcError;

pub(crate) use bin::{probe, resolve_bin};
pub(crate) use instance::Emitted;
pub(crate) use replay::{DEFAULT_MAX_BYTES, Replay};

/// Whether any process (zombies included) is in process group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    crate::supervise::group_alive(pgid)
}

/// The schema files kept in `schema/` (paths as `generate-json-schema`
/// writes them), for the test that checks them against the binary.
pub const SCHEMA_FILES: &[&str] = &[
    "ServerRequest.json",
    "CommandExecutionRequestApprovalParams.json",
    "CommandExecutionRequestApprovalResponse.json",
    "FileChangeRequestApprovalParams.json",
    "FileChangeRequestApprovalResponse.json",
    "PermissionsRequestApprovalParams.json",
    "PermissionsRequestApprovalResponse.json",
    "v1/InitializeParams.json",
    "v1/InitializeResponse.json",
    "v2/ThreadStartParams.json",
    "v2/ThreadResumeParams.json",
    "v2/ThreadReadParams.json",
    "v2/TurnStartParams.json",
    "v2/TurnStartResponse.json",
    "v2/TurnInterruptParams.json",
    "v2/TurnStartedNotification.json",
    "v2/TurnCompletedNotification.json",
    "v2/ServerRequestResolvedNotification.json",
    "v2/AgentMessageDeltaNotification.json",
];
