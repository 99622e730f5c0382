//! The wire contract (PROTOCOL.md sections 3 and 4) as Rust types: the
//! controls Kandan sends (`controls`, their validating `fields`), the events
//! the runner sends (`events`, a Codex instance's in `instance`) and the one
//! builder of every `control_error` (`control_error`). Every other module
//! speaks these types directly; this module imports nothing else from the
//! crate, so it sits below all of them.

mod control_error;
mod controls;
mod events;
mod fields;
mod instance;
mod instance_wire;
mod names;
mod params;
mod parse;
mod pieces;
mod quick_type;
#[cfg(test)]
mod tests;

pub use control_error::{ControlErrorEvent, ErrorCode};
pub(crate) use control_error::{ControlIds, Failure};
pub(crate) use controls::ControlType;
pub use controls::{
    Control, ForwardHttpCancel, ForwardHttpRequest, ForwardWebsocketClose, ForwardWebsocketOpen,
    ForwardWebsocketSend, InterruptTurn, ReadThread, ResolveApprovalRequest,
    ResolvePortForwardRequest, StartInstance, StartLocalEditor, StartTurn, StopInstance,
    StopLocalEditor, Target, UpdateRunnerConfig,
};
pub use events::{
    EditorStopReason, Event, ForwardHttpResponse, ForwardHttpResponseChunk, ForwardWebsocketClosed,
    ForwardWebsocketMessage, ForwardWebsocketOpened, InstanceState, Limits, ListenerInfo,
    ListenerState, LocalEditorStarted, LocalEditorStopped, PortForwardClosed, PortForwardRequest,
    PortForwardResolved, ReadyEditor, ReadyInstance, ReadyListener, RunnerConfigApplied,
    RunnerReady,
};
pub use fields::{
    AbsolutePath, ActorId, ApprovalPolicy, Body, Decision, Headers, Method, Opcode, Port,
    SandboxMode, UrlPath,
};
pub use instance::{ApprovalKind, ApprovalRequest, Ids, InstanceEvent, StopReason};
pub use instance_wire::{InstanceEventJson, InstanceWire};
pub use params::Params;
pub use pieces::Pieces;
