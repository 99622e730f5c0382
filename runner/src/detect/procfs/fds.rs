//! Which processes hold which sockets: the `socket:[inode]` links of
//! `/proc/<pid>/fd`, read for the watched trees' processes only, never for
//! every process of the system.

use std::collections::{HashMap, HashSet};

/// For each inode of `wanted` that some process of `pids` holds, the pids
/// holding it. Processes that exit meanwhile, or whose fds the runner may
/// not read (another user's), are skipped.
pub fn holders(
    pids: impl IntoIterator<Item = u32>,
    wanted: &HashSet<u64>,
) -> HashMap<u64, Vec<u32>> {
    let mut held: HashMap<u64, Vec<u32>> = HashMap::new();
    if wanted.is_empty() {
        return held;
    }
    for pid in pids {
        let dir = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(dir) => dir,
            Err(err) => {
                tracing::trace!(pid, %err, "fds unreadable");
                continue;
            }
        };
        for entry in dir.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let Some(inode) = target.to_str().and_then(socket_inode) else {
                continue;
            };
            if wanted.contains(&inode) {
                let pids = held.entry(inode).or_default();
                // Several fds of one process may share a socket (dup).
                if pids.last() != Some(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    held
}

/// The inode of an fd link `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[24140]"), Some(24140));
        assert_eq!(socket_inode("pipe:[24140]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("socket:[12x]"), None);
        assert_eq!(socket_inode("socket:[1"), None);
    }

    #[test]
    fn finds_own_socket_and_dups_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dup = listener.try_clone().unwrap();
        let me = std::process::id();
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&listener)
        ))
        .unwrap()
        .ino();
        let held = holders([me, u32::MAX - 1], &HashSet::from([inode, 1]));
        drop(dup);
        assert_eq!(held.get(&inode), Some(&vec![me]));
        assert_eq!(held.len(), 1);
    }
}
