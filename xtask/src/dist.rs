//! `cargo xtask dist`: one release archive per target, each holding a
//! static `kandan-runner` (musl, eBPF object embedded), its completions, man
//! pages and the README, as `target/dist/kandan-runner-VERSION-TARGET.tar.gz`
//! with a `.sha256` beside it, and a Debian package of the same binary
//! (`kandan-runner_VERSION_ARCH.deb`, see `deb.rs`); `SHA256SUMS` lists them
//! all, and every binary must name the commit checked out (`--version`). Built with cargo-zigbuild and zig from PyPI
//! (pinned, in a venv under `target/`), so no cross toolchain from apt.
//! The archive for this machine's architecture is unpacked and its binary
//! run (`--version`, `doctor`) before it counts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::{cmd, deb, setup};

const TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];
const ZIGBUILD: &str = "cargo-zigbuild==0.24.1";
const ZIG: &str = "ziglang==0.17.1";
const BIN: &str = "kandan-runner";

pub fn run(targets: &[String]) -> Result<()> {
    setup::run(false)?;
    let root = cmd::workspace_root();
    let targets: Vec<String> = if targets.is_empty() {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        targets.to_vec()
    };
    let tools = zig_tools(&root)?;
    // Completions and man pages come from the host build: the command line
    // is the same on every target, and a foreign binary cannot run here.
    cmd::cargo(&["build", "-p", "runner", "--bin", BIN])?;
    let host_bin = root.join("target/debug").join(BIN);
    let version = env!("CARGO_PKG_VERSION");
    let commit = cmd::output(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(&root),
    )
    .context("git rev-parse failed")?;
    let commit = commit.trim();
    let mut made = Vec::new();
    for target in &targets {
        setup::rust_target(target)?;
        let path = format!(
            "{}:{}",
            tools.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd::run(
            Command::new(tools.join("cargo-zigbuild"))
                .args([
                    "zigbuild",
                    "--release",
                    "-p",
                    "runner",
                    "--bin",
                    BIN,
                    "--target",
                    target,
                ])
                .env("PATH", path)
                .current_dir(&root),
        )?;
        let bin = root.join("target").join(target).join("release").join(BIN);
        let bytes = std::fs::read(&bin).with_context(|| format!("{}", bin.display()))?;
        // The `--version` text is a literal in the binary: it says whether
        // the object is embedded, even for a binary that cannot run here.
        ensure!(
            contains(&bytes, b"\nebpf: embedded"),
            "{}: the eBPF object is not embedded (see the build's warning)",
            bin.display()
        );
        let stamp = format!("\ncommit: {commit}\ntarget: {target}\n");
        ensure!(
            contains(&bytes, stamp.as_bytes()),
            "{}: --version does not name commit {commit} (a stale build?)",
            bin.display()
        );
        let name = format!("{BIN}-{version}-{target}");
        let archive = pack(&root, &name, &bin, &host_bin)?;
        if target.starts_with(std::env::consts::ARCH) {
            smoke_test(&archive, &name, target)?;
        }
        let package = deb::build(&deb::Input {
            bin: &bin,
            host_bin: &host_bin,
            arch: deb::arch_of(target)?,
            target,
            out_dir: &root.join("target/dist"),
        })?;
        made.push((archive, bytes.len()));
        made.push((package, bytes.len()));
    }
    let mut sums = String::new();
    for (archive, bin_size) in made {
        let sum = sha256(&archive)?;
        let line = format!(
            "{sum}  {}\n",
            archive.file_name().unwrap_or_default().to_string_lossy()
        );
        if archive.extension() == Some("gz".as_ref()) {
            std::fs::write(archive.with_extension("gz.sha256"), &line)?;
        }
        sums.push_str(&line);
        let size = std::fs::metadata(&archive)?.len();
        println!(
            "{}: {} (binary {})  sha256 {sum}",
            archive.display(),
            human(size),
            human(bin_size as u64)
        );
    }
    let list = root.join("target/dist/SHA256SUMS");
    std::fs::write(&list, sums)?;
    println!("{}: commit {commit}", list.display());
    Ok(())
}

/// `cargo xtask deb`: a package of `bin` (default: the debug build) for
/// this machine, in `out` (default target/dist).
pub fn host_deb(bin: Option<PathBuf>, out: Option<PathBuf>) -> Result<()> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cmd::workspace_root().join("target"));
    let bin = bin.unwrap_or_else(|| target_dir.join("debug").join(BIN));
    let out = out.unwrap_or_else(|| target_dir.join("dist"));
    let version = cmd::output(Command::new(&bin).arg("--version"))
        .with_context(|| format!("{} --version failed", bin.display()))?;
    let target = version
        .lines()
        .find_map(|line| line.strip_prefix("target: "))
        .context("--version names no target")?;
    std::fs::create_dir_all(&out)?;
    let package = deb::build(&deb::Input {
        bin: &bin,
        host_bin: &bin,
        arch: deb::arch_of(target)?,
        target,
        out_dir: &out,
    })?;
    println!("{}", package.display());
    Ok(())
}

/// A venv under `target/` with the pinned cargo-zigbuild and zig; its bin
/// directory.
fn zig_tools(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/dist-tools");
    let bin = venv.join("bin");
    let pip = bin.join("pip");
    let wanted = [ZIGBUILD, ZIG];
    let frozen = cmd::output(Command::new(&pip).arg("freeze")).unwrap_or_default();
    if wanted
        .iter()
        .all(|pin| frozen.lines().any(|line| line == *pin))
    {
        eprintln!("dist: {} already installed", wanted.join(", "));
        return Ok(bin);
    }
    if !pip.exists() {
        cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    cmd::run(Command::new(&pip).args(["install", "-q", ZIGBUILD, ZIG]))?;
    Ok(bin)
}

/// Stages `name/` (binary, completions, man pages, README) and packs it
/// into `target/dist/name.tar.gz`.
fn pack(root: &Path, name: &str, bin: &Path, host_bin: &Path) -> Result<PathBuf> {
    let dist = root.join("target/dist");
    let stage = dist.join(name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    std::fs::create_dir_all(stage.join("completions"))?;
    std::fs::copy(bin, stage.join(BIN))?;
    std::fs::copy(root.join("README.md"), stage.join("README.md"))?;
    for (shell, file) in [
        ("bash", format!("{BIN}.bash")),
        ("zsh", format!("_{BIN}")),
        ("fish", format!("{BIN}.fish")),
    ] {
        let script = cmd::output(Command::new(host_bin).args(["completions", shell]))
            .with_context(|| format!("{BIN} completions {shell} failed"))?;
        std::fs::write(stage.join("completions").join(file), script)?;
    }
    cmd::run(
        Command::new(host_bin)
            .args(["man", "--dir"])
            .arg(stage.join("man"))
            .stdout(std::process::Stdio::null()),
    )?;
    let archive = dist.join(format!("{name}.tar.gz"));
    cmd::run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(&archive)
            .arg("-C")
            .arg(&dist)
            .arg(name),
    )?;
    Ok(archive)
}

/// Unpacks `archive` and runs its binary: `--version` names the target and
/// the embedded object, `doctor` finds a working backend, and the binary
/// is static (no ELF interpreter).
fn smoke_test(archive: &Path, name: &str, target: &str) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        cmd::run(
            Command::new("tar")
                .arg("-xzf")
                .arg(archive)
                .arg("-C")
                .arg(&dir),
        )?;
        let bin = dir.join(name).join(BIN);
        let version = cmd::output(Command::new(&bin).arg("--version"))
            .with_context(|| format!("{} --version failed", bin.display()))?;
        ensure!(
            version.contains(&format!("target: {target}")) && version.contains("ebpf: embedded"),
            "unexpected --version:\n{version}"
        );
        let doctor = cmd::output(Command::new(&bin).arg("doctor"))
            .with_context(|| format!("{} doctor found no working backend", bin.display()))?;
        let elf = std::fs::read(&bin)?;
        if has_interpreter(&elf) {
            bail!("{} is dynamically linked", bin.display());
        }
        eprintln!("dist: {name}: runs here, static\n{version}{doctor}");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header
/// (that is, needs a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| elf.get(at..at + len);
    let u64_at = |at| read(at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let u16_at = |at| read(at, 2).map(|b| u16::from_le_bytes(b.try_into().unwrap()));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..phnum as usize).any(|i| {
        let at = phoff as usize + i * phentsize as usize;
        read(at, 4).is_some_and(|b| u32::from_le_bytes(b.try_into().unwrap()) == PT_INTERP)
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn sha256(path: &Path) -> Result<String> {
    let out = cmd::output(Command::new("sha256sum").arg(path))
        .with_context(|| format!("sha256sum {} failed", path.display()))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_has_an_interpreter_and_a_bare_header_none() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(has_interpreter(&sh));
        // An ELF64 header with no program headers.
        let mut bare = vec![0u8; 64];
        bare[..4].copy_from_slice(b"\x7fELF");
        bare[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bare[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        assert!(!has_interpreter(&bare));
        // Garbage counts as dynamic: the check only ever passes real statics.
        assert!(has_interpreter(b"not an elf"));
    }
}
