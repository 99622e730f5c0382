//! The baseline: what the TypeScript runner did. Every 2 s it runs
//! `ps -A -o pid=,ppid=` to find the roots' descendants and
//! `lsof -nP -iTCP -sTCP:LISTEN` to find listeners, and reports a port once
//! it has been seen for 750 ms (so at the second poll that sees it). It
//! prints the same JSON lines as `kandan-runner watch --json`, with
//! `"backend":"baseline"`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
pub const STABILITY: Duration = Duration::from_millis(750);

/// Runs the baseline watcher of `roots` until killed.
pub fn run(roots: &[u32]) -> Result<()> {
    eprintln!("backend: baseline (ps + lsof every 2 s, 750 ms stability)");
    let self_pid = std::process::id();
    let mut tracker = Tracker::default();
    let start = Instant::now();
    let mut stdout = std::io::stdout().lock();
    for tick in 1u32.. {
        let now = Instant::now();
        match poll(roots, self_pid) {
            Ok(listeners) => {
                for line in tracker.update(now, &listeners) {
                    writeln!(stdout, "{line}")?;
                    stdout.flush()?;
                }
            }
            Err(err) => eprintln!("baseline: poll failed: {err:#}"),
        }
        let next = start + POLL_INTERVAL * tick;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(())
}

/// One listening socket as lsof shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub pid: u32,
    pub addr: String,
}

/// One poll: `ps`, then `lsof`, keeping the listeners of the roots' trees.
pub fn poll(roots: &[u32], self_pid: u32) -> Result<Vec<Listener>> {
    let ps = output(Command::new("ps").args(["-A", "-o", "pid=,ppid="]), &[0])?;
    let tree = descendants(roots, &ps);
    // lsof exits 1 when it finds nothing.
    let lsof = output(
        Command::new("lsof").args(["-nP", "-iTCP", "-sTCP:LISTEN"]),
        &[0, 1],
    )?;
    Ok(parse_lsof(&lsof)
        .into_iter()
        .filter(|listener| listener.pid != self_pid && tree.contains(&listener.pid))
        .collect())
}

fn output(command: &mut Command, ok_codes: &[i32]) -> Result<String> {
    let name = command.get_program().to_string_lossy().into_owned();
    let out = command
        .stderr(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {name}"))?;
    match out.status.code() {
        Some(code) if ok_codes.contains(&code) => Ok(String::from_utf8_lossy(&out.stdout).into()),
        _ => bail!("{name} failed: {}", out.status),
    }
}

/// The roots and all their descendants, from `ps -o pid=,ppid=` output.
pub fn descendants(roots: &[u32], ps: &str) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for line in ps.lines() {
        let mut words = line.split_whitespace().map(str::parse::<u32>);
        if let (Some(Ok(pid)), Some(Ok(ppid))) = (words.next(), words.next()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut tree: HashSet<u32> = roots.iter().copied().collect();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if tree.insert(child) {
                stack.push(child);
            }
        }
    }
    tree
}

/// Listeners from `lsof -nP -iTCP -sTCP:LISTEN` output.
pub fn parse_lsof(lsof: &str) -> Vec<Listener> {
    lsof.lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.last() != Some(&"(LISTEN)") || words.len() < 4 {
                return None;
            }
            let pid = words.get(1)?.parse().ok()?;
            let name = words[words.len() - 2];
            let (host, port) = name.rsplit_once(':')?;
            let ipv6 = words.contains(&"IPv6");
            let addr = match host {
                "*" if ipv6 => "::".to_string(),
                "*" => "0.0.0.0".to_string(),
                host => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            };
            Some(Listener {
                port: port.parse().ok()?,
                pid,
                addr,
            })
        })
        .collect()
}

struct Seen {
    first_seen: Instant,
    pid: u32,
    addresses: BTreeSet<String>,
    reported: bool,
}

/// Stability window and change detection over successive polls.
#[derive(Default)]
pub struct Tracker {
    ports: BTreeMap<u16, Seen>,
}

impl Tracker {
    /// The JSON lines that the poll taken at `now` gives.
    pub fn update(&mut self, now: Instant, listeners: &[Listener]) -> Vec<String> {
        let mut current: BTreeMap<u16, (u32, BTreeSet<String>)> = BTreeMap::new();
        for listener in listeners {
            let entry = current
                .entry(listener.port)
                .or_insert_with(|| (listener.pid, BTreeSet::new()));
            entry.1.insert(listener.addr.clone());
        }
        let mut lines = Vec::new();
        self.ports.retain(|port, seen| {
            let gone = !current.contains_key(port);
            if gone && seen.reported {
                lines.push(closed_line(*port, seen.pid));
            }
            !gone
        });
        for (port, (pid, addresses)) in current {
            let seen = self.ports.entry(port).or_insert(Seen {
                first_seen: now,
                pid,
                addresses: addresses.clone(),
                reported: false,
            });
            let changed = seen.pid != pid;
            seen.pid = pid;
            seen.addresses = addresses;
            if !seen.reported && now.duration_since(seen.first_seen) >= STABILITY {
                seen.reported = true;
                lines.push(open_line("opened", port, seen));
            } else if seen.reported && changed {
                lines.push(open_line("changed", port, seen));
            }
        }
        lines
    }
}

fn open_line(event: &str, port: u16, seen: &Seen) -> String {
    let argv: Vec<String> = std::fs::read(format!("/proc/{}/cmdline", seen.pid))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let label = argv
        .first()
        .map(|first| first.rsplit('/').next().unwrap_or(first).to_string())
        .unwrap_or_default();
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", seen.pid))
        .ok()
        .map(|cwd| cwd.display().to_string());
    serde_json::json!({
        "event": event,
        "port": port,
        "pid": seen.pid,
        "command": argv.join(" "),
        "label": label,
        "cwd": cwd,
        "addresses": seen.addresses,
        "backend": "baseline",
    })
    .to_string()
}

fn closed_line(port: u16, pid: u32) -> String {
    serde_json::json!({"event": "closed", "port": port, "pid": pid, "backend": "baseline"})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LSOF: &str = "\
COMMAND   PID USER   FD   TYPE DEVICE SIZE/OFF NODE NAME
python3  4242 root    3u  IPv4 123456      0t0  TCP 127.0.0.1:8000 (LISTEN)
node      222 root   20u  IPv6 1234        0t0  TCP *:5173 (LISTEN)
node      222 root   21u  IPv6 1235        0t0  TCP [::1]:5174 (LISTEN)
node      222 root   22u  IPv4 1236        0t0  TCP *:5173 (LISTEN)
";

    #[test]
    fn parses_lsof_listeners_and_wildcards() {
        let listeners = parse_lsof(LSOF);
        let seen: Vec<(u16, u32, &str)> = listeners
            .iter()
            .map(|l| (l.port, l.pid, l.addr.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (8000, 4242, "127.0.0.1"),
                (5173, 222, "::"),
                (5174, 222, "::1"),
                (5173, 222, "0.0.0.0")
            ]
        );
    }

    #[test]
    fn descendants_follow_ppid_links_only_below_the_roots() {
        let ps = "  1 0\n 10 1\n 11 10\n 12 11\n 20 1\n 21 20\n";
        let tree = descendants(&[10], ps);
        assert_eq!(tree, HashSet::from([10, 11, 12]));
    }

    #[test]
    fn reports_after_the_stability_window_and_closes_once() {
        let mut tracker = Tracker::default();
        let t0 = Instant::now();
        let l = |port| Listener {
            port,
            pid: std::process::id(),
            addr: "127.0.0.1".into(),
        };
        assert!(tracker.update(t0, &[l(8000)]).is_empty());
        let lines = tracker.update(t0 + POLL_INTERVAL, &[l(8000)]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains(r#""event":"opened""#), "{}", lines[0]);
        assert!(
            tracker
                .update(t0 + POLL_INTERVAL * 2, &[l(8000)])
                .is_empty()
        );
        let lines = tracker.update(t0 + POLL_INTERVAL * 3, &[]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains(r#""event":"closed""#));
        assert!(tracker.update(t0 + POLL_INTERVAL * 4, &[]).is_empty());
    }

    #[test]
    fn a_listener_gone_before_the_window_prints_nothing() {
        let mut tracker = Tracker::default();
        let t0 = Instant::now();
        let l = Listener {
            port: 8000,
            pid: 1,
            addr: "127.0.0.1".into(),
        };
        assert!(tracker.update(t0, &[l]).is_empty());
        assert!(tracker.update(t0 + POLL_INTERVAL, &[]).is_empty());
    }
}
