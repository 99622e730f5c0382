//! `cargo xtask bench forward`: HTTP and WebSocket traffic through the
//! Kandan simulator's preview front and a real `kandan-runner connect`
//! (release build) to a local server, against the same client talking to
//! the same server directly. See `BENCHMARKS-forward.md` for the method.

pub mod gate;
pub mod load;
pub mod proc_stats;
pub mod run;
pub mod server;
mod stats;

pub use run::{Options, run};
