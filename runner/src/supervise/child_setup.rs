//! What the command's process does between fork and exec: enter its cgroup,
//! ask for a signal when the runner dies, and give up ambient and
//! inheritable capabilities.
//! Linux only; elsewhere nothing (macOS has neither).

pub(crate) use imp::{ParentDeath, hide_runner, in_child};

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::RawFd;

    /// Whether and for which parent to set `PR_SET_PDEATHSIG`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct ParentDeath {
        parent: libc::pid_t,
        /// The signal fires when the forking *thread* exits: only the main
        /// thread lives as long as the runner.
        enabled: bool,
    }

    impl ParentDeath {
        pub(crate) fn for_this_thread() -> Self {
            // SAFETY: getpid and gettid have no preconditions.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            ParentDeath {
                parent: pid,
                enabled: pid == tid,
            }
        }
    }

    /// Runs in the child between fork and exec: async-signal-safe calls only.
    /// `cgroup_procs` is the `cgroup.procs` of the cgroup to enter, opened
    /// by the runner: writing `0` moves the writer, before it can fork.
    pub(crate) fn in_child(death: ParentDeath, cgroup_procs: Option<RawFd>) -> io::Result<()> {
        if let Some(fd) = cgroup_procs {
            // SAFETY: write from a valid one-byte buffer to an open fd.
            if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        if death.enabled {
            // SAFETY: prctl and getppid with plain integer arguments.
            unsafe {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The runner died between fork and prctl: do not run orphaned.
                if libc::getppid() != death.parent {
                    return Err(io::Error::other("the runner exited"));
                }
            }
        }
        drop_inheritable()
    }

    /// Not dumpable: /proc/<runner>/environ and mem become root's.
    pub(crate) fn hide_runner() {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            tracing::warn!(
                "cannot hide the runner's environment from its tree: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// Clears the ambient set and the inheritable set (lowering either
    /// needs no privilege). Kernels before 4.3 have no ambient set. A
    /// non-root command then execs with no capabilities at all.
    fn drop_inheritable() -> io::Result<()> {
        // SAFETY: prctl with integer arguments.
        let cleared = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )
        };
        if cleared != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
        let mut data = crate::caps::get()?;
        if data.iter().all(|d| d.inheritable == 0) {
            return Ok(());
        }
        for word in &mut data {
            word.inheritable = 0;
        }
        crate::caps::set(&data)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    /// No parent-death signal on this platform.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct ParentDeath;

    impl ParentDeath {
        pub(crate) fn for_this_thread() -> Self {
            ParentDeath
        }
    }

    pub(crate) fn in_child(_: ParentDeath, _: Option<std::os::fd::RawFd>) -> io::Result<()> {
        Ok(())
    }

    /// Not done on macOS (no `PR_SET_DUMPABLE`); the command's own
    /// environment is still cleaned.
    pub(crate) fn hide_runner() {}
}
