//! [`RootRegistry`] of the eBPF backend: roots and the processes they already
//! have go into `NS_TRACKED` (by pid as the runner sees them; the kernel
//! tracks later forks itself), cgroups into `CGROUPS` (by id: the kernel
//! tracks every task in them), then a backfill snapshot is asked for.

use std::{
    collections::HashMap as StdHashMap,
    sync::{Arc, Mutex},
};

use aya::maps::{HashMap, MapData};
use tokio::sync::mpsc;

use crate::cgroup::Cgroup;
use crate::detect::{DetectError, RootRegistry, process_tree};

/// State shared by the registry and the event task.
pub(crate) struct Roots {
    ns_tracked: Mutex<HashMap<MapData, u32, u8>>,
    cgroup_ids: Mutex<HashMap<MapData, u64, u8>>,
    /// The cgroups watched, for the backfill scans.
    cgroups: Mutex<Vec<Arc<Cgroup>>>,
    /// Root -> pids it put into `NS_TRACKED` (itself included).
    inserted: Mutex<StdHashMap<u32, Vec<u32>>>,
    resync: mpsc::UnboundedSender<()>,
}

impl Roots {
    pub(crate) fn new(
        ns_tracked: HashMap<MapData, u32, u8>,
        cgroup_ids: HashMap<MapData, u64, u8>,
        resync: mpsc::UnboundedSender<()>,
    ) -> Arc<Roots> {
        Arc::new(Roots {
            ns_tracked: Mutex::new(ns_tracked),
            cgroup_ids: Mutex::new(cgroup_ids),
            cgroups: Mutex::new(Vec::new()),
            inserted: Mutex::new(StdHashMap::new()),
            resync,
        })
    }

    /// The roots now watched, and every process of the watched cgroups.
    pub(crate) fn list(&self) -> Vec<u32> {
        let mut roots: Vec<u32> = lock(&self.inserted).keys().copied().collect();
        for cgroup in lock(&self.cgroups).iter() {
            roots.extend(cgroup.members());
        }
        roots.sort_unstable();
        roots.dedup();
        roots
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RootRegistry for Roots {
    fn add_root(&self, pid: u32) -> Result<(), DetectError> {
        // Processes that exit during the walk are simply skipped; one that
        // the walk cannot see at all is an error for the caller.
        let tree = process_tree::descendants(&[pid])
            .map_err(|source| DetectError::AddRoot { pid, source })?;
        let mut pids = vec![pid];
        pids.extend(tree.pids().filter(|&p| p != pid));
        {
            let mut map = lock(&self.ns_tracked);
            for &p in &pids {
                map.insert(p, 1, 0).map_err(|err| DetectError::AddRoot {
                    pid,
                    source: std::io::Error::other(err),
                })?;
            }
        }
        lock(&self.inserted).entry(pid).or_default().extend(pids);
        // Listeners the tree already has come from the backfill snapshot.
        let _ = self.resync.send(());
        Ok(())
    }

    fn add_cgroup(&self, cgroup: &Arc<Cgroup>) -> Result<(), DetectError> {
        lock(&self.cgroup_ids)
            .insert(cgroup.id(), 1, 0)
            .map_err(|err| DetectError::AddCgroup {
                path: cgroup.path().to_path_buf(),
                source: std::io::Error::other(err),
            })?;
        lock(&self.cgroups).push(Arc::clone(cgroup));
        let _ = self.resync.send(());
        Ok(())
    }

    fn remove_cgroup(&self, cgroup: &Cgroup) {
        let _ = lock(&self.cgroup_ids).remove(&cgroup.id());
        lock(&self.cgroups).retain(|watched| watched.id() != cgroup.id());
    }

    fn remove_root(&self, pid: u32) {
        let Some(pids) = lock(&self.inserted).remove(&pid) else {
            return;
        };
        let mut map = lock(&self.ns_tracked);
        for p in pids {
            // Already gone when the kernel saw the process exit.
            let _ = map.remove(&p);
        }
    }
}
