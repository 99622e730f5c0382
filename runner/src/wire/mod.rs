//! The wire contract (PROTOCOL.md sections 3 and 4) as Rust types: the
//! controls Kandan sends (`controls`, their validating `fields`), the events
//! the runner sends (`events`, a Codex instance's in `instance`) and the one
//! builder of every `control_error` (`control_error`). Every other module
//! speaks these types directly; this module imports nothing else from the
//! crate, so it sits below all of them.

/// `Visitor` methods for the JSON values a lenient reader does not want
/// (`parse::lenient`, the ids in `params`): each is read through, an array
/// or object to its end, and answers `$nothing`. One pass, nothing
/// buffered, nothing refused.
macro_rules! other_values_are {
    ($de:lifetime, $nothing:expr; $($kind:ident),+) => {
        $(other_values_are!(@$kind $de, $nothing);)+
    };
    (@bool $de:lifetime, $nothing:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
    (@i64 $de:lifetime, $nothing:expr) => {
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
    (@u64 $de:lifetime, $nothing:expr) => {
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
    (@f64 $de:lifetime, $nothing:expr) => {
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
    (@str $de:lifetime, $nothing:expr) => {
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
    (@unit $de:lifetime, $nothing:expr) => {
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
    (@seq $de:lifetime, $nothing:expr) => {
        fn visit_seq<A: serde::de::SeqAccess<$de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok($nothing)
        }
    };
    (@map $de:lifetime, $nothing:expr) => {
        fn visit_map<A: serde::de::MapAccess<$de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok($nothing)
        }
    };
}

mod control_error;
mod controls;
mod events;
mod fields;
mod hot;
mod instance;
mod instance_wire;
mod names;
mod params;
mod parse;
mod pieces;
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
pub(crate) use hot::HotControl;
pub use instance::{ApprovalKind, ApprovalRequest, Ids, InstanceEvent, StopReason};
pub use instance_wire::{InstanceEventJson, InstanceWire};
pub use params::Params;
pub use pieces::Pieces;
