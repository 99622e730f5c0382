//! `kandan-sim` by hand: its `run:` line names the real `kandan-runner`
//! (a bare name is not on PATH after the README's commands: exit 127), and
//! its token is kept in a file (0600) so a restart does not change it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::support::runner_bin;

/// `kandan-sim` on ports of the kernel's choosing, its state in `state`.
fn kandan_sim(state: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kandan-sim"));
    command
        .args(["--runner-addr", "127.0.0.1:0"])
        .args(["--preview-addr", "127.0.0.1:0"])
        .env("XDG_STATE_HOME", state);
    command
}

/// The lines `kandan-sim` prints up to its `run:` line (and the one after).
fn start(state: &std::path::Path) -> (Child, Vec<String>) {
    let mut child = kandan_sim(state)
        .env_remove("KANDAN_TOKEN")
        // A PATH without kandan-runner: the one next to kandan-sim is found.
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let done = line.starts_with("commands:");
        lines.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    (child, lines)
}

fn field<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} line: {lines:?}"))
        .trim()
}

#[test]
fn the_run_line_names_the_real_binary_and_the_token_survives_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let (mut first, lines) = start(state.path());
    let token = field(&lines, "token:").to_owned();
    let run = field(&lines, "run:").to_owned();
    let _ = first.kill();
    let _ = first.wait();

    // The program of the run line is the built kandan-runner, by its path.
    let program = run.split_whitespace().next().unwrap();
    let expected = std::fs::canonicalize(runner_bin()).unwrap();
    assert_eq!(std::path::Path::new(program), expected, "{run}");
    let version = Command::new(program).arg("--version").output().unwrap();
    assert!(version.status.success(), "{run}: {version:?}");
    assert!(run.contains(&format!("--token {token} ")), "{run}");

    // The token is in a private file, and a restart keeps it.
    let file = state.path().join("kandan-sim/token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let (mut second, lines) = start(state.path());
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(field(&lines, "token:"), token, "{lines:?}");
}

/// `kill` of a running demo (SIGTERM, as a process manager or a closed
/// terminal would end it) stops everything the demo started, as Ctrl-C does.
#[test]
fn sigterm_stops_the_demo_and_everything_it_started() {
    let test = "sigterm_stops_the_demo_and_everything_it_started";
    if integration_tests::code_server::code_server_bin(test).is_none() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("kandan-demo-")
        .tempdir()
        .unwrap();
    let mut child = kandan_sim(dir.path())
        .arg("--demo")
        .arg("--demo-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read on a thread to the end: a closed pipe would make the demo's next
    // line (an event it prints) fail, not the SIGTERM under test.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("Kandan demo ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(120)).is_ok();
    let needle = dir.path().to_string_lossy().into_owned();
    let started = mentioning(&needle);
    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(ready, "the demo never said it was ready ({status})");
    assert!(status.success(), "{status}");
    assert!(!started.is_empty(), "nothing of the demo was found running");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut left = mentioning(&needle);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = mentioning(&needle);
    }
    assert!(left.is_empty(), "left running after SIGTERM: {left:?}");
}

/// Live processes (not zombies) whose command line or environment mentions `needle`.
fn mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = (entry.file_name().to_str()).and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if pid == me || zombie {
            continue;
        }
        let read = |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
        let (cmdline, environ) = (read("cmdline"), read("environ"));
        let hit = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        if hit(&cmdline) || hit(&environ) {
            found.push(format!(
                "{pid} {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}
