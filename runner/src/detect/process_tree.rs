//! The watched process trees: roots and their descendants.
//!
//! Built from a table of (pid, ppid) pairs. On Linux the table comes from
//! `/proc/<pid>/stat` (this kernel has no `/proc/<pid>/task/<tid>/children`),
//! which costs one small read per process and opens no fds of theirs.
//! Threads need no entry of their own: fds are per process, and a thread's
//! children name the thread group as their parent.
//!
//! A process whose parent exits is re-parented to init (or the nearest
//! subreaper) and so leaves the tree unless the runner is that subreaper.

use std::collections::{BTreeMap, HashMap};

/// Roots and their descendants, each with its depth below its root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessTree {
    depth: BTreeMap<u32, u32>,
}

impl ProcessTree {
    /// Walks `parents` (pid, ppid) from `roots`. Every root is a member even
    /// when it is not in the table (it may have exited a moment ago).
    pub(crate) fn walk(parents: impl IntoIterator<Item = (u32, u32)>, roots: &[u32]) -> Self {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, ppid) in parents {
            // pid 0 is the kernel's idle task, never a real parent here.
            if pid != ppid && pid != 0 {
                children.entry(ppid).or_default().push(pid);
            }
        }
        let mut depth = BTreeMap::new();
        let mut queue: std::collections::VecDeque<(u32, u32)> =
            roots.iter().map(|&root| (root, 0)).collect();
        // Breadth first, so a pid reachable from two roots (one root inside
        // another's tree) keeps its smallest depth.
        while let Some((pid, d)) = queue.pop_front() {
            if depth.contains_key(&pid) {
                continue;
            }
            depth.insert(pid, d);
            if let Some(kids) = children.get(&pid) {
                queue.extend(kids.iter().map(|&kid| (kid, d + 1)));
            }
        }
        ProcessTree { depth }
    }

    /// Whether `pid` is a root or a descendant.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn contains(&self, pid: u32) -> bool {
        self.depth.contains_key(&pid)
    }

    /// Members in ascending pid order.
    pub(crate) fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.depth.keys().copied()
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.depth.len()
    }

    /// Depth below the root (0 for a root); `None` outside the tree.
    pub(crate) fn depth(&self, pid: u32) -> Option<u32> {
        self.depth.get(&pid).copied()
    }

    /// Drops `pid` (the runner itself), keeping its descendants.
    pub(crate) fn remove(&mut self, pid: u32) {
        self.depth.remove(&pid);
    }

    /// Which of the processes holding one socket it is attributed to: the
    /// one nearest its root, then the lowest pid. A socket inherited over
    /// fork (gunicorn, uvicorn --reload, cluster mode) thus stays with the
    /// master that opened it, and does not change owner when workers are
    /// replaced. Holders outside the tree are ignored.
    pub(crate) fn owner(&self, holders: impl IntoIterator<Item = u32>) -> Option<u32> {
        holders
            .into_iter()
            .filter_map(|pid| self.depth(pid).map(|d| (d, pid)))
            .min()
            .map(|(_, pid)| pid)
    }
}

/// Parses the ppid out of a `/proc/<pid>/stat` line: `pid (comm) state ppid
/// ...`. `comm` may hold spaces and parentheses, so the fields after it are
/// found from the last `)`.
pub fn ppid_from_stat(stat: &str) -> Option<u32> {
    state_and_ppid_from_stat(stat).map(|(_, ppid)| ppid)
}

/// The state letter (`S`, `Z`, ...) and the ppid of a `/proc/<pid>/stat`
/// line, read as [`ppid_from_stat`] reads the ppid.
pub(crate) fn state_and_ppid_from_stat(stat: &str) -> Option<(&str, u32)> {
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_comm.split_ascii_whitespace();
    let state = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// `pid` and its ancestors below init (at most 256), as the system is now;
/// just `pid` where there is no /proc.
pub(crate) fn ancestors(pid: u32) -> Vec<u32> {
    let mut chain = vec![pid];
    let mut current = pid;
    while chain.len() < 256 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{current}/stat")) else {
            break;
        };
        match ppid_from_stat(&stat) {
            Some(ppid) if ppid > 1 && !chain.contains(&ppid) => {
                chain.push(ppid);
                current = ppid;
            }
            _ => break,
        }
    }
    chain
}

/// Roots and descendants as the system is now.
#[cfg(target_os = "linux")]
pub fn descendants(roots: &[u32]) -> std::io::Result<ProcessTree> {
    Ok(ProcessTree::walk(linux::parents()?, roots))
}

#[cfg(target_os = "linux")]
mod linux {
    /// (pid, ppid) of every process in `/proc`. Processes that exit while
    /// this runs are skipped.
    pub(crate) fn parents() -> std::io::Result<Vec<(u32, u32)>> {
        let mut table = Vec::new();
        let mut path = String::with_capacity(32);
        for entry in std::fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            path.clear();
            use std::fmt::Write;
            let _ = write!(path, "/proc/{pid}/stat");
            let Ok(stat) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Some(ppid) = super::ppid_from_stat(&stat) {
                table.push((pid, ppid));
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_plain_comm() {
        let stat = "4242 (python3) S 4200 4242 4200 0 -1 4194560 1 0 0 0";
        assert_eq!(ppid_from_stat(stat), Some(4200));
    }

    #[test]
    fn stat_with_spaces_and_parentheses_in_comm() {
        let stat = "77 (a) b (c) d) R 12 77 77 0 -1 0";
        assert_eq!(ppid_from_stat(stat), Some(12));
        let stat = "78 (()) S 1 78 78";
        assert_eq!(ppid_from_stat(stat), Some(1));
    }

    #[test]
    fn stat_malformed_is_none() {
        assert_eq!(ppid_from_stat(""), None);
        assert_eq!(ppid_from_stat("12 (x"), None);
        assert_eq!(ppid_from_stat("12 (x) S"), None);
        assert_eq!(ppid_from_stat("12 (x) S notanumber"), None);
    }

    #[test]
    fn walk_collects_descendants_with_depths() {
        // 1 -> 10 -> 11 -> 12 ; 1 -> 20 ; 10 -> 13
        let parents = [(1, 0), (10, 1), (11, 10), (12, 11), (20, 1), (13, 10)];
        let tree = ProcessTree::walk(parents, &[10]);
        assert_eq!(tree.pids().collect::<Vec<_>>(), [10, 11, 12, 13]);
        assert_eq!(tree.depth(10), Some(0));
        assert_eq!(tree.depth(12), Some(2));
        assert_eq!(tree.depth(20), None);
        assert!(!tree.contains(1));
    }

    #[test]
    fn walk_keeps_missing_roots_and_merges_several() {
        let parents = [(10, 1), (11, 10), (30, 1), (31, 30)];
        let tree = ProcessTree::walk(parents, &[10, 30, 999]);
        assert_eq!(tree.pids().collect::<Vec<_>>(), [10, 11, 30, 31, 999]);
    }

    #[test]
    fn walk_of_a_root_inside_another_tree_keeps_the_smaller_depth() {
        let parents = [(10, 1), (11, 10), (12, 11)];
        let tree = ProcessTree::walk(parents, &[11, 10]);
        assert_eq!(tree.depth(11), Some(0));
        assert_eq!(tree.depth(12), Some(1));
    }

    #[test]
    fn walk_survives_cycles_and_self_parents() {
        // Impossible in a real table, but the walk must still end.
        let parents = [(5, 6), (6, 5), (7, 7), (0, 0)];
        let tree = ProcessTree::walk(parents, &[5]);
        assert_eq!(tree.pids().collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn remove_drops_only_that_pid() {
        let parents = [(10, 1), (11, 10)];
        let mut tree = ProcessTree::walk(parents, &[10]);
        tree.remove(10);
        assert_eq!(tree.pids().collect::<Vec<_>>(), [11]);
    }

    #[test]
    fn owner_is_the_holder_nearest_the_root() {
        // Master 50 forks workers 51 and 40 (a lower pid after wrap-around).
        let parents = [(50, 1), (51, 50), (40, 50), (60, 51)];
        let tree = ProcessTree::walk(parents, &[50]);
        assert_eq!(tree.owner([51, 40, 50]), Some(50));
        assert_eq!(tree.owner([51, 40]), Some(40));
        assert_eq!(tree.owner([60, 51]), Some(51));
        assert_eq!(tree.owner([7, 8]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn real_tree_has_a_grandchild() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        let me = std::process::id();
        let tree = descendants(&[me]).unwrap();
        let _ = std::process::Command::new("kill")
            .arg(grandchild.to_string())
            .status();
        child.wait().unwrap();
        assert_eq!(tree.depth(me), Some(0));
        assert_eq!(tree.depth(child.id()), Some(1));
        assert_eq!(tree.depth(grandchild), Some(2));
    }
}
