//! `cargo xtask setup`: everything a fresh machine of this kind lacks, each
//! step checked first so a second run does nothing and says so.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;

const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker must link the same LLVM major as the nightly rustc (22).
pub(crate) const LLVM_MAJOR: &str = "22";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn run(for_tests: bool) -> Result<()> {
    let mut apt = Apt::default();
    nightly_rust_src()?;
    bpf_linker(&mut apt)?;
    tracefs();
    if for_tests {
        rust_target("aarch64-apple-darwin")?;
        apt.ensure("capsh", "libcap2-bin", || {
            Path::new("/usr/sbin/capsh").exists() || on_path("capsh")
        })?;
        // tests/tests/doctor.rs and root_pids.rs: a non-root user with chosen
        // capabilities (setpriv), a user namespace (unshare).
        apt.ensure("setpriv and unshare", "util-linux", || {
            on_path("setpriv") && on_path("unshare")
        })?;
        apt.ensure("chromium", "chromium", || {
            Path::new("/usr/bin/chromium").exists()
        })?;
        npm_fixtures(&mut apt, None)?;
        // The detection benchmark's baseline polls these.
        apt.ensure("lsof", "lsof", || on_path("lsof"))?;
        apt.ensure("ps", "procps", || on_path("ps"))?;
        // tests/tests/packaging.rs and service.rs: completion scripts parsed
        // by each shell, the man page rendered, units verified, plists read.
        apt.ensure("zsh", "zsh", || on_path("zsh"))?;
        apt.ensure("fish", "fish", || on_path("fish"))?;
        apt.ensure("man", "man-db", || on_path("man"))?;
        apt.ensure("systemd-analyze", "systemd", || on_path("systemd-analyze"))?;
        apt.ensure("python3", "python3", || on_path("python3"))?;
        // tests/tests/packaging_deb.rs and devcontainer_feature.rs: the
        // package's lint, and a Debian tree to install the feature into.
        apt.ensure("lintian", "lintian", || on_path("lintian"))?;
        apt.ensure("debootstrap", "debootstrap", || {
            Path::new("/usr/sbin/debootstrap").exists()
        })?;
    }
    Ok(())
}

/// What `cargo xtask demo` needs on top of [`run`]: the pinned Codex and
/// code-server, and python3 for the sample app.
pub fn demo() -> Result<()> {
    run(false)?;
    let mut apt = Apt::default();
    apt.ensure("python3", "python3", || on_path("python3"))?;
    npm_fixtures(&mut apt, Some(&["codex", "code-server"]))
}

fn say(step: &str, what: &str) {
    eprintln!("setup: {step}: {what}");
}

fn on_path(program: &str) -> bool {
    cmd::succeeds(Command::new("sh").args(["-c", &format!("command -v {program}")]))
}

fn is_root() -> bool {
    cmd::output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

fn nightly_rust_src() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    match installed {
        Some(list) if list.lines().any(|line| line.starts_with("rust-src")) => {
            say("nightly rust-src", "already installed");
        }
        Some(_) => {
            cmd::run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
            say("nightly rust-src", "installed");
        }
        None => {
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            say("nightly with rust-src", "installed");
        }
    }
    Ok(())
}

pub(crate) fn rust_target(target: &str) -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .unwrap_or_default();
    if installed.lines().any(|line| line.trim() == target) {
        say(target, "already installed");
    } else {
        cmd::run(Command::new("rustup").args(["target", "add", target]))?;
        say(target, "installed");
    }
    Ok(())
}

fn bpf_linker(apt: &mut Apt) -> Result<()> {
    let version = cmd::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        say(
            "bpf-linker",
            &format!("{BPF_LINKER_VERSION} already installed"),
        );
        return Ok(());
    }
    let llvm_bin = format!("/usr/lib/llvm-{LLVM_MAJOR}/bin");
    let llvm_dev = format!("llvm-{LLVM_MAJOR}-dev");
    apt.ensure(&llvm_dev, &llvm_dev, || {
        Path::new(&llvm_bin).join("llvm-config").exists()
    })?;
    let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
    cmd::run(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("PATH", path),
    )?;
    say("bpf-linker", &format!("{BPF_LINKER_VERSION} installed"));
    Ok(())
}

fn tracefs() {
    if Path::new(TRACEFS).join("events").exists() {
        say("tracefs", &format!("mounted at {TRACEFS}"));
        return;
    }
    if !is_root() {
        say(
            "tracefs",
            "not mounted, and mounting it needs root (the eBPF backend mounts it itself when privileged)",
        );
        return;
    }
    match cmd::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS])) {
        Ok(()) => say("tracefs", &format!("mounted at {TRACEFS}")),
        Err(err) => say("tracefs", &format!("cannot mount: {err:#}")),
    }
}

/// `npm ci` in every `tests/fixtures/*` (or those named in `only`) that has
/// a lock file and no `node_modules` yet (or an older one).
fn npm_fixtures(apt: &mut Apt, only: Option<&[&str]>) -> Result<()> {
    let fixtures = cmd::workspace_root().join("tests/fixtures");
    let Ok(entries) = std::fs::read_dir(&fixtures) else {
        return Ok(());
    };
    let mut dirs: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
    dirs.sort();
    for dir in dirs {
        let lock = dir.join("package-lock.json");
        if !lock.exists() {
            continue;
        }
        let fixture = dir.file_name().unwrap_or_default().to_string_lossy();
        if only.is_some_and(|only| !only.contains(&&*fixture)) {
            continue;
        }
        let name = format!("npm fixture {fixture}");
        let stamp = dir.join("node_modules/.package-lock.json");
        let fresh = match (lock.metadata(), stamp.metadata()) {
            (Ok(lock), Ok(stamp)) => stamp.modified()? >= lock.modified()?,
            _ => false,
        };
        if fresh {
            say(&name, "already installed");
            continue;
        }
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        if fixture == "code-server" {
            code_server_prerequisites(apt, &mut npm)?;
        }
        cmd::run(&mut npm).with_context(|| format!("{name}: npm ci failed"))?;
        say(&name, "installed");
    }
    Ok(())
}

/// What `npm ci` of code-server needs on this machine: kerberos headers
/// (its `kerberos` module compiles), `unsafe_perm` (scripts as root), `yes`
/// (node-pty's prompt), and ripgrep in the place `@vscode/ripgrep` looks for
/// its cached download, since its postinstall cannot reach GitHub.
fn code_server_prerequisites(apt: &mut Apt, npm: &mut Command) -> Result<()> {
    apt.ensure("libkrb5-dev", "libkrb5-dev", || {
        Path::new("/usr/include/krb5.h").exists()
    })?;
    apt.ensure("ripgrep", "ripgrep", || Path::new(RIPGREP).exists())?;
    let cache = std::env::temp_dir().join(RIPGREP_CACHE);
    let archive = cache.join(RIPGREP_ARCHIVE);
    if archive.exists() {
        say("ripgrep cache for @vscode/ripgrep", "already there");
    } else {
        std::fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
        // The postinstall untars the archive into its bin/: rg at the top.
        cmd::run(
            Command::new("tar")
                .arg("-czf")
                .arg(&archive)
                .args(["-C", "/usr/bin", "rg"]),
        )?;
        say("ripgrep cache for @vscode/ripgrep", "written");
    }
    npm.env("npm_config_unsafe_perm", "true")
        .env("npm_config_yes", "true");
    Ok(())
}

/// Debian's ripgrep, standing in for the one @vscode/ripgrep 1.15.11 downloads.
const RIPGREP: &str = "/usr/bin/rg";
const RIPGREP_CACHE: &str = "vscode-ripgrep-cache-1.15.11";
const RIPGREP_ARCHIVE: &str = "ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz";

/// Debian packages, with one `apt-get update` at most per run.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn ensure(&mut self, step: &str, package: &str, present: impl Fn() -> bool) -> Result<()> {
        if present() {
            say(step, "already installed");
            return Ok(());
        }
        if !is_root() {
            say(
                step,
                &format!("missing, and installing it needs root: apt-get install {package}"),
            );
            return Ok(());
        }
        if !self.updated {
            cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        say(step, "installed");
        Ok(())
    }
}
