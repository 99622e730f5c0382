//! procfs backend (Linux, polling, unprivileged).
//!
//! Each poll reads the LISTEN rows of `/proc/net/tcp{,6}` first; only when
//! there are any does it walk `/proc/*/stat` for the watched trees and read
//! the fd links of those processes alone. A socket held by several
//! processes of a tree goes to the one nearest the root
//! ([`ProcessTree::owner`]).

mod fds;
mod socket_table;

use std::collections::{HashMap, HashSet};
use std::io;

use super::process_tree::{self, ProcessTree};
use super::{
    BackendKind, DetectError, Detector, DetectorConfig, ListenerSocket, SocketId, Unavailable,
};
use crate::process::{self, ProcessInfo};

/// Whether the backend can run here, and why not.
pub fn probe() -> Result<(), Unavailable> {
    std::fs::read_dir("/proc").map_err(|err| Unavailable(format!("/proc unreadable: {err}")))?;
    std::fs::read("/proc/net/tcp")
        .map_err(|err| Unavailable(format!("/proc/net/tcp unreadable: {err}")))?;
    Ok(())
}

/// Starts polling every `config.poll_interval`. Call it inside a tokio
/// runtime.
pub fn start(config: &DetectorConfig) -> Result<Detector, DetectError> {
    probe().map_err(|reason| DetectError::Unavailable {
        backend: BackendKind::Procfs,
        reason,
    })?;
    Ok(super::poll::start(BackendKind::Procfs, config, scan))
}

/// Every LISTEN socket of the runner's network namespace held by a process
/// of the roots' trees (the runner itself excluded). The eBPF backend uses
/// it for its backfill at start and its resync after a ring-buffer drop.
/// Sorted by socket id. Blocking: run it off the async threads.
pub fn scan(roots: &[u32], self_pid: u32) -> io::Result<Vec<ListenerSocket>> {
    let listening = socket_table::listening()?;
    if listening.is_empty() || roots.is_empty() {
        return Ok(Vec::new());
    }
    let mut tree = process_tree::descendants(roots)?;
    tree.remove(self_pid);
    let wanted: HashSet<u64> = listening.keys().copied().collect();
    let held = fds::holders(tree.pids(), &wanted);
    Ok(join(&listening, &held, &tree, process::describe))
}

/// Listening sockets held by the tree, each attributed to its owner and
/// described once per pid.
fn join(
    listening: &HashMap<u64, socket_table::Listening>,
    held: &HashMap<u64, Vec<u32>>,
    tree: &ProcessTree,
    describe: impl Fn(u32) -> ProcessInfo,
) -> Vec<ListenerSocket> {
    let mut described: HashMap<u32, ProcessInfo> = HashMap::new();
    let mut sockets: Vec<ListenerSocket> = held
        .iter()
        .filter_map(|(inode, pids)| {
            let socket = listening.get(inode)?;
            let pid = tree.owner(pids.iter().copied())?;
            let process = described
                .entry(pid)
                .or_insert_with(|| describe(pid))
                .clone();
            Some(ListenerSocket {
                id: SocketId(*inode),
                port: socket.port,
                addr: socket.addr,
                pid,
                process,
            })
        })
        .collect();
    sockets.sort_by_key(|s| s.id);
    sockets
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn listening(rows: &[(u64, &str, u16)]) -> HashMap<u64, socket_table::Listening> {
        rows.iter()
            .map(|&(inode, addr, port)| {
                let addr: IpAddr = addr.parse().unwrap();
                (inode, socket_table::Listening { inode, addr, port })
            })
            .collect()
    }

    fn describe(pid: u32) -> ProcessInfo {
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
