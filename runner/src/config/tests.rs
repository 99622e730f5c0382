use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::project::PROJECT_FILE;
use super::*;
use crate::cli::{Cli, Command, ParseError, parse_with};
use crate::detect::BackendChoice;
use crate::detect::process_info::ProcessInfo;

const PATH: &str = "/home/u/.config/kandan-runner/config.toml";

fn config(text: &str) -> Result<Config, ConfigError> {
    Config::from_text(PathBuf::from(PATH), text.to_owned())
}

fn error(text: &str) -> String {
    crate::error_chain(&config(text).expect_err("the config must be refused"))
}

fn process(command: &str, cwd: Option<&Path>) -> ProcessInfo {
    let argv: Vec<String> = command.split(' ').map(str::to_string).collect();
    ProcessInfo::from_argv(&argv, cwd.map(Path::to_path_buf))
}

fn args(words: &[&str]) -> Vec<OsString> {
    std::iter::once("kandan-runner")
        .chain(words.iter().copied())
        .map(OsString::from)
        .collect()
}

fn cli(text: &str, words: &[&str]) -> Result<Cli, ParseError> {
    parse_with(&config(text).unwrap(), &args(words))
}

/// The example of PROTOCOL.md section 1, word for word.
const EXAMPLE: &str = r#"
url = "wss://kandan.example/runner/socket"
token_file = "~/.config/kandan-runner/token"
runner_id = "laptop"
backend = "auto"              # the detector flags, by their long names
debounce_ms = 750
allow_cwd = ["~/src"]
codex_bin = "codex"
stream_flush_ms = 50

[[ports]]                     # first match wins; `port` is "N" or "N-M",
port = "9229-9230"            # `command` a glob over the command line
on_detect = "ignore"          # ask (default) | silent | ignore
[[ports]]
command = "*vite*"
label = "web"
protocol = "auto"             # http | https | auto
"#;

#[test]
fn reads_the_protocol_example() {
    let config = config(EXAMPLE).unwrap();
    assert_eq!(config.ports().len(), 2);
    let debugger = process("node --inspect server.js", None);
    let attributes = ports::first_match(config.ports(), 9230, &debugger).unwrap();
    assert_eq!(attributes.on_detect, OnDetect::Ignore);
    let vite = process("node /x/node_modules/.bin/vite --port 5173", None);
    let attributes = ports::first_match(config.ports(), 5173, &vite).unwrap();
    assert_eq!(attributes.label.as_deref(), Some("web"));
    assert_eq!(attributes.protocol, Protocol::Auto);
    assert_eq!(attributes.on_detect, OnDetect::Ask);
    assert!(ports::first_match(config.ports(), 3000, &debugger).is_none());
}

#[test]
fn an_empty_file_is_no_config() {
    let config = config("# nothing here\n").unwrap();
    assert!(config.ports().is_empty());
    assert!(config.redact().is_empty());
}

#[test]
fn unknown_keys_name_the_file_line_and_key() {
    let message = error("url = \"ws://h/s\"\n\ndebounce = 5\n");
    assert_eq!(message, format!("config {PATH}:3: unknown key `debounce`"));

    let message = error("[[ports]]\nport = 3000\nlable = \"x\"\n");
    assert_eq!(
        message,
        format!("config {PATH}:3: ports[0]: unknown key `lable`")
    );

    // The token itself has no key: `token_file` only.
    let message = error("token = \"secret\"\n");
    assert_eq!(message, format!("config {PATH}:1: unknown key `token`"));
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn bad_values_name_the_line_and_key() {
    let message = error("[[ports]]\nport = 1\n[[ports]]\nport = 2\non_detect = \"never\"\n");
    assert!(
        message.starts_with(&format!(
            "config {PATH}:5: ports[1].on_detect: unknown variant `never`"
        )),
        "{message}"
    );
    let message = error("[[ports]]\ncommand = \"*x*\"\nprotocol = \"ftp\"\n");
    assert!(
        message.starts_with(&format!(
            "config {PATH}:3: ports[0].protocol: unknown variant `ftp`"
        )),
        "{message}"
    );
    let message = error("[[ports]]\nport = \"9230-9229\"\n");
    assert!(
        message.starts_with(&format!("config {PATH}:2: ports[0].port: ")),
        "{message}"
    );
    assert!(message.contains("9230-9229"), "{message}");
    for bad in ["\"0\"", "70000", "\"http\"", "\"1-2-3\"", "-5"] {
        let message = error(&format!("[[ports]]\nport = {bad}\n"));
        assert!(
            message.starts_with(&format!("config {PATH}:2: ports[0].port: ")),
            "{bad}: {message}"
        );
    }
    let message = error("debounce_ms = \"fast\"\n");
    assert!(
        message.starts_with(&format!("config {PATH}:1: debounce_ms: invalid type")),
        "{message}"
    );
    let message = error("# a comment\nurl = [1]\n");
    assert!(
        message.starts_with(&format!("config {PATH}:2: url: ")),
        "{message}"
    );
    let message = error("url = \n");
    assert!(
        message.starts_with(&format!("config {PATH}:1: ")),
        "{message}"
    );
}

#[test]
fn a_port_entry_needs_a_port_or_a_command() {
    let message = error("[[ports]]\nport = 1\n\n[[ports]]\nlabel = \"x\"\n");
    assert!(message.starts_with(&format!("config {PATH}:")), "{message}");
    assert!(message.contains("ports[1]"), "{message}");
    assert!(message.contains("needs `port` or `command`"), "{message}");
    let message = error("[[ports]]\ncommand = \"\"\n");
    assert!(
        message.contains("ports[0].command: empty command pattern"),
        "{message}"
    );
    let message = error(&format!(
        "[[ports]]\nport = 1\nlabel = \"{}\"\n",
        "x".repeat(101)
    ));
    assert!(message.contains("longer than 100"), "{message}");
    let message = error("[[ports]]\nport = 1\nlabel = \" \"\n");
    assert!(message.contains("`label` is empty"), "{message}");
    let message = error("[[ports]]\ncommand = \"[x\"\n");
    assert!(
        message.contains("ports[0].command: invalid pattern"),
        "{message}"
    );
}

#[test]
fn first_match_wins_and_both_parts_must_match() {
    let config = config(
        r#"
[[ports]]
port = 3000
command = "*rails*"
label = "rails"
[[ports]]
port = "3000-3999"
on_detect = "silent"
[[ports]]
command = "python? -m http.server*"
label = "files"
protocol = "https"
"#,
    )
    .unwrap();
    let rules = config.ports();
    let rails = process("ruby bin/rails server -p 3000", None);
    let node = process("node server.js", None);
    let http = process("python3 -m http.server 8000", None);
    assert_eq!(
        ports::first_match(rules, 3000, &rails)
            .unwrap()
            .label
            .as_deref(),
        Some("rails")
    );
    // Port matches the first entry, command does not: the second one.
    let second = ports::first_match(rules, 3000, &node).unwrap();
    assert_eq!(
        (second.label.as_deref(), second.on_detect),
        (None, OnDetect::Silent)
    );
    // The second one also wins over the third for a port in its range.
    assert_eq!(
        ports::first_match(rules, 3500, &http).unwrap().on_detect,
        OnDetect::Silent
    );
    let third = ports::first_match(rules, 8000, &http).unwrap();
    assert_eq!(
        (third.label.as_deref(), third.protocol),
        (Some("files"), Protocol::Https)
    );
    assert!(ports::first_match(rules, 8000, &node).is_none());
    // The glob spans the whole line: no substring match without `*`.
    let config2 = config_ports("command = \"vite\"");
    assert!(ports::first_match(&config2, 1, &process("node /x/vite", None)).is_none());
    assert!(ports::first_match(&config2, 1, &process("vite", None)).is_some());
    let config3 = config_ports("command = \"*/.bin/vite *\"");
    assert!(
        ports::first_match(
            &config3,
            1,
            &process("node /x/node_modules/.bin/vite --port 1", None)
        )
        .is_some()
    );
}

fn config_ports(entry: &str) -> Vec<PortRule> {
    config(&format!("[[ports]]\n{entry}\n"))
        .unwrap()
        .ports()
        .to_vec()
}

#[test]
fn ports_accept_numbers_and_strings() {
    for (spec, inside, outside) in [
        ("8080", 8080, 8081),
        ("\"8080\"", 8080, 8079),
        ("\"6000-6100\"", 6100, 6101),
    ] {
        let rules = config_ports(&format!("port = {spec}"));
        let any = process("x", None);
        assert!(ports::first_match(&rules, inside, &any).is_some(), "{spec}");
        assert!(
            ports::first_match(&rules, outside, &any).is_none(),
            "{spec}"
        );
    }
}

fn connect_args(cli: Cli) -> Box<crate::cli::ConnectArgs> {
    match cli.command {
        Command::Connect(args) => args,
        other => panic!("not connect: {other:?}"),
    }
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let text = "url = \"ws://file/socket\"\ndebounce_ms = 500\nbackend = \"procfs\"\nallow_cwd = [\"/srv\", \"/opt\"]\nstream_flush_ms = 0\nignore_port = [\"7000-7001\"]\nno_default_ignores = true\n";
    let args = connect_args(cli(text, &["connect"]).unwrap());
    assert_eq!(args.url, "ws://file/socket");
    assert_eq!(args.detector.debounce_ms, 500);
    assert_eq!(args.detector.backend, BackendChoice::Procfs);
    assert_eq!(
        args.codex.allow_cwd,
        [PathBuf::from("/srv"), PathBuf::from("/opt")]
    );
    assert_eq!(args.codex.stream_flush_ms, 0);
    assert!(args.detector.no_default_ignores);
    assert_eq!(args.detector.ignore_ports.len(), 1);
    // Untouched keys keep the built-in defaults.
    assert_eq!(args.detector.poll_interval_ms, 1000);
    assert_eq!(args.max_request_body, 16 << 20);

    let args = connect_args(
        cli(
            text,
            &[
                "connect",
                "--url",
                "ws://flag/socket",
                "--debounce-ms",
                "20",
                "--allow-cwd",
                "/tmp",
            ],
        )
        .unwrap(),
    );
    assert_eq!(args.url, "ws://flag/socket");
    assert_eq!(args.detector.debounce_ms, 20);
    assert_eq!(args.codex.allow_cwd, [PathBuf::from("/tmp")]);
    assert_eq!(args.detector.backend, BackendChoice::Procfs);

    // `watch` takes the detector keys and ignores the connection's.
    let watch = match cli(text, &["watch"]).unwrap().command {
        Command::Watch(args) => args,
        other => panic!("{other:?}"),
    };
    assert_eq!(watch.detector.debounce_ms, 500);
}

#[test]
fn the_config_flag_goes_anywhere() {
    let parsed = cli("", &["watch", "--config", "/x.toml"]).unwrap();
    assert_eq!(parsed.config.as_deref(), Some(Path::new("/x.toml")));
    let parsed = cli("", &["--config", "/y.toml", "watch"]).unwrap();
    assert_eq!(parsed.config.as_deref(), Some(Path::new("/y.toml")));
}

#[test]
fn values_the_flag_refuses_name_the_line_and_key() {
    let err = cli("\n\npoll_interval_ms = 0\n", &["watch"]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "config {PATH}:3: poll_interval_ms: invalid value '0'"
        )),
        "{message}"
    );
    let err = cli("backend = \"bpf\"\n", &["watch"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("config {PATH}:1: backend: invalid value 'bpf'")),
        "{err}"
    );
    let err = cli("ignore_port = [\"9000\", \"x\"]\n", &["watch"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("config {PATH}:1: ignore_port: ")),
        "{err}"
    );
}

#[test]
fn a_token_given_elsewhere_beats_the_files_token_file() {
    let text = "url = \"ws://h/s\"\ntoken_file = \"/nonexistent/token\"\n";
    let args = connect_args(cli(text, &["connect"]).unwrap()).identity;
    assert_eq!(
        args.token_file.as_deref(),
        Some(Path::new("/nonexistent/token"))
    );
    let args = connect_args(cli(text, &["connect", "--token", "t"]).unwrap()).identity;
    assert_eq!(args.token_file, None);
    assert_eq!(args.token().unwrap().as_deref(), Some("t"));
}

#[test]
fn home_is_expanded_in_paths() {
    let home = std::env::var("HOME").unwrap();
    assert_eq!(
        expand_home("~/src"),
        format!("{}/src", home.trim_end_matches('/'))
    );
    assert_eq!(expand_home("~"), home.trim_end_matches('/'));
    assert_eq!(expand_home("~other/src"), "~other/src");
    assert_eq!(expand_home("/abs/~/x"), "/abs/~/x");
    let args = connect_args(
        cli(
            "url = \"ws://h/s\"\nallow_cwd = [\"~/src\"]\ncodex_bin = \"~/bin/codex\"\n",
            &["connect"],
        )
        .unwrap(),
    );
    assert_eq!(args.codex.allow_cwd, [PathBuf::from(expand_home("~/src"))]);
    assert_eq!(
        args.codex.codex_bin,
        Some(PathBuf::from(expand_home("~/bin/codex")))
    );
}

#[test]
fn a_missing_explicit_file_is_an_error_a_missing_default_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Config::load(Some(&missing)).unwrap_err();
    assert_eq!(
        crate::error_chain(&err)
            .split(": ")
            .take(2)
            .collect::<Vec<_>>(),
        [
            format!("config {}", missing.display()),
            "cannot read it".to_owned()
        ]
    );
    let present = dir.path().join("c.toml");
    std::fs::write(&present, "debounce_ms = 5\n").unwrap();
    assert_eq!(
        Config::load(Some(&present)).unwrap().path.as_deref(),
        Some(present.as_path())
    );
}

fn write_project(cwd: &Path, text: &str) {
    std::fs::create_dir_all(cwd.join(".kandan")).unwrap();
    std::fs::write(cwd.join(PROJECT_FILE), text).unwrap();
}

#[test]
fn project_files_add_entries_after_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    write_project(
        cwd,
        "[[ports]]\nport = 4000\nlabel = \"api\"\n[[ports]]\nport = 4001\non_detect = \"silent\"\n",
    );
    let user = config("[[ports]]\nport = 4001\nlabel = \"mine\"\n").unwrap();
    let mut resolver = AttributeResolver::new(user.ports().to_vec());
    let here = process("node api.js", Some(cwd));
    assert_eq!(
        resolver.attributes(4000, &here).label.as_deref(),
        Some("api")
    );
    // The user's entry comes first.
    let mine = resolver.attributes(4001, &here);
    assert_eq!(
        (mine.label.as_deref(), mine.on_detect),
        (Some("mine"), OnDetect::Ask)
    );
    // Another cwd does not see this project's file.
    let elsewhere = process("node api.js", Some(Path::new("/")));
    assert_eq!(
        resolver.attributes(4000, &elsewhere),
        PortAttributes::default()
    );
    assert_eq!(
        resolver.attributes(4000, &process("node", None)),
        PortAttributes::default()
    );

    // Changed on disk (a later mtime): read again.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    write_project(cwd, "[[ports]]\nport = 4000\nlabel = \"api2\"\n");
    std::fs::File::options()
        .write(true)
        .open(cwd.join(PROJECT_FILE))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        resolver.attributes(4000, &here).label.as_deref(),
        Some("api2")
    );
}

#[test]
fn a_bad_project_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mut resolver = AttributeResolver::default();
    let here = process("node api.js", Some(cwd));
    // Anything but `[[ports]]` makes the whole file void.
    write_project(
        cwd,
        "url = \"ws://evil/socket\"\n[[ports]]\nport = 4000\nlabel = \"api\"\n",
    );
    assert_eq!(resolver.attributes(4000, &here), PortAttributes::default());
    // Not a file: ignored, and no hang on a FIFO.
    std::fs::remove_file(cwd.join(PROJECT_FILE)).unwrap();
    let fifo = std::ffi::CString::new(cwd.join(PROJECT_FILE).to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert_eq!(resolver.attributes(4000, &here), PortAttributes::default());
}

#[test]
fn the_output_keys_apply_to_every_command() {
    let text = "log_format = \"json\"\nquiet = true\n";
    for words in [&["watch"][..], &["doctor"], &["status"]] {
        let parsed = cli(text, words).unwrap();
        assert_eq!(
            parsed.output.log_format,
            crate::logging::LogFormat::Json,
            "{words:?}"
        );
        assert!(parsed.output.quiet, "{words:?}");
    }
    let parsed = cli(text, &["watch", "--log-format", "text"]).unwrap();
    assert_eq!(parsed.output.log_format, crate::logging::LogFormat::Text);
    let err = cli("\nlog_format = \"xml\"\n", &["watch"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("config {PATH}:2: log_format: invalid value 'xml'")),
        "{err}"
    );
}
