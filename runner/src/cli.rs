//! Command line, exactly as PROTOCOL.md section 1 specifies it.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::cgroup::ContainmentChoice;
use crate::config::{Config, PortRule};

use crate::config::PortRange;
use crate::detect::{BackendChoice, DetectorConfig};
use crate::pipeline::{CommandPattern, IgnorePolicy};

/// kandan-runner: notices the TCP listeners of a process tree and forwards
/// the approved ones to Kandan.
#[derive(Debug, Parser)]
#[command(name = "kandan-runner", version = crate::version::LONG, long_version = crate::version::LONG, about)]
pub(crate) struct Cli {
    /// Config file (TOML); flags and environment variables win over it.
    /// Default: `$XDG_CONFIG_HOME/kandan-runner/config.toml`.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Flags every command takes: how stderr speaks.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Logs and state lines on stderr as text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub(crate) log_format: crate::logging::LogFormat,
    /// No state lines (connected, ports, ...); warnings and errors still print.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
}

impl OutputArgs {
    pub(crate) fn output(&self) -> crate::logging::Output {
        crate::logging::Output {
            format: self.log_format,
            quiet: self.quiet,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the listeners of the roots' process trees as they open, change and close.
    Watch(WatchArgs),
    /// Run the whole pipeline against Kandan.
    // Boxed: its flags make it much larger than the other variants.
    Connect(Box<ConnectArgs>),
    /// Say which detector backends work here and why the others do not.
    Doctor(DoctorArgs),
    /// List the running runners' listeners, Kandan connection, instances and editors.
    Status(crate::status::StatusArgs),
    /// Install, remove or print the systemd unit (launchd plist on macOS).
    Service(crate::service::ServiceArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man(ManArgs),
}

// The arguments of `completions` and `man` live here with the others;
// `cli_docs` renders this definition (so it imports `cli`, not back).

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub(crate) shell: CompletionShell,
}

/// The shells of PROTOCOL.md section 1 (clap_complete knows more).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write kandan-runner.1 and a page per subcommand (kandan-runner-watch.1,
    /// ...) into DIR instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// Flags shared by `watch` and `connect`.
#[derive(Debug, Args)]
pub(crate) struct DetectorArgs {
    /// Detector backend; `auto` picks the best that works here.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub(crate) backend: BackendChoice,
    /// How long a listener must live before it is reported (and how long a
    /// close is held), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 750)]
    pub(crate) debounce_ms: u64,
    /// Watch this process and its descendants (repeatable).
    #[arg(long = "root-pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) root_pids: Vec<u32>,
    /// Scan interval of the polling backends (procfs, libproc), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) poll_interval_ms: u64,
    /// Never report this port or range, e.g. `9229` or `6000-6100` (repeatable).
    #[arg(long = "ignore-port", value_name = "PORT[-PORT]", value_parser = str::parse::<PortRange>)]
    pub(crate) ignore_ports: Vec<PortRange>,
    /// Never report listeners whose command line matches this pattern (repeatable).
    #[arg(long = "ignore-command", value_name = "PATTERN", value_parser = str::parse::<CommandPattern>)]
    pub(crate) ignore_commands: Vec<CommandPattern>,
    /// Drop the built-in ignore list (debugger and language-server ports).
    #[arg(long)]
    pub(crate) no_default_ignores: bool,
    /// What holds the processes the runner starts: a cgroup v2 each where
    /// one can be created (`auto`), cgroups or an error (`cgroup`), or
    /// process groups and pid ancestry (`process-group`).
    #[arg(long, value_enum, default_value_t = ContainmentChoice::Auto)]
    pub(crate) containment: ContainmentChoice,
    /// Command to start as a root; the runner exits with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
    /// The config file's `[[ports]]` entries (no flag).
    #[arg(skip)]
    pub(crate) ports: Vec<PortRule>,
    /// The built-in secret rules plus the config file's `redact` names (no
    /// flag).
    #[arg(skip)]
    pub(crate) redactor: crate::redact::Redactor,
}

impl DetectorArgs {
    pub(crate) fn detector_config(&self) -> DetectorConfig {
        DetectorConfig {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            ..DetectorConfig::default()
        }
    }

    pub(crate) fn ignore_policy(&self) -> IgnorePolicy {
        IgnorePolicy::from_cli(
            self.no_default_ignores,
            self.ignore_ports.iter().copied(),
            self.ignore_commands.iter().cloned(),
        )
    }

    pub(crate) fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Show command lines with their secrets replaced by `***`, as Kandan
    /// gets them.
    #[arg(long)]
    pub(crate) redact: bool,
    #[command(flatten)]
    pub(crate) detector: DetectorArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Kandan's socket mount, e.g. `wss://kandan.example/runner/socket`.
    #[arg(long, env = "KANDAN_URL")]
    pub(crate) url: String,
    #[command(flatten)]
    pub(crate) identity: RunnerIdentity,
    /// Largest request body forwarded to a local server, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub(crate) max_request_body: usize,
    /// Largest buffered response body sent back to Kandan, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub(crate) max_response_body: usize,
    /// Time to connect to a local server, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) connect_timeout_ms: u64,
    /// Time for a whole buffered request (or a streamed response's head), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) request_timeout_ms: u64,
    /// Heartbeat period (the contract's 30 s; shorter for tests).
    #[arg(long, value_name = "MS", default_value_t = 30_000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) heartbeat_ms: u64,
    /// code-server for `start_local_editor`; else `code-server` on `PATH`.
    #[arg(long, env = "KANDAN_CODE_SERVER_BIN", value_name = "PATH")]
    pub(crate) code_server_bin: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) codex: CodexArgs,
    #[command(flatten)]
    pub(crate) detector: DetectorArgs,
}

/// Codex instances (PROTOCOL.md sections 6 and 7).
#[derive(Debug, Args)]
pub(crate) struct CodexArgs {
    /// A directory Kandan may start code in (repeatable): of Kandan's
    /// `allowedCwds`, only those under one of these count.
    #[arg(long = "allow-cwd", value_name = "DIR")]
    pub(crate) allow_cwd: Vec<PathBuf>,
    /// The `codex` binary for instances (default: `codex` on PATH).
    #[arg(long, value_name = "PATH", env = "KANDAN_CODEX_BIN")]
    pub(crate) codex_bin: Option<PathBuf>,
    /// Streamed deltas of one item within this many milliseconds go to
    /// Kandan as one notification (0: each on its own).
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub(crate) stream_flush_ms: u64,
    /// A running turn with no notification for this many milliseconds is
    /// interrupted.
    #[arg(long, value_name = "MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) turn_idle_timeout_ms: u64,
}

/// Who the runner is to Kandan: its token and its id (`connect`, and
/// `doctor --url`).
#[derive(Debug, Args)]
pub(crate) struct RunnerIdentity {
    /// Runner token (sent as the `token` query parameter). Shown by `ps`:
    /// prefer `--token-file` or `KANDAN_TOKEN`.
    #[arg(long, env = "KANDAN_TOKEN", hide_env_values = true, default_value = "")]
    pub(crate) token: String,
    /// File holding the runner token, read once at start (surrounding
    /// whitespace trimmed), so the token stays out of `ps`. `-` reads it
    /// from standard input, which is then replaced by /dev/null (the
    /// system service's `StandardInput=file:`). Takes the place of
    /// `KANDAN_TOKEN`; conflicts with `--token`.
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
    /// Runner id: the channel topic is `runner:<id>`. Defaults to the host name.
    #[arg(long, env = "KANDAN_RUNNER_ID")]
    pub(crate) runner_id: Option<String>,
}

impl RunnerIdentity {
    /// The token: the content of `--token-file`, else `--token` or
    /// `KANDAN_TOKEN`; `None` when there is none.
    pub(crate) fn token(&self) -> Result<Option<String>, TokenFileError> {
        let token = &self.token;
        let Some(path) = &self.token_file else {
            return Ok((!token.is_empty()).then(|| token.to_owned()));
        };
        let path = path.clone();
        // clap cannot tell `--token` from `KANDAN_TOKEN` in a conflict rule;
        // only the flag conflicts, the environment gives way to the file.
        let from_env = std::env::var("KANDAN_TOKEN").is_ok_and(|env| &env == token);
        if !token.is_empty() && !from_env {
            return Err(TokenFileError::WithToken);
        }
        let text = crate::token_file::read(&path).map_err(|source| TokenFileError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty { path });
        }
        Ok(Some(token.to_owned()))
    }
}

/// Errors of reading `--token-file` (exit 2, like any bad flag value).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenFileError {
    /// The file cannot be read.
    #[error("--token-file {}: cannot read it", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Both `--token` and `--token-file` were given.
    #[error("--token-file cannot be used with --token")]
    WithToken,
    /// The file holds nothing but whitespace.
    #[error("--token-file {}: the file is empty", path.display())]
    Empty { path: PathBuf },
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// One JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also connect to Kandan's socket mount, join and leave, reporting
    /// each step (DNS, TCP, TLS, WebSocket upgrade, join).
    #[arg(long, env = "KANDAN_URL")]
    pub(crate) url: Option<String>,
    /// The token and id to join with, as `connect` has them.
    #[command(flatten)]
    pub(crate) identity: RunnerIdentity,
    /// The `codex` binary to check, as `connect --codex-bin` (default:
    /// `codex` on PATH).
    #[arg(long, value_name = "PATH", env = "KANDAN_CODEX_BIN")]
    pub(crate) codex_bin: Option<PathBuf>,
    /// The code-server to check, as `connect --code-server-bin` (default:
    /// `code-server` on PATH).
    #[arg(long, env = "KANDAN_CODE_SERVER_BIN", value_name = "PATH")]
    pub(crate) code_server_bin: Option<PathBuf>,
}

/// Parses the process arguments and the config file. Bad flags or values
/// print a one-line error naming the flag, a bad config file one naming the
/// file, line and key; both exit 2. `--help` and `--version` print and
/// exit 0.
pub(crate) fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {}", crate::error_chain(&err));
            std::process::exit(2);
        }
    };
    let mut cli = match parse_with(&config, &args) {
        Ok(cli) => cli,
        Err(err) => exit_on_error(err),
    };
    let detector = match &mut cli.command {
        Command::Watch(args) => Some(&mut args.detector),
        Command::Connect(args) => Some(&mut args.detector),
        _ => None,
    };
    if let Some(detector) = detector {
        detector.ports = config.ports().to_vec();
        detector.redactor = crate::redact::Redactor::new(config.redact());
    }
    cli
}

/// The config file `args` name with `--config`, else the default one. A
/// first, lenient pass over `args` finds `--config` wherever it is.
fn load_config(args: &[std::ffi::OsString]) -> Result<Config, crate::config::ConfigError> {
    use clap::error::ErrorKind;
    let explicit = match Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
    {
        Ok(matches) => config_flag(&matches),
        // Help and version need no config, and must work with a bad one.
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            return Ok(Config::default());
        }
        Err(_) => None,
    };
    Config::load(explicit.as_deref())
}

fn config_flag(matches: &ArgMatches) -> Option<PathBuf> {
    if let Ok(Some(path)) = matches.try_get_one::<PathBuf>("config") {
        return Some(path.clone());
    }
    matches.subcommand().and_then(|(_, sub)| config_flag(sub))
}

/// Parses `args` with `config`'s values as the flags' defaults.
pub(crate) fn parse_with(config: &Config, args: &[std::ffi::OsString]) -> Result<Cli, ParseError> {
    // A token from the command line or the environment wins over the
    // file's `token_file`; `--token-file` itself is a flag like any other.
    let token_given = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()
        .and_then(|matches| {
            let (_, sub) = matches.subcommand()?;
            if !sub.ids().any(|id| id.as_str() == "token") {
                return None;
            }
            let source = sub.value_source("token")?;
            Some(source != ValueSource::DefaultValue)
        })
        .unwrap_or(false);
    let skip: &[&str] = if token_given { &["token_file"] } else { &[] };
    let command = config.apply_to(Cli::command(), skip)?;
    let matches = command.try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// Why [`parse_with`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    /// A bad config file value.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Bad flags, or `--help` / `--version`.
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

fn exit_on_error(err: ParseError) -> ! {
    let err = match err {
        ParseError::Config(err) => {
            eprintln!("error: {}", crate::error_chain(&err));
            std::process::exit(2);
        }
        ParseError::Clap(err) => err,
    };
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        err.exit();
    }
    if matches!(
        err.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        eprintln!(
            "error: a subcommand is required: watch, connect, doctor, status, service, completions or man (see --help)"
        );
        std::process::exit(2);
    }
    // clap's first paragraph, on one line: it names the flag (a
    // missing one is on the line after "not provided:").
    let rendered = err.render().to_string();
    let first: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    eprintln!("{}", first.join(" "));
    std::process::exit(2);
}
