//! Where the service's files go, for a system or a user service.

use std::path::{Path, PathBuf};

use super::ServiceError;

/// The unit's (and plist's) name without extension.
pub(crate) const NAME: &str = "kandan-runner";

/// A system service running as a named user, or a user's own service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    System { run_as: String },
    User,
}

/// The files of one service.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) scope: Scope,
    /// The runner binary the service starts.
    pub(crate) exe: PathBuf,
    /// Directory of the systemd unit.
    pub(crate) unit_dir: PathBuf,
    /// Directory of the launchd plist (macOS).
    pub(crate) plist_dir: PathBuf,
    /// The environment file (`KANDAN_URL` and friends), mode 0600.
    pub(crate) env_file: PathBuf,
    /// The token file, mode 0600; for a system service root's, opened by
    /// systemd as the runner's stdin.
    pub(crate) token_file: PathBuf,
}

impl Layout {
    /// The layout for `scope`, from `$HOME` and `$XDG_CONFIG_HOME` for a
    /// user service.
    pub(crate) fn new(scope: Scope, exe: PathBuf) -> Result<Self, ServiceError> {
        let layout = match scope {
            Scope::System { .. } => {
                let etc = Path::new("/etc").join(NAME);
                Self {
                    scope,
                    exe,
                    unit_dir: "/etc/systemd/system".into(),
                    plist_dir: "/Library/LaunchDaemons".into(),
                    env_file: etc.join("env"),
                    token_file: etc.join("token"),
                }
            }
            Scope::User => {
                let home = absolute_env("HOME").ok_or(ServiceError::NoHome)?;
                // The XDG spec says a relative value is to be ignored.
                let config =
                    absolute_env("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
                Self {
                    scope,
                    exe,
                    unit_dir: config.join("systemd/user"),
                    plist_dir: home.join("Library/LaunchAgents"),
                    env_file: config.join(NAME).join("env"),
                    token_file: config.join(NAME).join("token"),
                }
            }
        };
        Ok(layout)
    }

    pub(crate) fn unit_file(&self) -> PathBuf {
        self.unit_dir.join(format!("{NAME}.service"))
    }

    /// `systemctl` or `systemctl --user`.
    pub(crate) fn systemctl(&self) -> &'static str {
        match self.scope {
            Scope::System { .. } => "systemctl",
            Scope::User => "systemctl --user",
        }
    }
}

fn absolute_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
}
