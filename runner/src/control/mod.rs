//! The control channel to Kandan: a Phoenix Channels v2 client over a
//! WebSocket (`client`), its framing (`frame`), and the typed messages of the
//! wire contract: controls from Kandan (`controls`), events to it (`events`).
//!
//! Wiring: `ControlClient::spawn(config)` gives a [`ControlChannel`]. On
//! `ControlInput::Joined(session)` answer at once with
//! `handle.reply(session, Event::RunnerReady(..))` carrying every current
//! candidate; act on `ControlInput::Control { session, control }` and answer
//! with `handle.reply(session, ..)`; send state changes with `handle.send(..)`.

pub mod budget;
pub mod client;
mod connection;
pub mod connector;
pub mod controls;
pub mod endpoint;
pub mod events;
pub(crate) mod frame;
pub(crate) mod instance_wire;
pub(crate) mod mount;
mod out_frame;
pub mod pieces;
pub mod refusal;
pub mod schedule;

pub(crate) use client::Responder;
#[cfg(test)]
pub(crate) use client::TestAnswers;
pub use client::{
    Ack, Charged, ControlChannel, ControlClient, ControlConfig, ControlHandle, ControlInput,
    JoinInfo, Session, Timing,
};
pub use controls::{Control, ControlRejection};
pub use events::{ErrorCode, Event};
pub use refusal::Refusal;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_names;
