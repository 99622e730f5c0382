//! `cargo xtask demo`: set up, build the runner and the simulator in one
//! cargo run (one profile, so nothing rebuilds between them), then become
//! `kandan-sim --demo`, which starts the rest and stops it on Ctrl-C.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cmd, setup};

pub fn run(exit_after_ready: bool) -> Result<()> {
    setup::demo()?;
    cmd::cargo(&[
        "build",
        "-p",
        "runner",
        "--bin",
        "kandan-runner",
        "-p",
        "integration-tests",
        "--bin",
        "kandan-sim",
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    // The runner starts in the workspace: a relative path would miss.
    let target = std::path::absolute(&target)?;
    let debug = target.join("debug");
    let mut args = vec![
        "--demo".to_owned(),
        "--demo-dir".to_owned(),
        target.join("demo").to_string_lossy().into_owned(),
    ];
    if exit_after_ready {
        args.push("--exit-after-ready".to_owned());
    }
    // Replaces this process, so Ctrl-C reaches the simulator, which stops the rest.
    let sim = debug.join("kandan-sim");
    let err = Command::new(&sim)
        .args(&args)
        .env("KANDAN_RUNNER_BIN", debug.join("kandan-runner"))
        .exec();
    Err(err).with_context(|| format!("cannot run {}", sim.display()))
}
