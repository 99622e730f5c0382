//! `cargo xtask bench forward [-- --quick]`: builds the runner and the
//! benchmark in release mode and runs it (see `BENCHMARKS-forward.md`).

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
        "bench-forward",
    ])?;
    let release = cmd::workspace_root().join("target/release");
    let runner = release.join("kandan-runner");
    let mut argv = vec![
        "run".to_owned(),
        "--runner".to_owned(),
        runner.display().to_string(),
    ];
    argv.extend(args.iter().filter(|a| *a != "--").cloned());
    cmd::run(std::process::Command::new(release.join("bench-forward")).args(&argv))
}
