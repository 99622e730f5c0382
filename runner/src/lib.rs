//! kandan-runner: notices when a process in a watched tree starts listening on
//! a TCP port, waits until the listener is stable, asks Kandan whether to
//! expose it, and forwards HTTP and WebSocket traffic to it.
//!
//! Data flows one way through the modules:
//! `detect` (ebpf | procfs | libproc) -> `pipeline` (services, debounce) ->
//! `approval` -> `control` (Phoenix channel to Kandan) <-> `forward`.

pub mod cli;
pub mod detect;
pub mod forward;
pub mod pipeline;
pub mod process;
