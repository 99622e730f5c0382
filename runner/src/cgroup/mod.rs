//! Containment in cgroup v2 (PROTOCOL.md section 5, "Containment").
//!
//! What the runner starts (the command's tree, each Codex instance, each
//! editor) runs in a cgroup of its own: a group of processes the kernel
//! keeps whatever they do (`setsid`, a double fork, a cleared environment),
//! that the detectors read membership from, and that `cgroup.kill` ends
//! whole. The layout, under the runner's own cgroup `D` (or the unit's
//! delegated subtree under systemd):
//!
//! ```text
//! D/kandan-runner/                  one parent for this user's runners
//!     <pid>.<start>/                one runner (its pid and start time)
//!         tree/  instance-1/  editor-1/ ...
//! ```
//!
//! A runner names its own folder after its pid and start time, so a runner
//! that starts later can tell a folder whose runner is gone (SIGKILLed) and
//! end what it left ([`hierarchy::sweep_stale`]).
//!
//! Where no cgroup can be created (an unprivileged container without
//! delegation, no cgroup v2, macOS), [`Containment::Unavailable`] says why,
//! and process groups and pid ancestry serve instead.

mod group;
#[cfg(target_os = "linux")]
mod hierarchy;
mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use group::Cgroup;
pub(crate) use usage::{Usage, usage};

/// `--containment`: how the runner holds what it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ContainmentChoice {
    /// A cgroup per tree, instance and editor where one can be created,
    /// else process groups.
    #[default]
    Auto,
    /// Cgroups, or an error where none can be created.
    Cgroup,
    /// Process groups and pid ancestry, even where cgroups work.
    ProcessGroup,
}

/// Errors of setting up containment.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum CgroupError {
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy is mounted (cgroup2 in /proc/self/mountinfo)")]
    NotMounted,
    /// The runner's own cgroup could not be read.
    #[error("cannot read the runner's cgroup from /proc/self/cgroup")]
    OwnCgroup(#[source] std::io::Error),
    /// A cgroup could not be created (no permission: not delegated).
    #[error("cannot create cgroup {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--containment cgroup` on a platform without cgroups.
    #[cfg(not(target_os = "linux"))]
    #[error("cgroups exist only on Linux")]
    NotLinux,
}

/// How what the runner starts is held: a cgroup parent of this runner's,
/// or process groups (with the reason there is no cgroup).
#[derive(Clone, Debug)]
pub(crate) enum Containment {
    Cgroups(Arc<Parent>),
    Unavailable(String),
}

/// This runner's folder (`D/kandan-runner/<pid>.<start>`), where its
/// children are created.
#[derive(Debug)]
pub(crate) struct Parent {
    path: PathBuf,
    /// The same folder as `/proc/<pid>/cgroup` names it.
    name: PathBuf,
    next: AtomicU64,
    /// An exclusive `flock` on the folder for as long as this runner lives:
    /// how another runner tells that it is alive, whatever pid namespace
    /// either runs in.
    #[cfg(target_os = "linux")]
    _alive: std::fs::File,
}

impl Containment {
    /// Sets containment up as `choice` asks: finds the cgroup v2 hierarchy
    /// and the runner's place in it, ends what killed runners of this user
    /// left, and creates this runner's folder. An error only for
    /// `--containment cgroup` where cgroups do not work.
    pub(crate) fn start(choice: ContainmentChoice) -> Result<Containment, CgroupError> {
        if choice == ContainmentChoice::ProcessGroup {
            return Ok(Containment::Unavailable(
                "--containment process-group".to_string(),
            ));
        }
        match Self::create() {
            Ok(parent) => Ok(Containment::Cgroups(Arc::new(parent))),
            Err(err) if choice == ContainmentChoice::Auto => {
                Ok(Containment::Unavailable(crate::error_chain(&err)))
            }
            Err(err) => Err(err),
        }
    }

    #[cfg(target_os = "linux")]
    fn create() -> Result<Parent, CgroupError> {
        let (path, name, alive) = hierarchy::create_runner_folder()?;
        Ok(Parent {
            path,
            name,
            next: AtomicU64::new(1),
            _alive: alive,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn create() -> Result<Parent, CgroupError> {
        Err(CgroupError::NotLinux)
    }

    /// A new cgroup named `<kind>-<n>` (`tree`, `instance`, `editor`), or
    /// `None` under process groups. A cgroup that cannot be created is a
    /// warning, and that one start falls back to its process group.
    pub(crate) fn new_group(&self, kind: &str) -> Option<Arc<Cgroup>> {
        let Containment::Cgroups(parent) = self else {
            return None;
        };
        let n = parent.next.fetch_add(1, Ordering::Relaxed);
        let folder = format!("{kind}-{n}");
        match Cgroup::create(parent.path.join(&folder), parent.name.join(&folder)) {
            Ok(group) => Some(Arc::new(group)),
            Err(err) => {
                tracing::warn!(
                    "{}: using a process group instead",
                    crate::error_chain(&err)
                );
                None
            }
        }
    }

    /// For `doctor` and the first stderr line: what holds the processes.
    pub(crate) fn describe(&self) -> String {
        match self {
            Containment::Cgroups(parent) => format!("cgroup v2 ({})", parent.path.display()),
            Containment::Unavailable(why) => {
                format!("process groups and pid ancestry (no cgroup: {why})")
            }
        }
    }

    pub(crate) fn is_cgroups(&self) -> bool {
        matches!(self, Containment::Cgroups(_))
    }

    /// Kills what is left in this runner's cgroups and removes them (at
    /// exit, once the command, instances and editors were ended).
    pub(crate) fn remove(&self) {
        if let Containment::Cgroups(parent) = self {
            #[cfg(target_os = "linux")]
            {
                group::kill_tree(&parent.path);
                hierarchy::remove_runner_folder(&parent.path);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = parent;
        }
    }
}

/// The cgroup v2 of `pid`, as `/proc/<pid>/cgroup` names it (relative to
/// the hierarchy's root); `None` when it cannot be read.
pub(crate) fn cgroup_of(pid: u32) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        hierarchy::own_cgroup(&text)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}
