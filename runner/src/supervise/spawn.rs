//! Starting `-- COMMAND` as a root. The child is held before `exec` until the
//! detector has registered its pid, so not even its first fork is missed.
//!
//! What the command gets from the runner, and what it does not:
//! - no `KANDAN_*` variable of the runner's environment (`KANDAN_TOKEN`,
//!   `KANDAN_URL` which may carry a password, ...) and no
//!   `CREDENTIALS_DIRECTORY` ([`super::environment`]), so the agent in the
//!   tree cannot impersonate the runner;
//! - [`TREE_MARKER`] in its environment, which every descendant inherits, so
//!   the runner can end what remains of the tree after a double fork;
//! - no ambient and no inheritable capabilities (a systemd install with
//!   `AmbientCapabilities=CAP_BPF CAP_PERFMON` must not hand them on);
//! - `PR_SET_PDEATHSIG` SIGTERM, so a SIGKILLed runner does not leave it running.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::child_setup::{self, ParentDeath};

/// The environment variable naming the tree the runner started (Jenkins'
/// ProcessTreeKiller uses the same trick): inherited by every descendant,
/// whatever its parent became.
pub(crate) const TREE_MARKER: &str = "KANDAN_RUNNER_TREE";

/// A spawned child blocked before `exec`, waiting for [`HeldChild::release`].
pub(crate) struct HeldChild {
    child: Child,
    release: OwnedFd,
}

/// How to start the command.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpawnOptions {
    /// The command's stdout goes to the runner's stderr (`watch --json`:
    /// stdout is the JSON stream).
    pub(crate) stdout_to_stderr: bool,
    /// The value of [`TREE_MARKER`] for this runner.
    pub(crate) marker: String,
    /// stdin, stdout and stderr are pipes for the runner (a Codex
    /// app-server speaks JSON-RPC on them); overrides `stdout_to_stderr`.
    pub(crate) piped: bool,
    /// The working directory (default: the runner's).
    pub(crate) cwd: Option<std::path::PathBuf>,
    /// The working directory as the descriptor its check opened
    /// (PROTOCOL.md section 6); wins over `cwd`.
    pub(crate) cwd_dir: Option<std::sync::Arc<OwnedFd>>,
    /// The command leads a process group of its own, so the whole group
    /// can be signalled at once (a Codex instance; `-- COMMAND` stays in
    /// the runner's group so a terminal's Ctrl-C reaches it).
    pub(crate) own_group: bool,
    /// Variables added to the command's environment.
    pub(crate) env: Vec<(String, String)>,
    /// The cgroup it starts in, with everything it will ever start
    /// (none: process groups and pid ancestry hold it).
    pub(crate) cgroup: Option<std::sync::Arc<crate::cgroup::Cgroup>>,
}

/// Errors of spawning the root command.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The gate pipe could not be created.
    #[error("cannot create the start pipe")]
    Pipe(#[source] io::Error),
    /// No such program (exit 127, as shells do).
    #[error("`{command}`: command not found")]
    NotFound { command: String },
    /// The program exists but cannot be executed (exit 126, as shells do).
    #[error("`{command}`: permission denied or not an executable file")]
    NotExecutable { command: String },
    /// The command could not be started.
    #[error("cannot start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// The cgroup to start in could not be opened.
    #[error("cannot enter cgroup {}", .path.display())]
    Cgroup {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// Releasing the child failed (it died before exec).
    #[error("cannot release the command")]
    Release(#[source] io::Error),
}

impl SpawnError {
    /// The runner's exit code for this error: 127 and 126 like a shell.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::NotExecutable { .. } => 126,
            _ => 1,
        }
    }
}

/// The program exists and may be run: sh would only say "not found" after
/// the release; say it now.
fn check_runnable(argv: &[String]) -> Result<(), SpawnError> {
    let Some(program) = argv.first() else {
        return Err(SpawnError::Spawn {
            command: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    match locate(program) {
        Located::Runnable => Ok(()),
        Located::Missing => Err(SpawnError::NotFound {
            command: argv.join(" "),
        }),
        Located::NotExecutable => Err(SpawnError::NotExecutable {
            command: argv.join(" "),
        }),
    }
}

/// Pipes for all three, stdout onto the runner's stderr, or the runner's own.
fn set_output(
    command: &mut Command,
    options: &SpawnOptions,
    argv: &[String],
) -> Result<(), SpawnError> {
    if options.piped {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    } else if options.stdout_to_stderr {
        let stderr = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| SpawnError::Spawn {
                command: argv.join(" "),
                source,
            })?;
        command.stdout(Stdio::from(stderr));
    } else {
        command.stdout(Stdio::inherit());
    }
    Ok(())
}

impl HeldChild {
    /// Starts `argv` held: a `/bin/sh` that waits on a pipe, then `exec`s the
    /// command in place, so the pid registered now is the command's pid.
    /// (A `pre_exec` hook cannot block: `spawn` waits for the exec.)
    ///
    /// Call it from the runner's main thread: the parent-death signal is
    /// tied to the thread that forks, and the main thread lives as long as
    /// the runner. From another thread (tests, a pool thread that may exit)
    /// the signal is not set, so a thread's end never kills the command.
    pub(crate) fn spawn(argv: &[String], options: &SpawnOptions) -> Result<HeldChild, SpawnError> {
        check_runnable(argv)?;
        let (read_end, write_end) = pipe().map_err(SpawnError::Pipe)?;
        let gate = read_end.as_raw_fd();

        let mut command = Command::new("/bin/sh");
        super::environment::scrub(command.as_std_mut());
        // `read` fails on EOF: if the runner dies before releasing, the
        // command never runs unwatched.
        command
            .arg("-c")
            .arg(r#"read _ <&3 || exit 1; exec 3<&-; exec "$@""#)
            .arg("kandan-runner-start")
            .args(argv)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .env(TREE_MARKER, &options.marker)
            .stdin(Stdio::inherit())
            .stderr(Stdio::inherit());
        super::environment::forbid_credentials(command.as_std_mut());
        let cwd_dir = options.cwd_dir.clone();
        if let (None, Some(cwd)) = (&cwd_dir, &options.cwd) {
            command.current_dir(cwd);
        }
        if options.own_group {
            command.process_group(0);
        }
        set_output(&mut command, options, argv)?;
        let cgroup_procs = match &options.cgroup {
            Some(cgroup) => {
                Some(
                    cgroup
                        .procs_for_child()
                        .map_err(|source| SpawnError::Cgroup {
                            path: cgroup.path().to_path_buf(),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let cgroup_fd = cgroup_procs.as_ref().map(|fd| fd.as_raw_fd());
        let parent_death = ParentDeath::for_this_thread();
        // SAFETY: only async-signal-safe calls (write, dup2, fcntl, fchdir, prctl,
        // getppid, the capget/capset syscalls) on stack data, between fork
        // and exec.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself keeps close-on-exec: when the pipe got
                // fd 3, clear the flag instead, or sh finds no gate.
                if gate == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(gate, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(dir) = &cwd_dir {
                    super::start_dir::enter(dir.as_raw_fd())?;
                }
                child_setup::in_child(parent_death, cgroup_fd)
            });
        }
        let child = command.spawn().map_err(|source| SpawnError::Spawn {
            command: argv.join(" "),
            source,
        })?;
        drop(read_end);
        drop(cgroup_procs);
        Ok(HeldChild {
            child,
            release: write_end,
        })
    }

    /// The child's pid (as this runner sees it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Lets the child exec its command.
    pub(crate) fn release(self) -> Result<Child, SpawnError> {
        let byte = [b'\n'];
        // SAFETY: writing one byte from a valid buffer to our own pipe fd.
        let n = unsafe { libc::write(self.release.as_raw_fd(), byte.as_ptr().cast(), 1) };
        if n != 1 {
            return Err(SpawnError::Release(io::Error::last_os_error()));
        }
        Ok(self.child)
    }
}

/// What a program name resolves to, the way a shell sees it.
#[derive(Debug, PartialEq, Eq)]
enum Located {
    Runnable,
    Missing,
    /// Found, but a directory or without execute permission.
    NotExecutable,
}

/// Finds `program` directly (with a `/`) or through `PATH`.
fn locate(program: &str) -> Located {
    use std::path::Path;
    let check = |path: &Path| {
        let Ok(meta) = path.metadata() else {
            return Located::Missing;
        };
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return Located::Missing;
        };
        // SAFETY: access reads a NUL-terminated path we own.
        let executable = unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0;
        if meta.is_file() && executable {
            Located::Runnable
        } else {
            Located::NotExecutable
        }
    };
    if program.contains('/') {
        return check(Path::new(program));
    }
    let mut found = Located::Missing;
    for dir in std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        match check(&dir.join(program)) {
            Located::Runnable => return Located::Runnable,
            Located::NotExecutable => found = Located::NotExecutable,
            Located::Missing => {}
        }
    }
    found
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::exit_code;

    #[tokio::test]
    async fn held_child_runs_only_after_release() {
        let marker = std::env::temp_dir().join(format!("kandan-spawn-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("touch {}; exit 7", marker.display()),
        ];
        let held = HeldChild::spawn(&argv, &SpawnOptions::default()).unwrap();
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
    fn missing_and_unexecutable_programs_exit_like_a_shell() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let spawn = |program: &str| {
            HeldChild::spawn(&[program.to_string()], &SpawnOptions::default())
                .err()
                .unwrap()
        };
        let err = spawn("/nonexistent/kandan-x");
        assert!(err.to_string().contains("/nonexistent/kandan-x"));
        assert_eq!(err.exit_code(), 127);
        assert_eq!(spawn("kandan-no-such-program-x").exit_code(), 127);
        // A directory, and a file without execute permission.
        assert_eq!(spawn("/tmp").exit_code(), 126);
        let file = std::env::temp_dir().join(format!("kandan-noexec-{}", std::process::id()));
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let code = spawn(&path).exit_code();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(code, 126);
    }
}
