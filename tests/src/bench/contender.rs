//! The three contenders, each a process that prints one JSON line per
//! listener event: `kandan-runner watch --json --backend ebpf|procfs
//! --debounce-ms 0 --root-pid P`, and the baseline (`bench-detect baseline
//! --root-pid P`). A reader thread timestamps every line as it arrives.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::clock::monotonic_ns;
use super::guard::Guarded;
use super::procstat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    Ebpf,
    Procfs,
    Baseline,
}

impl Contender {
    pub const ALL: [Contender; 3] = [Contender::Ebpf, Contender::Procfs, Contender::Baseline];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Ebpf => "ebpf",
            Contender::Procfs => "procfs",
            Contender::Baseline => "baseline",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// How long to wait for one listener before calling it missed.
    pub fn detect_timeout(self) -> Duration {
        match self {
            Contender::Ebpf => Duration::from_secs(2),
            Contender::Procfs => Duration::from_secs(5),
            Contender::Baseline => Duration::from_secs(10),
        }
    }

    /// Random pause before each listener, as long as one poll period, so a
    /// poller's listeners do not all open just after its previous scan.
    pub fn jitter(self) -> Duration {
        match self {
            Contender::Ebpf => Duration::from_millis(5),
            Contender::Procfs => Duration::from_millis(1000),
            Contender::Baseline => super::baseline::POLL_INTERVAL,
        }
    }
}

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub runner: PathBuf,
    pub bench: PathBuf,
}

/// One line of a contender's stdout, timestamped on arrival.
#[derive(Debug)]
pub struct Line {
    pub at_ns: u64,
    pub event: String,
    pub port: u16,
}

/// A contender that started and named the expected backend.
pub struct Running {
    pub contender: Contender,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<Vec<String>>>,
    guard: Guarded,
    /// Set when it broke the command-line contract in a way worth reporting.
    pub contract_note: Option<String>,
}

/// How long a contender may take to say which backend it runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Stderr lines kept for error messages.
const STDERR_KEPT: usize = 20;

impl Running {
    /// Starts `contender` watching `root`. `Ok(Err(reason))` when it runs
    /// but not with the expected backend (or not at all): the reason goes
    /// into the report instead of failing the whole bench.
    pub fn start(
        contender: Contender,
        bins: &Binaries,
        root: u32,
    ) -> Result<std::result::Result<Running, String>> {
        let mut command = match contender {
            Contender::Baseline => {
                let mut command = Command::new(&bins.bench);
                command.args(["baseline", "--root-pid", &root.to_string()]);
                command
            }
            backend => {
                let mut command = Command::new(&bins.runner);
                command.args([
                    "watch",
                    "--json",
                    "--backend",
                    backend.name(),
                    "--debounce-ms",
                    "0",
                    "--root-pid",
                    &root.to_string(),
                ]);
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = Guarded::spawn(command, contender.name())?;
        let stdout = guard.child().stdout.take().expect("piped stdout");
        let stderr = guard.child().stderr.take().expect("piped stderr");

        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut text = String::new();
            while matches!(reader.read_line(&mut text), Ok(n) if n > 0) {
                let at_ns = monotonic_ns();
                if let Some(line) = parse_line(at_ns, &text)
                    && line_tx.send(line).is_err()
                {
                    break;
                }
                text.clear();
            }
        });
        // Stderr lines go to `early_tx` until the backend line has passed,
        // then only the first few are kept for error messages.
        let (early_tx, early_rx) = mpsc::channel::<String>();
        let kept = Arc::new(Mutex::new(Vec::new()));
        let kept_by_reader = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut early = Some(early_tx);
            for line in BufReader::new(stderr).lines().map_while(|line| line.ok()) {
                let line = strip_ansi(&line);
                if let Some(tx) = &early {
                    let done = line.starts_with("backend:");
                    let _ = tx.send(line.clone());
                    if done {
                        early = None;
                    }
                }
                let mut kept = kept_by_reader.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < STDERR_KEPT {
                    kept.push(line);
                }
            }
        });

        let expected = format!("backend: {}", contender.name());
        let deadline = Instant::now() + START_TIMEOUT;
        let mut before = Vec::new();
        let backend_line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match early_rx.recv_timeout(left) {
                Ok(line) if line.starts_with("backend:") => break Some(line),
                Ok(line) => before.push(line),
                Err(_) => break None,
            }
        };
        Ok(match backend_line {
            Some(line) if line == expected || line.starts_with(&format!("{expected} ")) => {
                // PROTOCOL.md: the first stderr line names the backend.
                let contract_note = before.first().map(|first| {
                    format!("contract: its first stderr line was `{first}`, not the backend line")
                });
                Ok(Running {
                    contender,
                    lines,
                    stderr: kept,
                    guard,
                    contract_note,
                })
            }
            Some(line) => Err(format!("it said `{line}`")),
            None => {
                let said = before.join(" | ");
                let status = guard.child().try_wait().ok().flatten();
                Err(match status {
                    Some(status) => format!("it exited ({status}): {said}"),
                    None => format!("it named no backend on stderr within 30 s: {said}"),
                })
            }
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// When the `event` line for `port` arrived; `None` after `timeout`.
    /// Lines before it (closes of earlier ports, say) are skipped.
    pub fn wait_for(&self, event: &str, port: u16, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.event == event && line.port == port => return Some(line.at_ns),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Forgets the lines received so far.
    pub fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Peak RSS so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        procstat::peak_rss_kib(self.pid()).ok()
    }

    /// Resident set now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        procstat::rss_kib(self.pid()).ok()
    }

    /// The last lines it wrote on stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        kept.join(" | ")
    }
}

fn parse_line(at_ns: u64, text: &str) -> Option<Line> {
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    Some(Line {
        at_ns,
        event: value.get("event")?.as_str()?.to_string(),
        port: u16::try_from(value.get("port")?.as_u64()?).ok()?,
    })
}

/// `text` without ANSI colour sequences (tracing colours its stderr).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours() {
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn parses_event_and_port() {
        let line = parse_line(
            7,
            r#"{"event":"opened","port":5173,"pid":1,"backend":"ebpf"}"#,
        )
        .unwrap();
        assert_eq!(
            (line.at_ns, line.event.as_str(), line.port),
            (7, "opened", 5173)
        );
        assert!(parse_line(7, "backend: ebpf").is_none());
    }
}
