//! The 1.2 GB flood with Kandan paused: a hostile stand-in writes
//! [`FLOOD_COUNT`] notifications of 1 MiB while the simulator does not read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;

use super::{WAIT, met};
use crate::bench::procstat::peak_rss_kib;
use crate::simulator::{SimConfig, Simulator};

const FLOOD_COUNT: usize = 1_200;

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
