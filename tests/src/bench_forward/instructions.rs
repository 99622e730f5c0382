//! Instructions instead of CPU time (`bench-forward soak --instructions`):
//! the runner runs under valgrind's callgrind, instrumented only while the
//! soak's load runs, and the soak reports its user-space instructions per
//! GET. The count repeats within a fraction of a percent however busy the
//! machine is, where CPU time per GET moves by 20% between runs; it leaves
//! out the kernel's share (sockets, wake-ups), which both the runner and
//! the bare forwarder pay about equally.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The runner's command line under callgrind: nothing is counted until
/// [`start`], and each thread is counted apart (see [`finish`]).
pub(super) fn under_callgrind(runner: &Path, out: &Path) -> Command {
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
pub(super) fn start(pid: u32) -> anyhow::Result<()> {
    control(pid, "--instr=on")
}

/// Writes the counts since [`start`] and returns the instructions counted.
pub(super) fn finish(pid: u32, out: &Path) -> anyhow::Result<u64> {
    control(pid, "--dump")?;
    control(pid, "--instr=off")?;
    // A dump asked for from outside goes to `<out>.1`, one file per
    // thread: `-01` is the main thread, where the runner's tokio runtime
    // runs everything but blocking work (the procfs scanner among it).
    let mut dump = out.as_os_str().to_owned();
    dump.push(".1-01");
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
        .status()
        .context("running callgrind_control (install valgrind)")?;
    if !status.success() {
        bail!("callgrind_control {what} {pid}: {status}");
    }
    Ok(())
}
