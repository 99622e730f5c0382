//! Which processes hold which sockets: the `socket:[inode]` links of
//! `/proc/<pid>/fd`, read for the watched trees' processes only, never for
//! every process of the system.

use std::collections::HashSet;

/// The inodes of `wanted` that process `pid` holds, each once; `None` when
/// its fds cannot be read (it exited, or belongs to another user).
pub(crate) fn held(pid: u32, wanted: &HashSet<u64>) -> Option<Vec<u64>> {
    let dir = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(dir) => dir,
        Err(err) => {
            tracing::trace!(pid, %err, "fds unreadable");
            return None;
        }
    };
    let mut inodes = Vec::new();
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(inode) = target.to_str().and_then(socket_inode) else {
            continue;
        };
        // Several fds of one process may share a socket (dup).
        if wanted.contains(&inode) && !inodes.contains(&inode) {
            inodes.push(inode);
        }
    }
    Some(inodes)
}

/// The inode of an fd link `socket:[12345]`.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
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
        let wanted = HashSet::from([inode, 1]);
        assert_eq!(held(me, &wanted), Some(vec![inode]));
        drop(dup);
        assert_eq!(held(u32::MAX - 1, &wanted), None);
    }
}
