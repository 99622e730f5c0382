//! Starting `-- COMMAND` as a root. The child is held before `exec` until the
//! detector has registered its pid, so not even its first fork is missed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// A spawned child blocked before `exec`, waiting for [`HeldChild::release`].
pub struct HeldChild {
    child: Child,
    release: OwnedFd,
}

/// Errors of spawning the root command.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The gate pipe could not be created.
    #[error("cannot create the start pipe")]
    Pipe(#[source] io::Error),
    /// The command could not be started (not found, not executable).
    #[error("cannot start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// Releasing the child failed (it died before exec).
    #[error("cannot release the command")]
    Release(#[source] io::Error),
}

impl HeldChild {
    /// Starts `argv` held: a `/bin/sh` that waits on a pipe, then `exec`s the
    /// command in place, so the pid registered now is the command's pid.
    /// (A `pre_exec` hook cannot block: `spawn` waits for the exec.)
    pub fn spawn(argv: &[String]) -> Result<HeldChild, SpawnError> {
        if argv.is_empty() {
            return Err(SpawnError::Spawn {
                command: String::new(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
            });
        }
        // sh would only say "not found" after the release; say it now.
        if !is_runnable(&argv[0]) {
            return Err(SpawnError::Spawn {
                command: argv.join(" "),
                source: io::Error::new(io::ErrorKind::NotFound, "no such program on PATH"),
            });
        }
        let (read_end, write_end) = pipe().map_err(SpawnError::Pipe)?;
        let gate = read_end.as_raw_fd();

        let mut command = Command::new("/bin/sh");
        // `read` fails on EOF: if the runner dies before releasing, the
        // command never runs unwatched.
        command
            .arg("-c")
            .arg(r#"read _ <&3 || exit 1; exec 3<&-; exec "$@""#)
            .arg("kandan-runner-start")
            .args(argv)
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: dup2 is async-signal-safe; it only moves the gate to fd 3
        // (clearing close-on-exec there) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(gate, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| SpawnError::Spawn {
            command: argv.join(" "),
            source,
        })?;
        drop(read_end);
        Ok(HeldChild {
            child,
            release: write_end,
        })
    }

    /// The child's pid (as this runner sees it).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Lets the child exec its command.
    pub fn release(self) -> Result<Child, SpawnError> {
        let byte = [b'\n'];
        // SAFETY: writing one byte from a valid buffer to our own pipe fd.
        let n = unsafe { libc::write(self.release.as_raw_fd(), byte.as_ptr().cast(), 1) };
        if n != 1 {
            return Err(SpawnError::Release(io::Error::last_os_error()));
        }
        Ok(self.child)
    }
}

/// Whether `program` names an executable file, directly or through `PATH`.
fn is_runnable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        path.metadata()
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
        .unwrap_or(false)
}

/// A pipe whose ends close on exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe just returned these two fresh descriptors; we own them.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&ends.0, &ends.1] {
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(ends)
}

/// Waits for the command and returns its shell-style exit code; pends
/// forever when there is no command (or it cannot be waited for).
pub async fn exit_code_of(child: &mut Option<Child>) -> i32 {
    match child {
        Some(child) => match child.wait().await {
            Ok(status) => exit_code(status),
            Err(err) => {
                tracing::error!("cannot wait for the command: {err}");
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Shell-style exit code for a finished child: its code, or 128 + signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_child_runs_only_after_release() {
        let marker = std::env::temp_dir().join(format!("kandan-spawn-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("touch {}; exit 7", marker.display()),
        ];
        let held = HeldChild::spawn(&argv).unwrap();
        assert!(held.pid() > 0);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!marker.exists(), "the child ran before release");
        let mut child = held.release().unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_code(status), 7);
        assert!(marker.exists());
        std::fs::remove_file(&marker).unwrap();
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = HeldChild::spawn(&["/nonexistent/kandan-x".to_string()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/kandan-x"));
    }
}
