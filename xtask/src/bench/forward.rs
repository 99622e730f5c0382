//! `cargo xtask bench forward [-- --quick]`: builds the runner and the
//! benchmark in release mode and runs it (see BENCHMARKS.md).

use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    let release = super::build_release("bench-forward")?;
    cmd::run(
        Command::new(release.join("bench-forward"))
            .arg("run")
            .arg("--runner")
            .arg(release.join("kandan-runner"))
            .args(args),
    )
}
