//! Where the config file is, and `~` in the paths it holds.

use std::path::PathBuf;

/// `~` or `~/...` with `$HOME` in front; anything else as it is.
pub(crate) fn expand_home(path: &str) -> String {
    let rest = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return path.to_owned(),
    };
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() => format!("{}{rest}", home.trim_end_matches('/')),
        _ => path.to_owned(),
    }
}

/// `$XDG_CONFIG_HOME/kandan-runner/config.toml`, else
/// `~/.config/kandan-runner/config.toml`; `None` without either variable.
pub(crate) fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty() && PathBuf::from(dir).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(base.join("kandan-runner").join("config.toml"))
}
