//! The config file (PROTOCOL.md section 1; README, "Config file"): TOML at
//! `--config PATH`, else `$XDG_CONFIG_HOME/kandan-runner/config.toml`.
//! Read once at start (SIGHUP stops the runner, section 9).
//!
//! - `file`: the keys, as serde types; `load`: reading and errors naming
//!   the file, the line and the key; `paths`: where the file is, `~`.
//! - `flags`: the keys that stand for flags become those flags' defaults,
//!   so flags and environment variables win over the file.
//! - `ports`, `project`, `resolver`: the `[[ports]]` attributes, a
//!   project's `.kandan/ports.toml`, and the first match of both.

mod file;
mod flags;
mod load;
mod paths;
mod port_range;
mod ports;
mod project;
mod resolver;
#[cfg(test)]
mod tests;

pub(crate) use file::ConfigFile;
pub(crate) use load::ConfigError;
pub(crate) use paths::{default_config_path, expand_home};
pub(crate) use port_range::PortRange;
pub(crate) use ports::{OnDetect, PortAttributes, PortRule, Protocol};
pub(crate) use resolver::AttributeResolver;

use std::path::{Path, PathBuf};

/// The loaded config file; empty when there is none.
#[derive(Debug, Default)]
pub(crate) struct Config {
    /// The file read, if any.
    pub(crate) path: Option<PathBuf>,
    text: String,
    file: ConfigFile,
}

impl Config {
    /// Reads `explicit` (`--config`; it must exist), else the default path
    /// (a missing file there is no config).
    pub(crate) fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, missing_ok) = match explicit {
            Some(path) => (PathBuf::from(expand_home(&path.to_string_lossy())), false),
            None => match default_config_path() {
                Some(path) => (path, true),
                None => return Ok(Config::default()),
            },
        };
        let Some(text) = load::read(&path, missing_ok)? else {
            return Ok(Config::default());
        };
        Config::from_text(path, text)
    }

    /// Parses `text` as the content of `path`.
    pub(crate) fn from_text(path: PathBuf, text: String) -> Result<Config, ConfigError> {
        let file = load::parse::<ConfigFile>(&path, &text)?;
        Ok(Config {
            path: Some(path),
            text,
            file,
        })
    }

    /// `command` with this file's values as its flags' defaults. `skip`
    /// names keys to leave out (`token_file` when a token came from the
    /// command line or the environment).
    pub(crate) fn apply_to(
        &self,
        command: clap::Command,
        skip: &[&str],
    ) -> Result<clap::Command, ConfigError> {
        let Some(path) = &self.path else {
            return Ok(command);
        };
        let values: Vec<_> = self
            .file
            .flag_values()
            .into_iter()
            .filter(|value| !skip.contains(&value.key))
            .collect();
        flags::apply(command, &values, path, &self.text)
    }

    /// The user's `[[ports]]` entries, in order.
    pub(crate) fn ports(&self) -> &[PortRule] {
        &self.file.ports
    }

    /// The extra names to redact (`redact`).
    pub(crate) fn redact(&self) -> &[String] {
        &self.file.redact
    }
}
