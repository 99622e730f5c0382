//! `cargo xtask bench detect|forward|editor|codex`: each benchmark in its own module,
//! results printed as a Markdown table (BENCHMARKS.md).

mod codex;
mod detect;
mod editor;
mod forward;

use std::path::PathBuf;

use anyhow::Result;

use crate::cmd;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    Detect,
    Forward,
    Editor,
    /// Codex instances; `-- --replay` replays a recorded Codex turn through
    /// a stand-in app-server (`bench-codex --help` lists the modes).
    Codex,
}

pub fn run(which: Which, args: &[String]) -> Result<()> {
    // `cargo xtask bench detect -- --quick`: the `--` is ours to drop.
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    match which {
        Which::Detect => detect::run(args),
        Which::Forward => forward::run(args),
        Which::Editor => editor::run(args),
        Which::Codex => codex::run(args),
    }
}

/// Builds the release runner and the bench program `bin` of the
/// integration-tests crate; returns the directory holding both.
fn build_release(bin: &str) -> Result<PathBuf> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "runner",
        "--bin",
        "kandan-runner",
    ])?;
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        bin,
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    Ok(target.join("release"))
}
