//! The runner's private state directory (`$XDG_STATE_HOME/kandan-runner`,
//! else `~/.local/state/kandan-runner`): mode 0700, owned by the runner's
//! user, because the editors' password-less sockets live inside it.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::EditorError;

/// The private state directory for this environment, created (mode 0700)
/// when missing; an existing one of another mode is set to 0700, one owned
/// by another user is refused.
pub(crate) fn private_state_dir() -> Result<PathBuf, EditorError> {
    let dir = default_location(
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )?;
    ensure_private(&dir)?;
    Ok(dir)
}

/// Where the state directory is, without touching the disk. A relative
/// `XDG_STATE_HOME` is ignored, as the XDG specification says.
fn default_location(
    xdg_state_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, EditorError> {
    if let Some(state) = xdg_state_home.filter(|dir| dir.is_absolute()) {
        return Ok(state.join("kandan-runner"));
    }
    match home.filter(|dir| dir.is_absolute()) {
        Some(home) => Ok(home.join(".local/state/kandan-runner")),
        None => Err(EditorError::NoStateDir),
    }
}

/// Creates `dir` (and its parents) if needed and makes sure it is a
/// directory of this user with mode 0700.
pub(crate) fn ensure_private(dir: &Path) -> Result<(), EditorError> {
    let io_err = |source| EditorError::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io_err(err)),
    }
    // symlink_metadata: a symlink planted in place of the directory is refused.
    let meta = std::fs::symlink_metadata(dir).map_err(io_err)?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(EditorError::StateDirNotPrivate {
            path: dir.to_path_buf(),
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o777 != 0o700 {
        tracing::warn!(
            "{} had mode {:o}: setting it to 700",
            dir.display(),
            meta.mode() & 0o777
        );
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_follows_xdg_then_home() {
        let at = |xdg: Option<&str>, home: Option<&str>| {
            default_location(xdg.map(PathBuf::from), home.map(PathBuf::from))
        };
        assert_eq!(
            at(Some("/s"), Some("/h")).unwrap(),
            Path::new("/s/kandan-runner")
        );
        assert_eq!(
            at(Some("relative"), Some("/h")).unwrap(),
            Path::new("/h/.local/state/kandan-runner")
        );
        assert_eq!(
            at(None, Some("/h")).unwrap(),
            Path::new("/h/.local/state/kandan-runner")
        );
        assert!(matches!(at(None, None), Err(EditorError::NoStateDir)));
    }

    #[test]
    fn directory_is_created_0700_and_a_wrong_mode_is_fixed() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("state/kandan-runner");
        ensure_private(&dir).unwrap();
        let mode = |dir: &Path| std::fs::metadata(dir).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_symlink_or_a_file_in_its_place_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let link = scratch.path().join("link");
        std::os::unix::fs::symlink(scratch.path(), &link).unwrap();
        assert!(matches!(
            ensure_private(&link),
            Err(EditorError::StateDirNotPrivate { .. })
        ));
        let file = scratch.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            ensure_private(&file),
            Err(EditorError::StateDirNotPrivate { .. })
        ));
    }
}
