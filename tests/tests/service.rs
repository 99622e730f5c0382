//! `kandan-runner service` through the binary: the printed units pass
//! `systemd-analyze verify`, the launchd plist parses, and `install --user`
//! / `uninstall --user` into a temporary home write and remove exactly what
//! they say. systemctl is never run (there is no systemd running here).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::support::{privileged, runner_bin};

const SYSTEMD_ANALYZE: &str = "systemd-analyze";
const CAPS: &str = "CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH";

/// `kandan-runner ARGS` with `env` set and `SUDO_USER` and `KANDAN_URL`
/// removed unless `env` sets them.
fn service(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(runner_bin());
    command
        .args(args)
        .env_remove("SUDO_USER")
        .env_remove("KANDAN_URL")
        .env_remove("XDG_CONFIG_HOME");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn ok_stdout(output: Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The binary the unit must start: the running one, as the kernel names it.
fn exe() -> PathBuf {
    std::fs::canonicalize(runner_bin()).unwrap()
}

/// `systemd-analyze [--user] verify` of `unit` saved as
/// kandan-runner.service: the output (stderr) and whether it passed.
fn verify(unit: &str, user: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kandan-runner.service");
    std::fs::write(&path, unit).unwrap();
    // A user manager needs a runtime directory, which nothing made here.
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut command = Command::new(SYSTEMD_ANALYZE);
    if user {
        command.arg("--user");
    }
    let output = command
        .args(["verify", path.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap_or_else(|err| {
            panic!("{SYSTEMD_ANALYZE}: {err} (Debian package systemd; cargo xtask setup --tests)")
        });
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success() && stderr.trim().is_empty(), stderr)
}

/// `key=value` lines of a unit; each key once.
fn settings(unit: &str) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    for line in unit.lines().filter(|line| !line.starts_with(['#', '['])) {
        if let Some((key, value)) = line.split_once('=') {
            let old = settings.insert(key.to_owned(), value.to_owned());
            assert!(old.is_none(), "{key} twice in\n{unit}");
        }
    }
    settings
}

#[test]
fn system_unit_passes_systemd_analyze_verify() {
    let unit = ok_stdout(service(&["service", "print", "--run-as", "root"], &[]));
    let (passed, warnings) = verify(&unit, false);
    assert!(passed, "systemd-analyze verify:\n{warnings}\n{unit}");

    let settings = settings(&unit);
    let get = |key: &str| {
        settings
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} missing:\n{unit}"))
    };
    assert_eq!(get("User"), "root");
    // The token reaches the runner as stdin, opened by systemd as root:
    // the file stays root's 0600 and the service user (the agent's tree)
    // cannot open it (tests/secrets.rs plays that attacker).
    assert_eq!(
        get("ExecStart"),
        format!("{} connect --token-file -", exe().display())
    );
    assert_eq!(get("StandardInput"), "file:/etc/kandan-runner/token");
    assert_eq!(get("StandardOutput"), "journal");
    assert!(!settings.contains_key("LoadCredential"), "{unit}");
    assert_eq!(get("EnvironmentFile"), "/etc/kandan-runner/env");
    assert_eq!(get("AmbientCapabilities"), CAPS);
    assert_eq!(get("CapabilityBoundingSet"), CAPS);
    assert_eq!(get("NoNewPrivileges"), "yes");
    assert_eq!(get("StateDirectory"), "kandan-runner");
    assert_eq!(get("StateDirectoryMode"), "0700");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("WantedBy"), "multi-user.target");
    // The sandbox (PROTOCOL.md section 5, "Privilege"; README "Service").
    assert_eq!(get("ProtectSystem"), "full");
    assert_eq!(get("PrivateTmp"), "yes");
    assert_eq!(get("ProtectKernelTunables"), "yes");
    assert_eq!(get("ProtectKernelModules"), "yes");
    assert_eq!(get("RestrictSUIDSGID"), "yes");
    assert_eq!(get("Delegate"), "yes");
    // Off on purpose: `yes` would make the delegated cgroup read-only.
    assert!(!settings.contains_key("ProtectControlGroups"), "{unit}");

    // The check has teeth: a unit systemd does not understand, or whose
    // binary does not exist, fails it.
    let (passed, _) = verify(&format!("{unit}Bogus=1\n"), false);
    assert!(!passed, "verify accepted an unknown key");
    let missing = unit.replace(&exe().display().to_string(), "/nonexistent/kandan-runner");
    let (passed, _) = verify(&missing, false);
    assert!(!passed, "verify accepted a missing binary");
}

/// `doctor --json` run as user nobody with exactly `caps` as ambient
/// capabilities, as the system unit starts the runner.
fn doctor_as_nobody(bin: &Path, caps: &[String]) -> serde_json::Value {
    let list = caps.join(",");
    let output = Command::new("capsh")
        .args([
            &format!("--caps={list}+eip cap_setpcap,cap_setuid,cap_setgid+ep"),
            "--keep=1",
            "--user=nobody",
            &format!("--addamb={list}"),
            "--",
            "-c",
            &format!("exec {} doctor --json", bin.display()),
        ])
        .output()
        .expect("capsh (Debian package libcap2-bin)");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {output:?}"))
}

fn ebpf_status(doctor: &serde_json::Value) -> &serde_json::Value {
    doctor["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["backend"] == "ebpf")
        .unwrap()
}

#[test]
fn the_system_units_capabilities_are_exactly_what_ebpf_needs() {
    if !privileged("the_system_units_capabilities_are_exactly_what_ebpf_needs") {
        return;
    }
    let unit = ok_stdout(service(&["service", "print", "--run-as", "root"], &[]));
    let caps: Vec<String> = settings(&unit)["AmbientCapabilities"]
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    // A copy that user nobody can reach.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("kandan-runner");
    std::fs::copy(runner_bin(), &bin).unwrap();

    let doctor = doctor_as_nobody(&bin, &caps);
    let ebpf = ebpf_status(&doctor);
    if ebpf["reason"]
        .as_str()
        .is_some_and(|r| r.contains("not built"))
    {
        panic!("the eBPF object is not embedded: {doctor}");
    }
    assert_eq!(ebpf["available"], true, "with {caps:?}: {doctor}");
    // And each one is needed.
    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|cap| *cap != dropped).cloned().collect();
        let doctor = doctor_as_nobody(&bin, &fewer);
        let ebpf = ebpf_status(&doctor);
        assert_eq!(ebpf["available"], false, "without {dropped}: {doctor}");
        // ...and the reason names it.
        let reason = ebpf["reason"].as_str().unwrap();
        assert!(
            reason.contains(&dropped.to_uppercase()),
            "without {dropped}: {reason}"
        );
    }
}

#[test]
fn installing_a_system_service_without_root_says_to_use_sudo() {
    if !privileged("installing_a_system_service_without_root_says_to_use_sudo") {
        return;
    }
    let unit = Path::new("/etc/systemd/system/kandan-runner.service");
    let existed = unit.exists();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("kandan-runner");
    std::fs::copy(runner_bin(), &bin).unwrap();
    // As user nobody, who can write nothing under /etc.
    let output = Command::new("capsh")
        .args([
            "--user=nobody",
            "--",
            "-c",
            &format!("exec {} service install --run-as root", bin.display()),
        ])
        .output()
        .expect("capsh (Debian package libcap2-bin)");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("permission denied (a system service needs root: use sudo, or --user)"),
        "{stderr}"
    );
    assert_eq!(unit.exists(), existed);
}

#[test]
fn system_unit_runs_as_the_sudo_user_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let sudo_user = Path::new("nobody");
    let unit = ok_stdout(service(
        &["service", "print"],
        &[("SUDO_USER", sudo_user), ("HOME", dir.path())],
    ));
    assert_eq!(settings(&unit)["User"], "nobody", "{unit}");
    // Without sudo: the user running the command, unless that is root,
    // which only `--run-as root` gives (the agent's tree would be root's).
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let output = service(&["service", "print"], &[]);
    if me.trim() == "root" {
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--run-as USER"), "{stderr}");
        assert!(output.stdout.is_empty());
        // sudo from root is root too.
        let output = service(&["service", "print"], &[("SUDO_USER", Path::new("root"))]);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
    } else {
        assert_eq!(settings(&ok_stdout(output))["User"], me.trim());
    }
    let unit = ok_stdout(service(&["service", "print", "--run-as", "root"], &[]));
    assert_eq!(settings(&unit)["User"], "root", "{unit}");
}

#[test]
fn an_unknown_run_as_user_is_a_flag_error() {
    let output = service(&["service", "print", "--run-as", "no-such-user-4242"], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "error: --run-as no-such-user-4242: no such user"
    );
    assert!(output.stdout.is_empty());
    // --run-as is for system services only.
    let output = service(&["service", "install", "--user", "--run-as", "root"], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn user_unit_passes_systemd_analyze_verify_without_capabilities() {
    let home = tempfile::tempdir().unwrap();
    let unit = ok_stdout(service(
        &["service", "print", "--user"],
        &[("HOME", home.path())],
    ));
    let (passed, warnings) = verify(&unit, true);
    assert!(passed, "systemd-analyze --user verify:\n{warnings}\n{unit}");
    let settings = settings(&unit);
    let config = home.path().join(".config/kandan-runner");
    assert_eq!(
        settings["ExecStart"],
        format!(
            "{} connect --token-file {}",
            exe().display(),
            config.join("token").display()
        )
    );
    assert_eq!(
        settings["EnvironmentFile"],
        config.join("env").display().to_string()
    );
    assert_eq!(settings["WantedBy"], "default.target");
    assert!(!settings.contains_key("User"), "{unit}");
    assert!(!settings.contains_key("AmbientCapabilities"), "{unit}");
    assert!(!settings.contains_key("CapabilityBoundingSet"), "{unit}");
    assert_eq!(settings["NoNewPrivileges"], "yes");
    assert_eq!(settings["Delegate"], "yes");
}

/// Every file under `root` (symlinks included), with its mode.
fn files(root: &Path) -> BTreeMap<PathBuf, u32> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else {
                found.insert(path, meta.permissions().mode() & 0o7777);
            }
        }
    }
    found
}

/// The `wrote PATH (mode NNNN)` lines of `install`.
fn wrote(stdout: &str) -> BTreeMap<PathBuf, u32> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("wrote "))
        .map(|rest| {
            let (path, rest) = rest.split_once(" (mode ").expect(stdout);
            let mode = u32::from_str_radix(&rest[..4], 8).expect(stdout);
            (PathBuf::from(path), mode)
        })
        .collect()
}

#[test]
fn install_user_writes_exactly_what_it_says_and_uninstall_removes_the_unit() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("xdg-config");
    let env = [("HOME", home.path()), ("XDG_CONFIG_HOME", config.as_path())];
    let unit_file = config.join("systemd/user/kandan-runner.service");
    let env_file = config.join("kandan-runner/env");
    let token_file = config.join("kandan-runner/token");

    let out = ok_stdout(service(&["service", "install", "--user"], &env));
    let said = wrote(&out);
    assert_eq!(
        said,
        BTreeMap::from([(unit_file.clone(), 0o644), (env_file.clone(), 0o600)]),
        "{out}"
    );
    assert_eq!(files(home.path()), said, "{out}");
    let dir_mode = std::fs::metadata(config.join("kandan-runner"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert!(
        out.contains(&format!(
            "write the token alone to {}",
            token_file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "systemctl --user daemon-reload && systemctl --user enable --now kandan-runner"
        ),
        "{out}"
    );
    // The unit is the one `print` shows, and it verifies.
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    let printed = ok_stdout(service(&["service", "print", "--user"], &env));
    assert_eq!(unit, printed);
    let (passed, warnings) = verify(&unit, true);
    assert!(passed, "{warnings}\n{unit}");
    let template = std::fs::read_to_string(&env_file).unwrap();
    assert!(template.contains("#KANDAN_URL="), "{template}");

    // A second install keeps the edited environment file.
    std::fs::write(&env_file, "KANDAN_URL=ws://127.0.0.1:1/runner/socket\n").unwrap();
    std::fs::write(&token_file, "t\n").unwrap();
    let out = ok_stdout(service(&["service", "install", "--user"], &env));
    assert_eq!(
        wrote(&out),
        BTreeMap::from([(unit_file.clone(), 0o644)]),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {} (it exists)", env_file.display())),
        "{out}"
    );
    assert!(!out.contains("write the token"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "KANDAN_URL=ws://127.0.0.1:1/runner/socket\n"
    );

    // What `systemctl --user enable` would have linked.
    let wants = config.join("systemd/user/default.target.wants");
    std::fs::create_dir(&wants).unwrap();
    let link = wants.join("kandan-runner.service");
    std::os::unix::fs::symlink(&unit_file, &link).unwrap();

    let out = ok_stdout(service(&["service", "uninstall", "--user"], &env));
    assert!(
        out.contains(&format!("removed {}", unit_file.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("removed {}", link.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {}", env_file.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {}", token_file.display())),
        "{out}"
    );
    assert!(out.contains("systemctl --user daemon-reload"), "{out}");
    assert_eq!(
        files(home.path()).into_keys().collect::<Vec<_>>(),
        vec![env_file.clone(), token_file.clone()]
    );

    let out = ok_stdout(service(&["service", "uninstall", "--user"], &env));
    assert!(out.contains("nothing to remove"), "{out}");
}

#[test]
fn install_user_without_xdg_config_home_uses_dot_config() {
    let home = tempfile::tempdir().unwrap();
    let out = ok_stdout(service(
        &["service", "install", "--user"],
        &[("HOME", home.path())],
    ));
    let config = home.path().join(".config");
    assert_eq!(
        wrote(&out).into_keys().collect::<Vec<_>>(),
        vec![
            config.join("kandan-runner/env"),
            config.join("systemd/user/kandan-runner.service"),
        ],
        "{out}"
    );
    assert_eq!(files(home.path()), wrote(&out));
}

/// The plist as Python's plistlib reads it, as JSON.
fn parse_plist(plist: &str) -> serde_json::Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plist.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "plistlib refused:\n{plist}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn launchd_plist_parses_and_runs_connect() {
    let home = tempfile::tempdir().unwrap();
    // Characters XML must escape survive the round trip.
    let url = "wss://kandan.example/runner/socket?a=1&b=<2>";
    let mut command = Command::new(runner_bin());
    let output = command
        .args(["service", "print", "--format", "launchd", "--user"])
        .env("HOME", home.path())
        .env("KANDAN_URL", url)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let plist = parse_plist(&ok_stdout(output));
    let token = home.path().join(".config/kandan-runner/token");
    assert_eq!(plist["Label"], "kandan-runner");
    assert_eq!(
        plist["ProgramArguments"],
        serde_json::json!([
            exe().display().to_string(),
            "connect",
            "--token-file",
            token.display().to_string()
        ])
    );
    assert_eq!(plist["EnvironmentVariables"]["KANDAN_URL"], url);
    assert_eq!(plist["KeepAlive"]["SuccessfulExit"], false);
    assert!(plist.get("UserName").is_none(), "{plist}");
    assert_eq!(
        plist["StandardErrorPath"],
        home.path()
            .join("Library/Logs/kandan-runner.log")
            .display()
            .to_string()
    );

    let plist = parse_plist(&ok_stdout(service(
        &[
            "service", "print", "--format", "launchd", "--run-as", "root",
        ],
        &[],
    )));
    assert_eq!(plist["UserName"], "root");
    assert_eq!(plist["ProgramArguments"][3], "/etc/kandan-runner/token");
}

/// `service print` from a build directory (this test's binary, under
/// `target/debug`) says the unit would start a binary that will not stay
/// there; from an installed copy it says nothing of the kind.
#[test]
fn print_warns_when_the_binary_is_a_build_output() {
    let printed = service(&["service", "print", "--user"], &[]);
    assert!(printed.status.success(), "{printed:?}");
    let stderr = String::from_utf8_lossy(&printed.stderr);
    assert!(
        stderr.contains("a cargo build directory") && stderr.contains("cargo install"),
        "{stderr}"
    );
    // An installed copy (neither a build output nor a temporary directory).
    let home = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let copy = home.path().join("bin/kandan-runner");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(runner_bin(), &copy).unwrap();
    let printed = Command::new(&copy)
        .args(["service", "print", "--user"])
        .env_remove("KANDAN_URL")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let stderr = String::from_utf8_lossy(&printed.stderr);
    assert!(!stderr.contains("build directory"), "{stderr}");
    let unit = String::from_utf8_lossy(&printed.stdout);
    assert!(unit.contains(&copy.display().to_string()), "{unit}");
}
