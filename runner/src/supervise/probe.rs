//! Short-lived helper processes the runner starts and waits for (`doctor`'s
//! `codex --version`, `code-server --version`): like the command's tree,
//! they get none of the runner's secret variables and no capabilities
//! (PROTOCOL.md section 5, "Privilege").

use std::path::Path;
use std::process::{Command, Stdio};

use super::child_setup::{self, ParentDeath};

/// A command for `program` with the runner's secrets scrubbed, stdin
/// closed, and the ambient and inheritable capabilities dropped before
/// `exec`.
pub(crate) fn command(program: &Path) -> Command {
    let mut command = Command::new(program);
    super::environment::scrub(&mut command);
    command.stdin(Stdio::null());
    let parent_death = ParentDeath::for_this_thread();
    // SAFETY: only the async-signal-safe calls of child_setup (prctl,
    // getppid, capget/capset) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            child_setup::in_child(parent_death, None)
        });
    }
    command
}
