//! What ships with the binary, through the binary: `--version` fields,
//! completion scripts that each shell parses, and a man page that `man`
//! renders with every subcommand.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use integration_tests::support::runner_bin;

fn runner(args: &[&str]) -> Output {
    let output = Command::new(runner_bin()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "kandan-runner {args:?}: {output:?}"
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

/// Runs `program args` with `input` on stdin.
fn with_stdin(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// True when `program` is on PATH. Otherwise says why the check is skipped,
/// or fails under CI (`cargo xtask setup --tests` installs it there).
fn present(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} missing and CI is set: run `cargo xtask setup --tests` (Debian package {package})"
        );
        eprintln!(
            "skipping the {program} check: {program} is not installed (Debian package {package})"
        );
    }
    found
}

#[test]
fn version_names_the_commit_target_and_ebpf_object() {
    let long = stdout(&runner(&["--version"]));
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 4, "{long}");
    assert_eq!(
        lines[0],
        format!("kandan-runner {}", env!("CARGO_PKG_VERSION"))
    );

    let commit = lines[1].strip_prefix("commit: ").expect(&long);
    if commit != "unknown" {
        assert!(
            commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{long}"
        );
        // The commit is one of this repository's.
        let known = Command::new("git")
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(known.success(), "{commit} is not a commit here: {long}");
    }

    let target = lines[2].strip_prefix("target: ").expect(&long);
    assert!(
        target.starts_with(std::env::consts::ARCH) && target.contains(std::env::consts::OS),
        "{long}"
    );

    // Embedded exactly when doctor does not say "not built".
    let ebpf = lines[3].strip_prefix("ebpf: ").expect(&long);
    let doctor: serde_json::Value =
        serde_json::from_slice(&runner(&["doctor", "--json"]).stdout).unwrap();
    let not_built = doctor["backends"].as_array().unwrap().iter().any(|s| {
        s["backend"] == "ebpf"
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not built"))
    });
    if not_built {
        assert!(ebpf.starts_with("not embedded ("), "{long}\n{doctor}");
    } else {
        assert_eq!(ebpf, "embedded", "{long}\n{doctor}");
    }

    // -V prints the same text.
    assert_eq!(stdout(&runner(&["-V"])), long);
}

/// `shell -n` accepts the completion script, and rejects it with an
/// unclosed block appended (so `-n` does parse it).
fn completion_parses(shell: &str, package: &str, unclosed: &str) {
    let script = runner(&["completions", shell]).stdout;
    assert!(
        String::from_utf8_lossy(&script).contains("kandan-runner"),
        "{shell} script does not name the binary"
    );
    if !present(shell, package) {
        return;
    }
    let parsed = with_stdin(shell, &["-n"], &script);
    assert!(parsed.status.success(), "{shell} -n: {parsed:?}");
    assert!(parsed.stderr.is_empty(), "{shell} -n: {parsed:?}");
    let mut broken = script;
    broken.extend_from_slice(unclosed.as_bytes());
    let parsed = with_stdin(shell, &["-n"], &broken);
    assert!(
        !parsed.status.success(),
        "{shell} -n accepted a broken script"
    );
}

#[test]
fn bash_completion_parses() {
    completion_parses("bash", "bash", "\nif true; then\n");
}

#[test]
fn zsh_completion_parses() {
    completion_parses("zsh", "zsh", "\nif true; then\n");
}

#[test]
fn fish_completion_parses() {
    completion_parses("fish", "fish", "\nif true\n");
}

#[test]
fn completions_refuse_other_shells_with_exit_2() {
    let output = Command::new(runner_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

const SUBCOMMANDS: [&str; 7] = [
    "watch",
    "connect",
    "doctor",
    "status",
    "service",
    "completions",
    "man",
];

/// `man -l -` renders `page` without a warning; the text.
fn render(page: &[u8]) -> String {
    assert!(present("man", "man-db"), "man is needed to render the page");
    let rendered = with_stdin("man", &["-l", "-"], page);
    assert!(rendered.status.success(), "man -l: {rendered:?}");
    assert!(
        rendered.stderr.is_empty(),
        "man -l warned: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    String::from_utf8(rendered.stdout).unwrap()
}

#[test]
fn man_page_renders_with_every_subcommand() {
    let page = runner(&["man"]).stdout;
    assert!(
        page.starts_with(b".ie") || page.starts_with(b".TH"),
        "not roff"
    );
    let text = render(&page);
    assert!(text.contains("SYNOPSIS"), "{text}");
    let subcommands = text
        .split("SUBCOMMANDS")
        .nth(1)
        .unwrap_or_else(|| panic!("no SUBCOMMANDS section: {text}"));
    for name in SUBCOMMANDS {
        assert!(
            subcommands.contains(&format!("kandan-runner {name}")),
            "{name} missing: {text}"
        );
    }
    // It installs no other page, so it links none (`man --dir` writes them).
    assert!(
        !text.contains("kandan-runner-"),
        "links a page it does not install: {text}"
    );
    // The footer names the version alone (a `.TH` with the several lines
    // of `--version` broke it).
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains(env!("CARGO_PKG_VERSION")) && !last.contains("commit") && !last.contains('"'),
        "{last}"
    );
    assert!(subcommands.contains("man --dir"), "{text}");
}

#[test]
fn man_dir_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&runner(&["man", "--dir", dir.path().to_str().unwrap()]));
    let mut expected: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|name| format!("kandan-runner-{name}.1"))
        .chain(["kandan-runner.1".to_owned()])
        .chain(
            ["install", "uninstall", "print"]
                .map(|action| format!("kandan-runner-service-{action}.1")),
        )
        .collect();
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    for name in &written {
        let path = dir.path().join(name);
        assert!(out.contains(&format!("wrote {}", path.display())), "{out}");
    }
    // Every page links only pages written here (none for `help`).
    for name in &written {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        for link in text.match_indices("(1)").map(|(at, _)| &text[..at]) {
            let page = link
                .rsplit(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap()
                .replace("\\-", "-");
            assert!(
                written.contains(&format!("{page}.1")),
                "{name} links {page}(1), not written"
            );
        }
    }
    // Each page is the one its name says.
    let connect = render(&std::fs::read(dir.path().join("kandan-runner-connect.1")).unwrap());
    assert!(connect.contains("--token-file"), "{connect}");
    let install =
        render(&std::fs::read(dir.path().join("kandan-runner-service-install.1")).unwrap());
    assert!(install.contains("--run-as"), "{install}");
}
