//! What the registry reports, independent of the wire: the lead maps
//! [`EditorEvent::Started`] to `local_editor_started`,
//! [`EditorEvent::Stopped`] to `local_editor_stopped` and
//! [`EditorEvent::Failed`] to `control_error` `editor_failed`.

use std::borrow::Borrow;
use std::fmt;
use std::path::PathBuf;

use super::{EditorError, StopReason};

/// Names one running editor: 128 random bits in hex, also the name of its
/// folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EditorId(String);

impl EditorId {
    pub(crate) fn generate() -> Result<Self, EditorError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(EditorError::Random)?;
        Ok(EditorId(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EditorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Lets the registry be searched with the `&str` of a control.
impl Borrow<str> for EditorId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for EditorId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// One thing that happened to an editor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EditorEvent {
    /// Up and answering, or already running for that cwd (a second start).
    Started {
        request_id: Option<String>,
        instance_id: Option<String>,
        editor_id: EditorId,
        cwd: PathBuf,
    },
    /// Gone, with its whole process group; its folder is removed.
    Stopped {
        editor_id: EditorId,
        reason: StopReason,
        /// Shell-style: the exit code, or 128 + N for a signal N; `None`
        /// when it could not be read.
        exit_code: Option<i32>,
    },
    /// A start failed; nothing of it remains.
    Failed {
        request_id: Option<String>,
        instance_id: Option<String>,
        /// The error and its causes on one line.
        reason: String,
    },
}
