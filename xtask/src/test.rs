//! `cargo xtask test`: set up, then every test there is, cheapest first.

use anyhow::Result;

use crate::{cmd, setup};

pub fn run() -> Result<()> {
    setup::run(true)?;
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    // The runner binary first: the end-to-end tests run it.
    cmd::cargo(&["build", "-p", "runner", "--bin", "kandan-runner"])?;
    cmd::cargo(&["test", "-p", "runner", "-p", "runner-common", "-p", "xtask"])?;
    // One test at a time: the privileged tests share kernel state, and the
    // end-to-end ones share the machine's two cores with real dev servers.
    cmd::cargo(&["test", "-p", "integration-tests", "--", "--test-threads=1"])?;
    // The libproc backend must keep compiling for macOS.
    cmd::cargo(&["check", "-p", "runner", "--target", "aarch64-apple-darwin"])?;
    cmd::cargo(&[
        "clippy",
        "-p",
        "runner",
        "-p",
        "runner-common",
        "-p",
        "integration-tests",
        "-p",
        "xtask",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The kernel crate only builds for BPF, with nightly: its own clippy.
    cmd::run(
        std::process::Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
                "../target/ebpf-clippy",
                "--",
                "-D",
                "warnings",
            ])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .current_dir(cmd::workspace_root().join("runner-ebpf")),
    )?;
    eprintln!("xtask test: everything passed");
    Ok(())
}
