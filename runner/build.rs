//! Builds the eBPF object (`runner-ebpf`) with aya-build when the toolchain is
//! here (bpf-linker on PATH, nightly with rust-src). Otherwise, or when that
//! build fails, writes an empty object so the runner still builds, and hands
//! the reason to `detect::ebpf::probe()` through `KANDAN_EBPF_UNAVAILABLE`.
//!
//! Also hands `--version` the git commit (`KANDAN_GIT_COMMIT`), the target
//! triple (`KANDAN_TARGET`) and whether the object is embedded
//! (`KANDAN_EBPF_EMBEDDED`).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Name of the object in OUT_DIR: the bin target of `runner-ebpf`.
const OBJECT: &str = "runner";
const SETUP: &str = "run `cargo xtask setup`";
/// Set on the child run of this script that calls aya-build (see `sub_build`).
const SUB_BUILD: &str = "KANDAN_EBPF_SUB_BUILD";

fn main() {
    if env::var_os(SUB_BUILD).is_some() {
        sub_build_child();
    }
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join(OBJECT);
    let reason = match build(&object) {
        Ok(()) => String::new(),
        Err(reason) => {
            println!("cargo:warning=eBPF detector not built: {reason}");
            fs::write(&object, b"").expect("write the empty eBPF object");
            reason
        }
    };
    println!("cargo:rustc-env=KANDAN_EBPF_UNAVAILABLE={reason}");
    let embedded = if reason.is_empty() {
        "embedded".to_owned()
    } else {
        format!("not embedded ({reason})")
    };
    println!("cargo:rustc-env=KANDAN_EBPF_EMBEDDED={embedded}");
    println!(
        "cargo:rustc-env=KANDAN_TARGET={}",
        env::var("TARGET").expect("cargo sets TARGET")
    );
    println!("cargo:rustc-env=KANDAN_GIT_COMMIT={}", git_commit());
}

/// `git rev-parse --short HEAD`, or "unknown" outside a git checkout (a
/// crate tarball) or without git. Reruns when HEAD moves.
fn git_commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    // HEAD itself, the branch it points at, and packed-refs (where a branch
    // lives after `git gc`); worktrees keep these in different directories.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    commit
}

fn build(object: &Path) -> Result<(), String> {
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        return Err(format!("eBPF needs Linux (target os {target_os})"));
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ebpf_dir = manifest_dir.join("../runner-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../common").display()
    );
    which::which("bpf-linker").map_err(|_| format!("bpf-linker not found ({SETUP})"))?;
    nightly_with_rust_src()?;
    // A stale object from an earlier successful build must not survive a
    // skipped one (AYA_BUILD_SKIP makes aya-build return without building).
    let _ = fs::remove_file(object);
    sub_build()?;
    match fs::metadata(object) {
        Ok(meta) if meta.len() > 0 => {
            // Not a `cargo:` line, so cargo shows it only with `-vv`.
            println!("eBPF object built: {} bytes", meta.len());
            Ok(())
        }
        _ => Err("eBPF build skipped (AYA_BUILD_SKIP)".into()),
    }
}

/// Runs aya-build in a child run of this same script and keeps its output:
/// aya-build prints every line of the nested cargo build (~46 "Compiling"
/// lines) as a `cargo:warning`, which cargo would replay on every build.
/// On success only its `cargo:rerun-if-*` lines pass; on failure all of it.
fn sub_build() -> Result<(), String> {
    let script =
        env::current_exe().map_err(|err| format!("cannot find the build script: {err}"))?;
    let output = Command::new(script)
        .env(SUB_BUILD, "1")
        .output()
        .map_err(|err| format!("cannot run the eBPF sub-build: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        if line.starts_with("cargo:rerun-if-") {
            println!("{line}");
        } else if !output.status.success() {
            println!(
                "cargo:warning={}",
                line.trim_start_matches("cargo:warning=")
            );
        }
    }
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rfind(|line| !line.trim().is_empty());
    Err(format!(
        "eBPF build failed: {}",
        last.unwrap_or("no message")
    ))
}

/// The child side of `sub_build`: aya-build, its output on stdout, the error
/// on stderr, and the exit status.
fn sub_build_child() -> ! {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ebpf_dir = manifest_dir.join("../runner-ebpf");
    let Some(ebpf_dir) = ebpf_dir.to_str() else {
        eprintln!("runner-ebpf path is not UTF-8");
        std::process::exit(1);
    };
    let result = aya_build::build_ebpf(
        [aya_build::Package {
            name: "runner-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    );
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("{err:#}");
            std::process::exit(1);
        }
    }
}

fn nightly_with_rust_src() -> Result<(), String> {
    let output = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .map_err(|err| format!("rustup not found: {err} ({SETUP})"))?;
    if !output.status.success() {
        return Err(format!("nightly toolchain missing ({SETUP})"));
    }
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !src.exists() {
        return Err(format!("rust-src missing for nightly ({SETUP})"));
    }
    Ok(())
}
