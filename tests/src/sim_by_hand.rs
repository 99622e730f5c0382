//! What `kandan-sim` needs to be used by hand: the `kandan-runner` to
//! print in its `run:` line (a bare name is not on PATH after the README's
//! commands, so the line failed with 127), and a token that survives a
//! restart (a runner started by hand keeps working).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The `kandan-runner` next to this binary (the same `target/<profile>`),
/// else the one on PATH, as an absolute path; else the bare name, with why.
pub fn runner_bin() -> (String, Option<&'static str>) {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("kandan-runner")))
        .filter(|path| is_executable(path));
    let on_path = || {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("kandan-runner"))
            .find(|path| is_executable(path))
    };
    match sibling.or_else(on_path) {
        Some(path) => {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            (path.display().to_string(), None)
        }
        None => (
            "kandan-runner".to_owned(),
            Some("not built yet: cargo build -p runner --bin kandan-runner"),
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Where the token is kept: `$XDG_STATE_HOME/kandan-sim/token`, else
/// `~/.local/state/kandan-sim/token`.
pub fn token_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(std::env::var_os("HOME")?).join(".local/state")))?;
    Some(state.join("kandan-sim/token"))
}

/// The token kept at `path`, or `fresh` written there (0600, in a 0700
/// directory) when there is none yet.
pub fn kept_token(path: &Path, fresh: &str) -> Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    let dir = path.parent().context("token path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{fresh}")?;
    Ok(fresh.to_owned())
}
