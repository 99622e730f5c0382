//! What the live gate and the verified dial cost (`cargo xtask bench
//! forward`, second table):
//!
//! - the verified dial: a fresh loopback connection, then the check that
//!   every socket listening on its address is the approved listener's
//!   (netlink sock_diag), timed in this process next to the connect alone;
//!   then again with the eBPF backend's listener-change counters, which
//!   let a dial skip the dump when nothing changed on the port;
//! - close to refused: how long after a watched listener closes the gate
//!   refuses its port, with the runner's own detector and pipeline (eBPF,
//!   procfs) running in this process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runner::detect::process_info::ProcessInfo;
use runner::detect::{
    self, BackendChoice, Detector, DetectorConfig, ListenerSocket, PortChanges, SocketId,
};
use runner::gate::Gate;
use runner::gate::{GateRefusal, PortGate};
use runner::pipeline::{self, PipelineConfig};
use tokio::sync::mpsc;

use crate::bench::helper::Helper;
use crate::bench::stats::{ms, quantile};

/// Connect alone and connect + verify, per fresh connection.
pub struct DialCost {
    pub extra_listeners: usize,
    pub listeners_on_machine: usize,
    pub connect: Vec<Duration>,
    pub verify: Vec<Duration>,
    /// Dials accepted without a dump (with counters).
    pub from_cache: u64,
}

/// Times `samples` fresh connections to a listener of this process, each
/// verified as the runner verifies one, with `extra_listeners` more
/// listening sockets open on the machine, and the gate given `counters`
/// when there are.
pub fn dial_cost(
    samples: usize,
    extra_listeners: usize,
    counters: Option<Arc<dyn PortChanges>>,
) -> Result<DialCost> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let _extra: Vec<TcpListener> = (0..extra_listeners)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let table = runner::detect::procfs::listening_sockets()?;
    let inode = table
        .iter()
        .find(|l| l.port == port)
        .context("own listener missing from sock_diag")?
        .id;
    let gate = Gate::new();
    if let Some(counters) = counters {
        gate.use_port_changes(counters);
    }
    let socket = ListenerSocket {
        id: SocketId(inode),
        port,
        addr: "127.0.0.1".parse()?,
        pid: std::process::id(),
        process: ProcessInfo::from_argv(&["bench".to_string()], None),
    };
    gate.set_live(port, [&socket]);
    gate.set_approved(&runner::gate::Identity::new(port, &socket.process), true);

    // Kept open here until the end: the accepting thread ends with the
    // last connection, which is verified after that.
    let _open = listener.try_clone()?;
    let accept = std::thread::spawn(move || {
        for _ in 0..samples {
            if listener.accept().is_err() {
                return;
            }
        }
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut connect, mut verify) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let t0 = Instant::now();
        let stream = TcpStream::connect(addr)?;
        let t1 = Instant::now();
        gate.verify(stream.peer_addr()?)
            .map_err(|err| anyhow::anyhow!("verification refused: {err}"))?;
        let t2 = Instant::now();
        connect.push(t1 - t0);
        verify.push(t2 - t1);
    }
    let _ = accept.join();
    Ok(DialCost {
        extra_listeners,
        listeners_on_machine: table.len(),
        connect,
        verify,
        from_cache: gate.dials_from_cache(),
    })
}

/// Close-to-refused latencies on one backend, and how many samples were
/// missed (the gate never saw the listener, or never saw it close).
pub struct CloseToRefused {
    pub backend: &'static str,
    pub samples: Vec<Duration>,
    pub missed: usize,
}

/// Opens a listener in a helper process watched by the runner's detector
/// and pipeline, waits for the gate to see it, then closes it and spins
/// until the gate refuses the port. The clock starts before the close
/// command is written to the helper, so the pipe's latency is included
/// (the figure errs high).
pub async fn close_to_refused(
    bench_exe: &Path,
    backend: &'static str,
    samples: usize,
) -> Result<CloseToRefused> {
    let choice = match backend {
        "ebpf" => BackendChoice::Ebpf,
        _ => BackendChoice::Procfs,
    };
    let config = DetectorConfig::default();
    let (detector, _) = detect::start(choice, &config)
        .map_err(|err| anyhow::anyhow!("{backend}: {}", runner::error_chain(&err)))?;
    let mut helper = Helper::spawn(bench_exe, "gate helper")?;
    detector
        .roots
        .add_root(helper.pid())
        .map_err(|err| anyhow::anyhow!("add root: {err}"))?;
    let gate = Gate::new();
    let (tx, mut rx) = mpsc::channel(1024);
    // Never finished early: the task is aborted at the end.
    let (_finish, finish_rx) = tokio::sync::oneshot::channel();
    let pipeline = tokio::spawn(pipeline::run(
        {
            let mut config = PipelineConfig::default();
            config.gate = Some(gate.clone());
            config
        },
        detector.events,
        tx,
        finish_rx,
    ));
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let _roots = detector.roots;

    let gate = Arc::new(gate);
    let mut out = CloseToRefused {
        backend,
        samples: Vec::new(),
        missed: 0,
    };
    let seen = |gate: &Gate, port: u16, listening: bool| {
        let gate = gate.clone();
        tokio::task::spawn_blocking(move || spin_until(&gate, port, listening))
    };
    // A poller saw the listener at a poll; closing it at a random point of
    // the next period measures what a user meets, not a whole period.
    let period_ms = match backend {
        "ebpf" => 0,
        _ => config.poll_interval.as_millis() as u64,
    };
    let mut jitter = crate::bench::clock::Jitter::seeded();
    for _ in 0..samples {
        let port = crate::support::free_port()?;
        if helper.open(port)?.is_none() {
            continue;
        }
        if seen(&gate, port, true).await?.is_none() {
            out.missed += 1;
            helper.close(port)?;
            continue;
        }
        if period_ms > 0 {
            tokio::time::sleep(Duration::from_millis(
                jitter.below(period_ms * 1_000_000) / 1_000_000,
            ))
            .await;
        }
        let waiting = seen(&gate, port, false);
        let start = Instant::now();
        helper.close(port)?;
        match waiting.await? {
            Some(at) => out.samples.push(at.saturating_duration_since(start)),
            None => out.missed += 1,
        }
    }
    drop(helper);
    pipeline.abort();
    drain.abort();
    if out.samples.is_empty() {
        bail!("{backend}: no sample");
    }
    Ok(out)
}

/// Spins until the gate knows `port` as listening (or not); the instant it
/// saw the change, or `None` after 10 s.
fn spin_until(gate: &Gate, port: u16, listening: bool) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now_listening = gate.target(port) != Err(GateRefusal::NotListening);
        if now_listening == listening {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

/// One row: p50 and p99 in ms.
pub fn quantiles_ms(samples: &[Duration]) -> (f64, f64) {
    (
        ms(quantile(samples, 0.5).unwrap_or_default()),
        ms(quantile(samples, 0.99).unwrap_or_default()),
    )
}

/// The three rows of one [`dial_cost`] run.
fn print_dial_rows(cost: &DialCost, samples: usize, cached: bool) {
    let extra = cost.extra_listeners;
    let (c50, c99) = quantiles_ms(&cost.connect);
    let (v50, v99) = quantiles_ms(&cost.verify);
    let total: Vec<Duration> = cost
        .connect
        .iter()
        .zip(&cost.verify)
        .map(|(c, v)| *c + *v)
        .collect();
    let (t50, t99) = quantiles_ms(&total);
    let note = format!(
        "{samples} fresh connections, {} listening sockets on the machine{}",
        cost.listeners_on_machine,
        if cached {
            format!(", {} served without a dump", cost.from_cache)
        } else {
            String::new()
        }
    );
    println!("| loopback connect alone, +{extra} listeners (ms) | {c50:.3} | {c99:.3} | {note} |");
    println!(
        "| verification alone, +{extra} listeners (ms) | {v50:.3} | {v99:.3} | {} |",
        if cached {
            "counters read; dump + check only when they moved"
        } else {
            "sock_diag dump + check"
        }
    );
    println!(
        "| verified dial (connect + verify), +{extra} listeners (ms) | {t50:.3} | {t99:.3} | {:.2}x the connect alone at p50 |",
        t50 / c50
    );
}

/// Measures both and prints their table (Markdown) on stdout.
pub async fn report(quick: bool) -> Result<()> {
    let samples = if quick { 200 } else { 2000 };
    let exe = std::env::current_exe()?;
    println!();
    println!("| live gate and verified dial | p50 | p99 | note |");
    println!("|:--|--:|--:|:--|");
    // The eBPF backend's counters, when it runs here (root).
    let ebpf: Option<Detector> = detect::start(BackendChoice::Ebpf, &DetectorConfig::default())
        .ok()
        .map(|(detector, _)| detector);
    let counters = ebpf.as_ref().and_then(|d| d.port_changes.clone());
    let runs = [
        (0, None),
        (1000, None),
        (0, counters.clone()),
        (1000, counters),
    ];
    for (extra, counters) in runs {
        let cached = counters.is_some();
        if extra == 0 && cached {
            println!("| *with the eBPF listener-change counters (dial cache)* | | | |");
        }
        let cost =
            tokio::task::spawn_blocking(move || dial_cost(samples, extra, counters)).await??;
        print_dial_rows(&cost, samples, cached);
    }
    for (backend, samples) in [
        ("ebpf", if quick { 20 } else { 200 }),
        ("procfs", if quick { 5 } else { 30 }),
    ] {
        match close_to_refused(&exe, backend, samples).await {
            Ok(run) => {
                let (p50, p99) = quantiles_ms(&run.samples);
                println!(
                    "| listener closed -> port refused, {backend} (ms) | {p50:.3} | {p99:.3} | {} samples, {} missed{} |",
                    run.samples.len(),
                    run.missed,
                    if backend == "procfs" {
                        ", default 1 s poll, closed at a random point of it"
                    } else {
                        ""
                    }
                );
            }
            Err(err) => println!(
                "| listener closed -> port refused, {backend} | - | - | not measured: {err:#} |"
            ),
        }
    }
    Ok(())
}
