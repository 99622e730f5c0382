//! The command line through the binary: `doctor` and `--backend auto` with
//! and without the capabilities eBPF needs, flag errors, exit status, Ctrl-C,
//! 127/126 for a command that cannot run, `watch --json` stdout that is only
//! JSON, no capabilities handed to the command.

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

#[test]
fn a_missing_command_exits_127_and_an_unexecutable_one_126() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    let plain = plain.to_string_lossy().into_owned();
    let dir_arg = dir.path().to_string_lossy().into_owned();
    for (command, code) in [
        ("kandan-no-such-command", 127),
        ("/nonexistent/kandan-x", 127),
        (plain.as_str(), 126),
        (dir_arg.as_str(), 126),
    ] {
        let output = Command::new(runner_bin())
            .args(["watch", "--backend", "procfs", "--", command])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{command}: {stderr}");
        assert!(stderr.contains(command), "{command}: {stderr}");
    }
}

#[test]
fn watch_json_stdout_is_only_json_the_commands_output_goes_to_stderr() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!(
        "import socket, time\n\
         s = socket.socket()\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen()\n\
         print('listening, not json', flush=True)\n\
         time.sleep(1.5)\n"
    );
    let script = format!("echo hello; echo '{{not json'; exec python3 -c \"{listen}\"");
    let output = Command::new(runner_bin())
        .args([
            "watch",
            "--json",
            "--backend",
            "procfs",
            "--poll-interval-ms",
            "100",
            "--debounce-ms",
            "200",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let on_port = |kind: &str| {
        events
            .iter()
            .filter(|e| e["event"] == kind && e["port"] == port)
            .count()
    };
    assert_eq!((on_port("opened"), on_port("closed")), (1, 1), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in ["hello", "{not json", "listening, not json"] {
        assert!(
            stderr.contains(line),
            "{line} missing from stderr: {stderr}"
        );
    }
}

#[test]
fn the_command_gets_no_ambient_or_inheritable_capabilities() {
    if !privileged("the_command_gets_no_ambient_or_inheritable_capabilities") {
        return;
    }
    let caps = |inner: &[&str]| {
        let output = Command::new("setpriv")
            .args([
                "--inh-caps",
                "+net_bind_service",
                "--ambient-caps",
                "+net_bind_service",
            ])
            .args(inner)
            .output()
            .expect("setpriv (Debian package util-linux)");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap_or_else(|| panic!("{name} missing: {stdout}"))
        };
        (field("CapAmb:"), field("CapInh:"))
    };
    let show = ["sh", "-c", "grep -E '^Cap(Amb|Inh)' /proc/self/status"];
    // What the runner is given (so the test can fail)...
    let given = caps(&show);
    assert_ne!(given, (0, 0), "setpriv set nothing");
    // ...is not handed on to its command.
    let bin = runner_bin().to_string_lossy().into_owned();
    let mut through = vec![bin.as_str(), "watch", "--backend", "procfs", "--"];
    through.extend(show);
    assert_eq!(caps(&through), (0, 0));
}
