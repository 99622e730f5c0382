//! A project's own `[[ports]]` entries: `.kandan/ports.toml` in the cwd of
//! the process that listens. Read when a listener of that cwd shows up,
//! again when the file's mtime changes. A bad file is a warning naming it,
//! and is then ignored: it never stops detection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::file::ProjectFile;
use super::load::{ConfigError, parse};
use super::ports::PortRule;

/// The file, relative to the listener's cwd.
pub(crate) const PROJECT_FILE: &str = ".kandan/ports.toml";

/// Larger files are refused: attributes fit in a few kilobytes.
const MAX_PROJECT_FILE: u64 = 256 * 1024;

/// Cwds remembered; past it the cache starts afresh (a tree that wanders
/// through many directories).
const MAX_CACHED_CWDS: usize = 1024;

/// What was read for one cwd.
#[derive(Debug)]
struct Entry {
    /// The file's mtime when read; `None`: there was no file.
    mtime: Option<SystemTime>,
    rules: Vec<PortRule>,
}

/// The project files read so far, per cwd.
#[derive(Debug, Default)]
pub(crate) struct ProjectFiles {
    cache: HashMap<PathBuf, Entry>,
}

impl ProjectFiles {
    /// The `[[ports]]` entries of `cwd`'s project file (none when it has
    /// none, or a bad one).
    pub(crate) fn rules(&mut self, cwd: &Path) -> &[PortRule] {
        let path = cwd.join(PROJECT_FILE);
        let mtime = std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|meta| meta.modified().ok());
        let fresh = self
            .cache
            .get(cwd)
            .is_some_and(|entry| entry.mtime == mtime);
        if !fresh {
            let rules = match mtime {
                None => Vec::new(),
                Some(_) => read_rules(&path).unwrap_or_else(|err| {
                    tracing::warn!("{}; its entries are ignored", crate::error_chain(&err));
                    Vec::new()
                }),
            };
            if self.cache.len() >= MAX_CACHED_CWDS {
                self.cache.clear();
            }
            self.cache.insert(cwd.to_owned(), Entry { mtime, rules });
        }
        self.cache.get(cwd).map_or(&[], |entry| &entry.rules)
    }
}

fn read_rules(path: &Path) -> Result<Vec<PortRule>, ConfigError> {
    let unreadable = |source| ConfigError::Unreadable {
        path: path.to_owned(),
        source,
    };
    // Without capabilities, and a FIFO put there must not hang detection.
    let file = crate::user_file::open(path, true).map_err(unreadable)?;
    // As git's `safe.directory`: a file someone else put in a shared
    // folder does not relabel or hide this user's listeners.
    let owner = crate::user_file::owner(&file).map_err(unreadable)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if owner != me && owner != 0 {
        return Err(ConfigError::ForeignOwner {
            path: path.to_owned(),
            owner,
            me,
        });
    }
    let text = crate::user_file::read_limited(file, MAX_PROJECT_FILE).map_err(|err| {
        if err.kind() == std::io::ErrorKind::InvalidData {
            ConfigError::at(
                path,
                "",
                0..0,
                format!("larger than {MAX_PROJECT_FILE} bytes"),
            )
        } else {
            unreadable(err)
        }
    })?;
    Ok(parse::<ProjectFile>(path, &text)?.ports)
}
