//! What a cgroup used so far, as `status` shows it for each instance and
//! editor. Here, with the cgroups it is read from, so `report` imports
//! `cgroup` and not the other way round.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What an instance's or editor's cgroup used so far (`cpu.stat`,
/// `memory.current`); absent without a cgroup, memory also without the
/// memory controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_usec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory_bytes: Option<u64>,
}

impl Usage {
    /// ", cpu 1.2 s, memory 34.5 MiB" for the table; empty when unknown.
    pub(crate) fn describe(&self) -> String {
        let mut text = String::new();
        if let Some(usec) = self.cpu_usec {
            text.push_str(&format!(", cpu {:.1} s", usec as f64 / 1e6));
        }
        if let Some(bytes) = self.memory_bytes {
            text.push_str(&format!(
                ", memory {:.1} MiB",
                bytes as f64 / (1024.0 * 1024.0)
            ));
        }
        text
    }
}

/// CPU time (`usage_usec` of `cpu.stat`) and memory (`memory.current`,
/// where the memory controller is enabled) of the cgroup at `path`.
pub(crate) fn usage(path: &Path) -> Usage {
    let cpu = std::fs::read_to_string(path.join("cpu.stat")).unwrap_or_default();
    let cpu_usec = cpu
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|n| n.trim().parse().ok());
    let memory_bytes = std::fs::read_to_string(path.join("memory.current"))
        .ok()
        .and_then(|n| n.trim().parse().ok());
    Usage {
        cpu_usec,
        memory_bytes,
    }
}
