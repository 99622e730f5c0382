//! Builds the eBPF object (`runner-ebpf`) with aya-build when the toolchain is
//! here (bpf-linker on PATH, nightly with rust-src). Otherwise, or when that
//! build fails, writes an empty object so the runner still builds, and hands
//! the reason to `detect::ebpf::probe()` through `KANDAN_EBPF_UNAVAILABLE`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Name of the object in OUT_DIR: the bin target of `runner-ebpf`.
const OBJECT: &str = "runner";
const SETUP: &str = "run `cargo xtask setup`";

fn main() {
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
    let ebpf_dir = ebpf_dir.to_str().ok_or("runner-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "runner-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .map_err(|err| format!("eBPF build failed: {err:#}"))?;
    match fs::metadata(object) {
        Ok(meta) if meta.len() > 0 => Ok(()),
        _ => Err("eBPF build skipped (AYA_BUILD_SKIP)".into()),
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
