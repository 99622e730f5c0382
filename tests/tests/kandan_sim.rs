//! `kandan-sim` by hand: its `run:` line names the real `kandan-runner`
//! (a bare name is not on PATH after the README's commands: exit 127), and
//! its token is kept in a file (0600) so a restart does not change it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::support::runner_bin;

/// The lines `kandan-sim` prints up to its `run:` line (and the one after).
fn start(state: &std::path::Path) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kandan-sim"))
        .args([
            "--runner-addr",
            "127.0.0.1:0",
            "--preview-addr",
            "127.0.0.1:0",
        ])
        .env("XDG_STATE_HOME", state)
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
