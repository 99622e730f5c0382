//! `cargo xtask bench editor [-- --runs N]`: builds the benchmark in release
//! mode and runs it against the fixture's code-server (BENCHMARKS.md).

use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        "bench-editor",
        "-p",
        "runner",
        "--bin",
        "kandan-runner",
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    cmd::run(Command::new(target.join("release/bench-editor")).args(args))
}
