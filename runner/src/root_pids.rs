//! `--root-pid` roots: checked before anything starts (a pid with no
//! process is a bad flag value, exit 2; one the runner cannot read gets a
//! warning saying why), then watched, so that a runner whose only roots
//! they are ends when all of them have.

use std::time::Duration;

/// How often a root is looked at where the kernel cannot say when it ends
/// (macOS, or a Linux without pidfds).
const POLL: Duration = Duration::from_millis(250);

/// A `--root-pid` that cannot be a root.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RootPidError {
    /// Nothing runs with this pid (in the runner's pid namespace).
    #[error("--root-pid {0}: no such process")]
    NoSuchProcess(u32),
}

/// The `--root-pid` processes, until they end.
#[derive(Default)]
pub(crate) struct RootPids {
    roots: Vec<Root>,
}

impl RootPids {
    /// Opens every root: an error for a pid with no process; a warning
    /// line for each one the runner cannot read.
    pub(crate) fn open(pids: &[u32]) -> Result<(RootPids, Vec<String>), RootPidError> {
        let mut roots = Vec::with_capacity(pids.len());
        let mut warnings = Vec::new();
        for &pid in pids {
            roots.push(Root::open(pid)?);
            if let Some(why) = unreadable(pid) {
                warnings.push(format!("warning: --root-pid {pid}: {why}"));
            }
        }
        Ok((RootPids { roots }, warnings))
    }

    /// Resolves once every root has ended; never when there is none.
    /// Cancel-safe: an ended root stays ended.
    pub(crate) async fn all_ended(&mut self) {
        if self.roots.is_empty() {
            return std::future::pending().await;
        }
        for root in &mut self.roots {
            root.ended().await;
        }
    }
}

/// One root process: a pidfd where the kernel has them (it cannot be
/// fooled by a reused pid), else its pid, polled.
enum Root {
    #[cfg(target_os = "linux")]
    PidFd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    Pid(u32),
}

impl Root {
    fn open(pid: u32) -> Result<Root, RootPidError> {
        // Above the pid_t range: no process can have it.
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Err(RootPidError::NoSuchProcess(pid));
        };
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
            if fd >= 0 {
                use std::os::fd::FromRawFd;
                // SAFETY: the fd was just returned by the kernel and is owned here.
                let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
                // SAFETY: the AsyncFd owns the OwnedFd, which stays open
                // and the same for the AsyncFd's whole life.
                let registered = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        owned,
                        tokio::io::Interest::READABLE,
                    )
                };
                if let Ok(async_fd) = registered {
                    return Ok(Root::PidFd(async_fd));
                }
            } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                return Err(RootPidError::NoSuchProcess(pid));
            }
        }
        if exists(raw) {
            Ok(Root::Pid(pid))
        } else {
            Err(RootPidError::NoSuchProcess(pid))
        }
    }

    async fn ended(&mut self) {
        match self {
            // A pidfd turns readable when its process exits.
            #[cfg(target_os = "linux")]
            Root::PidFd(fd) => {
                let _ = fd.readable().await;
            }
            Root::Pid(pid) => {
                let raw = libc::pid_t::try_from(*pid).unwrap_or(libc::pid_t::MAX);
                while exists(raw) {
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}

/// Whether a process has this pid (another user's counts: EPERM).
fn exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Why the runner cannot read a root's process, if it cannot: then its
/// listeners may go unseen (procfs maps sockets through `/proc/PID/fd`)
/// and their command line and cwd stay unknown.
#[cfg(target_os = "linux")]
fn unreadable(pid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let proc_dir = format!("/proc/{pid}");
    let meta = match std::fs::metadata(&proc_dir) {
        Ok(meta) => meta,
        Err(_) => {
            return Some(
                "the process exists but /proc hides it (mounted with hidepid): its listeners cannot be seen; run the runner as the process's user or remount /proc without hidepid"
                    .to_owned(),
            );
        }
    };
    match std::fs::read_dir(format!("{proc_dir}/fd")) {
        Ok(_) => None,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            // SAFETY: geteuid cannot fail.
            let me = unsafe { libc::geteuid() };
            let owner = meta.uid();
            let why = if owner == me {
                format!(
                    "cannot read {proc_dir}/fd although uid {me} owns it (a setuid program, or not dumpable)"
                )
            } else {
                format!(
                    "cannot read {proc_dir}/fd: it belongs to uid {owner}, the runner runs as uid {me}"
                )
            };
            Some(format!(
                "{why}: its listeners may go unseen; run the runner as uid {owner} or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
            ))
        }
        Err(err) => Some(format!("cannot read {proc_dir}/fd: {err}")),
    }
}

#[cfg(not(target_os = "linux"))]
fn unreadable(_pid: u32) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_beyond_pid_t_is_no_process() {
        assert_eq!(
            RootPids::open(&[u32::MAX]).err(),
            Some(RootPidError::NoSuchProcess(u32::MAX))
        );
    }

    #[test]
    fn a_pid_with_no_process_is_an_error() {
        // Above the largest pid_max (2^22), so never a process.
        let pid = 4_194_304 + 17;
        assert_eq!(
            RootPids::open(&[pid]).err(),
            Some(RootPidError::NoSuchProcess(pid))
        );
    }

    #[tokio::test]
    async fn ends_when_every_root_has() {
        let mut a = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let mut b = std::process::Command::new("sleep")
            .arg("0.4")
            .spawn()
            .unwrap();
        let (mut roots, warnings) = RootPids::open(&[a.id(), b.id()]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let started = std::time::Instant::now();
        // The test reaps them so they do not stay zombies for kill(0).
        let reaper = std::thread::spawn(move || {
            let _ = a.wait();
            let _ = b.wait();
        });
        tokio::time::timeout(Duration::from_secs(5), roots.all_ended())
            .await
            .expect("the roots ended");
        assert!(started.elapsed() >= Duration::from_millis(350));
        reaper.join().unwrap();
    }

    #[tokio::test]
    async fn no_roots_never_end() {
        let mut roots = RootPids::default();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), roots.all_ended())
                .await
                .is_err()
        );
    }
}
