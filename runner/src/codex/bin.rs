//! Which `codex` binary runs the instances: `--codex-bin`, else
//! `KANDAN_CODEX_BIN`, else `codex` on `PATH` (PROTOCOL.md section 7).

use std::path::{Path, PathBuf};

/// The environment variable standing in for `--codex-bin`.
pub(crate) const CODEX_BIN_ENV: &str = "KANDAN_CODEX_BIN";

/// No usable `codex` binary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BinError {
    /// The given path is not an executable file.
    #[error("codex binary `{}` (from {from}) is not an executable file", .path.display())]
    NotExecutable { path: PathBuf, from: &'static str },
    /// Nothing named `codex` on `PATH`.
    #[error("no `codex` on PATH (set --codex-bin or {CODEX_BIN_ENV})")]
    NotOnPath,
}

/// Resolves the binary: `flag`, else the environment variable, else `PATH`.
pub(crate) fn resolve_bin(flag: Option<&Path>) -> Result<PathBuf, BinError> {
    let from_env = std::env::var_os(CODEX_BIN_ENV).filter(|value| !value.is_empty());
    let (candidate, from) = match (flag, &from_env) {
        (Some(path), _) => (path.to_path_buf(), "--codex-bin"),
        (None, Some(value)) => (PathBuf::from(value), CODEX_BIN_ENV),
        (None, None) => return on_path("codex").ok_or(BinError::NotOnPath),
    };
    // A bare name is looked up on PATH, like a shell would.
    if candidate.components().count() == 1
        && !candidate.is_absolute()
        && let Some(found) = candidate.to_str().and_then(on_path)
    {
        return Ok(found);
    }
    if is_executable(&candidate) {
        Ok(candidate)
    } else {
        Err(BinError::NotExecutable {
            path: candidate,
            from,
        })
    }
}

/// What `doctor` says about Codex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct CodexStatus {
    /// The binary instances would run, when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<PathBuf>,
    /// `codex --version`'s version, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    /// Why there is no version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Finds the binary (as [`resolve_bin`]) and asks it its version.
pub(crate) fn probe(flag: Option<&Path>) -> CodexStatus {
    let path = match resolve_bin(flag) {
        Ok(path) => path,
        Err(err) => {
            return CodexStatus {
                path: None,
                version: None,
                error: Some(err.to_string()),
            };
        }
    };
    let output = crate::supervise::probe::command(&path)
        .arg("--version")
        .output();
    let (version, error) = match output {
        Ok(out) if out.status.success() => {
            // `codex-cli 0.171.0`
            let text = String::from_utf8_lossy(&out.stdout);
            match text.split_whitespace().last() {
                Some(version) => (Some(version.to_string()), None),
                None => (None, Some("`codex --version` printed nothing".into())),
            }
        }
        Ok(out) => (
            None,
            Some(format!("`codex --version` failed: {}", out.status)),
        ),
        Err(err) => (None, Some(format!("cannot run it: {err}"))),
    };
    CodexStatus {
        path: Some(path),
        version,
        error,
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_must_be_executable() {
        assert_eq!(
            resolve_bin(Some(Path::new("/bin/sh"))).unwrap(),
            PathBuf::from("/bin/sh")
        );
        // A bare name goes through PATH.
        assert!(resolve_bin(Some(Path::new("sh"))).unwrap().is_absolute());
        let err = resolve_bin(Some(Path::new("/nonexistent/codex"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/codex"), "{err}");
        assert!(err.to_string().contains("--codex-bin"), "{err}");
        let err = resolve_bin(Some(Path::new("/tmp"))).unwrap_err();
        assert!(matches!(err, BinError::NotExecutable { .. }));
    }
}
