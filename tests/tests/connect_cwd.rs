//! The cwd a Codex instance starts in is the one that was checked
//! (PROTOCOL.md section 6), through the simulator and a real runner.
//!
//! The app-server is a stand-in (`--codex-bin`): a script that appends its
//! instance id and its physical working directory (`pwd -P`, what
//! /proc/<pid>/cwd says) to a log after `exec`, then exits. The real Codex
//! would take about a second of CPU per start on a shared machine, and a
//! hundred starts under a flipping directory only need the process's
//! directory, not a thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    sim: Simulator,
    runner: RunnerProcess,
    /// Canonical scratch directory: `allowed/`, `outside/`, the stand-in
    /// and its log.
    dir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Result<Setup> {
        let scratch = tempfile::tempdir()?;
        let dir = scratch.path().canonicalize()?;
        std::fs::create_dir(dir.join("allowed"))?;
        std::fs::create_dir(dir.join("outside"))?;
        let bin = dir.join("app-server");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\npwd -P >> '{}'\n",
                dir.join("seen.log").display()
            ),
        )?;
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let sim = Simulator::start(SimConfig::default()).await?;
        let mut args = RunnerArgs::new("cwd-e2e", Vec::new());
        args.flags = vec!["--codex-bin".into(), bin.to_string_lossy().into_owned()];
        args.env = vec![("XDG_STATE_HOME".into(), dir.to_string_lossy().into_owned())];
        let runner = RunnerProcess::start(&sim, args)?;
        sim.wait_joined(WAIT).await?;
        let setup = Setup {
            sim,
            runner,
            dir,
            _scratch: scratch,
        };
        integration_tests::e2e::allow_cwd(&setup.sim, &setup.dir.join("allowed")).await?;
        Ok(setup)
    }

    /// Where each started stand-in ran, in the order they started (the
    /// runner gives a process no variable that names its instance: starts
    /// are made one at a time, so the n-th line is the n-th start's).
    fn seen(&self) -> Vec<PathBuf> {
        std::fs::read_to_string(self.dir.join("seen.log"))
            .unwrap_or_default()
            .lines()
            .map(PathBuf::from)
            .collect()
    }

    /// `start_instance` (with `cwd` unless it is `None`); `Ok(cwd)` where
    /// the app-server ran, or `Err(control_error)`.
    async fn start_instance(&self, id: &str, cwd: Option<&str>) -> Result<Result<PathBuf, Value>> {
        let after = self.sim.event_count();
        let started_before = self.seen().len();
        let mut control = json!({"type": "start_instance", "instanceId": id});
        if let Some(cwd) = cwd {
            control["cwd"] = json!(cwd);
        }
        self.sim.send_control(control)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(cwd) = self.seen().into_iter().nth(started_before) {
                return Ok(Ok(cwd));
            }
            let refused = (self.sim.events_since(after).into_iter())
                .find(|e| e["type"] == "control_error" && e["instanceId"] == id);
            if let Some(refused) = refused {
                return Ok(Err(refused));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no answer to {id}; runner log:\n{}", self.runner.output());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn refused_code(answer: &Result<PathBuf, Value>) -> Option<&str> {
    answer.as_ref().err().and_then(|e| e["code"].as_str())
}

/// (a) The allowed root is renamed and its name made a symlink to another
/// directory: a start without `cwd` resolves the root afresh and refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_replaced_by_a_symlink_is_not_started_in() -> Result<()> {
    let setup = Setup::start().await?;
    let root = setup.dir.join("allowed");
    let first = setup.start_instance("before", None).await?;
    assert_eq!(first, Ok(root.clone()));
    std::fs::rename(&root, setup.dir.join("allowed.old"))?;
    std::os::unix::fs::symlink(setup.dir.join("outside"), &root)?;
    let answer = setup.start_instance("after", None).await?;
    assert_eq!(refused_code(&answer), Some("cwd_not_allowed"), "{answer:?}");
    // Named explicitly, the same.
    let answer = setup
        .start_instance("named", Some(&root.to_string_lossy()))
        .await?;
    assert_eq!(refused_code(&answer), Some("cwd_not_allowed"), "{answer:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(setup.seen().len(), 1, "{:?}", setup.seen());
    Ok(())
}

/// (b) A writer flips an allowed subdirectory between the directory and a
/// symlink to outside as fast as it can while 100 starts arrive: each
/// either is refused or runs in the directory that was checked, never
/// outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipping_directory_never_starts_an_instance_outside() -> Result<()> {
    const STARTS: usize = 100;
    let setup = Setup::start().await?;
    let allowed = setup.dir.join("allowed");
    let (flip, real, outside) = (
        allowed.join("flip"),
        allowed.join("real"),
        setup.dir.join("outside"),
    );
    std::fs::create_dir(&real)?;
    std::os::unix::fs::symlink(&outside, &flip)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicUsize::new(0));
    let writer = std::thread::spawn({
        let (stop, flips) = (stop.clone(), flips.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&flip);
                let _ = std::fs::rename(&real, &flip);
                let _ = std::fs::rename(&flip, &real);
                let _ = std::os::unix::fs::symlink(&outside, &flip);
                flips.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let target = allowed.join("flip").to_string_lossy().into_owned();
    let (mut started, mut refused) = (0, 0);
    let mut outcome = Ok(());
    for i in 0..STARTS {
        match setup
            .start_instance(&format!("flip{i}"), Some(&target))
            .await
        {
            Ok(Ok(_)) => started += 1,
            Ok(Err(answer)) if answer["code"] == "cwd_not_allowed" => refused += 1,
            Ok(Err(answer)) => {
                outcome = Err(anyhow::anyhow!("start {i}: {answer}"));
                break;
            }
            Err(err) => {
                outcome = Err(err);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().ok().context("the writer panicked")?;
    outcome?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = setup.seen();
    let outside: Vec<_> = seen
        .iter()
        .filter(|cwd| !cwd.starts_with(&allowed))
        .collect();
    println!(
        "{started} started, {refused} refused, {} ran outside, {} flips",
        outside.len(),
        flips.load(Ordering::Relaxed)
    );
    assert!(
        outside.is_empty(),
        "ran outside the allowed root: {outside:?}"
    );
    assert_eq!(seen.len(), started, "{seen:?}");
    assert!(
        started > 0,
        "no start saw the directory: the race was not run"
    );
    Ok(())
}

/// (e) A relative `cwd` is `cwd_not_allowed`, for instances and editors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_cwd_is_not_allowed() -> Result<()> {
    let setup = Setup::start().await?;
    for cwd in ["allowed", "./allowed", "../allowed"] {
        let answer = setup
            .start_instance(&format!("rel-{cwd}"), Some(cwd))
            .await?;
        assert_eq!(refused_code(&answer), Some("cwd_not_allowed"), "{answer:?}");
    }
    let after = setup.sim.event_count();
    setup.sim.send_control(
        json!({"type": "start_local_editor", "requestId": "rel", "cwd": "allowed"}),
    )?;
    let (_, answer) = setup
        .sim
        .wait_for_event_after(after, "control_error", |e| e["requestId"] == "rel", WAIT)
        .await?;
    assert_eq!(answer["code"], "cwd_not_allowed", "{answer}");
    assert!(setup.seen().is_empty());
    Ok(())
}

/// A relative `--codex-bin` names a file from where the runner was started,
/// not from the instance's cwd (it exited 127 there); an instance or editor
/// that fails to start is also a state line on the runner's stderr.
#[tokio::test]
async fn a_relative_codex_bin_is_the_runners_cwds_and_failures_are_state_lines() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().canonicalize()?;
    std::fs::create_dir_all(dir.join("runner/bin"))?;
    std::fs::create_dir(dir.join("allowed"))?;
    let bin = dir.join("runner/bin/app-server");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\necho \"$KANDAN_INSTANCE_ID $(pwd -P)\" >> '{}'\n",
            dir.join("seen.log").display()
        ),
    )?;
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let sim = Simulator::start(SimConfig::default()).await?;
    let mut args = RunnerArgs::new("relative-bins", Vec::new());
    args.flags = [
        "--codex-bin",
        "bin/app-server",
        "--code-server-bin",
        "nowhere/code-server",
    ]
    .map(str::to_owned)
    .to_vec();
    args.env = vec![("XDG_STATE_HOME".into(), dir.to_string_lossy().into_owned())];
    args.cwd = Some(dir.join("runner"));
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT).await?;
    let allowed = dir.join("allowed");
    let after = sim.event_count();
    sim.send_control(json!({"type": "update_runner_config", "allowedCwds": [allowed]}))?;
    sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
        .await?;

    sim.send_control(json!({"type": "start_instance", "instanceId": "rel", "cwd": allowed}))?;
    // The stand-in runs (from the runner's cwd) and exits at once, which
    // fails the instance: not with 127, the shell's "not found".
    let failed = sim
        .wait_for_event("control_error", |e| e["instanceId"] == "rel", WAIT)
        .await?;
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("exit code 0"),
        "{failed}\n{}",
        runner.output()
    );
    let seen = std::fs::read_to_string(dir.join("seen.log")).unwrap_or_default();
    assert!(
        seen.contains(&format!(" {}\n", allowed.display())),
        "the stand-in never ran: {seen:?}\n{}",
        runner.output()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !runner
        .output()
        .lines()
        .any(|l| l.contains("Codex instance rel failed") && l.contains("exit code 0"))
    {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no state line for the instance's failure:\n{}",
                runner.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The editor's code-server is missing (relative to the runner's cwd):
    // `editor_failed` to Kandan, and a line here that says so.
    sim.send_control(json!({"type": "start_local_editor", "requestId": "ed-1", "cwd": allowed}))?;
    let failed = sim
        .wait_for_event("control_error", |e| e["requestId"] == "ed-1", WAIT)
        .await?;
    assert_eq!(failed["code"], "editor_failed", "{failed}");
    let missing = dir.join("runner/nowhere/code-server");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !runner
        .output()
        .lines()
        .any(|l| l.contains("editor ed-1 failed") && l.contains(&missing.display().to_string()))
    {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no state line for the editor's failure:\n{}",
                runner.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
