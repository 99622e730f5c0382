//! Instructions instead of CPU time (`bench-forward soak --instructions`,
//! `bench-codex --replay --instructions`): the runner (or a bare stand-in
//! for it) runs under valgrind's callgrind, instrumented only while the
//! measured load runs, and the bench reports its user-space instructions
//! per GET or per notification. The count repeats within about 1%
//! however busy the machine is, where CPU time moves by 20% between
//! runs. It leaves out the kernel's share (sockets, pipes, wake-ups),
//! which the runner and the bare stand-ins pay about equally, and it
//! weighs a `memset` or `memcpy` by its bytes (valgrind counts each step
//! of a `rep` string instruction), more than their time.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The runner's command line under callgrind: nothing is counted until
/// [`start`], and each thread is counted apart (see [`finish`]).
/// Benches that start the runner deep inside ask [`wanted`].
pub fn under_callgrind(runner: &Path, out: &Path) -> Command {
    let mut command = Command::new("valgrind");
    command
        .arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg("--separate-threads=yes")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(runner);
    command
}

/// Turns counting on in the runner `pid`.
pub fn start(pid: u32) -> anyhow::Result<()> {
    control(pid, "--instr=on")
}

/// Writes the counts since [`start`] and returns the instructions counted.
pub fn finish(pid: u32, out: &Path) -> anyhow::Result<u64> {
    control(pid, "--dump")?;
    control(pid, "--instr=off")?;
    // A dump asked for from outside goes to `<out>.1`, one file per
    // thread: `-01` is the main thread, where the runner's tokio runtime
    // runs everything but blocking work (the procfs scanner among it).
    let mut dump = out.as_os_str().to_owned();
    dump.push(".1-01");
    // `BENCH_PROFILE_DIR` keeps the profile for `callgrind_annotate`.
    if let Some(dir) = std::env::var_os("BENCH_PROFILE_DIR") {
        let kept = Path::new(&dir).join(format!("{pid}.callgrind"));
        std::fs::copy(&dump, &kept).with_context(|| format!("keeping {}", kept.display()))?;
        eprintln!("profile kept: {}", kept.display());
    }
    let text = std::fs::read_to_string(&dump)
        .with_context(|| format!("reading callgrind's dump {}", Path::new(&dump).display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("summary: "))
        .context("callgrind's dump has no summary line")?
        .trim()
        .parse()
        .context("callgrind's summary is not a count")
}

fn control(pid: u32, what: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(what)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running callgrind_control (install valgrind)")?;
    if !status.success() {
        bail!("callgrind_control {what} {pid}: {status}");
    }
    Ok(())
}

/// Whether `BENCH_INSTRUCTIONS` asks for counts (set by the bench
/// binary's `--instructions` before its runtime starts).
pub fn wanted() -> bool {
    std::env::var_os("BENCH_INSTRUCTIONS").is_some()
}

/// Sets `BENCH_INSTRUCTIONS` for [`wanted`].
pub fn want() {
    // SAFETY: called before the runtime starts, while this is the only thread.
    unsafe { std::env::set_var("BENCH_INSTRUCTIONS", "1") };
}
