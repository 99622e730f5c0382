//! `kandan-runner status`: every running `connect` and `watch` of this user
//! serves its state ([`crate::report::document::RunnerStatus`]) on a Unix socket in the
//! private state directory (mode 0700; the socket 0600), named by its pid;
//! `status` asks each one and prints what they say.

mod client;
mod server;

use std::path::{Path, PathBuf};

pub(crate) use client::run;
pub(crate) use client::running;
pub(crate) use server::serve;

/// Socket names: `runner-<pid>.sock`.
const PREFIX: &str = "runner-";
const SUFFIX: &str = ".sock";

fn socket_name(pid: u32) -> String {
    format!("{PREFIX}{pid}{SUFFIX}")
}

/// The pid a socket's name carries, if it is one of ours.
fn pid_of(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The private state directory, created (0700) if needed.
fn state_dir() -> Result<PathBuf, String> {
    crate::editor::private_state_dir().map_err(|err| crate::error_chain(&err))
}

#[derive(clap::Args, Debug)]
pub(crate) struct StatusArgs {
    /// One JSON document on stdout: `{"runners":[...]}`.
    #[arg(long)]
    pub(crate) json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_carry_the_pid() {
        let name = socket_name(4242);
        assert_eq!(name, "runner-4242.sock");
        assert_eq!(pid_of(Path::new(&format!("/s/{name}"))), Some(4242));
        assert_eq!(pid_of(Path::new("/s/editor-1.sock")), None);
        assert_eq!(pid_of(Path::new("/s/runner-x.sock")), None);
    }
}
