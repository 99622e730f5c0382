//! OpenAI Codex instances (PROTOCOL.md section 7), below the wire: each
//! instance is one `codex app-server` child driven over JSON-RPC by one
//! task. The caller (the Phoenix side) maps [`InstanceEvent`]s to events and
//! controls to [`Command`]s, and numbers events with a [`Replay`] log.
//!
//! ```text
//! let held = codex::spawn(options)?;          // held before exec
//! roots.add_root(held.pid())?;                // a watched root from its first fork
//! let (handle, mut events) = held.start()?;   // Started | Failed, then the stream
//! handle.call(Command::StartTurn { .. }).await?;
//! ```
//!
//! The app-server's schema for the pinned version is kept in `schema/`
//! (the messages used here); a test regenerates it from the installed
//! binary and fails when it differs.

mod backlog;
mod batch;
mod bin;
mod command;
mod event;
mod instance;
mod messages;
mod options;
mod process;
mod replay;
mod rpc;
mod state;
mod transport;
mod tui;

pub use bin::{BinError, CODEX_BIN_ENV, CodexStatus, probe, resolve_bin};
pub use command::{Command, CommandError, InstanceError, InstanceStatus, Reply};
pub use event::{ApprovalKind, ApprovalRequest, Decision, Ids, InstanceEvent, StopReason};
pub(crate) use instance::Emitted;
pub use instance::{Events, HeldInstance, InstanceHandle, spawn};
pub use options::{DEFAULT_STREAM_FLUSH, DEFAULT_TURN_IDLE_TIMEOUT, InstanceOptions};
/// Whether any process (zombies included) is in process group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    crate::supervise::group_alive(pgid)
}
pub use replay::{DEFAULT_MAX_BYTES, Entry, Replay};
pub use rpc::RpcError;
pub use transport::MAX_LINE;

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
