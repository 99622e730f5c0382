//! The command line through the binary: `doctor` and `--backend auto` with
//! and without the capabilities eBPF needs, flag errors, exit status, Ctrl-C.

use std::process::Command;

use integration_tests::support::{privileged, runner_bin};

/// Runs `kandan-runner ARGS` under capsh with the eBPF capabilities dropped.
fn without_bpf_caps(args: &str) -> std::process::Output {
    Command::new("capsh")
        .args([
            "--drop=cap_bpf,cap_sys_admin,cap_perfmon",
            "--",
            "-c",
            &format!("exec {} {args}", runner_bin().display()),
        ])
        .output()
        .expect("capsh (Debian package libcap2-bin)")
}

fn doctor_json(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("{err}: {stdout}"))
}

fn status<'a>(report: &'a serde_json::Value, backend: &str) -> &'a serde_json::Value {
    report["backends"]
        .as_array()
        .expect("backends list")
        .iter()
        .find(|s| s["backend"] == backend)
        .unwrap_or_else(|| panic!("{backend} missing from {report}"))
}

#[test]
fn doctor_reports_every_backend_and_auto_picks_ebpf() {
    if !privileged("doctor_reports_every_backend_and_auto_picks_ebpf") {
        return;
    }
    let output = Command::new(runner_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report = doctor_json(&output);
    assert_eq!(status(&report, "ebpf")["available"], true, "{report}");
    assert_eq!(status(&report, "procfs")["available"], true, "{report}");
    assert_eq!(status(&report, "libproc")["available"], false, "{report}");
    assert!(
        status(&report, "libproc")["reason"]
            .as_str()
            .unwrap()
            .contains("macOS"),
        "{report}"
    );
    assert_eq!(report["auto"], "ebpf");
}

#[test]
fn without_bpf_capabilities_doctor_says_why_and_auto_picks_procfs() {
    if !privileged("without_bpf_capabilities_doctor_says_why_and_auto_picks_procfs") {
        return;
    }
    let output = without_bpf_caps("doctor --json");
    assert!(output.status.success(), "{output:?}");
    let report = doctor_json(&output);
    let ebpf = status(&report, "ebpf");
    assert_eq!(ebpf["available"], false, "{report}");
    assert!(
        ebpf["reason"].as_str().unwrap().contains("CAP_BPF"),
        "{report}"
    );
    assert_eq!(report["auto"], "procfs", "{report}");

    // `watch` says the same on its first stderr line, then runs on procfs.
    let output = without_bpf_caps("watch --json -- true");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("backend: procfs (ebpf unavailable: ") && first.contains("CAP_BPF"),
        "first stderr line: {first}"
    );
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_2() {
    for args in [
        &["watch", "--debounce-ms", "soon"][..],
        &["watch", "--backend", "dtrace"],
        &["watch", "--ignore-port", "70000"],
        &["connect"],
    ] {
        let output = Command::new(runner_bin())
            .args(args)
            .env_remove("KANDAN_URL")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        let flag = args
            .iter()
            .find(|a| a.starts_with("--"))
            .copied()
            .unwrap_or("--url");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn watch_exits_with_the_commands_status() {
    let output = Command::new(runner_bin())
        .args(["watch", "--backend", "procfs", "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert!(output.stdout.is_empty(), "stdout is for listeners only");
}

#[test]
fn ctrl_c_reaches_the_command_and_its_status_is_the_runners() {
    let ready = std::env::temp_dir().join(format!("kandan-sigint-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let script = format!(
        "import pathlib, signal, sys, time\n\
         signal.signal(signal.SIGINT, lambda *_: sys.exit(42))\n\
         pathlib.Path({ready:?}).write_text('up')\n\
         time.sleep(60)\n",
        ready = ready.display().to_string()
    );
    let mut runner = Command::new(runner_bin())
        .args([
            "watch",
            "--backend",
            "procfs",
            "--",
            "python3",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(runner.id() as libc::pid_t, libc::SIGINT) };
    let status = runner.wait().unwrap();
    let _ = std::fs::remove_file(&ready);
    assert_eq!(status.code(), Some(42), "the command's SIGINT handler ran");
}
