//! A release runner connected to a fresh simulator with a stand-in for
//! `codex` (the stamping wrapper of the real one, its recorder, or the
//! replay), and the waits around a turn.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use super::{DELTAS, WAIT};
use crate::bench::instructions;
use crate::codex::CodexDirs;
use crate::fake_model::{FakeModel, MODEL, Reply};
use crate::simulator::{SimConfig, Simulator};

/// What the runner starts as `codex`, and its environment (not `KANDAN_*`:
/// the runner removes those from what it starts).
pub(super) struct StandIn {
    pub program: PathBuf,
    pub env: Vec<(&'static str, OsString)>,
    /// The fake model the real Codex talks to; `None` for the replay.
    pub model: Option<FakeModel>,
}

impl StandIn {
    /// `fixtures/<script>`.
    pub fn fixture(script: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(script)
    }
}

/// `--pin` (`BENCH_PIN`): the relay (runner or bare relay) alone on CPU 1;
/// the bench (the simulator) and the stand-in, which pins itself from
/// `BENCH_STANDIN_CPU`, on CPU 0. Without it the scheduler places all
/// three on the two cores, and a line may wait for a core as much as for
/// the relay.
pub struct Pinning;

impl Pinning {
    pub const RELAY_CPU: usize = 1;
    pub const REST_CPU: usize = 0;

    pub fn from_env() -> Option<Pinning> {
        std::env::var_os("BENCH_PIN").map(|_| Pinning)
    }

    /// Pins the calling process (every thread it starts later) to the
    /// rest's CPU; sets `BENCH_PIN` for [`Rig::start`].
    pub fn pin_bench() -> std::io::Result<()> {
        pin_to(Self::REST_CPU)?;
        // SAFETY: set before the runtime starts, while this is the only thread.
        unsafe { std::env::set_var("BENCH_PIN", "1") };
        Ok(())
    }

    fn relay_on_its_own(&self, command: &mut tokio::process::Command) {
        command.env("BENCH_STANDIN_CPU", Self::REST_CPU.to_string());
        // SAFETY: sched_setaffinity on the child itself, between fork and exec.
        unsafe {
            command.pre_exec(|| pin_to(Self::RELAY_CPU));
        }
    }
}

/// The calling thread (or the forked child) on `cpu` only.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the caller; the set lives across the call.
    let done = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A runner connected to a fresh simulator, with `--stream-flush-ms`.
pub(super) struct Rig {
    pub sim: Simulator,
    model: Option<FakeModel>,
    dirs: CodexDirs,
    runner: tokio::process::Child,
    /// Where the stand-in notes when it wrote each delta.
    pub stamps: PathBuf,
    /// The runner's callgrind profile, when it runs under callgrind
    /// (`--instructions`).
    pub callgrind: Option<PathBuf>,
    _scratch: tempfile::TempDir,
}

impl Rig {
    /// The stamping wrapper of the real `codex` with the fake model.
    pub async fn real(runner: &Path, codex: &Path, flush_ms: u64) -> Result<Rig> {
        let model = FakeModel::start().await?;
        let stand_in = StandIn {
            program: StandIn::fixture("codex_stamp.py"),
            env: vec![("BENCH_STAMP_CODEX", codex.into())],
            model: Some(model),
        };
        Rig::start(runner, stand_in, flush_ms).await
    }

    pub async fn start(runner: &Path, stand_in: StandIn, flush_ms: u64) -> Result<Rig> {
        let sim = Simulator::start(SimConfig::default()).await?;
        let dirs = CodexDirs::new()?;
        if let Some(model) = &stand_in.model {
            std::fs::write(dirs.home().join("config.toml"), model.config_toml())?;
        }
        let scratch = tempfile::tempdir()?;
        let stamps = scratch.path().join("stamps");
        let callgrind = instructions::wanted().then(|| scratch.path().join("callgrind.out"));
        let mut command = match &callgrind {
            None => tokio::process::Command::new(runner),
            Some(out) => instructions::under_callgrind(runner, out).into(),
        };
        if let Some(cpus) = Pinning::from_env() {
            cpus.relay_on_its_own(&mut command);
        }
        let runner = command
            .args(["connect", "--url", &sim.url(), "--token", sim.token()])
            .arg("--codex-bin")
            .arg(&stand_in.program)
            .args(["--stream-flush-ms", &flush_ms.to_string()])
            .envs(stand_in.env.iter().map(|(k, v)| (k, v)))
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
            model: stand_in.model,
            dirs,
            runner,
            stamps,
            callgrind,
            _scratch: scratch,
        })
    }

    pub fn pid(&self) -> u32 {
        self.runner.id().unwrap_or_default()
    }

    pub async fn start_instance(&self, id: &str) -> Result<()> {
        self.sim.send_control(json!({
            "type": "start_instance", "instanceId": id, "cwd": self.dirs.cwd(), "model": MODEL,
        }))?;
        self.sim
            .wait_for_event("instance_started", |e| e["instanceId"] == id, WAIT)
            .await?;
        Ok(())
    }

    /// A turn of `DELTAS` deltas; waits for `turn/completed`.
    pub async fn turn(&self, id: &str, deltas: &[String]) -> Result<()> {
        if let Some(model) = &self.model {
            let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
            model.push([Reply::text(&refs)]);
        }
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

    pub fn delta_frames(&self) -> Vec<(u64, Value)> {
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
pub(super) async fn settle(runner: u32) {
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
pub(super) fn descendants_cpu(root: u32) -> (Vec<u32>, u64) {
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

pub(super) fn deltas() -> Vec<String> {
    (0..DELTAS).map(|i| format!("d{i} ")).collect()
}
