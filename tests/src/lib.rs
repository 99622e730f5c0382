//! Kandan simulator and helpers for the end-to-end tests.

pub mod bench;
pub mod bench_codex;
pub mod bench_editor;
pub mod bench_forward;
pub mod browser;
pub mod code_server;
pub mod codex;
pub mod control_client;
pub mod demo;
pub mod e2e;
pub mod fake_model;
pub mod outsider;
pub mod preview_client;
pub mod runner_process;
pub mod runner_run;
pub mod sim_by_hand;
pub mod simulator;
pub mod support;
pub mod vite;
