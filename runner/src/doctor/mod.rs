//! `kandan-runner doctor`: which backends work here and why the others do
//! not, which Codex instances would run, and with `--url` whether Kandan
//! can be reached and joined (`connection`).

mod connection;
mod join;
mod report;

use crate::cli::DoctorArgs;
use crate::control::JoinInfo;
use crate::detect::{self, BackendKind, BackendStatus};

/// Prints the report. Exit code: 0 when at least one backend works (and,
/// with `--url`, every connection step passed); 1 when no backend works or
/// Kandan cannot be reached; 2 for a bad `--url` or token file; 3 when
/// Kandan refused the runner (token, socket path, join).
pub(crate) fn run(args: &DoctorArgs) -> i32 {
    // Flags first: a bad token file is a bad flag value, whatever else holds.
    let token = match args.identity.token() {
        Ok(token) => token,
        Err(err) => {
            eprintln!("error: {}", crate::error_chain(&err));
            return 2;
        }
    };
    let statuses = detect::statuses();
    let auto = statuses.iter().find(|s| s.available).map(|s| s.backend);
    let connection = args
        .url
        .as_deref()
        .map(|url| check_connection(url, token.as_deref(), args.identity.runner_id.clone(), auto));
    // The local editor and Codex instances are optional: they never change
    // the exit code.
    // The flags `connect` takes, resolved as `connect` resolves them.
    let code_server = (args.code_server_bin.as_deref()).map(crate::program::from_runner_cwd);
    let code_server = crate::editor::code_server_status(code_server.as_deref());
    let codex_bin = (args.codex_bin.as_deref()).map(crate::program::from_runner_cwd);
    let codex = crate::codex::probe(codex_bin.as_deref());
    let containment = containment();
    let mut lines = Vec::new();
    if args.json {
        let mut report = serde_json::json!({
            "backends": statuses, "auto": auto, "codeServer": code_server, "codex": codex,
            "containment": containment,
        });
        if let Some(connection) = &connection {
            report["connection"] = serde_json::json!(connection);
        }
        lines.push(report.to_string());
    } else {
        lines.extend(human(&statuses));
        lines.push(match auto {
            Some(backend) => format!("auto: {backend}"),
            None => "auto: none works here".to_owned(),
        });
        lines.push(format!("containment: {}", containment.detail));
        lines.push(match (&code_server.version, &code_server.reason) {
            (Some(version), _) => format!("code-server {version}"),
            (None, Some(reason)) => format!("code-server unavailable: {reason}"),
            (None, None) => "code-server unavailable".to_owned(),
        });
        lines.push(match (&codex.path, &codex.version, &codex.error) {
            (Some(path), Some(version), _) => format!("codex: {version} ({})", path.display()),
            (_, _, Some(error)) => format!("codex: unavailable: {error}"),
            _ => "codex: unavailable".to_owned(),
        });
        if let Some(connection) = &connection {
            lines.extend(connection.human());
        }
    }
    print_lines(&lines);
    match connection {
        Some(connection) if connection.exit != 0 => connection.exit,
        _ if auto.is_some() => 0,
        _ => 1,
    }
}

/// What holds the processes a runner would start here (PROTOCOL.md section
/// 5): found as `connect` finds it, by creating this runner's cgroup folder,
/// then removed.
#[derive(serde::Serialize)]
struct ContainmentReport {
    /// `cgroup` or `process-group`.
    mechanism: &'static str,
    detail: String,
}

fn containment() -> ContainmentReport {
    use crate::cgroup::{Containment, ContainmentChoice};
    let containment = match Containment::start(ContainmentChoice::Auto) {
        Ok(containment) => containment,
        Err(err) => Containment::Unavailable(crate::error_chain(&err)),
    };
    let report = ContainmentReport {
        mechanism: if containment.is_cgroups() {
            "cgroup"
        } else {
            "process-group"
        },
        detail: containment.describe(),
    };
    containment.remove();
    report
}

/// Runs the `--url` check on a runtime of its own (the rest of `doctor`
/// needs none), joining as `connect` would with the same flags.
fn check_connection(
    url: &str,
    token: Option<&str>,
    runner_id: Option<String>,
    auto: Option<BackendKind>,
) -> report::DoctorReport {
    let hostname = crate::connect::hostname();
    let runner_id = runner_id.unwrap_or_else(|| hostname.clone());
    let leave_out = live_runner(&runner_id);
    let join = JoinInfo {
        runner_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname,
        os: std::env::consts::OS.to_string(),
        backend: auto.map_or_else(|| "none".to_owned(), |kind| kind.to_string()),
        config_version: 0,
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(connection::check(url, token, join, leave_out)),
        Err(err) => {
            report::DoctorReport::not_run(url, &format!("cannot start the async runtime: {err}"))
        }
    }
}

/// Why the join is left out: a `connect` of this user runs as `runner_id`
/// (its status socket answers), and Kandan gives a runner's channel to the
/// latest join, so joining would take the live runner's place.
fn live_runner(runner_id: &str) -> Option<String> {
    let live = crate::status::running().into_iter().find(|runner| {
        (runner.kandan.as_ref()).is_some_and(|kandan| kandan.runner_id == runner_id)
    })?;
    let kandan = live.kandan.as_ref()?;
    Some(format!(
        "left out: kandan-runner (pid {}) is {} as runner:{runner_id} to {}, and joining its channel would take its place; stop it, or pass another --runner-id, to check the join",
        live.pid, kandan.state, kandan.url
    ))
}

/// Prints to stdout; a closed stdout (`doctor | head -2`) ends the printing
/// quietly instead of a panic.
fn print_lines(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}

fn human(statuses: &[BackendStatus]) -> Vec<String> {
    let mut lines = Vec::new();
    for s in statuses {
        // Display ignores the width: pad the name itself.
        let name = s.backend.to_string();
        match &s.reason {
            None => lines.push(format!("{name:<8} ok")),
            Some(reason) => {
                lines.push(format!("{name:<8} unavailable: {reason}"));
                if let Some(fix) = &s.fix {
                    lines.push(format!("{:<8} fix: {fix}", ""));
                }
            }
        }
    }
    lines
}
