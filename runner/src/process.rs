//! What the runner says about a process: full command line, label, cwd.

use std::path::PathBuf;

/// Description of the process that holds a listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    /// Full command line, arguments joined by spaces.
    pub command: String,
    /// Base name of the command's first word (`node`, `python3`).
    pub label: String,
    /// Working directory, when readable.
    pub cwd: Option<PathBuf>,
}

impl ProcessInfo {
    /// Builds the description from argv and cwd.
    pub fn from_argv(argv: &[String], cwd: Option<PathBuf>) -> Self {
        let command = argv.join(" ");
        let label = argv
            .first()
            .map(|first| first.rsplit('/').next().unwrap_or(first).to_string())
            .unwrap_or_default();
        ProcessInfo { command, label, cwd }
    }
}
