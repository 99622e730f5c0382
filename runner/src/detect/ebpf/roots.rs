//! [`RootRegistry`] of the eBPF backend: roots and the processes they already
//! have go into `NS_TRACKED` (by pid as the runner sees them; the kernel
//! tracks later forks itself), then a backfill snapshot is asked for.

use std::{
    collections::HashMap as StdHashMap,
    sync::{Arc, Mutex},
};

use aya::maps::{HashMap, MapData};
use tokio::sync::mpsc;

use crate::detect::{DetectError, RootRegistry, process_tree};

/// State shared by the registry and the event task.
pub struct Roots {
    ns_tracked: Mutex<HashMap<MapData, u32, u8>>,
    /// Root -> pids it put into `NS_TRACKED` (itself included).
    inserted: Mutex<StdHashMap<u32, Vec<u32>>>,
    resync: mpsc::UnboundedSender<()>,
}

impl Roots {
    pub fn new(
        ns_tracked: HashMap<MapData, u32, u8>,
        resync: mpsc::UnboundedSender<()>,
    ) -> Arc<Roots> {
        Arc::new(Roots {
            ns_tracked: Mutex::new(ns_tracked),
            inserted: Mutex::new(StdHashMap::new()),
            resync,
        })
    }

    /// The roots now watched.
    pub fn list(&self) -> Vec<u32> {
        let mut roots: Vec<u32> = lock(&self.inserted).keys().copied().collect();
        roots.sort_unstable();
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
