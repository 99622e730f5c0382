//! `cargo xtask bench forward`: HTTP and WebSocket traffic through the
//! Kandan simulator's preview front and a real `kandan-runner connect`
//! (release build) to a local server, against the same client talking to
//! the same server directly; and a Vite page of many modules loaded in
//! headless Chromium both ways (`page`). See "Forwarding" in BENCHMARKS.md
//! for the method. Statistics and `/proc` readings come from `crate::bench`.

pub mod bare;
mod floor;
pub mod gate;
pub mod load;
pub mod page;
pub mod process;
pub mod run;
pub mod server;
pub mod soak;

pub use run::{Options, run};
