//! One editor's folder under the state directory:
//! `<state>/editors/<editorId>/` with `user-data/`, `extensions/`, the XDG
//! data, config and cache homes code-server would otherwise share under
//! `~/.local/share/code-server`, and the socket.
//!
//! The runner holds a `flock` on `<folder>/lock` while the editor lives: a
//! folder nobody holds belongs to a runner that died (SIGKILL leaves its
//! editors running, and their folders), and the next registry on this state
//! directory ends those editors and removes their folders.

use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{EditorError, EditorId, process, state_dir};

/// A folder without its lock file may be one another runner is creating
/// right now; only older ones are swept.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// `sun_path` holds 108 bytes on Linux, 104 on macOS, NUL included.
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH: usize = 103;

/// The paths of one editor's folder.
#[derive(Clone, Debug)]
pub(crate) struct EditorDirs {
    pub(crate) root: PathBuf,
    pub(crate) user_data: PathBuf,
    pub(crate) extensions: PathBuf,
    pub(crate) xdg_data: PathBuf,
    pub(crate) xdg_config: PathBuf,
    pub(crate) xdg_cache: PathBuf,
    /// Where the collaboration assets are saved.
    pub(crate) assets: PathBuf,
    pub(crate) socket: PathBuf,
}

impl EditorDirs {
    pub(crate) fn new(state_dir: &Path, id: &EditorId) -> Self {
        let root = state_dir.join("editors").join(id.as_str());
        EditorDirs {
            user_data: root.join("user-data"),
            extensions: root.join("extensions"),
            xdg_data: root.join("xdg/data"),
            xdg_config: root.join("xdg/config"),
            xdg_cache: root.join("xdg/cache"),
            assets: root.join("assets"),
            socket: root.join("socket"),
            root,
        }
    }

    /// Creates the folder (mode 0700, as is the state directory above it)
    /// and locks it for as long as the returned lock lives.
    pub(crate) fn create(&self, state_dir: &Path) -> Result<FolderLock, EditorError> {
        let len = self.socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(EditorError::SocketPathTooLong {
                path: self.socket.clone(),
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        state_dir::ensure_private(state_dir)?;
        state_dir::ensure_private(&state_dir.join("editors"))?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EditorError::StateDir { path, source }
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.root)
            .map_err(io_err(&self.root))?;
        let lock_path = self.root.join("lock");
        let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
        if !try_lock(&lock) {
            return Err(EditorError::StateDir {
                path: lock_path,
                source: std::io::Error::last_os_error(),
            });
        }
        for dir in [
            &self.user_data,
            &self.extensions,
            &self.xdg_data,
            &self.xdg_config,
            &self.xdg_cache,
            &self.assets,
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| EditorError::StateDir {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(FolderLock { _file: lock })
    }

    /// Removes the whole folder, socket included; a folder already gone is fine.
    pub(crate) fn remove(&self) {
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!("cannot remove {}: {err}", self.root.display()),
        }
    }
}

/// The runner's hold on an editor's folder (an open, flocked file; closed
/// on exec, so code-server does not inherit it).
#[derive(Debug)]
pub(crate) struct FolderLock {
    _file: std::fs::File,
}

fn try_lock(file: &std::fs::File) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Ends the editors of runners that died and removes their folders: every
/// folder under `<state>/editors/` whose lock nobody holds. Returns the ids
/// swept.
pub(crate) fn sweep_stale(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("editors")) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let root = entry.path();
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let held = match std::fs::File::open(root.join("lock")) {
            Ok(lock) => !try_lock(&lock),
            // No lock file: being created, unless it is old.
            Err(_) => entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_none_or(|age| age < UNLOCKED_GRACE),
        };
        if held {
            continue;
        }
        let killed = process::kill_marked(&id);
        tracing::info!(
            editor = %id,
            killed,
            "removing the folder of an editor whose runner is gone"
        );
        if let Err(err) = std::fs::remove_dir_all(&root) {
            tracing::warn!("cannot remove {}: {err}", root.display());
        }
        swept.push(id);
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_folders_nobody_holds_are_swept() {
        let scratch = tempfile::tempdir().unwrap();
        let state = scratch.path().join("state");
        let live = EditorDirs::new(&state, &EditorId::generate().unwrap());
        let dead = EditorDirs::new(&state, &EditorId::generate().unwrap());
        let _held = live.create(&state).unwrap();
        drop(dead.create(&state).unwrap());
        // A folder another runner is still creating (no lock file yet).
        let fresh = state.join("editors/fresh");
        std::fs::create_dir(&fresh).unwrap();
        let dead_id = dead.root.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(sweep_stale(&state), vec![dead_id]);
        assert!(live.root.exists());
        assert!(!dead.root.exists());
        assert!(fresh.exists());
        // A second lock on a held folder fails (another runner's editor).
        let lock = std::fs::File::open(live.root.join("lock")).unwrap();
        assert!(!try_lock(&lock));
    }
}
