//! One cgroup of the runner's: created empty, entered by a child between
//! fork and exec (it writes `0` to `cgroup.procs`, opened by the runner),
//! read for its members and figures, and ended with `cgroup.kill`, after
//! which the runner waits for `cgroup.events` to say `populated 0`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::CgroupError;

/// How often an ending cgroup is checked for processes.
const POLL: Duration = Duration::from_millis(10);
/// How long removing a cgroup waits for killed processes to leave it.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// A cgroup the runner created; dropped, it kills what is left in it and
/// is removed.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    /// Its path in the hierarchy, as `/proc/<pid>/cgroup` names it.
    name: PathBuf,
    /// The cgroup id (the inode of its folder), as the eBPF helpers give it.
    id: u64,
}

impl Cgroup {
    pub(super) fn create(path: PathBuf, name: PathBuf) -> Result<Cgroup, CgroupError> {
        std::fs::create_dir(&path).map_err(|source| CgroupError::Create {
            path: path.clone(),
            source,
        })?;
        let id = inode(&path).map_err(|source| CgroupError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(Cgroup { path, name, id })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn name(&self) -> &Path {
        &self.name
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// `cgroup.procs`, open for writing: the child writes `0` to it before
    /// `exec` and so enters the cgroup with everything it will start. The
    /// kernel checks the permission against the opener (the runner).
    pub(crate) fn procs_for_child(&self) -> io::Result<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.path.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// The live processes in it (and in any cgroup created below it).
    pub(crate) fn members(&self) -> Vec<u32> {
        members(&self.path)
    }

    /// Whether a process is still in it.
    pub(crate) fn populated(&self) -> bool {
        populated(&self.path)
    }

    /// Waits until it is empty or `deadline` passes; whether it is empty.
    pub(crate) async fn wait_empty(&self, deadline: Instant) -> bool {
        loop {
            if !self.populated() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }

    /// `cgroup.kill`: SIGKILL to every process in it, without waiting;
    /// how many there were.
    pub(crate) fn kill_now(&self) -> usize {
        kill_tree(&self.path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Ended already in the usual case; a dropped start or a panic
        // leaves nothing running either.
        if populated(&self.path) {
            kill_tree(&self.path);
        }
        remove_tree(&self.path);
    }
}

fn inode(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

fn populated(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .map(|events| events.lines().any(|line| line == "populated 1"))
        .unwrap_or(false)
}

/// Pids in `path` and the cgroups below it.
fn members(path: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    for dir in subdirs(path) {
        pids.extend(members(&dir));
    }
    pids
}

fn subdirs(path: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs everything in `path` and below (`cgroup.kill`, or each pid
/// where the kernel has no `cgroup.kill`, before 5.14); how many
/// processes there were.
pub(super) fn kill_tree(path: &Path) -> usize {
    let pids = members(path);
    if pids.is_empty() {
        return 0;
    }
    if std::fs::write(path.join("cgroup.kill"), "1").is_err() {
        for &pid in &pids {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    pids.len()
}

/// Removes `path` and the cgroups below it, deepest first, waiting a
/// little for killed processes to leave (a cgroup with processes cannot
/// be removed).
pub(super) fn remove_tree(path: &Path) {
    for dir in subdirs(path) {
        remove_tree(&dir);
    }
    let deadline = std::time::Instant::now() + KILL_WAIT;
    while populated(path) && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    if let Err(err) = std::fs::remove_dir(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!("cannot remove cgroup {}: {err}", path.display());
    }
}
