//! Cost of one procfs scan with many processes on the machine, next to one
//! baseline poll (`ps` + `lsof`) in the same conditions. Two procfs numbers:
//! a cold scan (`procfs::scan`, a fresh scanner: what eBPF's backfill and
//! resync pay) and a steady poll (one `procfs::Scanner` kept across scans:
//! what the procfs backend pays every poll interval).

use std::time::Instant;

use super::baseline;
use super::stats::median;

#[derive(Clone, Debug, Default)]
pub struct ScanCost {
    /// Sleeping processes added for the measure.
    pub extra: usize,
    /// Processes on the machine while measuring.
    pub processes: usize,
    /// Cold scan: a fresh scanner each time.
    pub procfs_ns: Option<u64>,
    /// Steady poll: one scanner reused, as the backend does.
    pub steady_ns: Option<u64>,
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

    let mut scanner = runner::detect::procfs::Scanner::new(self_pid);
    // The first scan of a scanner is a cold one; the ones after are polls.
    let _ = scanner.scan(&[root]);
    let mut times = Vec::with_capacity(scans);
    for _ in 0..scans {
        let start = Instant::now();
        match scanner.scan(&[root]) {
            Ok(found) if !found.is_empty() => times.push(start.elapsed().as_nanos() as u64),
            Ok(_) => {
                cost.error = Some("steady procfs scan found no listener".into());
                break;
            }
            Err(err) => {
                cost.error = Some(format!("steady procfs scan failed: {err}"));
                break;
            }
        }
    }
    cost.steady_ns = median(&times);

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
