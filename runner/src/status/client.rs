//! `kandan-runner status`: asks every runner of this user and prints what
//! they say. Sockets nobody answers on (a runner killed with SIGKILL) are
//! removed on the way.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StatusArgs;
use crate::logging::Output;
use crate::report::document::{RunnerStatus, StatusReport};
use crate::report::{Report, escape};

/// Every runner's answer must be complete within this of the start of
/// `status`, however slowly its socket trickles bytes: one deadline for the
/// whole answer, not a timeout per read. Runners are asked in parallel.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// A larger answer is not a runner's.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Sockets asked at most (one thread each); more is not a person's runners.
const MAX_SOCKETS: usize = 256;

/// Exit code when no runner is running.
const NONE_RUNNING: i32 = 1;

/// Runs `status` and returns the exit code: 0 when a runner answered,
/// 1 when none is running, 2 when the state directory is unusable.
pub(crate) fn run(args: &StatusArgs, output: Output) -> i32 {
    let printer = Report::new(output);
    let dir = match super::state_dir() {
        Ok(dir) => dir,
        Err(reason) => {
            printer.error(reason);
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
                printer.error(format!("cannot write the status: {err}"));
                return 1;
            }
        }
    } else if !report.runners.is_empty() {
        print!("{}", render(&report));
    }
    if report.runners.is_empty() {
        printer.error(format!(
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
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| super::pid_of(path).is_some())
        .collect();
    if paths.len() > MAX_SOCKETS {
        tracing::warn!(
            "{} runner sockets in {}: asking the first {MAX_SOCKETS}",
            paths.len(),
            dir.display()
        );
        paths.truncate(MAX_SOCKETS);
    }
    // One thread per socket, not waited for past the deadline: even a
    // `connect` that blocks (a listener whose backlog is full) cannot hold
    // the answer up.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut pending = vec![false; paths.len()];
    for (index, path) in paths.iter().enumerate() {
        let (tx, path) = (tx.clone(), path.clone());
        let asked = std::thread::Builder::new()
            .name("status-ask".into())
            .spawn(move || {
                let _ = tx.send((index, ask(&path, deadline)));
            });
        match asked {
            Ok(_) => pending[index] = true,
            Err(err) => tracing::warn!("{}: cannot ask: {err}", paths[index].display()),
        }
    }
    drop(tx);
    let mut runners = Vec::new();
    while pending.contains(&true) {
        let left = deadline.saturating_duration_since(Instant::now());
        // A little past the deadline: the readers time out on it themselves.
        let Ok((index, status)) = rx.recv_timeout(left + Duration::from_millis(100)) else {
            break;
        };
        pending[index] = false;
        runners.extend(status);
    }
    for (path, _) in paths.iter().zip(&pending).filter(|(_, pending)| **pending) {
        tracing::warn!("{}: no answer within {ANSWER_TIMEOUT:?}", path.display());
    }
    runners.sort_by_key(|runner| runner.pid);
    runners
}

/// One runner's state; `None` (and the socket removed) when none listens.
fn ask(path: &Path, deadline: Instant) -> Option<RunnerStatus> {
    let stream = match UnixStream::connect(path) {
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
    let text = match read_until(stream, deadline) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!("{}: no answer: {err}", path.display());
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(status) => Some(status),
        Err(err) => {
            tracing::warn!("{}: unreadable answer: {err}", path.display());
            None
        }
    }
}

/// The whole of `stream` until EOF, failing with `TimedOut` once
/// `deadline` passes: each read may wait only for the time that is left.
fn read_until(stream: UnixStream, deadline: Instant) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut stream = stream;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("not complete within {ANSWER_TIMEOUT:?}"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(err) => return Err(err),
        };
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() as u64 > MAX_ANSWER {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("larger than {MAX_ANSWER} bytes"),
            ));
        }
    }
    String::from_utf8(bytes).map_err(|err| std::io::Error::new(ErrorKind::InvalidData, err))
}

/// The human-readable table.
fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    for runner in &report.runners {
        out.push_str(&format!(
            "{} (pid {}, backend {}, since {})\n",
            escape(&runner.command),
            runner.pid,
            escape(&runner.backend),
            escape(&runner.started)
        ));
        if let Some(kandan) = &runner.kandan {
            let mut line = format!(
                "  kandan  {} as runner:{}: {} since {}",
                escape(&kandan.url),
                escape(&kandan.runner_id),
                escape(&kandan.state),
                escape(&kandan.since)
            );
            if let Some(attempts) = kandan.attempts.filter(|n| *n > 0) {
                line.push_str(&format!(", {attempts} attempts"));
            }
            if let Some(error) = &kandan.last_error {
                line.push_str(&format!(" ({})", escape(error)));
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
                escape(&instance.instance_id),
                escape(&instance.state),
                escape(&instance.cwd),
                instance.usage.describe()
            ));
        }
        for editor in &runner.editors {
            out.push_str(&format!(
                "  editor {}  {}  {}{}\n",
                escape(&editor.editor_id),
                escape(&editor.state),
                escape(&editor.cwd),
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
            // Every cell a process chose goes through `escape`.
            [
                l.port.to_string(),
                state,
                l.label.clone(),
                l.pid.to_string(),
                l.addresses.join(","),
                l.cwd.clone().unwrap_or_else(|| "-".into()),
                l.command.clone(),
            ]
            .map(|cell| escape(&cell).into_owned())
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
    use crate::report::document::{KandanStatus, ListenerStatus};

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
                    state: Some("pending".into()),
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
        assert!(row.contains("pending") && row.contains("vite") && row.contains("node vite"));
    }

    #[test]
    fn the_table_escapes_what_processes_chose() {
        let report = StatusReport {
            runners: vec![RunnerStatus {
                command: "connect".into(),
                listeners: vec![ListenerStatus {
                    port: 5173,
                    label: "x\x1b[2J".into(),
                    command: "node \x1b]0;owned\x07 \u{9b}31m".into(),
                    cwd: Some("/tmp/\r".into()),
                    ..ListenerStatus::default()
                }],
                ..RunnerStatus::default()
            }],
        };
        let text = render(&report);
        assert!(
            !text.contains(|c: char| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains("node \\x1b]0;owned\\x07 \\u{9b}31m"),
            "{text}"
        );
        assert!(text.contains("/tmp/\\r"), "{text}");
    }

    #[test]
    fn a_trickling_socket_gets_one_deadline() {
        let (mut writer, reader) = UnixStream::pair().unwrap();
        let trickle = std::thread::spawn(move || {
            use std::io::Write;
            for _ in 0..20 {
                if writer.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let start = Instant::now();
        let err = read_until(reader, start + Duration::from_millis(500)).unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(took < Duration::from_millis(900), "{took:?}");
        trickle.join().unwrap();
    }
}
