//! `cargo xtask bench detect`: builds the release runner and the
//! `bench-detect` program, then runs it (see BENCHMARKS.md).

use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    let release = super::build_release("bench-detect")?;
    cmd::run(
        Command::new(release.join("bench-detect"))
            .arg("--runner")
            .arg(release.join("kandan-runner"))
            .args(args),
    )
}
