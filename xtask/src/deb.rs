//! The Debian package: `kandan-runner_VERSION_ARCH.deb`, built with
//! `dpkg-deb` from a staged tree. It holds the binary in /usr/bin, a
//! template unit `kandan-runner@.service` (installed, not enabled: the
//! instance name is the user it runs as), man pages, completions, the
//! README and docs/, and a `copyright` listing the crates the binary links.
//! The maintainer scripts and their reasons are in `xtask/packaging/deb/`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::{cmd, licenses, setup};

pub(crate) const PACKAGE: &str = "kandan-runner";
const MAINTAINER: &str = "Kandan runner maintainers <runner@kandan.example>";
/// bookworm's lintian wants units under /lib (usrmerge moves them later).
const UNIT_DIR: &str = "lib/systemd/system";
const UNIT: &str = "kandan-runner@.service";
const INSTALLED_BIN: &str = "/usr/bin/kandan-runner";

/// What goes into one package.
pub(crate) struct Input<'a> {
    /// The binary to ship (any architecture).
    pub bin: &'a Path,
    /// A binary of the same source that runs here: completions, man pages
    /// and the unit come from it.
    pub host_bin: &'a Path,
    /// Debian architecture: amd64, arm64.
    pub arch: &'a str,
    /// Rust target triple of `bin`, for the licence list.
    pub target: &'a str,
    pub out_dir: &'a Path,
}

/// The Debian architecture of a Rust target triple.
pub(crate) fn arch_of(target: &str) -> Result<&'static str> {
    match target.split('-').next() {
        Some("x86_64") => Ok("amd64"),
        Some("aarch64") => Ok("arm64"),
        _ => bail!("{target}: no Debian architecture known for it"),
    }
}

/// Builds the package; its path.
pub(crate) fn build(input: &Input) -> Result<PathBuf> {
    let root = cmd::workspace_root();
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("{PACKAGE}_{version}_{}", input.arch);
    let stage = input.out_dir.join(format!("{name}.stage"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let doc = stage.join("usr/share/doc").join(PACKAGE);
    let staged_bin = stage.join("usr/bin").join(PACKAGE);
    install(input.bin, &staged_bin, 0o755)?;
    strip(&staged_bin)?;
    write(
        &stage.join(UNIT_DIR).join(UNIT),
        template_unit(input.host_bin)?.as_bytes(),
        0o644,
    )?;
    // Static on purpose: one binary for every distribution and container.
    write(
        &stage.join("usr/share/lintian/overrides").join(PACKAGE),
        format!("{PACKAGE}: statically-linked-binary [usr/bin/{PACKAGE}]\n").as_bytes(),
        0o644,
    )?;
    completions(input.host_bin, &stage)?;
    man_pages(input.host_bin, &stage)?;
    write(
        &doc.join("copyright"),
        licenses::copyright(input.target)?.as_bytes(),
        0o644,
    )?;
    write(
        &doc.join("changelog"),
        changelog(version)?.as_bytes(),
        0o644,
    )?;
    gzip(&doc.join("changelog"))?;
    // Docs as Debian wants them: compressed when larger than 4 KiB.
    let mut docs = vec![root.join("README.md")];
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        docs.extend(entries.flatten().map(|entry| entry.path()));
    }
    for file in docs
        .iter()
        .filter(|file| file.extension() == Some("md".as_ref()))
    {
        let dest = doc.join(file.file_name().unwrap_or_default());
        install(file, &dest, 0o644)?;
        if std::fs::metadata(&dest)?.len() > 4096 {
            gzip(&dest)?;
        }
    }
    let control = stage.join("DEBIAN");
    write(
        &control.join("control"),
        control_file(version, input.arch, installed_kib(&stage)?).as_bytes(),
        0o644,
    )?;
    write(&control.join("md5sums"), md5sums(&stage)?.as_bytes(), 0o644)?;
    let scripts = root.join("xtask/packaging/deb");
    for script in ["postinst", "prerm", "postrm"] {
        install(&scripts.join(script), &control.join(script), 0o755)?;
    }
    let deb = input.out_dir.join(format!("{name}.deb"));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb)
            .stdout(std::process::Stdio::null()),
    )?;
    std::fs::remove_dir_all(&stage)?;
    Ok(deb)
}

/// The system unit `service print` writes, made a template: `User=%i`, so
/// `systemctl enable --now kandan-runner@alice` runs it as alice, and
/// ExecStart names the installed binary. Each edit must apply once, so a
/// change to the unit's shape fails the build instead of shipping a
/// half-edited unit.
fn template_unit(host_bin: &Path) -> Result<String> {
    let unit = cmd::output(
        Command::new(host_bin)
            .args([
                "service", "print", "--format", "systemd", "--run-as", "root",
            ])
            .env_remove("SUDO_USER"),
    )
    .context("kandan-runner service print failed")?;
    // ExecStart names the binary as `current_exe()` does: canonical.
    let host = std::fs::canonicalize(host_bin)?;
    let host = host.to_string_lossy();
    let mut lines = Vec::new();
    let (mut users, mut execs) = (0, 0);
    for line in unit.lines() {
        if line.starts_with("# Written by") {
            lines.push(format!(
                "# Installed by the {PACKAGE} package. Enable it for one user with\n\
                 # `systemctl enable --now kandan-runner@USER` after writing\n\
                 # /etc/kandan-runner/env (KANDAN_URL) and /etc/kandan-runner/token (mode 0600)."
            ));
        } else if line == "User=root" {
            users += 1;
            lines.push("User=%i".to_owned());
        } else if let Some(rest) = line.strip_prefix(&format!("ExecStart={host} ")) {
            execs += 1;
            lines.push(format!("ExecStart={INSTALLED_BIN} {rest}"));
        } else {
            lines.push(line.to_owned());
        }
    }
    ensure!(
        users == 1 && execs == 1,
        "the unit from `service print` changed shape (User= {users}, ExecStart= {execs}): update xtask/src/deb.rs\n{unit}"
    );
    Ok(lines.join("\n") + "\n")
}

/// What dh_strip does, with LLVM's strip (it reads every architecture,
/// and `cargo xtask setup` installs it for the eBPF build). The embedded
/// eBPF object is data, so its BTF stays.
fn strip(bin: &Path) -> Result<()> {
    let llvm_strip = format!("/usr/lib/llvm-{}/bin/llvm-strip", setup::LLVM_MAJOR);
    cmd::run(
        Command::new(llvm_strip)
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(bin),
    )
}

fn completions(host_bin: &Path, stage: &Path) -> Result<()> {
    for (shell, path) in [
        (
            "bash",
            "usr/share/bash-completion/completions/kandan-runner",
        ),
        ("zsh", "usr/share/zsh/vendor-completions/_kandan-runner"),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/kandan-runner.fish",
        ),
    ] {
        let script = cmd::output(Command::new(host_bin).args(["completions", shell]))
            .with_context(|| format!("kandan-runner completions {shell} failed"))?;
        write(&stage.join(path), script.as_bytes(), 0o644)?;
    }
    Ok(())
}

fn man_pages(host_bin: &Path, stage: &Path) -> Result<()> {
    let dir = stage.join("usr/share/man/man1");
    cmd::run(
        Command::new(host_bin)
            .args(["man", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null()),
    )?;
    for page in std::fs::read_dir(&dir)? {
        let page = page?.path();
        std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644))?;
        gzip(&page)?;
    }
    Ok(())
}

/// A native package's changelog: one entry naming the commit, dated by it
/// (so two builds of one commit are the same).
fn changelog(version: &str) -> Result<String> {
    let root = cmd::workspace_root();
    let git = |args: &[&str]| {
        cmd::output(Command::new("git").args(args).current_dir(&root))
            .map(|out| out.trim().to_owned())
            .filter(|out| !out.is_empty())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let date = git(&["log", "-1", "--format=%aD"])
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into());
    Ok(format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Built from commit {commit}.\n\n -- {MAINTAINER}  {date}\n"
    ))
}

fn control_file(version: &str, arch: &str, kib: u64) -> String {
    format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {kib}\n\
         Section: devel\n\
         Priority: optional\n\
         Description: forwards a coding agent's dev servers to Kandan\n \
         kandan-runner sits next to a coding agent, notices when a process in\n \
         the agent's tree starts listening on a TCP port, asks Kandan whether\n \
         its user approves exposing it, and forwards HTTP and WebSocket\n \
         traffic to it. The binary is static, with its eBPF detector embedded.\n \
         .\n \
         The template unit kandan-runner@.service is installed but not\n \
         enabled: see /usr/share/doc/kandan-runner/install.md.\n"
    )
}

/// Installed-Size: the files' sizes in KiB, rounded up per file.
fn installed_kib(stage: &Path) -> Result<u64> {
    Ok(files(stage)?
        .iter()
        .map(|file| std::fs::metadata(stage.join(file)).map_or(0, |meta| meta.len().div_ceil(1024)))
        .sum())
}

fn md5sums(stage: &Path) -> Result<String> {
    let mut list = String::new();
    for file in files(stage)? {
        let out = cmd::output(Command::new("md5sum").arg(&file).current_dir(stage))
            .with_context(|| format!("md5sum {}", file.display()))?;
        list.push_str(&out);
    }
    Ok(list)
}

/// Every regular file under `stage` but DEBIAN/, relative, sorted.
fn files(stage: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, stage: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, stage, out)?;
            } else {
                out.push(path.strip_prefix(stage)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(stage, stage, &mut out)?;
    out.retain(|file| !file.starts_with("DEBIAN"));
    out.sort();
    Ok(out)
}

fn gzip(path: &Path) -> Result<()> {
    cmd::run(Command::new("gzip").args(["-9nf"]).arg(path))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
    write(to, &bytes, mode)
}

fn write(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
        set_dir_modes(dir)?;
    }
    std::fs::write(to, bytes).with_context(|| format!("write {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// 0755 for `dir` and its parents up to the stage (whatever the umask).
fn set_dir_modes(dir: &Path) -> Result<()> {
    let mut dir = Some(dir);
    while let Some(current) = dir {
        if current.extension() == Some("stage".as_ref()) {
            break;
        }
        std::fs::set_permissions(current, std::fs::Permissions::from_mode(0o755))?;
        dir = current.parent();
    }
    Ok(())
}
