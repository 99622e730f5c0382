//! Codex instances' events are bounded in bytes (PROTOCOL.md section 5): a
//! stand-in app-server writes megabyte notifications while Kandan does not
//! read, after its thread opened or before answering `thread/start`. The
//! runner's resident set stays under 128 MiB, an app-server whose thread is
//! open is held back (its stdout pipe full), and once Kandan reads again
//! every event arrives: each `seq`, in order, no gap, content intact.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use integration_tests::bench::procstat::peak_rss_kib;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator, digest_of};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// Draining a gigabyte through debug builds of the runner and simulator.
const DRAIN_WAIT: Duration = Duration::from_secs(600);
/// The bound the issue sets for the runner's resident set.
const RSS_LIMIT_KIB: u64 = 128 * 1024;
const SIZE: usize = 1 << 20;
const INSTANCE: &str = "flood";

/// The hostile stand-in app-server (see its docstring).
fn flood_codex() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/codex_flood.py")
}

struct Rig {
    sim: Simulator,
    runner: RunnerProcess,
    progress: PathBuf,
    cwd: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(when: &str, count: usize) -> Result<Rig> {
        Self::start_sized(when, count, SIZE).await
    }

    async fn start_sized(when: &str, count: usize, size: usize) -> Result<Rig> {
        let dir = tempfile::tempdir()?;
        let progress = dir.path().join("progress");
        let cwd = dir.path().join("work");
        std::fs::create_dir(&cwd)?;
        // The simulator keeps a digest of each megabyte, not the megabyte.
        let sim = Simulator::start(SimConfig {
            digest_strings_over: Some(4096),
            ..SimConfig::default()
        })
        .await?;
        let mut args = RunnerArgs::new("codex-memory", Vec::new());
        args.flags = vec![
            "--codex-bin".into(),
            flood_codex().to_string_lossy().into_owned(),
            "--stream-flush-ms".into(),
            "0".into(),
            // Kandan stalls longer than a heartbeat period in debug builds
            // on a loaded machine: no reconnect (and no gap) meanwhile.
            "--heartbeat-ms".into(),
            "600000".into(),
        ];
        args.env = vec![
            ("FLOOD_WHEN".into(), when.into()),
            ("FLOOD_COUNT".into(), count.to_string()),
            ("FLOOD_SIZE".into(), size.to_string()),
            (
                "FLOOD_PROGRESS".into(),
                progress.to_string_lossy().into_owned(),
            ),
        ];
        let runner = RunnerProcess::start(&sim, args)?;
        sim.wait_joined(WAIT)
            .await
            .with_context(|| runner.output())?;
        let after = sim.event_count();
        sim.send_control(json!({"type": "update_runner_config", "allowedCwds": [&cwd]}))?;
        sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
            .await?;
        Ok(Rig {
            sim,
            runner,
            progress,
            cwd,
            _dir: dir,
        })
    }

    fn progress(&self) -> String {
        std::fs::read_to_string(&self.progress).unwrap_or_default()
    }

    /// Samples the runner's resident set until the app-server's progress has
    /// not moved for `quiet`; the progress then.
    async fn until_stalled(&self, quiet: Duration) -> Result<String> {
        let mut last = (self.progress(), Instant::now());
        let deadline = Instant::now() + DRAIN_WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.progress();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return Ok(now);
            }
            ensure!(Instant::now() < deadline, "never stalled at {}", last.0);
        }
    }

    /// Waits for `n` `codex_notification`s; the runner's peak RSS meanwhile
    /// is what `VmHWM` says afterwards.
    async fn until_delivered(&self, n: usize) -> Result<()> {
        self.sim
            .wait_for_seen_count("codex_notification", n, DRAIN_WAIT)
            .await
            .with_context(|| self.runner.output())?;
        Ok(())
    }

    /// The instance's events in seq order: `instance_started`, the `count`
    /// notifications intact, `test/done`; no gap.
    fn check_transcript(&self, count: usize) -> Result<()> {
        let transcript = self.sim.transcript(INSTANCE).map_err(anyhow::Error::msg)?;
        ensure!(
            transcript.len() >= count + 2,
            "{} events kept",
            transcript.len()
        );
        for (index, event) in transcript.iter().enumerate() {
            ensure!(
                event["seq"] == index as u64 + 1,
                "seq out of order: {event}"
            );
            ensure!(event.get("gap").is_none(), "a gap: {event}");
        }
        ensure!(
            transcript[0]["type"] == "instance_started",
            "{}",
            transcript[0]
        );
        for (i, event) in transcript[1..=count].iter().enumerate() {
            let expected = digest_of(&format!("{i:08}").repeat(SIZE / 8));
            let params = &event["params"];
            ensure!(
                event["method"] == "test/blob" && params["i"] == i && params["data"] == *expected,
                "notification {i}: {} {} {}",
                event["method"],
                params["i"],
                params["data"]
            );
        }
        ensure!(transcript[count + 1]["method"] == "test/done");
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.sim
            .send_control(json!({"type": "stop_instance", "instanceId": INSTANCE}))?;
        self.sim
            .wait_for_event("instance_stopped", |_: &Value| true, WAIT)
            .await?;
        Ok(())
    }
}

fn start_instance(sim: &Simulator, cwd: &Path) -> Result<()> {
    sim.send_control(json!({
        "type": "start_instance", "instanceId": INSTANCE, "cwd": cwd,
    }))?;
    Ok(())
}

#[tokio::test]
async fn a_flood_after_the_thread_opened_waits_for_a_stalled_kandan() -> Result<()> {
    const COUNT: usize = 1200;
    let started = Instant::now();
    let rig = Rig::start("after", COUNT).await?;
    rig.sim.pause_reading(true)?;
    start_instance(&rig.sim, &rig.cwd)?;
    let stalled = rig.until_stalled(Duration::from_secs(3)).await?;
    let peak = peak_rss_kib(rig.runner.pid())?;
    println!(
        "stalled kandan after {:.1} s: the app-server wrote {stalled} of {COUNT} notifications of 1 MiB; runner peak RSS {peak} KiB",
        started.elapsed().as_secs_f64()
    );
    let written: usize = stalled.parse().context("the app-server finished")?;
    ensure!(
        written < COUNT / 4,
        "the app-server was never held back ({written})"
    );
    ensure!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");

    rig.sim.pause_reading(false)?;
    rig.until_delivered(COUNT + 1).await?;
    let peak = peak_rss_kib(rig.runner.pid())?;
    println!(
        "all {COUNT} delivered: runner peak RSS {peak} KiB, {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    ensure!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    rig.check_transcript(COUNT)?;
    ensure!(rig.progress() == "done");
    rig.stop().await
}

#[tokio::test]
async fn a_flood_before_the_thread_opened_is_kept_out_of_memory() -> Result<()> {
    const COUNT: usize = 400;
    let started = Instant::now();
    let rig = Rig::start("before", COUNT).await?;
    rig.sim.pause_reading(true)?;
    start_instance(&rig.sim, &rig.cwd)?;
    let stalled = rig.until_stalled(Duration::from_secs(3)).await?;
    let peak = peak_rss_kib(rig.runner.pid())?;
    println!(
        "stalled kandan after {:.1} s: the app-server's progress {stalled}; runner peak RSS {peak} KiB",
        started.elapsed().as_secs_f64()
    );
    ensure!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");

    rig.sim.pause_reading(false)?;
    rig.until_delivered(COUNT + 1).await?;
    let peak = peak_rss_kib(rig.runner.pid())?;
    println!(
        "all {COUNT} delivered: runner peak RSS {peak} KiB, {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    ensure!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    rig.check_transcript(COUNT)?;
    rig.stop().await
}

#[tokio::test]
async fn a_line_that_never_ends_fails_the_instance_without_growing_memory() -> Result<()> {
    let started = Instant::now();
    let rig = Rig::start_sized("line", 0, 100 * SIZE).await?;
    start_instance(&rig.sim, &rig.cwd)?;
    let (_, failed) = rig
        .sim
        .wait_for_event_after(
            0,
            "control_error",
            |e| e["instanceId"] == INSTANCE && e["code"] == "instance_failed",
            WAIT,
        )
        .await
        .with_context(|| rig.runner.output())?;
    let message = failed["message"].as_str().unwrap_or_default();
    ensure!(message.contains("wrote a line over 64 MiB"), "{message}");
    let stopped = rig
        .sim
        .wait_for_event(
            "instance_stopped",
            |e: &Value| e["instanceId"] == INSTANCE,
            WAIT,
        )
        .await?;
    ensure!(stopped["reason"] == "failed", "{stopped}");
    let peak = peak_rss_kib(rig.runner.pid())?;
    println!(
        "a 100 MiB line: instance failed, runner peak RSS {peak} KiB, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ensure!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    Ok(())
}
