//! `cargo xtask bench codex`: builds the runner and the benchmark in
//! release mode and runs it against the pinned Codex (BENCHMARKS.md).

use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    let release = super::build_release("bench-codex")?;
    cmd::run(
        Command::new(release.join("bench-codex"))
            .arg("--runner")
            .arg(release.join("kandan-runner"))
            .args(args),
    )
}
