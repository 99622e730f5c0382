//! `kandan-runner status`: asks every runner of this user and prints what
//! they say. Sockets nobody answers on (a runner killed with SIGKILL) are
//! removed on the way.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::StatusArgs;
use super::document::{RunnerStatus, StatusReport};

/// A runner that does not answer within this is skipped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Exit code when no runner is running.
const NONE_RUNNING: i32 = 1;

/// Runs `status` and returns the exit code: 0 when a runner answered,
/// 1 when none is running, 2 when the state directory is unusable.
pub fn run(args: &StatusArgs) -> i32 {
    let dir = match super::state_dir() {
        Ok(dir) => dir,
        Err(reason) => {
            crate::report::error(reason);
            return 2;
        }
    };
    let report = StatusReport {
        runners: ask_all(&dir),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                crate::report::error(format!("cannot write the status: {err}"));
                return 1;
            }
        }
    } else if !report.runners.is_empty() {
        print!("{}", render(&report));
    }
    if report.runners.is_empty() {
        crate::report::error(format!(
            "no kandan-runner is running for this user (none answers in {})",
            dir.display()
        ));
        return NONE_RUNNING;
    }
    0
}

/// Every runner of this user that answers on its status socket (none when
/// the state directory is unusable).
pub(crate) fn running() -> Vec<RunnerStatus> {
    super::state_dir().map_or_else(|_| Vec::new(), |dir| ask_all(&dir))
}

fn ask_all(dir: &Path) -> Vec<RunnerStatus> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runners: Vec<RunnerStatus> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| super::pid_of(path).is_some())
        .filter_map(|path| ask(&path))
        .collect();
    runners.sort_by_key(|runner| runner.pid);
    runners
}

/// One runner's state; `None` (and the socket removed) when none listens.
fn ask(path: &Path) -> Option<RunnerStatus> {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::NotFound
            ) =>
        {
            // Nobody listens: its runner is gone.
            tracing::info!("removing {}: no runner answers there", path.display());
            let _ = std::fs::remove_file(path);
            return None;
        }
        Err(err) => {
            tracing::warn!("{}: {err}", path.display());
            return None;
        }
    };
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let mut text = String::new();
    if let Err(err) = stream.read_to_string(&mut text) {
        tracing::warn!("{}: no answer: {err}", path.display());
        return None;
    }
    match serde_json::from_str(&text) {
        Ok(status) => Some(status),
        Err(err) => {
            tracing::warn!("{}: unreadable answer: {err}", path.display());
            None
        }
    }
}

/// The human-readable table.
fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    for runner in &report.runners {
        out.push_str(&format!(
            "{} (pid {}, backend {}, since {})\n",
            runner.command, runner.pid, runner.backend, runner.started
        ));
        if let Some(kandan) = &runner.kandan {
            let mut line = format!(
                "  kandan  {} as runner:{}: {} since {}",
                kandan.url, kandan.runner_id, kandan.state, kandan.since
            );
            if let Some(attempts) = kandan.attempts.filter(|n| *n > 0) {
                line.push_str(&format!(", {attempts} attempts"));
            }
            if let Some(error) = &kandan.last_error {
                line.push_str(&format!(" ({error})"));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if runner.listeners.is_empty() {
            out.push_str("  no listeners\n");
        } else {
            out.push_str(&listener_table(runner));
        }
        for instance in &runner.instances {
            out.push_str(&format!(
                "  instance {}  {}  {}{}\n",
                instance.instance_id,
                instance.state,
                instance.cwd,
                instance.usage.describe()
            ));
        }
        for editor in &runner.editors {
            out.push_str(&format!(
                "  editor {}  {}  {}{}\n",
                editor.editor_id,
                editor.state,
                editor.cwd,
                editor.usage.describe()
            ));
        }
    }
    out
}

fn listener_table(runner: &RunnerStatus) -> String {
    let header = [
        "PORT",
        "STATE",
        "LABEL",
        "PID",
        "ADDRESSES",
        "CWD",
        "COMMAND",
    ];
    let rows: Vec<[String; 7]> = runner
        .listeners
        .iter()
        .map(|l| {
            let state = match (&l.state, &l.scheme) {
                (Some(state), Some(scheme)) => format!("{state} ({scheme})"),
                (Some(state), None) => state.clone(),
                (None, _) => "-".into(),
            };
            [
                l.port.to_string(),
                state,
                l.label.clone(),
                l.pid.to_string(),
                l.addresses.join(","),
                l.cwd.clone().unwrap_or_else(|| "-".into()),
                l.command.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(&format!(" {cell}"));
            } else {
                text.push_str(&format!(" {cell:<width$}", width = widths[i]));
            }
        }
        text.push('\n');
        text
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::document::{KandanStatus, ListenerStatus};

    #[test]
    fn the_table_names_each_port_and_its_state() {
        let report = StatusReport {
            runners: vec![RunnerStatus {
                pid: 7,
                command: "connect".into(),
                backend: "procfs".into(),
                started: "2026-11-29T23:00:00.000Z".into(),
                kandan: Some(KandanStatus {
                    url: "ws://k/runner/socket".into(),
                    runner_id: "laptop".into(),
                    state: "connected".into(),
                    since: "2026-11-29T23:00:01.000Z".into(),
                    ..KandanStatus::default()
                }),
                listeners: vec![ListenerStatus {
                    port: 5173,
                    label: "vite".into(),
                    pid: 9,
                    command: "node vite".into(),
                    state: Some("waiting".into()),
                    addresses: vec!["127.0.0.1".into()],
                    ..ListenerStatus::default()
                }],
                ..RunnerStatus::default()
            }],
        };
        let text = render(&report);
        assert!(text.contains("connect (pid 7"), "{text}");
        assert!(
            text.contains("ws://k/runner/socket as runner:laptop: connected"),
            "{text}"
        );
        let row = text.lines().find(|l| l.contains("5173")).unwrap();
        assert!(row.contains("waiting") && row.contains("vite") && row.contains("node vite"));
    }
}
