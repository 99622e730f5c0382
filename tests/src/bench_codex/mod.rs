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
//!   the 1.2 GB takes to reach Kandan once it reads again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::bench::procstat::{cpu_time, peak_rss_kib, rss_kib};
use crate::bench::stats::quantile;
use crate::codex::CodexDirs;
use crate::fake_model::{FakeModel, MODEL, Reply};
use crate::simulator::{SimConfig, Simulator};

const WAIT: Duration = Duration::from_secs(180);
const DELTAS: usize = 5_000;
const FLOOD_COUNT: usize = 1_200;

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

/// The 1.2 GB flood with Kandan paused.
#[derive(Debug)]
pub struct Flood {
    /// Notifications the app-server had written when its stdout stalled.
    pub written_at_stall: usize,
    /// The runner's peak RSS while Kandan did not read.
    pub peak_paused_kib: u64,
    /// ... and after every notification reached Kandan.
    pub peak_kib: u64,
    /// From Kandan reading again to the last notification.
    pub drain: Duration,
}

/// A runner connected to a fresh simulator, with `--stream-flush-ms`.
struct Rig {
    sim: Simulator,
    model: FakeModel,
    dirs: CodexDirs,
    runner: tokio::process::Child,
    stamps: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Rig {
    async fn start(runner: &Path, codex: &Path, flush_ms: u64) -> Result<Rig> {
        let sim = Simulator::start(SimConfig::default()).await?;
        let model = FakeModel::start().await?;
        let dirs = CodexDirs::new()?;
        std::fs::write(dirs.home().join("config.toml"), model.config_toml())?;
        let scratch = tempfile::tempdir()?;
        let stamps = scratch.path().join("stamps");
        let stamper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/codex_stamp.py");
        let runner = tokio::process::Command::new(runner)
            .args(["connect", "--url", &sim.url(), "--token", sim.token()])
            .arg("--codex-bin")
            .arg(&stamper)
            .args(["--stream-flush-ms", &flush_ms.to_string()])
            // Not `KANDAN_*`: the runner removes those from what it starts.
            .env("BENCH_STAMP_CODEX", codex)
            .env("BENCH_STAMP_FILE", &stamps)
            .env("CODEX_HOME", dirs.home())
            .env("HOME", dirs.home())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        sim.wait_joined(WAIT).await?;
        let after = sim.event_count();
        sim.send_control(json!({"type": "update_runner_config", "allowedCwds": [dirs.cwd()]}))?;
        sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
            .await?;
        Ok(Rig {
            sim,
            model,
            dirs,
            runner,
            stamps,
            _scratch: scratch,
        })
    }

    fn pid(&self) -> u32 {
        self.runner.id().unwrap_or_default()
    }

    async fn start_instance(&self, id: &str) -> Result<()> {
        self.sim.send_control(json!({
            "type": "start_instance", "instanceId": id, "cwd": self.dirs.cwd(), "model": MODEL,
        }))?;
        self.sim
            .wait_for_event("instance_started", |e| e["instanceId"] == id, WAIT)
            .await?;
        Ok(())
    }

    /// A turn of `DELTAS` deltas; waits for `turn/completed`.
    async fn turn(&self, id: &str, deltas: &[String]) -> Result<()> {
        let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
        self.model.push([Reply::text(&refs)]);
        let mut seen = self.sim.event_count();
        self.sim
            .send_control(json!({"type": "start_turn", "instanceId": id, "text": "go"}))?;
        // Polled, not woken per event: the bench must not compete with the
        // runner for the CPU while thousands of events arrive.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let new = self.sim.events_since(seen);
            seen += new.len();
            if new.iter().any(|e| e["method"] == "turn/completed") {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the turn never completed"
            );
        }
    }

    fn delta_frames(&self) -> Vec<(u64, Value)> {
        self.sim
            .timed_events()
            .into_iter()
            .filter(|(_, e)| e["method"] == "item/agentMessage/delta")
            .collect()
    }
}

/// Waits (at most 20 s) until the processes under the runner have used no
/// CPU for a second: a fresh `codex app-server` spends its first seconds on
/// chores of its own (a `git ls-remote` for its curated plugins, shell and
/// OS probes), which would compete with the measured turn for the two cores
/// and time Codex rather than the runner.
async fn settle(runner: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = descendants_cpu(runner);
    let mut quiet = 0;
    while quiet < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = descendants_cpu(runner);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// The processes under `root` and their CPU ticks, so that a change of
/// either (a chore starting or ending) counts as activity.
fn descendants_cpu(root: u32) -> (Vec<u32>, u64) {
    let stats: Vec<(u32, crate::bench::procstat::Stat)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, crate::bench::procstat::stat(pid).ok()?)))
        .collect();
    let mut tree = vec![root];
    let mut ticks = 0;
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (pid, stat) in &stats {
            if stat.ppid == parent {
                tree.push(*pid);
                ticks += stat.utime + stat.stime;
            }
        }
        i += 1;
    }
    tree.sort_unstable();
    (tree, ticks)
}

fn deltas() -> Vec<String> {
    (0..DELTAS).map(|i| format!("d{i} ")).collect()
}

/// The flood: a runner whose instance is the hostile stand-in, Kandan
/// paused while it writes [`FLOOD_COUNT`] notifications of 1 MiB.
pub async fn flood(runner: &Path) -> Result<Flood> {
    // The simulator keeps a digest of each megabyte, not the megabyte.
    let sim = Simulator::start(SimConfig {
        digest_strings_over: Some(4096),
        ..SimConfig::default()
    })
    .await?;
    let scratch = tempfile::tempdir()?;
    let progress = scratch.path().join("progress");
    let cwd = scratch.path().join("work");
    std::fs::create_dir(&cwd)?;
    let stand_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/codex_flood.py");
    let child = tokio::process::Command::new(runner)
        .args(["connect", "--url", &sim.url(), "--token", sim.token()])
        .arg("--codex-bin")
        .arg(&stand_in)
        .args(["--stream-flush-ms", "0"])
        .env("FLOOD_WHEN", "after")
        .env("FLOOD_COUNT", FLOOD_COUNT.to_string())
        .env("FLOOD_PROGRESS", &progress)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the runner has no pid")?;
    sim.wait_joined(WAIT).await?;
    let after = sim.event_count();
    sim.send_control(json!({"type": "update_runner_config", "allowedCwds": [&cwd]}))?;
    sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
        .await?;
    sim.pause_reading(true)?;
    sim.send_control(json!({"type": "start_instance", "instanceId": "flood", "cwd": cwd}))?;
    // Until the app-server's count has not moved for 3 s.
    let read = || std::fs::read_to_string(&progress).unwrap_or_default();
    let mut last = (read(), tokio::time::Instant::now());
    let deadline = tokio::time::Instant::now() + WAIT;
    while last.1.elapsed() < Duration::from_secs(3) {
        ensure!(tokio::time::Instant::now() < deadline, "never stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read();
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        }
    }
    let written_at_stall = last.0.parse().unwrap_or(FLOOD_COUNT);
    let peak_paused_kib = peak_rss_kib(pid)?;
    let resumed = tokio::time::Instant::now();
    sim.pause_reading(false)?;
    sim.wait_for_seen_count("codex_notification", FLOOD_COUNT + 1, WAIT)
        .await?;
    let drain = resumed.elapsed();
    let peak_kib = peak_rss_kib(pid)?;
    let kept = sim.transcript("flood").map_err(anyhow::Error::msg)?;
    ensure!(
        kept.len() >= FLOOD_COUNT + 2,
        "{} events of the flood kept",
        kept.len()
    );
    drop(child);
    Ok(Flood {
        written_at_stall,
        peak_paused_kib,
        peak_kib,
        drain,
    })
}

/// Runs the whole benchmark.
pub async fn run(runner: &Path, codex: &Path) -> Result<CodexBench> {
    let deltas = deltas();
    // Flush 0: latency, frames, CPU.
    let rig = Rig::start(runner, codex, 0).await?;
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
    let rig = Rig::start(runner, codex, 50).await?;
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

impl Flood {
    /// Its rows of the table.
    pub fn markdown(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "| runner peak RSS, {FLOOD_COUNT} x 1 MiB notifications, Kandan paused | {:.1} MiB | < 128 MiB: {} |\n\
             | notifications the app-server wrote before its stdout filled | {} of {FLOOD_COUNT} | |\n\
             | runner peak RSS once all reached Kandan | {:.1} MiB | < 128 MiB: {} |\n\
             | the {FLOOD_COUNT} MiB to Kandan once it reads again | {:.1} s | |\n",
            mib(self.peak_paused_kib),
            met(self.peak_paused_kib < 128 * 1024),
            self.written_at_stall,
            mib(self.peak_kib),
            met(self.peak_kib < 128 * 1024),
            self.drain.as_secs_f64(),
        )
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "MISSED" }
}
