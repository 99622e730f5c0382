//! Which code-server to run: `--code-server-bin`, else
//! `KANDAN_CODE_SERVER_BIN`, else `code-server` on `PATH` (PROTOCOL.md
//! section 8). The flag and the variable arrive together through clap's
//! `env`; this module adds the `PATH` search.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::EditorError;

/// The program name looked up on `PATH` when nothing else is given.
pub const DEFAULT_PROGRAM: &str = "code-server";

/// The code-server to run: `explicit` (the flag or the variable) when
/// given, else `code-server` on `PATH`. A name without a `/` is looked up
/// on `PATH` too; the result is an executable file.
pub fn resolve_code_server(explicit: Option<&Path>) -> Result<PathBuf, EditorError> {
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

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
