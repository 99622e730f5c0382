//! Detection latency: the helper listens on a fresh port, the contender
//! prints `opened` for it, the helper closes it; one listener at a time.
//! Latency = arrival of the JSON line - the helper's clock right before
//! `listen()` (both CLOCK_MONOTONIC).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::clock::Jitter;
use super::contender::Running;
use super::helper::{Helper, Opened};

/// Fresh ports in `[start, start + span)`, wrapping; kept below the
/// ephemeral range so they rarely collide with anything else.
pub struct Ports {
    start: u16,
    span: u16,
    next: u16,
}

impl Ports {
    pub fn new(start: u16, span: u16) -> Self {
        Ports {
            start,
            span,
            next: 0,
        }
    }

    /// Listens on the next free port; the port and its timestamps.
    pub fn open_next(&mut self, helper: &mut Helper) -> Result<(u16, Opened)> {
        for _ in 0..100 {
            let port = self.start + self.next;
            self.next = (self.next + 1) % self.span;
            if let Some(opened) = helper.open(port)? {
                return Ok((port, opened));
            }
        }
        bail!("100 ports in a row from {} are taken", self.start)
    }
}

/// How many listeners, for how long at most.
#[derive(Clone, Debug)]
pub struct Plan {
    pub samples: usize,
    pub max_time: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct Latencies {
    pub samples_ns: Vec<u64>,
    /// Listeners not reported within the contender's timeout.
    pub missed: usize,
    /// Why it stopped early, if it did.
    pub note: Option<String>,
}

/// Stop after this many misses in a row: the contender is not detecting.
const MISSES_IN_A_ROW: usize = 3;

/// One listener that every contender must report, with a generous timeout,
/// so each has started watching before anything is measured. Per contender,
/// `None` when it reported it, else why not.
pub fn warm_up(
    runs: &[&Running],
    helper: &mut Helper,
    ports: &mut Ports,
) -> Result<Vec<Option<String>>> {
    let (port, _) = ports.open_next(helper)?;
    let verdicts = runs
        .iter()
        .map(|run| {
            let timeout = run.contender.detect_timeout() * 3;
            match run.wait_for("opened", port, timeout) {
                Some(_) => None,
                None => Some(format!(
                    "started, but reported no listener within {} s (stderr: {})",
                    timeout.as_secs(),
                    run.stderr_tail()
                )),
            }
        })
        .collect();
    helper.close(port)?;
    Ok(verdicts)
}

/// Measures `plan.samples` listeners (fewer if `plan.max_time` runs out).
pub fn measure(
    run: &Running,
    helper: &mut Helper,
    ports: &mut Ports,
    plan: &Plan,
) -> Result<Latencies> {
    let mut jitter = Jitter::seeded();
    let mut result = Latencies::default();
    let mut misses_in_a_row = 0;
    let started = Instant::now();
    let timeout = run.contender.detect_timeout();
    while result.samples_ns.len() < plan.samples {
        if started.elapsed() + run.contender.jitter() + timeout > plan.max_time {
            result.note = Some(format!(
                "time budget of {} s reached",
                plan.max_time.as_secs()
            ));
            break;
        }
        let pause = jitter.below(run.contender.jitter().as_nanos() as u64);
        std::thread::sleep(Duration::from_nanos(pause));
        run.drain();
        let (port, opened) = ports.open_next(helper)?;
        match run.wait_for("opened", port, timeout) {
            Some(at_ns) => {
                result
                    .samples_ns
                    .push(at_ns.saturating_sub(opened.before_ns));
                misses_in_a_row = 0;
            }
            None => {
                result.missed += 1;
                misses_in_a_row += 1;
            }
        }
        helper.close(port)?;
        if misses_in_a_row == MISSES_IN_A_ROW {
            result.note = Some(format!(
                "stopped: {MISSES_IN_A_ROW} listeners in a row not reported within {} ms",
                timeout.as_millis()
            ));
            break;
        }
    }
    Ok(result)
}
