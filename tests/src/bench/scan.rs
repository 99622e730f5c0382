//! Cost of one procfs scan (`runner::detect::procfs::scan`, called directly)
//! with many processes on the machine, next to one baseline poll (`ps` +
//! `lsof`) in the same conditions.

use std::time::Instant;

use super::baseline;
use super::stats::median;

#[derive(Clone, Debug, Default)]
pub struct ScanCost {
    /// Sleeping processes added for the measure.
    pub extra: usize,
    /// Processes on the machine while measuring.
    pub processes: usize,
    pub procfs_ns: Option<u64>,
    pub scans: usize,
    /// Listeners the last scan found (the helper holds exactly one).
    pub found: usize,
    pub baseline_ns: Option<u64>,
    pub polls: usize,
    pub error: Option<String>,
}

/// Median of `scans` procfs scans and `polls` baseline polls of `root`'s tree.
pub fn measure(root: u32, extra: usize, scans: usize, polls: usize) -> ScanCost {
    let self_pid = std::process::id();
    let mut cost = ScanCost {
        extra,
        processes: super::procstat::process_count(),
        ..ScanCost::default()
    };
    let mut times = Vec::with_capacity(scans);
    for _ in 0..scans {
        let start = Instant::now();
        match runner::detect::procfs::scan(&[root], self_pid) {
            Ok(found) => {
                times.push(start.elapsed().as_nanos() as u64);
                cost.found = found.len();
            }
            Err(err) => {
                cost.error = Some(format!("procfs scan failed: {err}"));
                break;
            }
        }
    }
    cost.scans = times.len();
    // A scan that misses the helper's listener measured nothing worth showing.
    if cost.found == 0 && cost.error.is_none() {
        cost.error = Some("procfs scan found no listener: not implemented, or broken".into());
    } else {
        cost.procfs_ns = median(&times);
    }

    let mut times = Vec::with_capacity(polls);
    for _ in 0..polls {
        let start = Instant::now();
        if baseline::poll(&[root], self_pid).is_ok() {
            times.push(start.elapsed().as_nanos() as u64);
        }
    }
    cost.polls = times.len();
    cost.baseline_ns = median(&times);
    cost
}
