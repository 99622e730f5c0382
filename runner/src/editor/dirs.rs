//! One editor's folder under the state directory:
//! `<state>/editors/<editorId>/` with `user-data/`, `extensions/`, the XDG
//! data, config and cache homes code-server would otherwise share under
//! `~/.local/share/code-server`, and the socket.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{EditorError, EditorId, state_dir};

/// `sun_path` holds 108 bytes on Linux, 104 on macOS, NUL included.
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH: usize = 103;

/// The paths of one editor's folder.
#[derive(Clone, Debug)]
pub(crate) struct EditorDirs {
    pub root: PathBuf,
    pub user_data: PathBuf,
    pub extensions: PathBuf,
    pub xdg_data: PathBuf,
    pub xdg_config: PathBuf,
    pub xdg_cache: PathBuf,
    /// Where the collaboration assets are saved.
    pub assets: PathBuf,
    pub socket: PathBuf,
}

impl EditorDirs {
    pub fn new(state_dir: &Path, id: &EditorId) -> Self {
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

    /// Creates the folder (mode 0700, as is the state directory above it).
    pub fn create(&self, state_dir: &Path) -> Result<(), EditorError> {
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
        Ok(())
    }

    /// Removes the whole folder, socket included; a folder already gone is fine.
    pub fn remove(&self) {
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!("cannot remove {}: {err}", self.root.display()),
        }
    }
}
