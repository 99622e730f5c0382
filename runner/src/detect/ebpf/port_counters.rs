//! The eBPF program's listener-change counters (`PORT_GENERATIONS`,
//! `LISTENS_IN_FLIGHT`) as [`PortChanges`], read with one map lookup each.

use std::io;
use std::sync::Arc;

use aya::maps::{Array, MapData, MapError};

use crate::detect::port_changes::{Generation, PortChanges};

/// Index of the generation of listens whose port is not known yet.
const UNKNOWN_PORT: u32 = 0;

pub(super) struct PortCounters {
    pub(super) generations: Array<MapData, u64>,
    pub(super) in_flight: Array<MapData, u64>,
    /// The programs that keep the counters: while the gate may read them,
    /// they must run, or a stale count would look like "nothing changed".
    pub(super) _attached: Arc<dyn Send + Sync>,
}

fn lookup(map: &Array<MapData, u64>, index: u32) -> io::Result<u64> {
    map.get(&index, 0).map_err(|err| match err {
        MapError::SyscallError(err) => err.io_error,
        other => io::Error::other(other),
    })
}

impl PortCounters {
    fn read(&self, index: u32) -> io::Result<u64> {
        lookup(&self.generations, index)
    }
}

impl PortChanges for PortCounters {
    fn generation(&self, port: u16) -> io::Result<Generation> {
        Ok(Generation {
            port: self.read(u32::from(port))?,
            unknown: self.read(UNKNOWN_PORT)?,
        })
    }

    fn in_flight(&self) -> io::Result<u64> {
        lookup(&self.in_flight, 0)
    }
}
