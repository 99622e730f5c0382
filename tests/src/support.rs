//! What every end-to-end test needs: the runner binary, the root check and
//! a free port.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// A port nobody listens on right now (the kernel's pick; servers bind it
/// strictly, so a lost race fails loudly instead of moving ports).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The `kandan-runner` binary under test: `$KANDAN_RUNNER_BIN`, else the
/// workspace's `target/debug/kandan-runner` (`cargo xtask test` builds it
/// before running the tests).
pub fn runner_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("KANDAN_RUNNER_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/kandan-runner");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p runner` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// True when the test may use root-only things (eBPF, namespaces). When not
/// root it prints why the test is skipped and returns false; under CI
/// (`CI` set) it panics instead, so nothing privileged is silently skipped.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root, and CI is set: refusing to skip"
    );
    eprintln!("skipping {test}: needs root");
    false
}

/// Where a test leaves files for a person to look at afterwards
/// (screenshots): `target/test-artifacts/<test>/`, created.
pub fn artifacts_dir(test: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .join(test);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// `kandan-runner watch --json --backend ebpf -- sleep 60`, started (and
/// killed when dropped) and past the line that names its backend, which
/// must be eBPF (privileged tests only). Its stderr is drained on a task
/// from then on: a closed pipe would fail its next line.
pub async fn ebpf_watch_of_sleep(wait: std::time::Duration) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut runner = tokio::process::Command::new(runner_bin())
        .args(["watch", "--json", "--backend", "ebpf", "--", "sleep", "60"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the runner");
    let stderr = runner.stderr.take().expect("piped stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let first = tokio::time::timeout(wait, lines.next_line())
        .await
        .expect("the runner names its backend")
        .expect("read the runner's stderr");
    assert!(
        first
            .as_deref()
            .is_some_and(|l| l.contains("backend: ebpf")),
        "{first:?}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    runner
}
