//! A program path given on the command line (`--codex-bin`,
//! `--code-server-bin`): a relative one names a file from where the runner
//! was started (PROTOCOL.md sections 7 and 8), not from the instance's or
//! editor's cwd, where it is finally run.

use std::path::{Path, PathBuf};

/// `path` made absolute against the runner's cwd when it has a directory
/// part (`bin/codex`, `./codex`); a bare name (`codex`) is left for the
/// `PATH` search, and an absolute path as it is.
pub(crate) fn from_runner_cwd(path: &Path) -> PathBuf {
    if path.is_absolute() || path.components().count() <= 1 {
        return path.to_path_buf();
    }
    // `absolute` keeps symlinks and `..` as written: the file is the one
    // the person named, looked up from here.
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_the_runners_cwds_and_bare_names_stay_for_path() {
        let cwd = std::env::current_dir().unwrap();
        let nested = Path::new("tests/fixtures/code-server/node_modules/.bin/code-server");
        assert_eq!(from_runner_cwd(nested), cwd.join(nested));
        assert_eq!(from_runner_cwd(Path::new("./codex")), cwd.join("codex"));
        assert_eq!(from_runner_cwd(Path::new("codex")), Path::new("codex"));
        assert_eq!(
            from_runner_cwd(Path::new("/usr/bin/codex")),
            Path::new("/usr/bin/codex")
        );
    }
}
