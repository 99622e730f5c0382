//! `cargo xtask bench codex [-- --replay | --flood-only | --record FILE]`:
//! builds the runner and the benchmark in release mode and runs it against
//! the pinned Codex, or (`--replay`) against a stand-in replaying a
//! recorded Codex turn (BENCHMARKS.md; `bench-codex --help`).

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
