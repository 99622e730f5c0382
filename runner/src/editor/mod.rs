//! The local editor (PROTOCOL.md section 8): code-server for an allowed cwd,
//! listening on a Unix socket of mode 0600 in the runner's private state
//! directory, so only the runner's user (and through the runner, Kandan)
//! can reach it. A password-less code-server on a loopback port would hand
//! a shell to every local user.
//!
//! [`Editors`] is the registry: one editor per cwd, each in its own process
//! group and its own folder (`<state>/editors/<editorId>/`: user data,
//! extensions, XDG dirs, the socket), removed when it stops. What happens is
//! reported as wire events on a channel (`local_editor_started`,
//! `local_editor_stopped`, `control_error` `editor_failed`); the cwd must
//! already have passed the cwd policy (section 6).

mod binary;
mod collaboration;
mod dirs;
pub(crate) mod fetch;
mod healthz;
mod id;
mod process;
mod registry;
mod state_dir;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::wire::EditorStopReason as StopReason;
pub(crate) use binary::{DEFAULT_PROGRAM, code_server_status, resolve_code_server};
pub(crate) use collaboration::CollaborationError;
pub use collaboration::KandanAccess;
pub use id::EditorId;
pub use registry::EditorInfo;
pub use registry::{Editors, StartRequest};
pub(crate) use state_dir::private_state_dir;

/// How the registry starts editors.
#[derive(Clone, Debug)]
pub struct EditorConfig {
    /// The code-server program: a path, or a name looked up on `PATH` at
    /// each start ([`resolve_code_server`]).
    pub code_server: PathBuf,
    /// The runner's private state directory ([`private_state_dir`]); the
    /// editors' folders go under `editors/` inside it.
    pub state_dir: PathBuf,
    /// Kandan's HTTP origin and the token, for the collaboration assets;
    /// `None` refuses starts that ask for collaboration.
    pub kandan: Option<KandanAccess>,
    /// How long code-server may take to answer (listening line and
    /// `/healthz`).
    pub ready_timeout: Duration,
    /// Where each editor gets its cgroup (none by default: its session
    /// and marker hold it).
    pub(crate) containment: crate::cgroup::Containment,
}

impl EditorConfig {
    /// The runner's configuration: `code_server` from `--code-server-bin` /
    /// `KANDAN_CODE_SERVER_BIN` (else `code-server`, looked up on `PATH` at
    /// each start), the private state directory, and Kandan's origin from
    /// `url` with `token` for the collaboration assets (`None` when the URL
    /// has no usable origin: collaboration starts then fail).
    pub(crate) fn for_runner(
        code_server: Option<PathBuf>,
        url: &str,
        token: &str,
    ) -> Result<Self, EditorError> {
        Ok(EditorConfig::new(
            code_server.unwrap_or_else(|| PathBuf::from(DEFAULT_PROGRAM)),
            private_state_dir()?,
            KandanAccess::from_url(url, token).ok(),
        ))
    }

    /// The defaults: a 30 s start limit (a loaded two-core machine needs
    /// several seconds; 0.6 s is usual).
    pub fn new(code_server: PathBuf, state_dir: PathBuf, kandan: Option<KandanAccess>) -> Self {
        EditorConfig {
            code_server,
            state_dir,
            kandan,
            ready_timeout: Duration::from_secs(30),
            containment: crate::cgroup::Containment::Unavailable("not asked for".to_string()),
        }
    }
}

/// Errors of the local editor.
#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    /// Neither `XDG_STATE_HOME` nor `HOME` names a directory.
    #[error("no state directory: neither XDG_STATE_HOME nor HOME is an absolute path")]
    NoStateDir,
    /// The state directory or an editor's folder cannot be created or set up.
    #[error("cannot set up {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state directory is not a directory of this user (a symlink, a
    /// file, another owner): its sockets would not be private.
    #[error("{path} is not a private directory of this user (owner uid {owner})")]
    StateDirNotPrivate { path: PathBuf, owner: u32 },
    /// The socket path does not fit in a Unix socket address.
    #[error("the socket path {path} is too long for a Unix socket ({len} bytes, at most {max})")]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    /// No code-server program was found.
    #[error("code-server not found: `{program}` (set --code-server-bin or KANDAN_CODE_SERVER_BIN)")]
    CodeServerNotFound { program: PathBuf },
    /// The cwd is not an absolute path of a directory.
    #[error("the cwd {0} is not an absolute path of a directory")]
    BadCwd(PathBuf),
    /// Its cwd was withdrawn (`update_runner_config`) while it was starting,
    /// or its directory moved out of every allowed root before `exec`.
    #[error("the cwd {} is no longer allowed", .0.display())]
    CwdWithdrawn(PathBuf),
    /// No random bytes for the editor id.
    #[error("cannot draw an editor id")]
    Random(#[source] getrandom::Error),
    /// code-server could not be started.
    #[error("cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// code-server exited before it answered.
    #[error("code-server exited with status {code} before it answered; its last lines:\n{tail}")]
    ExitedEarly { code: i32, tail: String },
    /// code-server did not answer in time.
    #[error("code-server did not answer within {timeout:?} ({stage}); its last lines:\n{tail}")]
    NotReady {
        timeout: Duration,
        stage: &'static str,
        tail: String,
    },
    /// The collaboration set-up failed.
    #[error("collaboration")]
    Collaboration(#[from] CollaborationError),
    /// The runner is stopping: no new editor.
    #[error("the runner is stopping")]
    ShuttingDown,
    /// No running editor has this id.
    #[error("no running editor {0}")]
    UnknownEditor(String),
    /// The editor's socket refused the connection.
    #[error("cannot connect to the editor's socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
