//! `kandan-runner service install|uninstall|print [--user]`: a systemd unit
//! (a launchd plist on macOS) that runs `connect` with the least privilege
//! the eBPF detector needs, or none for a user service.

mod account;
mod files;
mod launchd;
mod layout;
mod systemd;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use layout::{Layout, Scope};

#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    #[command(subcommand)]
    pub(crate) action: ServiceAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceAction {
    /// Write the unit and, if there is none, a template environment file
    /// (mode 0600); print the systemctl line to run.
    Install(UnitArgs),
    /// Remove the unit (the environment file and the token stay).
    Uninstall(ScopeArgs),
    /// Print the unit (or launchd plist) for review.
    Print(PrintArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ScopeArgs {
    /// A user service (`~/.config/systemd/user`) instead of a system one. It
    /// gets no capabilities, so the runner uses the procfs backend.
    #[arg(long)]
    pub(crate) user: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UnitArgs {
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// The user the system service runs as. Default: the user behind `sudo`
    /// ($SUDO_USER), else the one running this command; never root unless
    /// named here.
    #[arg(long, value_name = "USER", conflicts_with = "user")]
    pub(crate) run_as: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PrintArgs {
    #[command(flatten)]
    pub(crate) unit: UnitArgs,
    /// Service manager to print for; the default is this system's.
    #[arg(long, value_enum, default_value_t = ServiceFormat::native())]
    pub(crate) format: ServiceFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServiceFormat {
    /// A systemd unit (Linux).
    Systemd,
    /// A launchd property list (macOS).
    Launchd,
}

impl ServiceFormat {
    fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }
}

/// Errors of the `service` commands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// `--run-as` names no user of this system.
    #[error("--run-as {0}: no such user")]
    UnknownUser(String),
    /// Neither `--run-as`, `$SUDO_USER` nor the current uid give a name.
    #[error("--run-as: cannot tell which user the service should run as; pass --run-as USER")]
    NoInvokingUser,
    /// The default would be root (no `sudo`): the agent's tree would run
    /// as root. Only an explicit `--run-as root` gives that.
    #[error(
        "--run-as: the service would run as root; pass --run-as USER (the user whose agent it serves), or --run-as root if you mean it"
    )]
    RootByDefault,
    /// A user service needs a home directory.
    #[error("--user: HOME is not set to an absolute path")]
    NoHome,
    /// The path of the running binary is unknown.
    #[error("cannot find the path of this kandan-runner binary")]
    CurrentExe(#[source] std::io::Error),
    /// A file or directory could not be written, read or removed.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system service's files are root's.
    #[error(
        "cannot {action} {}: permission denied (a system service needs root: use sudo, or --user)",
        path.display()
    )]
    NeedsRoot { action: &'static str, path: PathBuf },
    /// install and uninstall write systemd units only.
    #[error(
        "service {0} needs systemd; on macOS save `kandan-runner service print` to ~/Library/LaunchAgents/kandan-runner.plist and use launchctl"
    )]
    Unsupported(&'static str),
}

impl ServiceError {
    /// For a system service, a permission error says what to do.
    fn for_scope(self, scope: &Scope) -> Self {
        match self {
            Self::Io {
                action,
                path,
                source,
            } if *scope != Scope::User && source.kind() == std::io::ErrorKind::PermissionDenied => {
                Self::NeedsRoot { action, path }
            }
            other => other,
        }
    }

    /// 2 for bad flags or values (PROTOCOL.md section 1), else 1.
    fn exit_code(&self) -> i32 {
        match self {
            Self::UnknownUser(_) | Self::NoInvokingUser | Self::RootByDefault | Self::NoHome => 2,
            _ => 1,
        }
    }
}

/// Runs a `service` command; exit code.
pub(crate) fn run(args: &ServiceArgs, output: crate::logging::Output) -> i32 {
    match run_action(&args.action) {
        Ok(()) => 0,
        Err(err) => {
            crate::report::Report::new(output).error(crate::error_chain(&err));
            err.exit_code()
        }
    }
}

fn run_action(action: &ServiceAction) -> Result<(), ServiceError> {
    match action {
        ServiceAction::Print(args) => {
            let layout = layout(&args.unit)?;
            let text = match args.format {
                ServiceFormat::Systemd => systemd::unit(&layout),
                ServiceFormat::Launchd => {
                    let url = std::env::var("KANDAN_URL")
                        .ok()
                        .filter(|url| !url.is_empty());
                    launchd::plist(&layout, url.as_deref())
                }
            };
            warn_if_replaceable(&layout);
            warn_if_unstable(&layout.exe);
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .map_err(|source| ServiceError::Io {
                    action: "write to",
                    path: "stdout".into(),
                    source,
                })
        }
        ServiceAction::Install(args) => {
            if cfg!(target_os = "macos") {
                return Err(ServiceError::Unsupported("install"));
            }
            let layout = layout(args)?;
            warn_if_replaceable(&layout);
            files::install(&layout).map_err(|err| err.for_scope(&layout.scope))?;
            // Once installed: a failed install has nothing to warn about.
            warn_if_unstable(&layout.exe);
            Ok(())
        }
        ServiceAction::Uninstall(args) => {
            if cfg!(target_os = "macos") {
                return Err(ServiceError::Unsupported("uninstall"));
            }
            // Who it runs as does not matter to where its files are.
            let scope = if args.user {
                Scope::User
            } else {
                Scope::System {
                    run_as: String::new(),
                }
            };
            let layout = Layout::new(scope, PathBuf::new())?;
            files::uninstall(&layout).map_err(|err| err.for_scope(&layout.scope))
        }
    }
}

fn layout(args: &UnitArgs) -> Result<Layout, ServiceError> {
    let scope = if args.scope.user {
        Scope::User
    } else {
        let run_as = match &args.run_as {
            Some(user) => user.clone(),
            None => match account::invoking_user().ok_or(ServiceError::NoInvokingUser)? {
                user if user == "root" => return Err(ServiceError::RootByDefault),
                user => user,
            },
        };
        if !account::exists(&run_as) {
            return Err(ServiceError::UnknownUser(run_as));
        }
        Scope::System { run_as }
    };
    let exe = std::env::current_exe().map_err(ServiceError::CurrentExe)?;
    Layout::new(scope, exe)
}

/// Why `exe` is no place for a service to start from, if it is not: a
/// build output (`target/debug` of a clone), a temporary directory, or
/// both (a clone under /tmp), which a rebuild, `cargo clean` or a reboot
/// changes or removes.
fn unstable_location(exe: &std::path::Path) -> Option<&'static str> {
    let temporary = [std::env::temp_dir(), "/tmp".into(), "/var/tmp".into()]
        .iter()
        .any(|dir| exe.starts_with(dir));
    let parts: Vec<_> = exe.components().map(|c| c.as_os_str()).collect();
    // `<target>/{debug,release}/...` or `<target>/<triple>/{debug,release}/...`.
    let built = parts
        .windows(2)
        .any(|pair| pair[0] == "target" && (pair[1] == "debug" || pair[1] == "release"))
        || parts
            .windows(3)
            .any(|three| three[0] == "target" && (three[2] == "debug" || three[2] == "release"));
    match (built, temporary) {
        (true, true) => Some("a cargo build directory inside a temporary directory"),
        (true, false) => Some("a cargo build directory"),
        (false, true) => Some("a temporary directory"),
        (false, false) => None,
    }
}

/// Says so when the unit would start a binary that will not stay where it
/// is (the unit is written all the same: it may be what the person wants).
fn warn_if_unstable(exe: &std::path::Path) {
    if let Some(place) = unstable_location(exe) {
        eprintln!(
            "warning: the unit starts {}, in {place}: a rebuild, `cargo clean` or removing it breaks the service; install the binary first (`cargo install --path runner --root /usr/local`, or `install -m 0755 {} /usr/local/bin/`) and run `service` from that copy",
            exe.display(),
            exe.display()
        );
    }
}

/// A system service hands its capabilities to whatever binary ExecStart
/// names: say so when someone other than root could replace it.
fn warn_if_replaceable(layout: &Layout) {
    use std::os::unix::fs::MetadataExt;
    if layout.scope == Scope::User {
        return;
    }
    let replaceable = |path: &std::path::Path| {
        path.metadata()
            .map(|meta| meta.uid() != 0 || meta.mode() & 0o022 != 0)
            .unwrap_or(true)
    };
    let dir = layout.exe.parent().unwrap_or(&layout.exe);
    if replaceable(&layout.exe) || replaceable(dir) {
        eprintln!(
            "warning: {} can be replaced by a user other than root, who would then run with the service's capabilities; install it first, e.g. `install -m 0755 {} /usr/local/bin/` and run that copy",
            layout.exe.display(),
            layout.exe.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::unstable_location;
    use std::path::Path;

    #[test]
    fn build_outputs_and_temporary_directories_are_no_place_for_a_service() {
        for (exe, place) in [
            (
                "/tmp/clone/target/debug/kandan-runner",
                "a cargo build directory inside a temporary directory",
            ),
            (
                "/home/u/src/kandan/target/release/kandan-runner",
                "a cargo build directory",
            ),
            (
                "/home/u/src/kandan/target/x86_64-unknown-linux-musl/release/kandan-runner",
                "a cargo build directory",
            ),
            ("/var/tmp/kandan-runner", "a temporary directory"),
        ] {
            assert_eq!(unstable_location(Path::new(exe)), Some(place), "{exe}");
        }
        for exe in [
            "/usr/local/bin/kandan-runner",
            "/usr/bin/kandan-runner",
            "/home/u/.cargo/bin/kandan-runner",
            "/opt/target/kandan-runner",
        ] {
            assert!(unstable_location(Path::new(exe)).is_none(), "{exe}");
        }
    }
}
