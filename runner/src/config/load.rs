//! Reading a config file: the path rules, and errors that name the file,
//! the line and the key.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file that cannot be used (exit 2, one line).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file cannot be read (a missing `--config` file included).
    #[error("config {}: cannot read it", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A project file owned by another user than this one (root aside),
    /// ignored as git ignores a repository of another user.
    #[error("config {}: owned by uid {owner}, not by this user (uid {me}) or root", path.display())]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    /// Bad TOML, an unknown key or a bad value.
    #[error("config {}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl ConfigError {
    /// An error about the text at `span` of the file `path` holding `text`.
    pub(crate) fn at(path: &Path, text: &str, span: Range<usize>, message: String) -> Self {
        ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            message,
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Larger config files are refused.
const MAX_CONFIG_FILE: u64 = 4 * 1024 * 1024;

/// Reads `path` with the user's rights only ([`crate::user_file`]);
/// `Ok(None)` when `missing_ok` and it does not exist, or cannot be seen at
/// all (a service user whose `HOME` is another user's 0700 folder). A file
/// that is there but unreadable is an error.
pub(crate) fn read(path: &Path, missing_ok: bool) -> Result<Option<String>, ConfigError> {
    match crate::user_file::read_to_string(path, MAX_CONFIG_FILE) {
        Ok(text) => Ok(Some(text)),
        Err(err) if missing_ok && err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err)
            if missing_ok
                && err.kind() == std::io::ErrorKind::PermissionDenied
                && std::fs::symlink_metadata(path).is_err() =>
        {
            Ok(None)
        }
        Err(source) => Err(ConfigError::Unreadable {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses `text` (the content of `path`) as `T`. The error names the line
/// and the key: `ports[1].on_detect: unknown variant ...`.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let invalid = |err: &toml::de::Error, key: Option<String>| {
        let message = plain_message(err.message());
        let message = match key {
            Some(key) => format!("{key}: {message}"),
            None => message,
        };
        ConfigError::at(path, text, err.span().unwrap_or(0..0), message)
    };
    let deserializer = toml::de::Deserializer::parse(text).map_err(|err| invalid(&err, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let mut path = err.path().to_string();
        // The path of an unknown key ends with it; the message names it.
        if err.inner().message().starts_with("unknown field") {
            path.truncate(path.rfind('.').unwrap_or(0));
        }
        invalid(err.inner(), key_name(&path))
    })
}

/// The key path as a person reads it, without serde's bookkeeping: `.`
/// (the top) names nothing, `toml::Spanned`'s private fields go.
fn key_name(path: &str) -> Option<String> {
    let cleaned: Vec<&str> = path
        .split('.')
        .filter(|part| !part.is_empty() && !part.starts_with("$__"))
        .collect();
    (!cleaned.is_empty()).then(|| cleaned.join("."))
}

/// serde's message on one line; "unknown field `x`, expected one of (all
/// the keys)" becomes "unknown key `x`".
fn plain_message(message: &str) -> String {
    let message = message.trim_end().replace('\n', " ");
    match message.strip_prefix("unknown field ") {
        Some(rest) => {
            let name = rest.split(", expected").next().unwrap_or(rest);
            format!("unknown key {name}")
        }
        None => message,
    }
}
