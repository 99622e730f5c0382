//! Which code-server to run: `--code-server-bin`, else
//! `KANDAN_CODE_SERVER_BIN`, else `code-server` on `PATH` (PROTOCOL.md
//! section 8). The flag and the variable arrive together through clap's
//! `env`; this module adds the `PATH` search.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::EditorError;

/// The program name looked up on `PATH` when nothing else is given.
pub(crate) const DEFAULT_PROGRAM: &str = "code-server";

/// The code-server to run: `explicit` (the flag or the variable) when
/// given, else `code-server` on `PATH`. A name without a `/` is looked up
/// on `PATH` too; the result is an executable file.
pub(crate) fn resolve_code_server(explicit: Option<&Path>) -> Result<PathBuf, EditorError> {
    let program = explicit.unwrap_or(Path::new(DEFAULT_PROGRAM));
    let found = if program.components().count() > 1 || program.is_absolute() {
        is_executable(program).then(|| program.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| is_executable(candidate))
        })
    };
    found.ok_or_else(|| EditorError::CodeServerNotFound {
        program: program.to_path_buf(),
    })
}

/// What `doctor` says about code-server.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct CodeServerStatus {
    /// The program found, if any.
    pub(crate) path: Option<PathBuf>,
    /// Its version line (`4.100.3 <commit> with Code 1.100.3`).
    pub(crate) version: Option<String>,
    /// Why it cannot be used, when it cannot.
    pub(crate) reason: Option<String>,
}

/// Finds code-server (as [`resolve_code_server`]) and asks its version.
/// `--version` writes logs under `XDG_DATA_HOME` (and a config file without
/// `--config`): it runs with both pointed at a scratch folder, removed after.
pub(crate) fn code_server_status(explicit: Option<&Path>) -> CodeServerStatus {
    let path = match resolve_code_server(explicit) {
        Ok(path) => path,
        Err(err) => {
            return CodeServerStatus {
                path: None,
                version: None,
                reason: Some(err.to_string()),
            };
        }
    };
    // A fresh private folder (mkdtemp): a predictable name in /tmp could
    // be made in advance by another user, or be a symlink.
    let scratch = match scratch_dir() {
        Ok(dir) => dir,
        Err(err) => {
            return CodeServerStatus {
                path: Some(path),
                version: None,
                reason: Some(format!("cannot create a scratch folder: {err}")),
            };
        }
    };
    let output = crate::supervise::probe::command(&path)
        .args(["--config", "/dev/null", "--version"])
        .env("XDG_DATA_HOME", &scratch)
        .env("XDG_CONFIG_HOME", &scratch)
        .env("XDG_CACHE_HOME", &scratch)
        .output();
    let _ = std::fs::remove_dir_all(&scratch);
    let (version, reason) = match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            // The version is the last line; info lines may precede it.
            let line = text.lines().rev().find(|l| !l.trim().is_empty());
            (line.map(|l| l.trim().to_string()), None)
        }
        Ok(out) => (
            None,
            Some(format!(
                "`{} --version` failed: {}",
                path.display(),
                out.status
            )),
        ),
        Err(err) => (None, Some(format!("cannot run {}: {err}", path.display()))),
    };
    CodeServerStatus {
        path: Some(path),
        version,
        reason,
    }
}

/// A new folder `$TMPDIR/kandan-doctor-XXXXXX`, mode 0700, made by
/// mkdtemp(3).
fn scratch_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let template = std::env::temp_dir().join("kandan-doctor-XXXXXX");
    let mut bytes = template.into_os_string().into_vec();
    bytes.push(0);
    // SAFETY: `bytes` is a writable NUL-terminated template that mkdtemp
    // fills in place.
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_folders_are_fresh_and_private() {
        use std::os::unix::fs::MetadataExt;
        let a = scratch_dir().unwrap();
        let b = scratch_dir().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.metadata().unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir(&a).unwrap();
        std::fs::remove_dir(&b).unwrap();
    }

    #[test]
    fn explicit_paths_must_be_executable_files() {
        assert_eq!(
            resolve_code_server(Some(Path::new("/bin/sh"))).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(resolve_code_server(Some(Path::new("/nonexistent/code-server"))).is_err());
        assert!(resolve_code_server(Some(Path::new("/tmp"))).is_err());
        // A bare name goes through PATH.
        assert!(resolve_code_server(Some(Path::new("sh"))).is_ok());
        let err = resolve_code_server(Some(Path::new("kandan-no-such-editor"))).unwrap_err();
        assert!(err.to_string().contains("kandan-no-such-editor"), "{err}");
    }
}
