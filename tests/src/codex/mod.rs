//! The pinned Codex CLI from `tests/fixtures/codex` (installed by `cargo
//! xtask setup --tests`) and what a test needs to run it offline: its own
//! `CODEX_HOME` and cwd, and the fake model as its provider.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use runner::codex::InstanceOptions;
use runner::wire::{ApprovalPolicy, SandboxMode};
use tempfile::TempDir;

use crate::fake_model::{FakeModel, MODEL};

pub mod driver;
pub mod procs;

/// `tests/fixtures/codex` in this checkout.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/codex")
}

/// The native `codex` binary npm installed as the platform's optional
/// dependency (the `bin/codex.js` wrapper would only exec it).
pub fn codex_bin() -> Result<PathBuf> {
    let (package, triple) = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => ("codex-linux-x64", "x86_64-unknown-linux-musl"),
        ("linux", "aarch64") => ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
        ("macos", "aarch64") => ("codex-darwin-arm64", "aarch64-apple-darwin"),
        ("macos", "x86_64") => ("codex-darwin-x64", "x86_64-apple-darwin"),
        (os, arch) => anyhow::bail!("no Codex build for {os}/{arch}"),
    };
    let bin = fixture_dir()
        .join("node_modules/@openai")
        .join(package)
        .join("vendor")
        .join(triple)
        .join("bin/codex");
    ensure!(
        bin.exists(),
        "{} is missing: run `cargo xtask setup --tests` (npm ci in tests/fixtures/codex)",
        bin.display()
    );
    Ok(bin)
}

/// The version pinned in `tests/fixtures/codex/package.json`.
pub fn pinned_version() -> Result<String> {
    let text = std::fs::read_to_string(fixture_dir().join("package.json"))?;
    let package: serde_json::Value = serde_json::from_str(&text)?;
    package["dependencies"]["@openai/codex"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("package.json pins no @openai/codex"))
}

/// A throwaway `CODEX_HOME` and working directory for one instance.
pub struct CodexDirs {
    home: TempDir,
    cwd: TempDir,
}

impl CodexDirs {
    pub fn new() -> Result<Self> {
        Ok(CodexDirs {
            home: tempfile::Builder::new()
                .prefix("kandan-codex-home-")
                .tempdir()?,
            cwd: tempfile::Builder::new()
                .prefix("kandan-codex-cwd-")
                .tempdir()?,
        })
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The instance's cwd, canonical (as the runner's cwd policy returns it).
    pub fn cwd(&self) -> PathBuf {
        self.cwd
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.cwd.path().to_path_buf())
    }

    /// Options for the pinned Codex in these directories with `model` as
    /// its model: asks before every command (`untrusted`), workspace-write
    /// sandbox.
    pub fn options(&self, model: &FakeModel) -> Result<InstanceOptions> {
        let mut options = InstanceOptions::new(codex_bin()?, self.cwd());
        options.start.model = Some(MODEL.into());
        options.start.approval_policy = Some(ApprovalPolicy::Untrusted);
        options.start.sandbox = Some(SandboxMode::WorkspaceWrite);
        options.extra_args = model.codex_args();
        let home = self.home().to_string_lossy().into_owned();
        options.env = vec![
            ("CODEX_HOME".into(), home.clone()),
            // The agent's commands run in a login shell: not the developer's
            // dotfiles (a pyenv rehash lock left by a killed test would make
            // every later shell wait a minute).
            ("HOME".into(), home),
        ];
        options.marker = format!("kandan-test-{}", std::process::id());
        Ok(options)
    }
}
