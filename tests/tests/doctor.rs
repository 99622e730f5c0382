//! `doctor` through the binary. `--url` against the Kandan simulator: every
//! step (URL, DNS, TCP, TLS, WebSocket upgrade, join) passes and the runner
//! leaves; a wrong token, a wrong path, a refused join and nothing listening
//! stop at the step that failed, with its fix and exit code; the token is in
//! no output. With a `connect` of the same runner id running, `doctor
//! --url` leaves the join out and says so, and two runners on one simulator
//! stay connected. The eBPF blockers as a non-root user with each capability of
//! the non-root set missing in turn (setpriv), as root with capabilities
//! dropped (capsh), and in a user namespace (unshare): one cause, named,
//! with its fix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::{free_port, privileged, runner_bin};
use serde_json::Value;

/// Runs `kandan-runner doctor ARGS` without blocking the simulator's runtime.
async fn doctor(args: &[&str]) -> Result<Output> {
    // A state directory of its own: no runner of this user (another test's
    // `connect` as the host name) makes it leave the join out.
    let state = tempfile::tempdir()?;
    let output = tokio::process::Command::new(runner_bin())
        .arg("doctor")
        .args(args)
        .env_remove("KANDAN_URL")
        .env_remove("KANDAN_TOKEN")
        .env("XDG_STATE_HOME", state.path())
        .env("RUST_LOG", "debug")
        .output();
    tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .context("doctor did not finish")?
        .context("spawn doctor")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> Result<Value> {
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("doctor --json printed no JSON: {}", text(output)))
}

/// The steps of `connection`, as (name, status).
fn steps(report: &Value) -> Vec<(String, String)> {
    report["connection"]["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or_default().to_owned(),
                        s["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["connection"]["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn doctor_url_passes_every_step_against_the_simulator_and_leaves() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", sim.token()))?;
    let url = sim.url();
    let token_path = token_file.display().to_string();
    let args = [
        "--json",
        "--url",
        &url,
        "--token-file",
        &token_path,
        "--runner-id",
        "doc-check",
    ];
    let output = doctor(&args).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(0), "{}", text(&output));
    let want: Vec<(String, String)> = [
        ("url", "ok"),
        ("dns", "ok"),
        ("tcp", "ok"),
        ("tls", "skipped"),
        ("websocket", "ok"),
        ("join", "ok"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    ensure!(steps(&report) == want, "{report}");
    ensure!(report["connection"]["ok"] == true, "{report}");
    for name in ["dns", "tcp", "websocket", "join"] {
        ensure!(step(&report, name)["ms"].is_number(), "{report}");
    }
    // It joined as `connect` would, and left.
    let joins = sim.joins();
    ensure!(joins.len() == 1, "{joins:?}");
    ensure!(joins[0]["runnerId"] == "doc-check", "{joins:?}");
    ensure!(sim.joined_topic().is_none(), "still joined after doctor");
    ensure!(sim.violations().is_empty(), "{:?}", sim.violations());
    ensure!(!text(&output).contains(sim.token()), "the token leaked");

    // The human lines: one per step, then the verdict.
    let output = doctor(&["--url", &url, "--token", sim.token()]).await?;
    ensure!(output.status.code() == Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "  dns        ok",
        "  tcp        ok",
        "  tls        skipped",
        "  websocket  ok",
        "  join       ok",
        "connection: ok",
    ] {
        ensure!(stdout.contains(line), "no {line:?} in {stdout}");
    }
    ensure!(!text(&output).contains(sim.token()), "the token leaked");
    Ok(())
}

/// This machine's host name: the default runner id of `connect` and `doctor`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn two_runners_stay_connected_and_doctor_url_leaves_them_be() -> Result<()> {
    use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
    let sim = Simulator::start(SimConfig::default()).await?;
    let state = tempfile::tempdir()?;
    let state_env = (
        "XDG_STATE_HOME".to_owned(),
        state.path().display().to_string(),
    );
    // The default runner id (the host name), as `connect` without
    // `--runner-id` uses it, and another one beside it.
    let host = hostname();
    ensure!(!host.is_empty(), "no host name");
    let mut runners = Vec::new();
    for id in [host.as_str(), "second"] {
        let mut args = RunnerArgs::supervising(id);
        args.env.push(state_env.clone());
        runners.push(RunnerProcess::start(&sim, args)?);
        sim.wait_join_count(runners.len(), Duration::from_secs(60))
            .await
            .with_context(|| {
                runners
                    .iter()
                    .map(RunnerProcess::output)
                    .collect::<String>()
            })?;
    }
    // Both stay: no reconnect of either in a while (one runner at a time
    // made them take turns, 9 reconnects in 0.5 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let topics = |sim: &Simulator| {
        let mut topics = sim.joined_topics();
        topics.sort();
        topics
    };
    let mut both = vec![format!("runner:{host}"), "runner:second".to_owned()];
    both.sort();
    ensure!(topics(&sim) == both, "{:?}", sim.joined_topics());
    ensure!(
        sim.connection_count() == 2 && sim.join_count() == 2,
        "reconnects: {} connections, {} joins",
        sim.connection_count(),
        sim.join_count()
    );

    // `doctor --url` with the default runner id: every step up to the
    // WebSocket handshake, and the join left out, saying why.
    let output = tokio::process::Command::new(runner_bin())
        .args([
            "doctor",
            "--json",
            "--url",
            &sim.url(),
            "--token",
            sim.token(),
        ])
        .env_remove("KANDAN_RUNNER_ID")
        .env("XDG_STATE_HOME", state.path())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .context("doctor did not finish")??;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(0), "{}", text(&output));
    let want: Vec<(String, String)> = [
        ("url", "ok"),
        ("dns", "ok"),
        ("tcp", "ok"),
        ("tls", "skipped"),
        ("websocket", "ok"),
        ("join", "skipped"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    ensure!(steps(&report) == want, "{report}");
    let detail = step(&report, "join")["detail"].as_str().unwrap_or_default();
    let pid = format!("pid {}", runners[0].pid());
    ensure!(
        detail.contains("left out") && detail.contains(&pid) && detail.contains(&host),
        "{detail}"
    );
    ensure!(sim.joins().len() == 2, "doctor joined: {:?}", sim.joins());
    // And both runners are still there, never having reconnected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(topics(&sim) == both, "{:?}", sim.joined_topics());
    ensure!(sim.join_count() == 2, "a runner rejoined");
    for runner in &runners {
        ensure!(
            !runner.output().contains("reconnecting"),
            "{}",
            runner.output()
        );
    }
    // The human verdict says so too.
    let output = tokio::process::Command::new(runner_bin())
        .args(["doctor", "--url", &sim.url(), "--token", sim.token()])
        .env_remove("KANDAN_RUNNER_ID")
        .env("XDG_STATE_HOME", state.path())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        stdout.contains("  join       skipped") && stdout.contains("join was left out"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn doctor_url_with_a_wrong_token_stops_at_the_upgrade_with_exit_3() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let url = sim.url();
    let wrong = "wrong-token-Xy7q";
    let output = doctor(&["--json", "--url", &url, "--token", wrong]).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(3), "{}", text(&output));
    let last = steps(&report).pop().unwrap_or_default();
    ensure!(last == ("websocket".into(), "failed".into()), "{report}");
    let websocket = step(&report, "websocket");
    ensure!(
        websocket["detail"] == "http 403: Kandan rejected the token",
        "{report}"
    );
    ensure!(
        websocket["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("--token-file"),
        "{report}"
    );
    ensure!(sim.join_count() == 0, "joined with a wrong token");

    let output = doctor(&["--url", &url, "--token", wrong]).await?;
    ensure!(output.status.code() == Some(3), "{}", text(&output));
    let all = text(&output);
    ensure!(all.contains("  websocket  FAILED"), "{all}");
    ensure!(all.contains("connection: failed at websocket"), "{all}");
    ensure!(!all.contains(wrong), "the token leaked: {all}");
    Ok(())
}

#[tokio::test]
async fn doctor_url_without_a_token_says_none_was_given() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let url = sim.url();
    let output = doctor(&["--json", "--url", &url]).await?;
    ensure!(output.status.code() == Some(3), "{}", text(&output));
    let report = json(&output)?;
    let websocket = step(&report, "websocket");
    ensure!(websocket["status"] == "failed", "{report}");
    let detail = websocket["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains("no token was given") && !detail.contains("rejected"),
        "{detail}"
    );
    ensure!(
        websocket["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("--token-file"),
        "{report}"
    );
    Ok(())
}

/// `doctor` takes the flags it suggests (`set --codex-bin`), resolved as
/// `connect` resolves them: relative ones from where it runs.
#[tokio::test]
async fn doctor_takes_codex_bin_and_code_server_bin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let output = tokio::process::Command::new(runner_bin())
        .args([
            "doctor",
            "--json",
            "--codex-bin",
            "bin/no-codex",
            "--code-server-bin",
            "bin/no-code-server",
        ])
        .current_dir(dir.path())
        .env_remove("KANDAN_URL")
        .env("XDG_STATE_HOME", dir.path())
        .output()
        .await?;
    ensure!(
        output.status.code() != Some(2),
        "flags refused: {}",
        text(&output)
    );
    let report = json(&output)?;
    let codex = report["codex"]["error"].as_str().unwrap_or_default();
    let wanted = dir.path().join("bin/no-codex");
    ensure!(codex.contains(&wanted.display().to_string()), "{report}");
    let code_server = report["codeServer"]["reason"].as_str().unwrap_or_default();
    let wanted = dir.path().join("bin/no-code-server");
    ensure!(
        code_server.contains(&wanted.display().to_string()),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn doctor_url_with_a_wrong_path_says_404_and_the_mount() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let url = sim.url().replace("/runner/socket", "/socket");
    let output = doctor(&["--json", "--url", &url, "--token", sim.token()]).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(3), "{}", text(&output));
    let websocket = step(&report, "websocket");
    ensure!(websocket["status"] == "failed", "{report}");
    ensure!(
        websocket["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http 404"),
        "{report}"
    );
    ensure!(
        websocket["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("socket mount"),
        "{report}"
    );
    ensure!(!text(&output).contains(sim.token()), "the token leaked");
    Ok(())
}

#[tokio::test]
async fn doctor_url_with_a_refused_join_names_the_reason() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    sim.reject_joins(Some("unknown runner"));
    let url = sim.url();
    let output = doctor(&["--json", "--url", &url, "--token", sim.token()]).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(3), "{}", text(&output));
    let join = step(&report, "join");
    ensure!(join["status"] == "failed", "{report}");
    ensure!(
        join["detail"]
            .as_str()
            .unwrap_or_default()
            .ends_with(": unknown runner"),
        "{report}"
    );
    ensure!(
        join["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("--runner-id"),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn doctor_url_with_nothing_listening_stops_at_tcp() -> Result<()> {
    let port = free_port()?;
    let url = format!("ws://127.0.0.1:{port}/runner/socket");
    let output = doctor(&["--json", "--url", &url, "--token", "secret-token-1"]).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(1), "{}", text(&output));
    let names: Vec<String> = steps(&report).into_iter().map(|(name, _)| name).collect();
    ensure!(names == ["url", "dns", "tcp"], "{report}");
    let tcp = step(&report, "tcp");
    ensure!(tcp["status"] == "failed", "{report}");
    ensure!(
        tcp["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("connection refused"),
        "{report}"
    );
    ensure!(
        tcp["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("is Kandan running"),
        "{report}"
    );
    ensure!(
        !text(&output).contains("secret-token-1"),
        "the token leaked"
    );

    // A URL that is no WebSocket URL fails the first step, exit 2.
    let output = doctor(&["--json", "--url", "http://127.0.0.1:9/runner/socket"]).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(2), "{}", text(&output));
    ensure!(
        steps(&report) == [("url".into(), "failed".into())],
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn doctor_url_wss_to_a_plain_port_fails_at_tls() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let url = sim.url().replace("ws://", "wss://");
    let output = doctor(&["--json", "--url", &url, "--token", sim.token()]).await?;
    let report = json(&output)?;
    ensure!(output.status.code() == Some(1), "{}", text(&output));
    let names: Vec<String> = steps(&report).into_iter().map(|(name, _)| name).collect();
    ensure!(names == ["url", "dns", "tcp", "tls"], "{report}");
    let tls = step(&report, "tls");
    ensure!(tls["status"] == "failed", "{report}");
    ensure!(
        tls["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("use ws://"),
        "{report}"
    );
    ensure!(sim.join_count() == 0, "joined without TLS");
    ensure!(!text(&output).contains(sim.token()), "the token leaked");
    Ok(())
}

// ----- the eBPF blockers (privileged) -----

/// A copy of the binary user nobody can run (the workspace may be private).
fn public_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("kandan-runner");
    std::fs::copy(runner_bin(), &bin).unwrap();
    (dir, bin)
}

/// `doctor --json` as user nobody with exactly `caps` (e.g. `bpf`) as
/// inheritable and ambient capabilities, as a system unit starts it.
fn doctor_as_nobody(bin: &Path, caps: &[&str]) -> (Output, Value) {
    let list: String = caps.iter().map(|cap| format!(",+{cap}")).collect();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all{list}"),
            &format!("--ambient-caps=-all{list}"),
            "--",
        ])
        .arg(bin)
        .args(["doctor", "--json"])
        .output()
        .expect("setpriv (util-linux)");
    let report =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {output:?}"));
    (output, report)
}

fn ebpf(report: &Value) -> &Value {
    report["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["backend"] == "ebpf")
        .unwrap()
}

/// No clause of `reason` is said twice ("x: y: y").
fn said_once(reason: &str) -> bool {
    let parts: Vec<&str> = reason.split(": ").collect();
    parts.windows(2).all(|pair| pair[0] != pair[1])
}

#[test]
fn doctor_as_a_non_root_user_names_each_missing_capability() {
    if !privileged("doctor_as_a_non_root_user_names_each_missing_capability") {
        return;
    }
    let (_dir, bin) = public_copy();
    let all = ["bpf", "perfmon", "dac_read_search"];
    let (_, report) = doctor_as_nobody(&bin, &all);
    let status = ebpf(&report);
    assert!(
        !status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not built")),
        "the eBPF object is not embedded: {report}"
    );
    assert_eq!(status["available"], true, "with {all:?}: {report}");
    assert_eq!(report["auto"], "ebpf", "{report}");
    for dropped in all {
        let fewer: Vec<&str> = all.iter().copied().filter(|cap| *cap != dropped).collect();
        let (output, report) = doctor_as_nobody(&bin, &fewer);
        let status = ebpf(&report);
        let name = format!("CAP_{}", dropped.to_uppercase());
        assert_eq!(status["available"], false, "without {name}: {report}");
        let reason = status["reason"].as_str().unwrap();
        assert_eq!(
            reason,
            format!("{name} missing from the effective capabilities (uid 65534)"),
            "without {name}"
        );
        let fix = status["fix"].as_str().unwrap();
        assert!(
            fix.contains("CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH") && fix.contains("setcap"),
            "without {name}: {fix}"
        );
        // procfs still works, so doctor passes.
        assert!(output.status.success(), "{output:?}");
        assert_eq!(report["auto"], "procfs", "{report}");
    }
}

#[test]
fn doctor_as_root_with_capabilities_dropped_is_not_told_not_root() {
    if !privileged("doctor_as_root_with_capabilities_dropped_is_not_told_not_root") {
        return;
    }
    let bin = runner_bin();
    for (drop, says) in [
        ("cap_bpf,cap_sys_admin", "CAP_BPF missing"),
        ("cap_perfmon,cap_sys_admin", "CAP_PERFMON missing"),
        (
            "cap_bpf,cap_perfmon,cap_sys_admin",
            "CAP_BPF and CAP_PERFMON missing",
        ),
    ] {
        let output = Command::new("capsh")
            .args([
                &format!("--drop={drop}"),
                "--",
                "-c",
                &format!("exec {} doctor --json", bin.display()),
            ])
            .output()
            .expect("capsh (Debian package libcap2-bin)");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{err}: {output:?}"));
        let status = ebpf(&report);
        let reason = status["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with(says), "--drop={drop}: {reason}");
        assert!(reason.ends_with("(uid 0)"), "--drop={drop}: {reason}");
        assert!(!reason.contains("not root"), "--drop={drop}: {reason}");
        let fix = status["fix"].as_str().unwrap_or_default();
        assert!(fix.starts_with("root needs them too"), "{fix}");
    }
    // The human report says the fix under the reason.
    let output = Command::new("capsh")
        .args([
            "--drop=cap_bpf,cap_sys_admin",
            "--",
            "-c",
            &format!("exec {} doctor", bin.display()),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ebpf     unavailable: CAP_BPF missing from the effective capabilities (uid 0)\n         fix: root needs them too"),
        "{stdout}"
    );
}

#[test]
fn doctor_tells_tracefs_not_mounted_from_not_readable() {
    if !privileged("doctor_tells_tracefs_not_mounted_from_not_readable") {
        return;
    }
    let (_dir, bin) = public_copy();
    // In a mount namespace of its own, tracefs unmounted: the non-root set
    // cannot mount it (no CAP_SYS_ADMIN), and doctor says so, not that a
    // capability is missing.
    let caps = ",+bpf,+perfmon,+dac_read_search";
    let script = format!(
        "umount /sys/kernel/tracing && exec setpriv --reuid=65534 --regid=65534 --clear-groups \
         --inh-caps=-all{caps} --ambient-caps=-all{caps} {} doctor --json",
        bin.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {output:?}"));
    let status = ebpf(&report);
    assert_eq!(
        status["reason"], "tracefs is not mounted at /sys/kernel/tracing",
        "{report}"
    );
    assert!(
        status["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("mount -t tracefs"),
        "{report}"
    );
    // Mounted (the host's, mode 0700) but unreadable without
    // CAP_DAC_READ_SEARCH: that capability is named instead.
    let (_, report) = doctor_as_nobody(&bin, &["bpf", "perfmon"]);
    let reason = ebpf(&report)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.starts_with("CAP_DAC_READ_SEARCH missing"),
        "{reason}"
    );
}

#[test]
fn doctor_with_stdout_closed_early_does_not_panic() {
    let mut child = Command::new(runner_bin())
        .arg("doctor")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before doctor writes.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[test]
fn doctor_in_a_user_namespace_says_so_once() {
    if !privileged("doctor_in_a_user_namespace_says_so_once") {
        return;
    }
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--"])
        .arg(runner_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("unshare (util-linux)");
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {output:?}"));
    let status = ebpf(&report);
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("running in a user namespace (uid_map 0 0 1)"),
        "{reason}"
    );
    assert!(said_once(reason), "{reason}");
    assert!(
        status["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("outside the user namespace"),
        "{report}"
    );
    assert_eq!(report["auto"], "procfs", "{report}");
}

/// The `--version` probes run with no capabilities and none of the
/// runner's secrets, even when the runner has ambient ones (a system
/// unit's `AmbientCapabilities=`): fake `codex` and `code-server` scripts
/// write their own capability sets, their parent's (the runner's, so the
/// test has teeth), their environment and their scratch folder's mode.
#[test]
fn probes_run_without_capabilities_or_secrets() {
    if !privileged("probes_run_without_capabilities_or_secrets") {
        return;
    }
    let (dir, bin) = public_copy();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (name, version) in [
        ("codex", "codex-cli 9.9.9"),
        ("code-server", "4.0.0 abc with Code 1.0"),
    ] {
        let script = format!(
            "#!/bin/sh\n\
             grep ^Cap /proc/$$/status > {out}/{name}.self\n\
             grep ^Cap /proc/$PPID/status > {out}/{name}.parent\n\
             env > {out}/{name}.env\n\
             [ -n \"$XDG_DATA_HOME\" ] && stat -c %a \"$XDG_DATA_HOME\" > {out}/{name}.scratch\n\
             echo '{version}'\n",
            out = out.display()
        );
        let path = dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+dac_read_search,+perfmon",
            "--ambient-caps=-all,+dac_read_search,+perfmon",
            "--",
        ])
        .arg(&bin)
        .args(["doctor", "--json"])
        .env("KANDAN_CODEX_BIN", dir.path().join("codex"))
        .env("KANDAN_CODE_SERVER_BIN", dir.path().join("code-server"))
        .env("KANDAN_TOKEN", "probe-secret-token")
        .env("CREDENTIALS_DIRECTORY", "/run/credentials/x")
        .output()
        .expect("setpriv (util-linux)");
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {output:?}"));
    assert_eq!(report["codex"]["version"], "9.9.9", "{report}");
    assert_eq!(
        report["codeServer"]["version"], "4.0.0 abc with Code 1.0",
        "{report}"
    );
    let sets = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    };
    for name in ["codex", "code-server"] {
        let read =
            |what: &str| std::fs::read_to_string(out.join(format!("{name}.{what}"))).unwrap();
        let parent = sets(&read("parent"));
        assert!(
            parent
                .iter()
                .any(|(k, v)| k == "CapAmb" && v != "0000000000000000"),
            "the runner had no ambient capability: {parent:?}"
        );
        for (set, value) in sets(&read("self")) {
            if set == "CapBnd" {
                continue;
            }
            assert_eq!(value, "0000000000000000", "{name}'s {set}");
        }
        let env = read("env");
        assert!(!env.contains("probe-secret-token"), "{name}: {env}");
        assert!(!env.contains("CREDENTIALS_DIRECTORY="), "{name}: {env}");
        assert!(!env.contains("KANDAN_"), "{name}: {env}");
    }
    // code-server's scratch folder: private, made fresh (mkdtemp).
    let scratch = std::fs::read_to_string(out.join("code-server.scratch")).unwrap();
    assert_eq!(scratch.trim(), "700");
}
