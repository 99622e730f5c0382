//! Extra sleeping processes on the machine: a farm process forks N children
//! that block in `pause()`. The farm says `ready` once all exist; when its
//! stdin closes it kills and reaps every child, so nothing is left behind
//! even where pid 1 does not reap orphans.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::guard::Guarded;

/// Runs the farm side: forks `count` sleepers, then waits for EOF on stdin.
pub fn serve(count: usize) -> Result<()> {
    // SAFETY: getpid has no preconditions.
    let farm = unsafe { libc::getpid() };
    let mut children = Vec::with_capacity(count);
    for _ in 0..count {
        // SAFETY: the farm is single-threaded here; the child only makes
        // async-signal-safe calls and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let err = io::Error::last_os_error();
            reap(&children);
            return Err(err).context("fork");
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls only.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != farm {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            }
        }
        children.push(pid);
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready {}", children.len())?;
    out.flush()?;
    let mut sink = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut sink);
    reap(&children);
    Ok(())
}

fn reap(children: &[libc::pid_t]) {
    for &pid in children {
        // SAFETY: signalling and waiting for our own children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in children {
        // SAFETY: as above; a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
}

/// The harness side: `count` sleeping processes while this lives.
pub struct Sleepers {
    stdin: Option<ChildStdin>,
    guard: Guarded,
    pub count: usize,
}

impl Sleepers {
    pub fn spawn(bench_exe: &Path, count: usize) -> Result<Self> {
        let mut command = Command::new(bench_exe);
        command
            .args(["sleepers", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut guard = Guarded::spawn(command, "sleeper farm")?;
        let stdin = guard.child().stdin.take();
        let mut stdout = BufReader::new(guard.child().stdout.take().context("farm stdout")?);
        let mut ready = String::new();
        stdout.read_line(&mut ready)?;
        if !ready.starts_with("ready ") {
            bail!("the sleeper farm failed to start {count} processes");
        }
        Ok(Sleepers {
            stdin,
            guard,
            count,
        })
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        // EOF: the farm kills and reaps its children, then exits. The guard
        // kills the farm itself if that takes too long.
        drop(self.stdin.take());
        self.guard.wait_exit(Duration::from_secs(30));
    }
}
