//! An editor's id (`editorId` on the wire).

use std::borrow::Borrow;
use std::fmt;

use super::EditorError;

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
