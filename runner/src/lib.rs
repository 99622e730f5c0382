//! kandan-runner: notices when a process in a watched tree starts listening on
//! a TCP port, waits until the listener is stable, asks Kandan whether to
//! expose it, and forwards HTTP and WebSocket traffic to it.
//!
//! Data flows one way through the modules:
//! `detect` (ebpf | procfs | libproc) -> `pipeline` (services, debounce) ->
//! `approval` -> `control` (Phoenix channel to Kandan) <-> `forward`.
//! `trees` sets the first two up for the `watch` and `connect` commands.

pub(crate) mod approval;
pub mod cli;
pub mod cli_docs;
pub mod codex;
pub mod connect;
pub mod control;
pub mod detect;
pub mod doctor;
pub mod editor;
pub(crate) mod forward;
pub mod gate;
pub mod logging;
pub mod pipeline;

pub(crate) mod redact;
pub(crate) mod report;
pub mod service;
pub mod status;
pub(crate) mod supervise;
pub(crate) mod trees;
mod version;
pub mod watch;
pub mod workdir;

/// `err` and its sources on one line: "a: b: c".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
