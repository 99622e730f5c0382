//! The control channel to Kandan: a Phoenix Channels v2 client over a
//! WebSocket (`client`) and its framing (`in_frame` from Kandan, `frame`
//! to it); what it carries are the
//! types of [`crate::wire`].
//!
//! Wiring: `ControlClient::spawn(config)` gives a [`ControlChannel`]. On
//! `ControlInput::Joined(session)` answer at once with
//! `handle.reply(session, Event::RunnerReady(..))` carrying every current
//! candidate; act on `ControlInput::Control { session, control }` and answer
//! with `handle.reply(session, ..)`; send state changes with `handle.send(..)`.

pub mod budget;
pub(crate) mod client;
mod connection;
pub(crate) mod connector;
pub(crate) mod endpoint;
pub(crate) mod frame;
pub(crate) mod in_frame;
pub(crate) mod mount;
mod out_frame;
pub(crate) mod refusal;
mod responder;
pub mod schedule;
mod shortcut;

pub use client::{
    Ack, Charged, ControlChannel, ControlClient, ControlConfig, ControlHandle, ControlInput,
    JoinInfo, Session, Timing,
};
pub(crate) use refusal::Refusal;
pub(crate) use responder::Responder;
#[cfg(test)]
pub(crate) use responder::TestAnswers;
pub(crate) use shortcut::Shortcut;

#[cfg(test)]
mod tests;
