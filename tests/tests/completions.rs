//! The completion scripts complete, in each shell, past the first word:
//! bash through its completion function with `COMP_WORDS`/`COMP_CWORD`
//! set (the arms and the dispatch used to disagree on names, so nothing
//! completed after the first word), fish through `complete -C`, zsh by
//! pressing TAB in an interactive zsh on a pseudo-terminal (zpty).

use std::path::Path;
use std::process::Command;

use integration_tests::support::runner_bin;

/// A subcommand, a flag of a subcommand, a subcommand of a subcommand:
/// (what is typed, what completes it).
const PROBES: [(&str, &str); 3] = [
    ("kandan-runner wa", "watch"),
    ("kandan-runner watch --js", "--json"),
    ("kandan-runner service pr", "print"),
];

/// Writes `completions SHELL` to `dir/name`.
fn script(shell: &str, dir: &Path, name: &str) -> std::path::PathBuf {
    let output = Command::new(runner_bin())
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let path = dir.join(name);
    std::fs::write(&path, output.stdout).unwrap();
    path
}

/// True when `shell` is installed; else skipped with a word, or a failure
/// under CI (`cargo xtask setup --tests` installs it there).
fn present(shell: &str) -> bool {
    let found = Command::new(shell).arg("-c").arg("true").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{shell} missing and CI is set"
        );
        eprintln!("skipping: {shell} is not installed");
    }
    found
}

fn run(shell: &str, args: &[&str]) -> String {
    let output = Command::new(shell).args(args).output().unwrap();
    assert!(output.status.success(), "{shell} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn bash_completes_subcommands_flags_and_nested_subcommands() {
    if !present("bash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = script("bash", dir.path(), "kandan-runner.bash");
    let registered = run(
        "bash",
        &[
            "-c",
            &format!("source '{}'; complete -p kandan-runner", path.display()),
        ],
    );
    assert!(
        registered.contains("-F _kandan__runner")
            && registered.trim_end().ends_with(" kandan-runner"),
        "{registered}"
    );
    for (typed, wanted) in PROBES {
        let words: Vec<&str> = typed.split(' ').collect();
        let current = words[words.len() - 1];
        let previous = words[words.len() - 2];
        // As bash calls it: COMP_WORDS, COMP_CWORD, then the command, the
        // word being completed and the one before it.
        let call = format!(
            "source '{}'; COMP_WORDS=({typed}); COMP_CWORD={}; _kandan__runner kandan-runner '{current}' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            words.len() - 1
        );
        let offered = run("bash", &["-c", &call]);
        assert!(
            offered.lines().any(|line| line == wanted),
            "{typed:?} offered {offered:?}, not {wanted:?}"
        );
    }
}

#[test]
fn fish_completes_subcommands_flags_and_nested_subcommands() {
    if !present("fish") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = script("fish", dir.path(), "kandan-runner.fish");
    for (typed, wanted) in PROBES {
        let call = format!("source '{}'; complete -C '{typed}'", path.display());
        let offered = run("fish", &["-c", &call]);
        assert!(
            offered
                .lines()
                .any(|line| line.split('\t').next() == Some(wanted)),
            "{typed:?} offered {offered:?}, not {wanted:?}"
        );
    }
}

#[test]
fn zsh_completes_subcommands_flags_and_nested_subcommands() {
    if !present("zsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    script("zsh", dir.path(), "_kandan-runner");
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/zsh_complete.zsh");
    let mut args = vec![
        "-f".to_owned(),
        driver.display().to_string(),
        dir.path().display().to_string(),
    ];
    args.extend(PROBES.iter().map(|(typed, _)| (*typed).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let completed = run("zsh", &args);
    let lines: Vec<&str> = completed.lines().collect();
    assert_eq!(lines.len(), PROBES.len(), "{completed}");
    for ((typed, wanted), line) in PROBES.iter().zip(lines) {
        let done = line.strip_prefix("DONE: ").unwrap_or(line).trim_end();
        let words: Vec<&str> = typed.split(' ').collect();
        let expected = format!("{} {wanted}", words[..words.len() - 1].join(" "));
        assert_eq!(done, expected, "{typed:?} completed to {line:?}");
    }
}
