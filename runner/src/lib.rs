//! kandan-runner: notices when a process in a watched tree starts listening on
//! a TCP port, waits until the listener is stable, asks Kandan whether to
//! expose it, and forwards HTTP and WebSocket traffic to it.
//!
//! Data flows one way through the modules:
//! `detect` (ebpf | procfs | libproc) -> `pipeline` (services, debounce) ->
//! `approval` -> `control` (Phoenix channel to Kandan) <-> `forward`.
//! `watched` sets the first two up for the `watch` and `connect` commands.

pub mod approval;
pub mod cli;
pub mod cli_docs;
pub mod codex;
pub mod connect;
pub mod control;
pub mod detect;
pub mod doctor;
pub mod forward;
pub mod gate;
pub mod logging;
pub mod pipeline;
pub mod process;
pub(crate) mod redact;
pub mod service;
pub mod supervise;
mod version;
pub mod watch;
pub mod watched;
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
