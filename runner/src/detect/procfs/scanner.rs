//! One procfs scan after another, each doing only what changed since the
//! last: the process table is refreshed incrementally
//! ([`ProcTable`]), and fds are read only of tree members never read
//! before, or of every member when a listening socket appeared.
//!
//! A listener's process is described once, then again only when the
//! program it runs changed ([`Program`]: an `exec` keeping the socket).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;

use super::fds;
use super::proc_table::ProcTable;
use super::socket_table::{self, Listening};
use crate::detect::ListenerSocket;
use crate::detect::SocketId;
use crate::detect::process_info::{self, ProcessInfo};
use crate::detect::process_tree::ProcessTree;

/// Every this many scans the fds of all members are read again, whatever
/// changed: a socket passed between two members over a unix socket, or
/// closed by one of several holders, changes no inode set nor the tree.
const REREAD_EVERY: u32 = 30;

/// Scans the roots' trees for listeners, remembering what it read so the
/// next scan reads less. Blocking: run it off the async threads.
#[derive(Debug)]
pub struct Scanner {
    self_pid: u32,
    procs: ProcTable,
    /// The listening inodes each member held when its fds were read.
    held: HashMap<u32, Vec<u64>>,
    /// Listening inodes of the last scan.
    known: HashSet<u64>,
    /// The last result, whose descriptions are reused.
    last: Vec<ListenerSocket>,
    /// The program each process of `last` ran when it was described.
    programs: HashMap<u32, Program>,
    scans_since_reread: u32,
}

impl Scanner {
    /// A scanner that leaves out `self_pid` (the runner) and its sockets.
    pub fn new(self_pid: u32) -> Self {
        Scanner {
            self_pid,
            procs: ProcTable::default(),
            held: HashMap::new(),
            known: HashSet::new(),
            last: Vec::new(),
            programs: HashMap::new(),
            scans_since_reread: 0,
        }
    }

    /// Every LISTEN socket of the runner's network namespace held by a
    /// process of the roots' trees (the runner itself excluded), sorted by
    /// socket id.
    pub fn scan(&mut self, roots: &[u32]) -> io::Result<Vec<ListenerSocket>> {
        let listening = socket_table::listening()?;
        if listening.is_empty() || roots.is_empty() {
            // Nothing held can still be listening; the process table stays
            // as it is and catches up at the next scan that needs it.
            self.held.clear();
            self.known.clear();
            self.last.clear();
            self.programs.clear();
            return Ok(Vec::new());
        }
        let tree = self.members(roots)?;
        let appeared = listening.keys().any(|inode| !self.known.contains(inode));
        self.scans_since_reread += 1;
        let reread_all = appeared || self.scans_since_reread >= REREAD_EVERY;
        if reread_all {
            self.scans_since_reread = 0;
        }
        let wanted: HashSet<u64> = listening.keys().copied().collect();
        let mut read = 0;
        for pid in tree.pids() {
            if reread_all || !self.held.contains_key(&pid) {
                read += 1;
                // Unreadable fds count as holding nothing: another user's
                // process stays unreadable, an exited one leaves next scan.
                let inodes = fds::held(pid, &wanted).unwrap_or_default();
                self.held.insert(pid, inodes);
            }
        }
        let (mut programs, execed) = self.execs(&tree, &wanted);
        read += execed.len();

        tracing::trace!(
            processes = self.procs.len(),
            members = tree.len(),
            fds_read = read,
            listening = listening.len(),
            "procfs scan"
        );
        let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
        for (&pid, inodes) in &self.held {
            for inode in inodes {
                holders.entry(*inode).or_default().push(pid);
            }
        }
        let previous: HashMap<(SocketId, u32), ProcessInfo> = self
            .last
            .drain(..)
            .map(|socket| ((socket.id, socket.pid), socket.process))
            .collect();
        let result = join(&listening, &holders, &tree, |inode, pid| {
            // Read before describing: an exec in between shows next scan.
            programs.entry(pid).or_insert_with(|| Program::of(pid));
            previous
                .get(&(SocketId(inode), pid))
                .filter(|_| !execed.contains(&pid))
                .cloned()
                .unwrap_or_else(|| process_info::describe(pid))
        });
        programs.retain(|pid, _| result.iter().any(|socket| socket.pid == *pid));
        self.programs = programs;
        self.known = wanted;
        self.last.clone_from(&result);
        Ok(result)
    }

    /// The roots' trees as the process table has them now, without the
    /// runner; what is known of processes that left is forgotten.
    fn members(&mut self, roots: &[u32]) -> io::Result<ProcessTree> {
        for pid in self.procs.refresh_from_proc()? {
            // Gone, or a new process under a reused pid.
            self.held.remove(&pid);
        }
        let mut tree = ProcessTree::walk(self.procs.parents(), roots);
        // A member whose parent exited may have left (see `proc_table`).
        let members: Vec<u32> = tree.pids().collect();
        if self.procs.reread_from_proc(members) {
            tree = ProcessTree::walk(self.procs.parents(), roots);
        }
        tree.remove(self.self_pid);
        self.held.retain(|pid, _| tree.contains(*pid));
        Ok(tree)
    }

    /// Listeners' processes that run another program since they were
    /// described (an exec): their fds read again, since the exec closed the
    /// close-on-exec ones. Returns what each member that held a listener
    /// runs now, and those that exec'd (to be described anew).
    fn execs(
        &mut self,
        tree: &ProcessTree,
        wanted: &HashSet<u64>,
    ) -> (HashMap<u32, Program>, HashSet<u32>) {
        let mut programs: HashMap<u32, Program> = HashMap::new();
        let mut execed = HashSet::new();
        for (&pid, before) in &self.programs {
            if !tree.contains(pid) {
                continue;
            }
            let now = Program::of(pid);
            if now != *before {
                execed.insert(pid);
                let inodes = fds::held(pid, wanted).unwrap_or_default();
                self.held.insert(pid, inodes);
            }
            programs.insert(pid, now);
        }
        (programs, execed)
    }
}

/// What a process runs, cheap to read at every scan: its executable and
/// its raw command line. An `exec` changes one or both.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Program {
    exe: Option<PathBuf>,
    cmdline: Option<Vec<u8>>,
}

impl Program {
    fn of(pid: u32) -> Program {
        Program {
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
            cmdline: std::fs::read(format!("/proc/{pid}/cmdline")).ok(),
        }
    }
}

/// Listening sockets held by the tree, each attributed to its owner and
/// described by `describe(inode, pid)`, at most once per pid.
pub(super) fn join(
    listening: &HashMap<u64, Listening>,
    holders: &HashMap<u64, Vec<u32>>,
    tree: &ProcessTree,
    mut describe: impl FnMut(u64, u32) -> ProcessInfo,
) -> Vec<ListenerSocket> {
    let mut described: HashMap<u32, ProcessInfo> = HashMap::new();
    let mut sockets: Vec<ListenerSocket> = holders
        .iter()
        .filter_map(|(inode, pids)| {
            let socket = listening.get(inode)?;
            let pid = tree.owner(pids.iter().copied())?;
            let process = described
                .entry(pid)
                .or_insert_with(|| describe(*inode, pid))
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
