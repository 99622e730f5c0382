//! procfs backend (Linux, polling, unprivileged).
//!
//! Each poll asks for the LISTEN sockets first (netlink sock_diag, or
//! `/proc/net/tcp{,6}` where netlink is refused); only when there are any
//! does it refresh its table of processes ([`proc_table`]) for the watched
//! trees, and read the fd links of tree members whose sockets it does not
//! know yet ([`Scanner`]). A socket held by several processes of a tree
//! goes to the one nearest the root ([`ProcessTree::owner`]).
//!
//! [`ProcessTree::owner`]: super::process_tree::ProcessTree::owner

mod fds;
mod proc_table;
mod scanner;
mod sock_diag;
mod socket_table;

use std::io;

pub use scanner::Scanner;

use super::{BackendKind, DetectError, Detector, DetectorConfig, ListenerSocket, Unavailable};

/// Whether the backend can run here, and why not.
pub(crate) fn probe() -> Result<(), Unavailable> {
    // Both are readable by anyone wherever proc is mounted: a failure
    // means no proc here (a minimal container or chroot).
    const FIX: &str =
        "mount proc at /proc (`mount -t proc proc /proc`; a container runtime does by default)";
    std::fs::read_dir("/proc")
        .map_err(|err| Unavailable::with_fix(format!("/proc unreadable: {err}"), FIX))?;
    std::fs::read("/proc/net/tcp")
        .map_err(|err| Unavailable::with_fix(format!("/proc/net/tcp unreadable: {err}"), FIX))?;
    Ok(())
}

/// Starts polling every `config.poll_interval`, with one [`Scanner`] kept
/// across polls. Call it inside a tokio runtime.
pub fn start(config: &DetectorConfig) -> Result<Detector, DetectError> {
    probe().map_err(|reason| DetectError::Unavailable {
        backend: BackendKind::Procfs,
        reason,
    })?;
    Ok(super::poll::start_with(
        BackendKind::Procfs,
        config,
        Scanner::new(config.self_pid),
    ))
}

impl super::poll::Scan for Scanner {
    fn scan(&mut self, roots: &[u32]) -> io::Result<Vec<ListenerSocket>> {
        Scanner::scan(self, roots)
    }
}

/// Every LISTEN socket of the runner's network namespace held by a process
/// of the roots' trees (the runner itself excluded), from a fresh
/// [`Scanner`]. The eBPF backend uses it for its backfill at start and its
/// resync after a ring-buffer drop. Sorted by socket id. Blocking: run it
/// off the async threads.
pub fn scan(roots: &[u32], self_pid: u32) -> io::Result<Vec<ListenerSocket>> {
    Scanner::new(self_pid).scan(roots)
}

/// Every LISTEN socket of the runner's network namespace, by inode.
pub fn listening_sockets() -> io::Result<Vec<crate::detect::ListeningSocket>> {
    listening_sockets_on(None)
}

/// The LISTEN sockets of the runner's network namespace on `port` (on any
/// port for `None`), by inode: what the verified dial checks a fresh
/// connection against. The kernel filters, so the cost does not grow with
/// the machine's other listeners.
pub(crate) fn listening_sockets_on(
    port: Option<u16>,
) -> io::Result<Vec<crate::detect::ListeningSocket>> {
    Ok(socket_table::listening_on(port)?
        .into_values()
        .map(|l| crate::detect::ListeningSocket {
            id: l.inode,
            addr: l.addr,
            port: l.port,
        })
        .collect())
}

/// Inodes of every LISTEN socket of the runner's network namespace (netlink
/// sock_diag, else `/proc/net/tcp{,6}`). Blocking, but one netlink dump.
pub(crate) fn listening_inodes() -> io::Result<std::collections::HashSet<u64>> {
    Ok(socket_table::listening()?.into_keys().collect())
}

/// The inodes of `wanted` that `pid` holds through its fds; `None` when
/// they cannot be read (it exited, or belongs to another user).
pub(crate) fn held_inodes(pid: u32, wanted: &std::collections::HashSet<u64>) -> Option<Vec<u64>> {
    fds::held(pid, wanted)
}

#[cfg(test)]
mod tests {
    use super::scanner::join;
    use super::*;
    use crate::detect::SocketId;
    use crate::detect::process_info::ProcessInfo;
    use crate::detect::process_tree::ProcessTree;
    use std::collections::HashMap;
    use std::net::IpAddr;

    fn listening(rows: &[(u64, &str, u16)]) -> HashMap<u64, socket_table::Listening> {
        rows.iter()
            .map(|&(inode, addr, port)| {
                let addr: IpAddr = addr.parse().unwrap();
                (inode, socket_table::Listening { inode, addr, port })
            })
            .collect()
    }

    fn describe(_inode: u64, pid: u32) -> ProcessInfo {
        ProcessInfo::from_argv(&[format!("/bin/p{pid}")], None)
    }

    #[test]
    fn join_attributes_inherited_sockets_to_the_master() {
        // 10 (master) -> 11, 12 (workers); all three hold inode 100.
        let tree = ProcessTree::walk([(10, 1), (11, 10), (12, 10)], &[10]);
        let table = listening(&[(100, "0.0.0.0", 8000), (101, "::1", 9000)]);
        let held = HashMap::from([(100, vec![11, 10, 12]), (101, vec![12])]);
        let out = join(&table, &held, &tree, describe);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].id, out[0].pid, out[0].port),
            (SocketId(100), 10, 8000)
        );
        assert_eq!(out[0].process.label, "p10");
        assert_eq!((out[1].id, out[1].pid), (SocketId(101), 12));
        assert_eq!(out[1].addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn join_ignores_holders_outside_the_tree_and_vanished_sockets() {
        let tree = ProcessTree::walk([(10, 1)], &[10]);
        let table = listening(&[(100, "127.0.0.1", 8000)]);
        let held = HashMap::from([(100, vec![99]), (555, vec![10])]);
        assert!(join(&table, &held, &tree, describe).is_empty());
    }

    #[test]
    fn scan_finds_own_listener_only_when_not_self() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let found = scan(&[me], 0).unwrap();
        let mine = found.iter().find(|s| s.port == port).expect("own listener");
        assert_eq!(mine.pid, me);
        assert!(!mine.process.command.is_empty());
        let excluded = scan(&[me], me).unwrap();
        assert!(excluded.iter().all(|s| s.port != port));
    }

    #[test]
    fn probe_works_here() {
        probe().unwrap();
    }
}
