//! `bench-detect`: the detection benchmark (run it with `cargo xtask bench
//! detect [-- --quick] [--idle-seconds N] [--only latency|cpu|scan]`). Measures the eBPF and procfs backends of
//! `kandan-runner watch` and the ps/lsof baseline side by side and prints a
//! Markdown table. BENCHMARKS.md says what each number means.
//!
//! The same binary also plays the bench's helper processes:
//! `bench-detect helper`, `bench-detect sleepers N`,
//! `bench-detect baseline --root-pid P`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use integration_tests::bench::contender::{Binaries, Contender, Running};
use integration_tests::bench::helper::Helper;
use integration_tests::bench::latency::{self, Ports};
use integration_tests::bench::report::{self, ContenderResult, Results, Setup};
use integration_tests::bench::sleepers::Sleepers;
use integration_tests::bench::{baseline, cpu, filter, helper, scan, sleepers};

const USAGE: &str = "usage: bench-detect [--quick] [--runner PATH] [--idle-seconds N] \
                     [--only latency|cpu|scan|filter]";

/// Sizes of a run: full by default, `--quick` to iterate on the harness.
struct Plan {
    quick: bool,
    ebpf: latency::Plan,
    procfs: latency::Plan,
    baseline: latency::Plan,
    cpu: cpu::Plan,
    idle_sleepers: usize,
    /// (extra sleeping processes, procfs scans, baseline polls)
    scans: [(usize, usize, usize); 2],
    /// The one phase to run (`--only`), or all of them.
    only: Option<Phase>,
    filter: filter::Plan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Latency,
    Cpu,
    Scan,
    /// What the eBPF filters (pid, cgroup) cost processes outside the tree.
    Filter,
}

impl Phase {
    fn parse(text: &str) -> Result<Phase> {
        Ok(match text {
            "latency" => Phase::Latency,
            "cpu" => Phase::Cpu,
            "scan" => Phase::Scan,
            "filter" => Phase::Filter,
            other => bail!("unknown phase {other:?}; {USAGE}"),
        })
    }
}

impl Plan {
    fn new(quick: bool) -> Self {
        let latency = |samples, seconds| latency::Plan {
            samples,
            max_time: Duration::from_secs(seconds),
        };
        if quick {
            Plan {
                quick,
                ebpf: latency(50, 20),
                procfs: latency(15, 30),
                baseline: latency(200, 30),
                cpu: cpu::Plan {
                    idle: Duration::from_secs(10),
                    storm_rate: 100,
                    storm_seconds: 3,
                },
                idle_sleepers: 1000,
                scans: [(1000, 11, 2), (10_000, 5, 1)],
                only: None,
                filter: filter::Plan {
                    rounds: 2,
                    spawns: 200,
                    listens: 1000,
                },
            }
        } else {
            Plan {
                quick,
                ebpf: latency(200, 90),
                procfs: latency(200, 240),
                // Each baseline listener takes ~4 s: it gets what fits
                // while procfs runs next to it.
                baseline: latency(200, 200),
                cpu: cpu::Plan {
                    idle: Duration::from_secs(60),
                    storm_rate: 100,
                    storm_seconds: 10,
                },
                idle_sleepers: 1000,
                scans: [(1000, 31, 5), (10_000, 11, 3)],
                only: None,
                filter: filter::Plan {
                    rounds: 5,
                    spawns: 500,
                    listens: 3000,
                },
            }
        }
    }

    fn runs(&self, phase: Phase) -> bool {
        self.only.is_none_or(|only| only == phase)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("helper") => helper::serve(),
        Some("sleepers") => {
            let count = args.get(1).context("sleepers N")?.parse()?;
            sleepers::serve(count)
        }
        Some("baseline") => baseline::run(&root_pids(&args[1..])?),
        _ => {
            let mut quick = false;
            let mut runner = None;
            let mut idle_seconds = None;
            let mut only = None;
            let mut rest = args.iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--quick" => quick = true,
                    "--runner" => runner = Some(PathBuf::from(rest.next().context(USAGE)?)),
                    "--idle-seconds" => {
                        let seconds: u64 = rest.next().context(USAGE)?.parse()?;
                        idle_seconds = Some(Duration::from_secs(seconds.max(1)));
                    }
                    "--only" => only = Some(Phase::parse(rest.next().context(USAGE)?)?),
                    "-h" | "--help" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    other => bail!("unknown argument {other:?}; {USAGE}"),
                }
            }
            let bench = std::env::current_exe().context("own path")?;
            let runner = runner.unwrap_or_else(|| bench.with_file_name("kandan-runner"));
            if !runner.exists() {
                bail!("{} missing: pass --runner PATH", runner.display());
            }
            let mut plan = Plan::new(quick);
            if let Some(idle) = idle_seconds {
                plan.cpu.idle = idle;
            }
            plan.only = only;
            let bins = Binaries { runner, bench };
            if plan.only != Some(Phase::Filter) {
                let results = run(&bins, &plan);
                println!("{}", report::render(&results));
            }
            if plan.runs(Phase::Filter) {
                eprintln!("bench: the filters' cost outside the tree");
                match filter::measure(&bins.runner, plan.filter) {
                    Ok(cost) => println!("{}", filter::table(&cost)),
                    Err(err) => println!("filter phase failed: {err:#}"),
                }
            }
            Ok(())
        }
    }
}

fn root_pids(args: &[String]) -> Result<Vec<u32>> {
    let mut roots = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root-pid" => roots.push(args.next().context("--root-pid PID")?.parse()?),
            other => bail!("baseline: unknown argument {other:?}"),
        }
    }
    if roots.is_empty() {
        bail!("baseline: --root-pid PID is required");
    }
    Ok(roots)
}

fn run(bins: &Binaries, plan: &Plan) -> Results {
    let started = Instant::now();
    let mut results = Results::new(Setup {
        quick: plan.quick,
        idle_seconds: plan.cpu.idle.as_secs(),
        idle_sleepers: plan.idle_sleepers,
        storm_rate: plan.cpu.storm_rate,
        storm_seconds: plan.cpu.storm_seconds,
    });

    if plan.runs(Phase::Latency) {
        latency_phase(bins, plan, &mut results);
    }
    if !plan.runs(Phase::Cpu) && !plan.runs(Phase::Scan) {
        results.seconds = started.elapsed().as_secs();
        return results;
    }

    eprintln!("bench: starting {} sleeping processes", plan.idle_sleepers);
    match Sleepers::spawn(&bins.bench, plan.idle_sleepers) {
        Ok(sleepers) => {
            if plan.runs(Phase::Cpu)
                && let Err(err) = cpu_phase(bins, plan, &mut results)
            {
                results.notes.push(format!("CPU phase failed: {err:#}"));
            }
            if plan.runs(Phase::Scan)
                && let Err(err) = scan_phase(bins, plan, sleepers, &mut results)
            {
                results.notes.push(format!("scan phase failed: {err:#}"));
            }
        }
        Err(err) => results
            .notes
            .push(format!("no CPU or scan numbers: {err:#}")),
    }
    results.seconds = started.elapsed().as_secs();
    results
}

fn latency_phase(bins: &Binaries, plan: &Plan, results: &mut Results) {
    // eBPF alone: a poller's bursts next to it would show in its p99.
    eprintln!("bench: latency of ebpf");
    let ebpf = latency_of(bins, Contender::Ebpf, &plan.ebpf, 21_000);
    record(results, Contender::Ebpf, ebpf);

    // The two pollers together: their latency is their poll period, which
    // the other's work hardly moves, and this halves the run time.
    eprintln!(
        "bench: latency of procfs and baseline (in parallel, up to {} s)",
        plan.procfs.max_time.as_secs()
    );
    let (procfs, base) = std::thread::scope(|scope| {
        let procfs = scope.spawn(|| latency_of(bins, Contender::Procfs, &plan.procfs, 23_000));
        let base = scope.spawn(|| latency_of(bins, Contender::Baseline, &plan.baseline, 25_000));
        (join(procfs.join()), join(base.join()))
    });
    record(results, Contender::Procfs, procfs);
    record(results, Contender::Baseline, base);
}

fn join<T>(joined: std::thread::Result<Result<T>>) -> Result<T> {
    joined.unwrap_or_else(|_| bail!("the measuring thread panicked"))
}

fn record(results: &mut Results, contender: Contender, measured: Result<ContenderResult>) {
    match measured {
        Ok(measured) => {
            let result = results.of(contender);
            if let Some(why) = measured.unavailable {
                result.unavailable(why);
            }
            result.latency = measured.latency;
            result.saw_rss(measured.peak_rss_kib);
            result.saw_contract(measured.contract.as_ref());
        }
        Err(err) => results
            .notes
            .push(format!("{} latency failed: {err:#}", contender.name())),
    }
}

/// Latency of one contender with its own helper.
fn latency_of(
    bins: &Binaries,
    contender: Contender,
    plan: &latency::Plan,
    first_port: u16,
) -> Result<ContenderResult> {
    let mut result = ContenderResult::default();
    let mut helper = Helper::spawn(&bins.bench, "listener helper")?;
    let run = match Running::start(contender, bins, helper.pid())? {
        Ok(run) => run,
        Err(why) => {
            result.unavailable(why);
            return Ok(result);
        }
    };
    result.saw_contract(run.contract_note.as_ref());
    let mut ports = Ports::new(first_port, 1500);
    if let Some(why) = latency::warm_up(&[&run], &mut helper, &mut ports)?.remove(0) {
        result.unavailable(why);
        return Ok(result);
    }
    result.latency = Some(latency::measure(&run, &mut helper, &mut ports, plan)?);
    result.saw_rss(run.peak_rss_kib());
    Ok(result)
}

/// Idle and storm CPU of every contender at once, on one watched helper.
fn cpu_phase(bins: &Binaries, plan: &Plan, results: &mut Results) -> Result<()> {
    let mut watched = Helper::spawn(&bins.bench, "watched helper")?;
    let mut outside = Helper::spawn(&bins.bench, "outside helper")?;
    let mut runs = Vec::new();
    for contender in Contender::ALL {
        match Running::start(contender, bins, watched.pid())? {
            Ok(run) => runs.push(run),
            Err(why) => results.of(contender).unavailable(why),
        }
    }
    let mut ports = Ports::new(27_000, 500);
    let verdicts = {
        let refs: Vec<&Running> = runs.iter().collect();
        latency::warm_up(&refs, &mut watched, &mut ports)?
    };
    let mut ready = Vec::new();
    for (run, verdict) in runs.into_iter().zip(verdicts) {
        match verdict {
            None => ready.push(run),
            Some(why) => results.of(run.contender).unavailable(why),
        }
    }
    let refs: Vec<&Running> = ready.iter().collect();
    let usage = cpu::measure(&refs, &mut watched, &mut outside, &plan.cpu)?;
    for (run, usage) in ready.iter().zip(usage) {
        let result = results.of(run.contender);
        result.cpu = Some(usage);
        result.settled_rss_kib = run.rss_kib();
        result.saw_rss(run.peak_rss_kib());
        result.saw_contract(run.contract_note.as_ref());
    }
    Ok(())
}

/// procfs scan cost (and one baseline poll) with many processes around.
fn scan_phase(bins: &Binaries, plan: &Plan, first: Sleepers, results: &mut Results) -> Result<()> {
    let mut helper = Helper::spawn(&bins.bench, "scanned helper")?;
    let (_port, _) = Ports::new(28_000, 500).open_next(&mut helper)?;
    let mut farms = vec![first];
    for &(extra, scans, polls) in &plan.scans {
        let have: usize = farms.iter().map(|farm| farm.count).sum();
        if extra > have {
            eprintln!("bench: starting {} more sleeping processes", extra - have);
            farms.push(Sleepers::spawn(&bins.bench, extra - have)?);
        }
        eprintln!("bench: scan cost at +{extra} processes");
        results
            .scans
            .push(scan::measure(helper.pid(), extra, scans, polls));
    }
    Ok(())
}
