//! What every process the runner starts does not inherit from the runner's
//! environment: the token (`KANDAN_TOKEN`), the URL that may carry a
//! password (`KANDAN_URL`), every other `KANDAN_*` variable the runner was
//! given, and systemd's `CREDENTIALS_DIRECTORY` (PROTOCOL.md section 5,
//! "Privilege"). Markers the runner sets itself (`KANDAN_RUNNER_TREE`, ...)
//! are set after this, so they stay.

use std::ffi::OsStr;

/// systemd's folder of the unit's credentials (`LoadCredential=`).
const CREDENTIALS: &str = "CREDENTIALS_DIRECTORY";
/// The prefix of the runner's own variables.
const PREFIX: &[u8] = b"KANDAN_";

/// Removes the runner's inherited secret variables from `command`'s
/// environment. Call it before setting the command's own variables.
pub(crate) fn scrub(command: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        if is_secret(&name) {
            command.env_remove(name);
        }
    }
}

/// The two variables no child gets even when a caller hands them over
/// explicitly (`SpawnOptions::env`): call it after setting them.
pub(crate) fn forbid_credentials(command: &mut std::process::Command) {
    for name in ["KANDAN_TOKEN", "KANDAN_URL"] {
        command.env_remove(name);
    }
}

fn is_secret(name: &OsStr) -> bool {
    name == CREDENTIALS || name.as_encoded_bytes().starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kandan_variables_and_credentials_are_secret() {
        for name in [
            "KANDAN_TOKEN",
            "KANDAN_URL",
            "KANDAN_RUNNER_ID",
            "KANDAN_ANYTHING",
            "CREDENTIALS_DIRECTORY",
        ] {
            assert!(is_secret(OsStr::new(name)), "{name}");
        }
        for name in ["PATH", "HOME", "kandan_token", "XKANDAN_TOKEN"] {
            assert!(!is_secret(OsStr::new(name)), "{name}");
        }
    }
}
