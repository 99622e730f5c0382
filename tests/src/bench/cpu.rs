//! Runner CPU while idle and during listen/close storms, every contender at
//! once (they watch the same idle helper): utime + stime (+ children) from
//! `/proc/<pid>/stat`, as percent of one core over the window; and while
//! idle, its wakeups per second (context switches of all its threads).

use std::time::Duration;

use anyhow::Result;

use super::contender::Running;
use super::helper::Helper;
use super::procstat::{CpuMeter, WakeMeter};

#[derive(Clone, Debug)]
pub struct Plan {
    pub idle: Duration,
    /// Listen/close per second, and for how long, outside then inside.
    pub storm_rate: u64,
    pub storm_seconds: u64,
}

/// One contender's CPU, percent of one core.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub idle: Option<f64>,
    /// Wakeups per second of the contender's own process while idle (not
    /// of its children: the baseline's `ps` and `lsof` are new processes).
    pub idle_wakeups: Option<f64>,
    pub storm_outside: Option<f64>,
    pub storm_inside: Option<f64>,
}

/// How long startup work (eBPF loading, first scans) may still be running.
const SETTLE: Duration = Duration::from_secs(3);

pub fn measure(
    runs: &[&Running],
    watched: &mut Helper,
    outside: &mut Helper,
    plan: &Plan,
) -> Result<Vec<Usage>> {
    std::thread::sleep(SETTLE);
    let mut usage = vec![Usage::default(); runs.len()];

    eprintln!("bench: idle CPU over {} s", plan.idle.as_secs());
    let meters = start(runs);
    let wakes: Vec<Option<WakeMeter>> = runs
        .iter()
        .map(|run| WakeMeter::start(run.pid()).ok())
        .collect();
    std::thread::sleep(plan.idle);
    for ((usage, meter), wake) in usage.iter_mut().zip(&meters).zip(&wakes) {
        usage.idle = percent(meter);
        usage.idle_wakeups = wake.as_ref().and_then(|wake| wake.per_second().ok());
    }

    eprintln!(
        "bench: storm of {}/s outside the watched tree for {} s",
        plan.storm_rate, plan.storm_seconds
    );
    let meters = start(runs);
    outside.storm(plan.storm_rate, plan.storm_seconds)?;
    for (usage, meter) in usage.iter_mut().zip(&meters) {
        usage.storm_outside = percent(meter);
    }

    eprintln!(
        "bench: storm of {}/s inside the watched tree for {} s",
        plan.storm_rate, plan.storm_seconds
    );
    let meters = start(runs);
    watched.storm(plan.storm_rate, plan.storm_seconds)?;
    for (usage, meter) in usage.iter_mut().zip(&meters) {
        usage.storm_inside = percent(meter);
    }
    for run in runs {
        run.drain();
    }
    Ok(usage)
}

fn start(runs: &[&Running]) -> Vec<Option<CpuMeter>> {
    runs.iter()
        .map(|run| CpuMeter::start(run.pid()).ok())
        .collect()
}

fn percent(meter: &Option<CpuMeter>) -> Option<f64> {
    meter.as_ref().and_then(|meter| meter.percent().ok())
}
