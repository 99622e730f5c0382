//! What the eBPF program's filters cost the rest of the machine: every
//! `fork`, `exec`, `listen()` and socket state change on the machine runs
//! the program, which asks whether the task is tracked: by pid (the
//! `TRACKED` maps) and, with cgroups, by walking the task's cgroup and its
//! ancestors against the runner's (`CGROUPS`). A tracked task is found on
//! the first lookup either way; the walk is paid by the tasks the runner
//! does not watch. So the measure is their cost: a process outside the
//! tree spawning `/bin/true` and listening and closing on loopback, with no
//! runner, with an eBPF runner holding its tree by pid only
//! (`--containment process-group`) and with one holding it in a cgroup
//! (`--containment cgroup`), in turns, medians of rounds.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::stats::median;

/// Which filter is attached while the outsider works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// No runner: the machine's own cost.
    None,
    /// An eBPF runner whose tree is tracked by pid.
    Pid,
    /// An eBPF runner whose tree is also its cgroup.
    Cgroup,
}

impl Filter {
    pub const ALL: [Filter; 3] = [Filter::None, Filter::Pid, Filter::Cgroup];

    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "no runner",
            Filter::Pid => "ebpf, pid filter",
            Filter::Cgroup => "ebpf, cgroup filter",
        }
    }

    fn containment(self) -> Option<&'static str> {
        match self {
            Filter::None => None,
            Filter::Pid => Some("process-group"),
            Filter::Cgroup => Some("cgroup"),
        }
    }
}

/// Sizes of a run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub spawns: usize,
    pub listens: usize,
}

/// Medians over the rounds, per filter, in [`Filter::ALL`] order.
#[derive(Clone, Debug, Default)]
pub struct FilterCost {
    /// Microseconds per `/bin/true` spawned and waited for.
    pub spawn_us: [f64; 3],
    /// Microseconds per socket bound, listened on and closed.
    pub listen_us: [f64; 3],
    /// The runner's peak RSS (VmHWM), KiB; 0 without a runner.
    pub peak_rss_kib: [u64; 3],
}

/// Measures `plan.rounds` rounds, the three filters in turns in each.
pub fn measure(runner: &Path, plan: Plan) -> Result<FilterCost> {
    let mut spawn: [Vec<f64>; 3] = Default::default();
    let mut listen: [Vec<f64>; 3] = Default::default();
    let mut rss = [0u64; 3];
    for round in 0..plan.rounds {
        for (index, filter) in Filter::ALL.into_iter().enumerate() {
            let attached = match filter.containment() {
                Some(containment) => Some(Attached::start(runner, containment)?),
                None => None,
            };
            spawn[index].push(per_spawn_us(plan.spawns)?);
            listen[index].push(per_listen_us(plan.listens)?);
            if let Some(attached) = attached {
                rss[index] = rss[index].max(attached.finish()?);
            }
        }
        eprintln!("bench: filter round {} of {} done", round + 1, plan.rounds);
    }
    let medians = |samples: &[Vec<f64>; 3]| {
        let mut out = [0.0; 3];
        for (slot, values) in out.iter_mut().zip(samples) {
            *slot = median(values).unwrap_or(0.0);
        }
        out
    };
    Ok(FilterCost {
        spawn_us: medians(&spawn),
        listen_us: medians(&listen),
        peak_rss_kib: rss,
    })
}

/// An eBPF `watch` over `sleep`, attached once its backend line came.
struct Attached {
    child: Child,
}

impl Attached {
    fn start(runner: &Path, containment: &str) -> Result<Attached> {
        let mut child = Command::new(runner)
            .args(["watch", "--backend", "ebpf", "--debounce-ms", "0"])
            .args(["--containment", containment, "--", "sleep", "600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start the runner")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let mut first = String::new();
        BufReader::new(stderr).read_line(&mut first)?;
        // Only the fallback names its containment on that line.
        let fallback = first.contains("containment: process groups");
        if !first.starts_with("backend: ebpf") || fallback != (containment == "process-group") {
            let _ = child.kill();
            bail!("the runner did not start as asked ({containment}): {first}");
        }
        Ok(Attached { child })
    }

    /// Stops the runner; its peak RSS in KiB.
    fn finish(mut self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let peak = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        Ok(peak)
    }
}

fn per_spawn_us(count: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..count {
        Command::new("/bin/true").status()?;
    }
    Ok(micros(start.elapsed(), count))
}

fn per_listen_us(count: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..count {
        drop(TcpListener::bind("127.0.0.1:0")?);
    }
    Ok(micros(start.elapsed(), count))
}

fn micros(elapsed: Duration, count: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / count.max(1) as f64
}

/// The Markdown table of a run: per filter, and the ratios to no runner.
pub fn table(cost: &FilterCost) -> String {
    let mut out = String::from(
        "| outside the tree | no runner | ebpf, pid filter | ebpf, cgroup filter | pid / none | cgroup / none | cgroup / pid |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (what, values) in [
        ("spawn and wait for /bin/true, median µs", cost.spawn_us),
        (
            "bind, listen and close on loopback, median µs",
            cost.listen_us,
        ),
    ] {
        let [none, pid, cgroup] = values;
        out.push_str(&format!(
            "| {what} | {none:.1} | {pid:.1} | {cgroup:.1} | {:.3} | {:.3} | {:.3} |\n",
            pid / none,
            cgroup / none,
            cgroup / pid
        ));
    }
    let [_, pid, cgroup] = cost.peak_rss_kib;
    out.push_str(&format!(
        "| runner peak RSS, VmHWM (MB) | - | {:.1} | {:.1} | - | - | {:.3} |\n",
        pid as f64 / 1024.0,
        cgroup as f64 / 1024.0,
        cgroup as f64 / pid.max(1) as f64
    ));
    out
}
