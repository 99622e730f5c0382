//! Where the runner's cgroups live: the cgroup v2 mount (`/sys/fs/cgroup`,
//! or `/sys/fs/cgroup/unified` beside v1 controllers), the runner's own
//! cgroup in it (under systemd, the unit's delegated cgroup), and this
//! runner's folder below `kandan-runner/` there.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::CgroupError;
use super::group;

/// The folder of every runner of this user, below the runner's own cgroup.
const RUNNERS: &str = "kandan-runner";

/// Creates `D/kandan-runner/<pid>.<start>` after ending what killed runners
/// left there; its path in the file system and in the hierarchy (as
/// `/proc/<pid>/cgroup` names it), and the folder opened with the `flock`
/// that says this runner is alive (kept until the runner exits).
pub(super) fn create_runner_folder() -> Result<(PathBuf, PathBuf, File), CgroupError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::OwnCgroup)?;
    let (mount_root, mount_point) = cgroup2_mount(&mountinfo).ok_or(CgroupError::NotMounted)?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(CgroupError::OwnCgroup)?;
    let own = own_cgroup(&own)
        .ok_or_else(|| CgroupError::OwnCgroup(io::Error::other("no cgroup v2 line (0::/...)")))?;
    let relative = own
        .strip_prefix(&mount_root)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let own_dir = mount_point.join(relative.strip_prefix("/").unwrap_or(&relative));
    let runners = own_dir.join(RUNNERS);
    match std::fs::create_dir(&runners) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(CgroupError::Create {
                path: runners,
                source,
            });
        }
    }
    enable_memory(&runners);
    sweep_stale(&runners);
    let me = std::process::id();
    let start = start_time(me).unwrap_or_default();
    let name = format!("{me}.{start}");
    let folder = runners.join(&name);
    std::fs::create_dir(&folder).map_err(|source| CgroupError::Create {
        path: folder.clone(),
        source,
    })?;
    let alive = File::open(&folder)
        .and_then(|dir| lock(&dir, false).map(|()| dir))
        .map_err(|source| CgroupError::Create {
            path: folder.clone(),
            source,
        })?;
    enable_memory(&folder);
    Ok((folder, own.join(RUNNERS).join(name), alive))
}

/// `flock(LOCK_EX)` on `dir`, without waiting when `try_only`.
fn lock(dir: &File, try_only: bool) -> io::Result<()> {
    let operation = libc::LOCK_EX | if try_only { libc::LOCK_NB } else { 0 };
    // SAFETY: flock on a descriptor this File owns.
    if unsafe { libc::flock(dir.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the runner of `folder` is gone: nobody holds its `flock` (a
/// runner holds it as long as it lives, and the kernel drops it when the
/// runner dies, SIGKILL included) and its `<pid>.<start>` names no live
/// process here. The lock decides across pid namespaces (a runner in a
/// container is `1.<start>` to us); the name keeps a live runner of an
/// older version, which takes no lock, from being swept.
fn owner_gone(folder: &Path, pid: u32, start: u64) -> bool {
    if start_time(pid) == Some(start) {
        return false;
    }
    match File::open(folder).and_then(|dir| lock(&dir, true)) {
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => false,
        // Cannot open it (not ours) or lock it for another reason: leave it.
        Err(_) => false,
    }
}

/// Removes this runner's folder (its children are gone by now), and the
/// `kandan-runner` folder when no other runner uses it.
pub(super) fn remove_runner_folder(folder: &Path) {
    group::remove_tree(folder);
    if let Some(runners) = folder.parent() {
        let _ = std::fs::remove_dir(runners);
    }
}

/// The memory controller for the children, where the parent has it to
/// give (for `memory.current` in `status`); CPU time needs no controller.
fn enable_memory(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    if available.split_whitespace().any(|c| c == "memory")
        && let Err(err) = std::fs::write(dir.join("cgroup.subtree_control"), "+memory")
    {
        tracing::debug!(
            "cannot enable the memory controller in {}: {err}",
            dir.display()
        );
    }
}

/// Ends and removes the folders of runners that are gone (killed before
/// they could clean up): their trees, instances and editors with them.
fn sweep_stale(runners: &Path) {
    let Ok(entries) = std::fs::read_dir(runners) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(parse_folder_name) else {
            continue;
        };
        let folder = entry.path();
        if !owner_gone(&folder, pid, start) {
            continue;
        }
        let left = group::kill_tree(&folder);
        if left > 0 {
            tracing::info!(
                "ended {left} processes left by a runner that is gone ({})",
                folder.display()
            );
        }
        group::remove_tree(&folder);
    }
}

/// `<pid>.<start>`.
fn parse_folder_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat`
/// field 22): with the pid, it names one process for good. `None` for no
/// process, and for a zombie (a killed runner its parent has not reaped).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After `(comm)`, which may hold spaces: state is field 3, start 22.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The cgroup2 mount's root and mount point from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((
            PathBuf::from(unescape(root)),
            PathBuf::from(unescape(point)),
        ))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `0::/path` line of `/proc/<pid>/cgroup`: the process's cgroup v2.
pub(super) fn own_cgroup(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| PathBuf::from(path.trim_end_matches(" (deleted)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_in_a_hybrid_layout() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some((PathBuf::from("/"), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        assert_eq!(
            cgroup2_mount("30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw"),
            None
        );
        let escaped = r"31 30 0:27 / /mnt/my\040cg rw - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(escaped).map(|(_, point)| point),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn reads_the_v2_line_of_a_process() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/kandan-runner.service\n";
        assert_eq!(
            own_cgroup(hybrid),
            Some(PathBuf::from("/system.slice/kandan-runner.service"))
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn folder_names_and_start_times() {
        assert_eq!(parse_folder_name("42.1234"), Some((42, 1234)));
        assert_eq!(parse_folder_name("tree-1"), None);
        let me = std::process::id();
        assert!(start_time(me).is_some_and(|start| start > 0));
        assert_eq!(start_time(u32::MAX), None);
    }
}
