//! `cargo xtask bench detect`: builds the release runner and the
//! `bench-detect` program, then runs it (see BENCHMARKS.md).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
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
        "bench-detect",
    ])?;
    let release = target_dir().join("release");
    cmd::run(
        Command::new(release.join("bench-detect"))
            .arg("--runner")
            .arg(release.join("kandan-runner"))
            .args(args),
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"))
}
