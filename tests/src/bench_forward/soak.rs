//! `bench-forward soak`: the forwarded small-GET load of the table, run
//! for a fixed time, so `perf` or `strace` can be attached to the runner
//! (its pid is printed first) while nothing else happens; 100 B GETs, or
//! 1 MiB ones with `--big`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::load::{self, Target};
use super::run::{Options, spawn_runner, wait_forwarding};
use super::server::{BIG, SMALL};
use crate::bench::procstat;
use crate::simulator::{SimConfig, Simulator};

/// Runs forwarded 100 B GETs over `clients` keep-alive connections for
/// `seconds`, then prints the rate and the CPU per 1,000 requests of the
/// runner and of the bench's process (client and simulator).
pub async fn soak(opts: Options, seconds: u64, clients: usize, big: bool) -> anyhow::Result<()> {
    let (path, len, batch) = if big { ("/big", BIG, 100) } else { ("/small", SMALL, 2000) };
    let dir = tempfile::tempdir()?;
    let sim = Simulator::start(SimConfig {
        auto_approve: true,
        record_forward_events: false,
        ..SimConfig::default()
    })
    .await?;
    let port = crate::support::free_port()?;
    let runner = spawn_runner(&opts, &sim, port, dir.path())?;
    let forwarded = Target {
        addr: sim.preview_addr(),
        prefix: format!("/preview/{port}"),
    };
    let direct = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        prefix: String::new(),
    };
    wait_forwarding(&forwarded, &runner).await?;
    let pid = runner.pid();
    eprintln!("runner pid {pid}; forwarding for {seconds} s");
    let bench = std::process::id();
    let (runner_cpu, bench_cpu) = (procstat::cpu_time(pid)?, procstat::cpu_time(bench)?);
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        load::http_load(&forwarded, path, len, batch, clients).await?;
        done += batch;
    }
    let wall = started.elapsed();
    let per_1000 = |d: Duration| d.as_secs_f64() * 1e6 / done as f64;
    let runner_ms = per_1000(procstat::cpu_time(pid)? - runner_cpu);
    let bench_ms = per_1000(procstat::cpu_time(bench)? - bench_cpu);
    let direct_rate = {
        let l = load::http_load(&direct, path, len, batch * 10, clients).await?;
        l.per_second()
    };
    let rate = done as f64 / wall.as_secs_f64();
    println!(
        "{done} forwarded GETs of {path} in {:.1} s: {rate:.0}/s ({:.0}% of direct {direct_rate:.0}/s); \
         CPU per 1,000: runner {runner_ms:.1} ms, bench (client + simulator) {bench_ms:.1} ms",
        wall.as_secs_f64(),
        100.0 * rate / direct_rate,
    );
    Ok(())
}
