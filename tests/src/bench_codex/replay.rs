//! The replay: `fixtures/codex_replay.py` stands in for the app-server and
//! plays back a recorded turn of the real, pinned Codex
//! (`fixtures/codex_turn.jsonl`, made by [`record`]), answering the
//! runner's requests with the recorded answers. The runner's relay is timed
//! from the stand-in writing a delta's line to the simulator reading its
//! frame, without Codex's own CPU on the two cores.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use super::met;
use super::rig::{Rig, StandIn, deltas, settle};
use crate::bench::instructions;
use crate::bench::procstat::cpu_time;
use crate::bench::stats::quantile;
use crate::fake_model::FakeModel;

/// Deltas in the recorded turn (the fixture stays small).
const RECORD_DELTAS: usize = 1_000;
/// Turns replayed per pace.
const TURNS: usize = 5;

/// The recording in the repository.
pub fn fixture() -> PathBuf {
    StandIn::fixture("codex_turn.jsonl")
}

/// How fast the stand-in writes the recorded lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// With the delays the real app-server had between them.
    Original,
    /// Back to back.
    Fast,
    /// 1 ms apart: each line reaches an idle runner, so its latency is the
    /// relay's own, without the wait behind earlier lines that Codex's
    /// bursts (11 µs apart) cause.
    Spaced,
}

impl Pace {
    fn as_str(self) -> &'static str {
        match self {
            Pace::Original => "original",
            Pace::Fast => "fast",
            Pace::Spaced => "spaced",
        }
    }
}

/// What one replay measured.
#[derive(Debug)]
pub struct Replay {
    pub(crate) pace: Pace,
    /// Delta lines written and frames received (equal, or the run fails).
    pub(crate) deltas: usize,
    pub(crate) notifications: usize,
    pub(crate) p50_us: f64,
    pub(crate) p90_us: f64,
    pub(crate) cpu_us_per_notification: f64,
    /// User-space instructions per notification, under callgrind
    /// (`--instructions`; its latencies and CPU are then callgrind's).
    pub(crate) instructions_per_notification: Option<f64>,
}

/// Replays `recording` [`TURNS`] times at `pace` through `runner` at
/// flush 0 (one frame per delta).
pub async fn replay(runner: &Path, recording: &Path, pace: Pace) -> Result<Replay> {
    let stand_in = StandIn {
        program: StandIn::fixture("codex_replay.py"),
        env: vec![
            ("BENCH_REPLAY_FILE", recording.into()),
            ("BENCH_REPLAY_PACE", pace.as_str().into()),
        ],
        model: None,
    };
    let rig = Rig::start(runner, stand_in, 0).await?;
    rig.start_instance("r0").await?;
    settle(rig.pid()).await;
    let (seen, frames_before) = (rig.sim.event_count(), rig.delta_frames().len());
    if rig.callgrind.is_some() {
        instructions::start(rig.pid())?;
    }
    let cpu = cpu_time(rig.pid())?;
    for _ in 0..TURNS {
        rig.turn("r0", &[]).await?;
    }
    let cpu = cpu_time(rig.pid())? - cpu;
    let notifications = (rig.sim.events_since(seen).iter())
        .filter(|e| e["type"] == "codex_notification")
        .count();
    let instructions = match &rig.callgrind {
        Some(out) => {
            Some(instructions::finish(rig.pid(), out)? as f64 / notifications.max(1) as f64)
        }
        None => None,
    };
    let stamps: Vec<u64> = std::fs::read_to_string(&rig.stamps)
        .context("the stamps")?
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect();
    // In order: at flush 0 the runner sends each delta as its own frame,
    // in the order the app-server wrote them.
    let frames = rig.delta_frames().split_off(frames_before);
    ensure!(
        frames.len() == stamps.len() && !stamps.is_empty(),
        "{} delta lines written, {} frames received",
        stamps.len(),
        frames.len()
    );
    let latencies: Vec<u64> = (frames.iter().zip(&stamps))
        .map(|((arrived, _), sent)| arrived.saturating_sub(*sent))
        .collect();
    let us = |q| quantile(&latencies, q).unwrap_or_default() as f64 / 1000.0;
    Ok(Replay {
        pace,
        deltas: stamps.len(),
        notifications,
        p50_us: us(0.5),
        p90_us: us(0.9),
        cpu_us_per_notification: cpu.as_secs_f64() * 1e6 / notifications.max(1) as f64,
        instructions_per_notification: instructions,
    })
}

impl Replay {
    /// Its rows of the table; `who` relayed (the runner or the bare relay).
    pub fn markdown(&self, who: &str) -> String {
        let pace = self.pace.as_str();
        let of = format!("{} deltas, {TURNS} turns", self.deltas);
        if let Some(count) = self.instructions_per_notification {
            return format!(
                "| {who}, replay at {pace} pace ({of}): user-space instructions per notification ({} sent; callgrind) | {count:.0} | |\n",
                self.notifications
            );
        }
        format!(
            "| {who}, replay at {pace} pace ({of}): line -> frame at Kandan, p50 | {:.0} us | < 200 us: {} |\n\
             | {who}, replay at {pace} pace: line -> frame at Kandan, p90 | {:.0} us | |\n\
             | {who}, replay at {pace} pace: CPU per notification ({} sent) | {:.1} us | |\n",
            self.p50_us,
            met(self.p50_us < 200.0),
            self.p90_us,
            self.notifications,
            self.cpu_us_per_notification,
        )
    }

    /// The runner's p50 and CPU as multiples of the bare relay's, measured
    /// in turns with it.
    pub fn against_bare(&self, bare: &Replay) -> String {
        let pace = self.pace.as_str();
        if let (Some(runner), Some(bare)) = (
            self.instructions_per_notification,
            bare.instructions_per_notification,
        ) {
            return format!(
                "| runner / bare relay at {pace} pace: instructions per notification | {:.2}x | |\n",
                runner / bare.max(1.0)
            );
        }
        format!(
            "| runner / bare relay at {pace} pace: p50, CPU per notification | {:.2}x, {:.2}x | |\n",
            self.p50_us / bare.p50_us.max(1.0),
            self.cpu_us_per_notification / bare.cpu_us_per_notification.max(0.001),
        )
    }
}

/// Records a turn of [`RECORD_DELTAS`] deltas of the real `codex` (with
/// the fake model) through `runner` into `out`, up to `turn/completed`
/// (what follows is the runner stopping it). Returns the lines kept.
pub async fn record(runner: &Path, codex: &Path, out: &Path) -> Result<usize> {
    let scratch = tempfile::tempdir()?;
    let raw = scratch.path().join("recording");
    let stand_in = StandIn {
        program: StandIn::fixture("codex_record.py"),
        env: vec![
            ("BENCH_RECORD_CODEX", codex.into()),
            ("BENCH_RECORD_FILE", raw.clone().into()),
        ],
        model: Some(FakeModel::start().await?),
    };
    let rig = Rig::start(runner, stand_in, 0).await?;
    rig.start_instance("rec").await?;
    settle(rig.pid()).await;
    rig.turn("rec", &deltas()[..RECORD_DELTAS]).await?;
    drop(rig);
    let text = std::fs::read_to_string(&raw).context("the recording")?;
    let mut kept = Vec::new();
    for line in text.lines() {
        kept.push(line);
        let entry: serde_json::Value = serde_json::from_str(line)?;
        if entry["out"]
            .as_str()
            .is_some_and(|l| l.contains("\"turn/completed\""))
        {
            break;
        }
    }
    std::fs::write(out, kept.join("\n") + "\n")?;
    Ok(kept.len())
}
