//! kandan-runner: notices when a process in a watched tree starts listening on
//! a TCP port, waits until the listener is stable, asks Kandan whether to
//! expose it, and forwards HTTP and WebSocket traffic to it.
//!
//! Data flows one way through the modules:
//! `detect` (ebpf | procfs | libproc) -> `pipeline` (services, debounce) ->
//! `approval` -> `control` (Phoenix channel to Kandan) <-> `forward`.
//! `trees` sets the first two up for the `watch` and `connect` commands.

pub(crate) mod approval;
#[cfg(target_os = "linux")]
pub(crate) mod caps;
pub(crate) mod cgroup;
pub(crate) mod cli;
pub(crate) mod cli_docs;
pub mod codex;
pub(crate) mod config;
pub(crate) mod connect;
pub mod control;
pub mod detect;
pub(crate) mod doctor;
pub mod editor;
pub mod entry;
pub(crate) mod fast_hash;
pub(crate) mod forward;
pub mod gate;
pub(crate) mod logging;
pub(crate) mod malloc;
pub mod pipeline;
pub(crate) mod program;
pub mod wire;

pub(crate) mod redact;
pub(crate) mod report;
pub(crate) mod root_pids;
pub(crate) mod service;
pub(crate) mod status;
pub(crate) mod supervise;
pub(crate) mod token_file;
pub(crate) mod trees;
pub(crate) mod user_file;
mod version;
pub(crate) mod watch;
pub(crate) mod workdir;

/// `err` and its sources on one line: "a: b: c". A source whose text the
/// line already holds (many errors print their source themselves) is left
/// out, so nothing is said twice.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Plain(#[source] std::io::Error);

    #[test]
    fn error_chain_says_each_cause_once() {
        let io = || std::io::Error::other("map creation failed");
        assert_eq!(
            super::error_chain(&Repeats(io())),
            "outer: map creation failed"
        );
        assert_eq!(
            super::error_chain(&Plain(io())),
            "outer: map creation failed"
        );
    }
}
