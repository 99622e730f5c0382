//! Kandan simulator and helpers for the end-to-end tests.

pub mod simulator;
pub mod support;
