//! One benchmark run: start the simulator, the runner and its local
//! server, measure each scenario direct and forwarded, print the table.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::load::{self, Load, Target};
use super::process::{Launch, RunnerProcess};
use super::server::{BIG, SMALL};
use crate::bench::procstat;
use crate::bench::stats::{median, ms, quantile};
use crate::simulator::{SimConfig, Simulator};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `kandan-runner` binary (a release build).
    pub runner: PathBuf,
    /// Fewer rounds and requests, for iterating.
    pub quick: bool,
    /// Run the runner under callgrind, instrumenting nothing until told
    /// (`bench-forward soak --instructions`), its profile written here.
    pub callgrind: Option<PathBuf>,
}

/// Sizes of one run.
struct Plan {
    rounds: usize,
    small: usize,
    big: usize,
    clients: usize,
    sequential: usize,
    ws_echoes: usize,
    open_sockets: usize,
    upload: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let scale = if quick { 5 } else { 1 };
        Self {
            rounds: if quick { 1 } else { 3 },
            small: 3000 / scale,
            big: 100 / scale,
            clients: 4,
            sequential: 500 / scale,
            ws_echoes: 1000 / scale,
            open_sockets: 100,
            upload: 100 << 20,
        }
    }
}

/// The runner with the bench's own local server (`serve`) as its command.
fn spawn_runner(
    opts: &Options,
    sim: &Simulator,
    port: u16,
    dir: &std::path::Path,
) -> anyhow::Result<RunnerProcess> {
    let me = std::env::current_exe().context("finding the bench binary")?;
    let command = [
        me.into_os_string(),
        "serve".into(),
        "--port".into(),
        port.to_string().into(),
        "--parent-pid".into(),
        std::process::id().to_string().into(),
    ];
    RunnerProcess::spawn(
        sim,
        Launch {
            runner: &opts.runner,
            runner_id: "bench",
            command: command.into(),
            env: Vec::new(),
            cwd: None,
            log: dir.join("runner.log"),
            callgrind: opts.callgrind.clone(),
        },
    )
}

/// Waits until a forwarded GET of `/small` answers 200.
async fn wait_forwarding(forwarded: &Target, runner: &RunnerProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = load::fresh_connection_gets(forwarded, "/small", SMALL, 1).await;
        match attempt {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                bail!(
                    "forwarding never worked: {err:#}\nrunner log:\n{}",
                    runner.log_tail()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The `q` quantile of `samples`; zero for none.
fn percentile(samples: &[Duration], q: f64) -> Duration {
    quantile(samples, q).unwrap_or_default()
}

/// One row of the table.
struct Row {
    what: String,
    direct: Option<f64>,
    forwarded: f64,
    unit: &'static str,
    /// (description, met) of the row's target.
    target: Option<(String, bool)>,
}

#[derive(Default)]
pub(super) struct Rounds {
    values: std::collections::BTreeMap<&'static str, Vec<f64>>,
}

impl Rounds {
    pub(super) fn add(&mut self, key: &'static str, value: f64) {
        self.values.entry(key).or_default().push(value);
    }

    fn add_load(&mut self, prefix: &'static str, load: &Load) {
        let keys: [&'static str; 3] = match prefix {
            "small_direct" => ["small_direct_rps", "small_direct_p50", "small_direct_p99"],
            "small_fwd" => ["small_fwd_rps", "small_fwd_p50", "small_fwd_p99"],
            "big_direct" => ["big_direct_rps", "big_direct_p50", "big_direct_p99"],
            _ => ["big_fwd_rps", "big_fwd_p50", "big_fwd_p99"],
        };
        self.add(keys[0], load.per_second());
        self.add(keys[1], ms(percentile(&load.latencies, 0.5)));
        self.add(keys[2], ms(percentile(&load.latencies, 0.99)));
    }

    fn add_latencies(&mut self, p50: &'static str, p99: &'static str, samples: &[Duration]) {
        self.add(p50, ms(percentile(samples, 0.5)));
        self.add(p99, ms(percentile(samples, 0.99)));
    }

    pub(super) fn median(&self, key: &str) -> f64 {
        self.values
            .get(key)
            .map_or(f64::NAN, |v| median(v).unwrap_or(f64::NAN))
    }
}

/// The simulator, a runner forwarding to the bench's own local server, and
/// the two ways to reach that server; dropped, the runner stops first.
pub(super) struct Rig {
    pub runner: RunnerProcess,
    pub sim: Simulator,
    pub direct: Target,
    pub forwarded: Target,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// Starts them and waits until a forwarded GET answers.
    pub(super) async fn start(opts: &Options) -> anyhow::Result<Rig> {
        let dir = tempfile::tempdir()?;
        let sim = Simulator::start(SimConfig {
            auto_approve: true,
            record_forward_events: false,
            // Bounds the refused upload's wait if the runner never answers it.
            forward_timeout: Duration::from_secs(20),
            ..SimConfig::default()
        })
        .await?;
        let port = crate::support::free_port()?;
        let runner = spawn_runner(opts, &sim, port, dir.path())?;
        let direct = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            prefix: String::new(),
        };
        let forwarded = Target {
            addr: sim.preview_addr(),
            prefix: format!("/preview/{port}"),
        };
        wait_forwarding(&forwarded, &runner).await?;
        Ok(Rig {
            runner,
            sim,
            direct,
            forwarded,
            _dir: dir,
        })
    }
}

/// Runs the benchmark and prints the table; everything it started is
/// stopped before it returns, on errors too.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let plan = Plan::new(opts.quick);
    let started = Instant::now();
    let rig = Rig::start(&opts).await?;
    eprintln!(
        "forwarding through runner pid {} after {:.1} s; {} rounds",
        rig.runner.pid(),
        started.elapsed().as_secs_f64(),
        plan.rounds
    );
    let mut result = measure(&plan, &rig.sim, &rig.runner, &rig.direct, &rig.forwarded).await;
    if result.is_ok() {
        println!();
        result = super::floor::compare(&rig, plan.rounds, plan.small, plan.clients).await;
    }
    if let Err(err) = &result {
        eprintln!("runner log:\n{}", rig.runner.log_tail());
        eprintln!("benchmark failed: {err:#}");
    }
    drop(rig);
    result?;
    super::gate::report(opts.quick).await?;
    super::page::report(&opts.runner, opts.quick).await
}

async fn measure(
    plan: &Plan,
    sim: &Simulator,
    runner: &RunnerProcess,
    direct: &Target,
    forwarded: &Target,
) -> anyhow::Result<()> {
    let pid = runner.pid();
    let mut r = Rounds::default();
    // Warm both paths (connections, allocator, page cache).
    load::http_load(direct, "/small", SMALL, 200, plan.clients).await?;
    load::http_load(forwarded, "/small", SMALL, 200, plan.clients).await?;
    let (_, idle_rss) = procstat::memory_kib(pid)?;
    for round in 1..=plan.rounds {
        eprintln!("round {round}/{}", plan.rounds);
        // The bench's own process is the client, and on the forwarded path
        // the simulator too: its CPU shows what Kandan's side costs here.
        let bench = std::process::id();
        let own = procstat::cpu_time(bench)?;
        let l = load::http_load(direct, "/small", SMALL, plan.small, plan.clients).await?;
        r.add(
            "bench_cpu_small_direct",
            per_1000(procstat::cpu_time(bench)? - own, plan.small),
        );
        r.add_load("small_direct", &l);
        let cpu = procstat::cpu_time(pid)?;
        let own = procstat::cpu_time(bench)?;
        let l = load::http_load(forwarded, "/small", SMALL, plan.small, plan.clients).await?;
        r.add(
            "cpu_small",
            per_1000(procstat::cpu_time(pid)? - cpu, plan.small),
        );
        r.add(
            "bench_cpu_small_fwd",
            per_1000(procstat::cpu_time(bench)? - own, plan.small),
        );
        r.add_load("small_fwd", &l);

        let l = load::http_load(direct, "/big", BIG, plan.big, plan.clients).await?;
        r.add_load("big_direct", &l);
        let before = procstat::cpu_time(pid)?;
        let l = load::http_load(forwarded, "/big", BIG, plan.big, plan.clients).await?;
        r.add(
            "cpu_big",
            per_1000(procstat::cpu_time(pid)? - before, plan.big),
        );
        r.add_load("big_fwd", &l);

        // Sequential, so no request waits behind another.
        let fresh = load::fresh_connection_gets(direct, "/small", SMALL, plan.sequential).await?;
        r.add_latencies("fresh_p50", "fresh_p99", &fresh);
        let keepalive = load::http_load(direct, "/small", SMALL, plan.sequential, 1).await?;
        r.add_latencies("seq_direct_p50", "seq_direct_p99", &keepalive.latencies);
        sim.take_forward_latencies();
        let through = load::http_load(forwarded, "/small", SMALL, plan.sequential, 1).await?;
        let inside = sim.take_forward_latencies();
        r.add_latencies("seq_fwd_p50", "seq_fwd_p99", &through.latencies);
        r.add_latencies("inside_p50", "inside_p99", &inside);

        let echo = load::ws_echo(direct, plan.ws_echoes).await?;
        r.add_latencies("ws_direct_p50", "ws_direct_p99", &echo);
        let echo = load::ws_echo(forwarded, plan.ws_echoes).await?;
        r.add_latencies("ws_fwd_p50", "ws_fwd_p99", &echo);
    }

    // Memory: reset the peak so each case's VmHWM is its own.
    procstat::reset_peak(pid)?;
    let mut sockets = Vec::with_capacity(plan.open_sockets);
    for i in 0..plan.open_sockets {
        let mut ws = load::ws_open(forwarded, "/ws").await?;
        load::ws_round_trip(&mut ws, &format!("socket {i}")).await?;
        sockets.push(ws);
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        load::ws_round_trip(ws, &format!("again {i}")).await?;
    }
    let (ws_peak, ws_rss) = procstat::memory_kib(pid)?;
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    procstat::reset_peak(pid)?;
    let connections = sim.connection_count();
    let upload = load::upload(forwarded, plan.upload).await?;
    // Let the runner finish with it (or reconnect) before reading the peak.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (upload_peak, _) = procstat::memory_kib(pid)?;
    let reconnected = sim.connection_count() - connections;
    let after = Instant::now();
    wait_forwarding(forwarded, runner).await?;
    let recovery = after.elapsed();

    print_table(plan, &r, idle_rss, (ws_peak, ws_rss), upload_peak);
    println!();
    println!(
        "100 MiB upload through the runner (limit 16 MiB): {} after {:.0} ms ({}); \
         runner reconnections: {reconnected}; forwarding again after {:.0} ms",
        upload
            .status
            .map_or("no response".to_owned(), |s| s.to_string()),
        ms(upload.elapsed),
        upload.detail.trim(),
        ms(recovery),
    );
    Ok(())
}

fn print_table(plan: &Plan, r: &Rounds, idle_rss: u64, ws: (u64, u64), upload_peak: u64) {
    let m = |k: &str| r.median(k);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let added_p50 = m("inside_p50") - m("fresh_p50");
    let small_ratio = m("small_fwd_rps") / m("small_direct_rps");
    let rows = vec![
        Row {
            what: format!(
                "100 B GET req/s ({} req, {} conns)",
                plan.small, plan.clients
            ),
            direct: Some(m("small_direct_rps")),
            forwarded: m("small_fwd_rps"),
            unit: "/s",
            target: Some((">= 30% of direct".into(), small_ratio >= 0.3)),
        },
        Row {
            what: "100 B GET p50 under load".into(),
            direct: Some(m("small_direct_p50")),
            forwarded: m("small_fwd_p50"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "100 B GET p99 under load".into(),
            direct: Some(m("small_direct_p99")),
            forwarded: m("small_fwd_p99"),
            unit: "ms",
            target: None,
        },
        Row {
            what: format!("1 MiB GET req/s ({} req, {} conns)", plan.big, plan.clients),
            direct: Some(m("big_direct_rps")),
            forwarded: m("big_fwd_rps"),
            unit: "/s",
            target: None,
        },
        Row {
            what: "1 MiB GET p50 under load".into(),
            direct: Some(m("big_direct_p50")),
            forwarded: m("big_fwd_p50"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "1 MiB GET p99 under load".into(),
            direct: Some(m("big_direct_p99")),
            forwarded: m("big_fwd_p99"),
            unit: "ms",
            target: None,
        },
        Row {
            what: format!("100 B GET p50, one at a time ({} req)", plan.sequential),
            direct: Some(m("seq_direct_p50")),
            forwarded: m("seq_fwd_p50"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "100 B GET p99, one at a time".into(),
            direct: Some(m("seq_direct_p99")),
            forwarded: m("seq_fwd_p99"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "sim->runner->server->sim p50 (vs fresh-conn direct)".into(),
            direct: Some(m("fresh_p50")),
            forwarded: m("inside_p50"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "sim->runner->server->sim p99 (vs fresh-conn direct)".into(),
            direct: Some(m("fresh_p99")),
            forwarded: m("inside_p99"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "runner-added latency p50 (row above, difference)".into(),
            direct: None,
            forwarded: added_p50,
            unit: "ms",
            target: Some(("< 1 ms".into(), added_p50 < 1.0)),
        },
        Row {
            what: format!("WebSocket echo p50 ({} round trips)", plan.ws_echoes),
            direct: Some(m("ws_direct_p50")),
            forwarded: m("ws_fwd_p50"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "WebSocket echo p99".into(),
            direct: Some(m("ws_direct_p99")),
            forwarded: m("ws_fwd_p99"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "runner CPU per 1,000 forwarded 100 B GETs".into(),
            direct: None,
            forwarded: m("cpu_small"),
            unit: "ms",
            target: Some(("<= 30 ms".into(), m("cpu_small") <= 30.0)),
        },
        Row {
            what: "bench CPU per 1,000 100 B GETs (client; + simulator forwarded)".into(),
            direct: Some(m("bench_cpu_small_direct")),
            forwarded: m("bench_cpu_small_fwd"),
            unit: "ms",
            target: None,
        },
        Row {
            what: "runner CPU per 1,000 forwarded 1 MiB GETs".into(),
            direct: None,
            forwarded: m("cpu_big"),
            unit: "ms",
            target: Some(("<= 1000 ms".into(), m("cpu_big") <= 1000.0)),
        },
        Row {
            what: "runner RSS after warm-up".into(),
            direct: None,
            forwarded: mib(idle_rss),
            unit: "MiB",
            target: None,
        },
        Row {
            what: format!("runner peak RSS, {} open WebSockets", plan.open_sockets),
            direct: None,
            forwarded: mib(ws.0),
            unit: "MiB",
            target: Some(("< 64 MB".into(), (ws.0 as f64) * 1024.0 < 64e6)),
        },
        Row {
            what: format!("runner RSS, {} open WebSockets", plan.open_sockets),
            direct: None,
            forwarded: mib(ws.1),
            unit: "MiB",
            target: None,
        },
        Row {
            what: "runner peak RSS, 100 MiB upload".into(),
            direct: None,
            forwarded: mib(upload_peak),
            unit: "MiB",
            target: Some(("< 64 MB".into(), (upload_peak as f64) * 1024.0 < 64e6)),
        },
    ];
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "| {:<54} | {:>10} | {:>10} | {:>7} | {:<24} |",
        "measure (median of rounds)", "direct", "forwarded", "ratio", "target"
    );
    let _ = writeln!(
        out,
        "|{:-<56}|{:->12}|{:->12}|{:->9}|{:-<26}|",
        ":", ":", ":", ":", ":"
    );
    for row in rows {
        let value = |v: f64| match row.unit {
            "/s" => format!("{v:.0} {}", row.unit),
            "MiB" => format!("{v:.1} {}", row.unit),
            _ => format!("{v:.3} {}", row.unit),
        };
        let direct = row.direct.map_or("".to_owned(), value);
        let ratio = row
            .direct
            .map_or("".to_owned(), |d| format!("{:.2}x", row.forwarded / d));
        let target = row.target.map_or("".to_owned(), |(t, met)| {
            format!("{t}: {}", if met { "met" } else { "MISSED" })
        });
        let _ = writeln!(
            out,
            "| {:<54} | {:>10} | {:>10} | {:>7} | {:<24} |",
            row.what,
            direct,
            value(row.forwarded),
            ratio,
            target
        );
    }
}

/// `cpu` spent on `requests` requests, per 1,000 of them, in milliseconds.
pub(super) fn per_1000(cpu: Duration, requests: usize) -> f64 {
    ms(cpu) * 1000.0 / requests as f64
}
