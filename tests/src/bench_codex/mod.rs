//! `cargo xtask bench codex`: Codex instances through a release
//! `kandan-runner connect` and the simulator, with the real `codex
//! app-server` and the fake model streaming 5,000 deltas as fast as Codex
//! emits them.
//!
//! - latency: from the app-server's stdout line of a delta (stamped by
//!   `tests/fixtures/codex_stamp.py`, which stands in for `codex` and passes
//!   its output on) to the simulator reading that delta's frame, at flush 0
//!   (one frame per delta); both ends read CLOCK_MONOTONIC;
//! - frames: `codex_notification` frames carrying the deltas at flush 0 and
//!   at 50 ms;
//! - CPU: the runner's utime + stime over the turn, per 1,000
//!   notifications the app-server sent (flush 0);
//! - memory: the runner's RSS with eight idle instances, minus its RSS
//!   before the first, per instance;
//! - flood: `tests/fixtures/codex_flood.py` writes 1,200 notifications of
//!   1 MiB while Kandan does not read: the runner's peak RSS (`VmHWM`) and
//!   how far the app-server got before its stdout filled, then how long
//!   the 1.2 GB takes to reach Kandan once it reads again (`flood`);
//! - replay (`--replay`, `replay`): a stand-in replays a recorded turn of
//!   the real Codex, so the relay is timed without Codex's CPU, through the
//!   runner and, in turns with it, through the bare relay (`bare`): the
//!   harness's floor.

pub mod bare;
mod flood;
mod replay;
mod rig;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::bench::procstat::{cpu_time, rss_kib};
use crate::bench::stats::quantile;
pub use flood::{Flood, flood};
pub use replay::{Pace, Replay, fixture as replay_fixture, record, replay};
pub use rig::Pinning;
use rig::{Rig, deltas, descendants_cpu, settle};

const WAIT: Duration = Duration::from_secs(180);
const DELTAS: usize = 5_000;

/// What one run measured.
#[derive(Debug)]
pub struct CodexBench {
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub frames_flush0: usize,
    pub frames_flush50: usize,
    pub cpu_ms_per_1000: f64,
    pub rss_base_kib: u64,
    pub rss_per_instance_kib: f64,
    pub flood: Flood,
}

/// Runs the whole benchmark.
pub async fn run(runner: &Path, codex: &Path) -> Result<CodexBench> {
    let deltas = deltas();
    // Flush 0: latency, frames, CPU.
    let rig = Rig::real(runner, codex, 0).await?;
    rig.start_instance("b0").await?;
    settle(rig.pid()).await;
    let cpu = cpu_time(rig.pid())?;
    // Where the rest of the two cores went during the turn: the bench's
    // process (the simulator) and the runner's children (the stamping
    // stand-in and Codex; clock ticks).
    let (sim_cpu, (_, children)) = (cpu_time(std::process::id())?, descendants_cpu(rig.pid()));
    rig.turn("b0", &deltas).await?;
    let cpu = cpu_time(rig.pid())? - cpu;
    let sim_cpu = cpu_time(std::process::id())? - sim_cpu;
    let children = descendants_cpu(rig.pid()).1 - children;
    eprintln!(
        "during the turn: runner {:.0} ms, simulator {:.0} ms, Codex and the stamper {} ms of CPU",
        cpu.as_secs_f64() * 1e3,
        sim_cpu.as_secs_f64() * 1e3,
        children * 10,
    );
    let notifications = rig
        .sim
        .events()
        .iter()
        .filter(|e| e["type"] == "codex_notification")
        .count();
    let stamps = std::fs::read_to_string(&rig.stamps).context("the stamps")?;
    let emitted: std::collections::HashMap<&str, u64> = stamps
        .lines()
        .filter_map(|line| {
            let (ns, delta) = line.split_once(' ')?;
            Some((delta.trim_end(), ns.parse().ok()?))
        })
        .collect();
    let frames = rig.delta_frames();
    let mut latencies = Vec::new();
    for (arrived, event) in &frames {
        let delta = event["params"]["delta"].as_str().unwrap_or_default();
        let delta = delta.trim_end();
        if let Some(sent) = emitted.get(delta) {
            latencies.push(arrived.saturating_sub(*sent));
        }
    }
    ensure!(
        latencies.len() >= DELTAS * 9 / 10,
        "only {} of {DELTAS} deltas timed",
        latencies.len()
    );
    let first = emitted.values().min().copied().unwrap_or_default();
    let last = emitted.values().max().copied().unwrap_or_default();
    let arrived_last = frames.iter().map(|(t, _)| *t).max().unwrap_or_default();
    eprintln!(
        "codex emitted {} deltas in {:.1} ms; the last frame arrived {:.1} ms after the first delta",
        emitted.len(),
        (last - first) as f64 / 1e6,
        arrived_last.saturating_sub(first) as f64 / 1e6
    );
    if std::env::var_os("KANDAN_BENCH_DEBUG").is_some() {
        for i in (0..latencies.len()).step_by(250) {
            eprintln!("delta {i}: {:.2} ms", latencies[i] as f64 / 1e6);
        }
    }
    let us = |q| quantile(&latencies, q).unwrap_or_default() as f64 / 1000.0;
    let (p50, p99) = (us(0.5), us(0.99));
    let frames_flush0 = frames.len();
    let cpu_ms = cpu.as_secs_f64() * 1000.0;
    let cpu_ms_per_1000 = cpu_ms * 1000.0 / notifications.max(1) as f64;

    // Eight idle instances: the runner's RSS per instance.
    let base = rss_kib(rig.pid())?;
    for i in 1..=8 {
        rig.start_instance(&format!("idle{i}")).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_eight = rss_kib(rig.pid())?;
    let rss_per_instance_kib = with_eight.saturating_sub(base) as f64 / 8.0;
    drop(rig);

    // Flush 50: frames.
    let rig = Rig::real(runner, codex, 50).await?;
    rig.start_instance("b1").await?;
    rig.turn("b1", &deltas).await?;
    let frames_flush50 = rig.delta_frames().len();
    let text: String = (rig.delta_frames().iter())
        .filter_map(|(_, e)| e["params"]["delta"].as_str().map(str::to_owned))
        .collect();
    ensure!(text == deltas.concat(), "the batched text differs");
    drop(rig);
    let flood = flood(runner).await?;
    Ok(CodexBench {
        latency_p50_us: p50,
        latency_p99_us: p99,
        frames_flush0,
        frames_flush50,
        cpu_ms_per_1000,
        rss_base_kib: base,
        rss_per_instance_kib,
        flood,
    })
}

impl CodexBench {
    /// The Markdown table for BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let ratio = self.frames_flush0 as f64 / self.frames_flush50.max(1) as f64;
        format!(
            "| Codex instance ({DELTAS} deltas) | value | target |\n|---|---:|---|\n\
             | app-server line -> frame at Kandan, p50 (flush 0) | {:.0} us | < 1 ms: {} |\n\
             | app-server line -> frame at Kandan, p99 (flush 0) | {:.0} us | |\n\
             | delta frames at flush 0 | {} | |\n\
             | delta frames at flush 50 ms | {} ({ratio:.0}x fewer) | >= 10x fewer: {} |\n\
             | runner CPU per 1,000 notifications (flush 0) | {:.1} ms | |\n\
             | runner RSS before instances | {:.1} MiB | |\n\
             | runner RSS per idle instance (8 started) | {:.2} MiB | < 4 MB: {} |\n",
            self.latency_p50_us,
            met(self.latency_p50_us < 1000.0),
            self.latency_p99_us,
            self.frames_flush0,
            self.frames_flush50,
            met(ratio >= 10.0),
            self.cpu_ms_per_1000,
            self.rss_base_kib as f64 / 1024.0,
            self.rss_per_instance_kib / 1024.0,
            met(self.rss_per_instance_kib < 4000.0),
        ) + &self.flood.markdown()
    }
}

pub(super) fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "MISSED" }
}
