//! Kandan simulator and helpers for the end-to-end tests.

pub mod bench_forward;
pub mod browser;
pub mod simulator;
pub mod support;
pub mod vite;
