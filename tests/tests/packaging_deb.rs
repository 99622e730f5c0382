//! The Debian package, built as `cargo xtask dist` builds it (here from the
//! debug binary, for this machine's architecture): lintian finds no error,
//! `dpkg -i` installs it with nothing enabled, the installed binary's
//! `doctor` finds a backend, and `dpkg -r` leaves only the admin's config
//! and the state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::support::{privileged, runner_bin};

const PACKAGE: &str = "kandan-runner";
const UNIT: &str = "/lib/systemd/system/kandan-runner@.service";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The xtask binary (`cargo xtask test` runs it, so it is built).
fn xtask_bin() -> PathBuf {
    let bin = target_dir().join("debug/xtask");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p xtask` first (cargo xtask test does)",
        bin.display()
    );
    bin
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program:?}: {err}"))
}

fn ok(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let program = program.as_ref().to_owned();
    let out = run(&program, args);
    assert!(out.status.success(), "{program:?} {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the package if an earlier, interrupted run left it installed.
fn purge_leftover() {
    let status = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    if String::from_utf8_lossy(&status.stdout).contains("installed") {
        ok("dpkg", &["-r", PACKAGE]);
    }
}

#[test]
fn deb_installs_runs_doctor_and_removes_cleanly() {
    if !privileged("deb_installs_runs_doctor_and_removes_cleanly") {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let built = ok(
        xtask_bin(),
        &[
            "deb",
            "--bin",
            runner_bin().to_str().unwrap(),
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
    );
    let deb = PathBuf::from(built.trim());
    assert!(deb.exists(), "xtask deb printed {built:?}");
    let deb = deb.to_str().unwrap();

    // What a reviewer would run first. Errors fail; warnings are listed.
    let lint = run("lintian", &["--no-tag-display-limit", deb]);
    let lint_text = String::from_utf8_lossy(&lint.stdout);
    eprintln!("lintian:\n{lint_text}");
    let errors: Vec<&str> = lint_text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors: {errors:#?}");

    let listed = ok("dpkg-deb", &["-c", deb]);
    let shipped: Vec<String> = listed
        .lines()
        .filter(|line| !line.starts_with('d'))
        .filter_map(|line| line.split_whitespace().last())
        .map(|path| path.trim_start_matches('.').to_owned())
        .collect();
    for wanted in [
        "/usr/bin/kandan-runner",
        UNIT,
        "/usr/share/man/man1/kandan-runner.1.gz",
        "/usr/share/bash-completion/completions/kandan-runner",
        "/usr/share/zsh/vendor-completions/_kandan-runner",
        "/usr/share/fish/vendor_completions.d/kandan-runner.fish",
        "/usr/share/doc/kandan-runner/copyright",
        "/usr/share/doc/kandan-runner/README.md.gz",
    ] {
        assert!(
            shipped.iter().any(|path| path == wanted),
            "{wanted} not in the package:\n{listed}"
        );
    }

    purge_leftover();
    ok("dpkg", &["-i", deb]);
    let result = std::panic::catch_unwind(|| installed_checks(&shipped));
    // The admin's config and the service's state, as a real install has.
    let config = Path::new("/etc/kandan-runner/packaging-test-env");
    let state = Path::new("/var/lib/kandan-runner/packaging-test-state");
    for file in [config, state] {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, "kept\n").unwrap();
    }
    ok("dpkg", &["-r", PACKAGE]);
    let kept = [config, state].map(Path::exists);
    for file in [config, state] {
        let _ = std::fs::remove_file(file);
    }
    result.unwrap();

    for path in &shipped {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after dpkg -r"
        );
    }
    assert_eq!(
        kept,
        [true, true],
        "dpkg -r removed the config or the state"
    );
    let status = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.contains(" installed"),
        "still installed after dpkg -r: {status}"
    );
}

/// With the package installed: the binary is the one packaged, `doctor`
/// finds a backend, the unit is valid and not enabled.
fn installed_checks(shipped: &[String]) {
    for path in shipped {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let ours = ok(runner_bin(), &["--version"]);
    let installed = ok("/usr/bin/kandan-runner", &["--version"]);
    let commit = |text: &str| {
        text.lines()
            .find(|line| line.starts_with("commit: "))
            .map(str::to_owned)
    };
    assert!(commit(&installed).is_some(), "{installed}");
    assert_eq!(
        commit(&installed),
        commit(&ours),
        "another build got packaged"
    );

    let doctor = run("/usr/bin/kandan-runner", &["doctor"]);
    assert!(
        doctor.status.success(),
        "doctor of the installed binary: {doctor:?}"
    );
    let doctor_text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor_text.lines().any(|line| line.contains(" ok")),
        "doctor names no working backend:\n{doctor_text}"
    );

    // The template as systemd reads it, for one user (root exists everywhere).
    let instance = std::env::temp_dir().join("kandan-runner@root.service");
    let _ = std::fs::remove_file(&instance);
    std::os::unix::fs::symlink(UNIT, &instance).unwrap();
    let verify = run("systemd-analyze", &["verify", instance.to_str().unwrap()]);
    let _ = std::fs::remove_file(&instance);
    let verify_text = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !verify_text.contains("kandan-runner@"),
        "systemd-analyze verify: {verify:?}"
    );
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("\nUser=%i\n"), "{unit}");
    assert!(
        unit.contains("\nExecStart=/usr/bin/kandan-runner connect "),
        "{unit}"
    );

    // Installed, not enabled: no link to it in any .wants directory.
    let wants = ok(
        "find",
        &["/etc/systemd/system", "-name", "kandan-runner@*.service"],
    );
    assert!(wants.trim().is_empty(), "enabled by the package: {wants}");
}
