//! The (pid, ppid) table of every process, kept up to date across scans
//! for a fraction of the cost of re-reading it.
//!
//! Each refresh lists `/proc` once and reads `/proc/<pid>/stat` only of
//! pids it has not seen before. A known pid's parent can only change when
//! that parent exits (the orphan is re-parented to init or a subreaper).
//! The children of every pid that vanished are read again, but a parent
//! that exited stays listed as a zombie until reaped, so the caller also
//! re-reads the members of its trees ([`ProcTable::reread`]): they are few,
//! and a process outside a tree never enters it by re-parenting (its new
//! parent is one of its ancestors, none of which is in the tree).
//!
//! Pid reuse: the directory entry of `/proc/<pid>` carries the inode of
//! that pid's procfs directory, which the kernel allocates afresh for each
//! new process (`get_next_ino`), and reports in `readdir` at no cost. A pid
//! whose inode changed is read again and treated as gone and new. A cached
//! dentry that the kernel dropped under memory pressure also gets a new
//! inode: that costs a needless read, never a wrong parent.

use std::collections::{HashMap, HashSet};
use std::io;

/// One process as last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    ppid: u32,
    /// Inode of `/proc/<pid>`: changes when the pid is reused.
    ino: u64,
    /// Refresh in which the pid was last listed.
    seen: u64,
    /// Refresh in which its stat was last read.
    read: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ProcTable {
    entries: HashMap<u32, Entry>,
    refreshes: u64,
}

impl ProcTable {
    /// Reads `/proc` now. Returns the pids that vanished or were reused
    /// since the last refresh.
    pub(crate) fn refresh_from_proc(&mut self) -> io::Result<Vec<u32>> {
        let listing = list_proc()?;
        Ok(self.refresh(listing, read_ppid))
    }

    /// Applies one listing of `(pid, inode)`, reading the parent of new and
    /// reused pids and of the children of vanished ones with `read_ppid`
    /// (`None`: the process exited meanwhile). Returns the pids that
    /// vanished or were reused.
    pub(crate) fn refresh(
        &mut self,
        listing: impl IntoIterator<Item = (u32, u64)>,
        mut read_ppid: impl FnMut(u32) -> Option<u32>,
    ) -> Vec<u32> {
        self.refreshes += 1;
        let now = self.refreshes;
        let mut gone = Vec::new();
        for (pid, ino) in listing {
            if let Some(entry) = self.entries.get_mut(&pid)
                && entry.ino == ino
            {
                entry.seen = now;
                continue;
            }
            if self.entries.remove(&pid).is_some() {
                gone.push(pid);
            }
            if let Some(ppid) = read_ppid(pid) {
                self.entries.insert(
                    pid,
                    Entry {
                        ppid,
                        ino,
                        seen: now,
                        read: now,
                    },
                );
            }
        }
        self.entries.retain(|&pid, entry| {
            let listed = entry.seen == now;
            if !listed {
                gone.push(pid);
            }
            listed
        });
        // Orphans of vanished (or reused) pids have a new parent: read them
        // again, and their orphans in turn if they exited meanwhile.
        let mut orphaned_by: HashSet<u32> = gone.iter().copied().collect();
        while !orphaned_by.is_empty() {
            let orphans: Vec<u32> = self
                .entries
                .iter()
                .filter(|(_, entry)| orphaned_by.contains(&entry.ppid) && entry.read != now)
                .map(|(&pid, _)| pid)
                .collect();
            orphaned_by.clear();
            for pid in orphans {
                if self.reread_one(pid, &mut read_ppid).is_none() {
                    gone.push(pid);
                    orphaned_by.insert(pid);
                }
            }
        }
        gone
    }

    /// Reads the parent of `pids` again, unless read in the last refresh.
    /// Returns whether any parent changed or any of them exited (and was
    /// dropped).
    pub(crate) fn reread(
        &mut self,
        pids: impl IntoIterator<Item = u32>,
        mut read_ppid: impl FnMut(u32) -> Option<u32>,
    ) -> bool {
        let mut changed = false;
        for pid in pids {
            let Some(before) = self.entries.get(&pid).copied() else {
                continue;
            };
            if before.read == self.refreshes {
                continue;
            }
            changed |= self.reread_one(pid, &mut read_ppid) != Some(before.ppid);
        }
        changed
    }

    /// [`ProcTable::reread`] of members of a tree, from `/proc`.
    pub(crate) fn reread_from_proc(&mut self, pids: impl IntoIterator<Item = u32>) -> bool {
        self.reread(pids, read_ppid)
    }

    /// Reads one known pid's parent again; `None` (and dropped) when it
    /// exited.
    fn reread_one(
        &mut self,
        pid: u32,
        read_ppid: &mut impl FnMut(u32) -> Option<u32>,
    ) -> Option<u32> {
        let now = self.refreshes;
        match read_ppid(pid) {
            Some(ppid) => {
                if let Some(entry) = self.entries.get_mut(&pid) {
                    entry.ppid = ppid;
                    entry.read = now;
                }
                Some(ppid)
            }
            None => {
                self.entries.remove(&pid);
                None
            }
        }
    }

    /// `(pid, ppid)` of every known process.
    pub(crate) fn parents(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.entries.iter().map(|(&pid, entry)| (pid, entry.ppid))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// `(pid, inode of /proc/<pid>)` for every process, in one directory read.
fn list_proc() -> io::Result<Vec<(u32, u64)>> {
    use std::os::unix::fs::DirEntryExt;
    let mut listing = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        // An entry that fails is a process that went away mid-read.
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        listing.push((pid, entry.ino()));
    }
    Ok(listing)
}

fn read_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::detect::process_tree::ppid_from_stat(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A fake system: pid -> ppid, counting the reads.
    struct System {
        parents: HashMap<u32, u32>,
        reads: RefCell<Vec<u32>>,
    }

    impl System {
        fn new(parents: &[(u32, u32)]) -> Self {
            System {
                parents: parents.iter().copied().collect(),
                reads: RefCell::default(),
            }
        }

        fn refresh(&self, table: &mut ProcTable, inos: &HashMap<u32, u64>) -> Vec<u32> {
            self.reads.borrow_mut().clear();
            let listing = self
                .parents
                .keys()
                .map(|&pid| (pid, inos.get(&pid).copied().unwrap_or(u64::from(pid))));
            let mut gone = table.refresh(listing, |pid| {
                self.reads.borrow_mut().push(pid);
                self.parents.get(&pid).copied()
            });
            gone.sort_unstable();
            gone
        }

        fn reads(&self) -> Vec<u32> {
            let mut reads = self.reads.borrow().clone();
            reads.sort_unstable();
            reads
        }
    }

    fn sorted(table: &ProcTable) -> Vec<(u32, u32)> {
        let mut parents: Vec<_> = table.parents().collect();
        parents.sort_unstable();
        parents
    }

    #[test]
    fn reads_only_new_pids_and_forgets_vanished_ones() {
        let mut table = ProcTable::default();
        let mut system = System::new(&[(1, 0), (10, 1), (11, 10)]);
        assert!(system.refresh(&mut table, &HashMap::new()).is_empty());
        assert_eq!(system.reads(), [1, 10, 11]);
        system.parents.insert(12, 10);
        assert!(system.refresh(&mut table, &HashMap::new()).is_empty());
        assert_eq!(system.reads(), [12], "known pids are not read again");
        system.parents.remove(&11);
        assert_eq!(system.refresh(&mut table, &HashMap::new()), [11]);
        assert!(system.reads().is_empty());
        assert_eq!(sorted(&table), [(1, 0), (10, 1), (12, 10)]);
    }

    #[test]
    fn orphans_of_an_exited_parent_are_read_again() {
        let mut table = ProcTable::default();
        let mut system = System::new(&[(1, 0), (10, 1), (11, 10), (12, 11), (20, 1)]);
        system.refresh(&mut table, &HashMap::new());
        // 11 exits: 12 is re-parented to the subreaper 10.
        system.parents.remove(&11);
        system.parents.insert(12, 10);
        assert_eq!(system.refresh(&mut table, &HashMap::new()), [11]);
        assert_eq!(system.reads(), [12]);
        assert_eq!(sorted(&table), [(1, 0), (10, 1), (12, 10), (20, 1)]);
    }

    #[test]
    fn a_reused_pid_is_read_again_and_reported_gone() {
        let mut table = ProcTable::default();
        let mut system = System::new(&[(1, 0), (10, 1), (11, 10), (12, 11)]);
        system.refresh(&mut table, &HashMap::new());
        // 11 exits (12 goes to init) and a process of 1 gets pid 11 again:
        // same pid, new /proc inode.
        system.parents.insert(11, 1);
        system.parents.insert(12, 1);
        let inos = HashMap::from([(11, 999)]);
        assert_eq!(system.refresh(&mut table, &inos), [11]);
        assert_eq!(system.reads(), [11, 12]);
        assert_eq!(sorted(&table), [(1, 0), (10, 1), (11, 1), (12, 1)]);
        // Same inode next time: nothing to read.
        assert!(system.refresh(&mut table, &inos).is_empty());
        assert!(system.reads().is_empty());
    }

    #[test]
    fn a_process_exiting_mid_refresh_is_dropped() {
        let mut table = ProcTable::default();
        let mut system = System::new(&[(1, 0), (10, 1), (11, 10), (12, 11)]);
        system.refresh(&mut table, &HashMap::new());
        // 11 and 12 exit; 12 is still listed but its stat is gone.
        system.parents.remove(&11);
        let listing = [(1, 1), (10, 10), (12, 12)];
        let mut gone = table.refresh(listing, |pid| {
            system.parents.get(&pid).copied().filter(|_| pid != 12)
        });
        gone.sort_unstable();
        assert_eq!(gone, [11, 12]);
        assert_eq!(sorted(&table), [(1, 0), (10, 1)]);
    }

    #[test]
    fn reread_sees_an_orphan_whose_parent_is_a_zombie() {
        let mut table = ProcTable::default();
        let mut system = System::new(&[(1, 0), (10, 1), (11, 10), (12, 11)]);
        system.refresh(&mut table, &HashMap::new());
        // 11 exits but stays listed (a zombie): 12 now has parent 1.
        system.parents.insert(12, 1);
        assert!(system.refresh(&mut table, &HashMap::new()).is_empty());
        assert!(sorted(&table).contains(&(12, 11)), "not noticed yet");
        assert!(table.reread([10, 11, 12], |pid| system.parents.get(&pid).copied()));
        assert!(sorted(&table).contains(&(12, 1)));
        assert!(!table.reread([10, 11, 12], |pid| system.parents.get(&pid).copied()));
        // Exited since, still listed in the next refresh: dropped, and a
        // change.
        assert!(
            table
                .refresh([(1, 1), (10, 10), (11, 11), (12, 12)], |_| None)
                .is_empty()
        );
        assert!(table.reread([12], |_| None));
        assert!(!sorted(&table).iter().any(|&(pid, _)| pid == 12));
    }

    #[test]
    fn reread_skips_pids_read_in_the_last_refresh() {
        let mut table = ProcTable::default();
        let system = System::new(&[(1, 0), (10, 1)]);
        system.refresh(&mut table, &HashMap::new());
        let mut reads = 0;
        assert!(!table.reread([1, 10, 99], |_| {
            reads += 1;
            Some(0)
        }));
        assert_eq!(reads, 0);
    }

    #[test]
    fn real_proc_has_this_process_and_its_parent() {
        let mut table = ProcTable::default();
        table.refresh_from_proc().unwrap();
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(table.parents().any(|entry| entry == (me, parent)));
        assert!(table.len() > 1);
        // A second refresh reads nothing it knows, and keeps everything
        // still running.
        table.refresh_from_proc().unwrap();
        assert!(table.parents().any(|entry| entry == (me, parent)));
    }
}
