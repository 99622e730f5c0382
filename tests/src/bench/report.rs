//! The results of one run and the Markdown table that shows them.

use std::fmt::Write;

use super::contender::Contender;
use super::cpu::Usage;
use super::latency::Latencies;
use super::scan::ScanCost;
use super::stats::quantile;

/// Everything measured for one contender.
#[derive(Clone, Debug, Default)]
pub struct ContenderResult {
    /// Why it could not be measured (first reason seen).
    pub unavailable: Option<String>,
    pub latency: Option<Latencies>,
    pub cpu: Option<Usage>,
    /// Highest VmHWM over every process of this contender in the run.
    pub peak_rss_kib: Option<u64>,
    /// VmRSS at the end of the CPU phase (after idle and storms).
    pub settled_rss_kib: Option<u64>,
    /// A breach of the command-line contract seen while measuring.
    pub contract: Option<String>,
}

impl ContenderResult {
    pub fn unavailable(&mut self, why: String) {
        self.unavailable.get_or_insert(why);
    }

    pub fn saw_contract(&mut self, note: Option<&String>) {
        if let Some(note) = note {
            self.contract.get_or_insert_with(|| note.clone());
        }
    }

    pub fn saw_rss(&mut self, kib: Option<u64>) {
        if let Some(kib) = kib {
            self.peak_rss_kib = Some(self.peak_rss_kib.map_or(kib, |old| old.max(kib)));
        }
    }
}

/// How the run was set up, for the header and the row labels.
#[derive(Clone, Debug)]
pub struct Setup {
    pub quick: bool,
    pub idle_seconds: u64,
    pub idle_sleepers: usize,
    pub storm_rate: u64,
    pub storm_seconds: u64,
}

#[derive(Clone, Debug)]
pub struct Results {
    pub setup: Setup,
    pub per: [ContenderResult; 3],
    pub scans: Vec<ScanCost>,
    pub notes: Vec<String>,
    pub seconds: u64,
}

impl Results {
    pub fn new(setup: Setup) -> Self {
        Results {
            setup,
            per: Default::default(),
            scans: Vec::new(),
            notes: Vec::new(),
            seconds: 0,
        }
    }

    pub fn of(&mut self, contender: Contender) -> &mut ContenderResult {
        &mut self.per[contender.index()]
    }
}

/// A target on some contenders: met when `value < limit`.
struct Target {
    text: &'static str,
    on: &'static [Contender],
    limit: f64,
}

struct Row {
    label: String,
    values: [Option<f64>; 3],
    unit: Unit,
    target: Option<Target>,
}

#[derive(Clone, Copy)]
enum Unit {
    Ms,
    Percent,
    PerSecond,
    Mb,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::Percent | Unit::PerSecond => format!("{value:.3}"),
            Unit::Mb => format!("{value:.1}"),
            Unit::Ms if value < 1.0 => format!("{value:.3}"),
            Unit::Ms if value < 100.0 => format!("{value:.2}"),
            Unit::Ms => format!("{value:.0}"),
        }
    }
}

const EBPF: &[Contender] = &[Contender::Ebpf];
const PROCFS: &[Contender] = &[Contender::Procfs];
const RUNNERS: &[Contender] = &[Contender::Ebpf, Contender::Procfs];

fn latency_ms(result: &ContenderResult, q: f64) -> Option<f64> {
    let samples = &result.latency.as_ref()?.samples_ns;
    quantile(samples, q).map(|ns| ns as f64 / 1e6)
}

fn rows(results: &Results) -> Vec<Row> {
    let per = &results.per;
    let each = |f: &dyn Fn(&ContenderResult) -> Option<f64>| -> [Option<f64>; 3] {
        [f(&per[0]), f(&per[1]), f(&per[2])]
    };
    let cpu =
        |f: fn(&Usage) -> Option<f64>| each(&|r: &ContenderResult| r.cpu.as_ref().and_then(f));
    let setup = &results.setup;
    let mut rows = vec![
        Row {
            label: "detection latency p50 (ms)".into(),
            values: each(&|r| latency_ms(r, 0.5)),
            unit: Unit::Ms,
            target: Some(Target {
                text: "ebpf < 1",
                on: EBPF,
                limit: 1.0,
            }),
        },
        Row {
            label: "detection latency p99 (ms)".into(),
            values: each(&|r| latency_ms(r, 0.99)),
            unit: Unit::Ms,
            target: Some(Target {
                text: "ebpf < 5",
                on: EBPF,
                limit: 5.0,
            }),
        },
        Row {
            label: format!(
                "idle CPU, % of a core ({} s, +{} procs)",
                setup.idle_seconds, setup.idle_sleepers
            ),
            values: cpu(|u| u.idle),
            unit: Unit::Percent,
            target: Some(Target {
                text: "ebpf < 0.05",
                on: EBPF,
                limit: 0.05,
            }),
        },
        Row {
            label: format!(
                "idle wakeups per second ({} s, +{} procs)",
                setup.idle_seconds, setup.idle_sleepers
            ),
            values: cpu(|u| u.idle_wakeups),
            unit: Unit::PerSecond,
            // No periodic wakeup: at most a stray one or two in the window
            // (the blocking pool retiring an idle thread).
            target: Some(Target {
                text: "ebpf: none periodic (< 0.05)",
                on: EBPF,
                limit: 0.05,
            }),
        },
        Row {
            label: format!(
                "CPU %, storm {}/s outside the tree ({} s)",
                setup.storm_rate, setup.storm_seconds
            ),
            values: cpu(|u| u.storm_outside),
            unit: Unit::Percent,
            target: Some(Target {
                text: "ebpf < 1",
                on: EBPF,
                limit: 1.0,
            }),
        },
        Row {
            label: format!(
                "CPU %, storm {}/s inside the tree ({} s)",
                setup.storm_rate, setup.storm_seconds
            ),
            values: cpu(|u| u.storm_inside),
            unit: Unit::Percent,
            target: None,
        },
        Row {
            label: "RSS after idle and storms, VmRSS (MB)".into(),
            values: each(&|r| r.settled_rss_kib.map(|kib| kib as f64 / 1024.0)),
            unit: Unit::Mb,
            target: None,
        },
        Row {
            label: "peak RSS, VmHWM (MB)".into(),
            values: each(&|r| r.peak_rss_kib.map(|kib| kib as f64 / 1024.0)),
            unit: Unit::Mb,
            target: Some(Target {
                text: "runners < 20",
                on: RUNNERS,
                limit: 20.0,
            }),
        },
    ];
    for scan in &results.scans {
        let ms = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1e6);
        rows.push(Row {
            label: format!(
                "scan, +{} procs ({} on the machine), steady poll, median ms",
                scan.extra, scan.processes
            ),
            values: [None, ms(scan.steady_ns), ms(scan.baseline_ns)],
            unit: Unit::Ms,
            target: (scan.extra == 1000).then_some(Target {
                text: "procfs < 5",
                on: PROCFS,
                limit: 5.0,
            }),
        });
        rows.push(Row {
            label: format!(
                "scan, +{} procs, cold (fresh scanner: backfill, resync), median ms",
                scan.extra
            ),
            values: [None, ms(scan.procfs_ns), ms(scan.baseline_ns)],
            unit: Unit::Ms,
            target: None,
        });
    }
    rows
}

fn ratio(value: Option<f64>, baseline: Option<f64>) -> String {
    match (value, baseline) {
        (Some(value), Some(base)) if base > 0.0 => {
            let r = value / base;
            if r < 0.01 {
                format!("{r:.5}")
            } else {
                format!("{r:.2}")
            }
        }
        _ => "-".into(),
    }
}

fn verdict(row: &Row) -> String {
    let Some(target) = &row.target else {
        return "-".into();
    };
    let parts: Vec<String> = target
        .on
        .iter()
        .map(|&c| {
            let state = match row.values[c.index()] {
                Some(value) if value < target.limit => "met",
                Some(_) => "MISSED",
                None => "not measured",
            };
            if target.on.len() == 1 {
                state.to_string()
            } else {
                format!("{} {state}", c.name())
            }
        })
        .collect();
    parts.join(", ")
}

/// The Markdown table, then the notes (sample counts, misses, failures).
pub fn render(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| metric | target | ebpf | procfs | baseline | ebpf / baseline | procfs / baseline | target met? |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
    for row in rows(results) {
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| row.unit.show(v));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.target.as_ref().map_or("-", |t| t.text),
            cell(row.values[0]),
            cell(row.values[1]),
            cell(row.values[2]),
            ratio(row.values[0], row.values[2]),
            ratio(row.values[1], row.values[2]),
            verdict(&row),
        );
    }
    let _ = writeln!(out);
    for contender in Contender::ALL {
        let result = &results.per[contender.index()];
        if let Some(why) = &result.unavailable {
            let _ = writeln!(out, "- {}: not measured: {why}", contender.name());
        }
        if let Some(note) = &result.contract {
            let _ = writeln!(out, "- {}: {note}", contender.name());
        }
        if let Some(latency) = &result.latency {
            let _ = write!(
                out,
                "- {}: latency over {} listeners, {} missed",
                contender.name(),
                latency.samples_ns.len(),
                latency.missed
            );
            if let Some(note) = &latency.note {
                let _ = write!(out, " ({note})");
            }
            let _ = writeln!(out);
        }
    }
    for scan in &results.scans {
        let _ = write!(
            out,
            "- scan at +{} procs: {} procfs scans (found {} listener(s), expected 1), {} baseline polls",
            scan.extra, scan.scans, scan.found, scan.polls
        );
        if let Some(err) = &scan.error {
            let _ = write!(out, "; {err}");
        }
        let _ = writeln!(out);
    }
    for note in &results.notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(
        out,
        "- {} run, {} s in all",
        if results.setup.quick { "quick" } else { "full" },
        results.seconds
    );
    out
}
