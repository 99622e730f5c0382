//! `bench-forward soak`: one kind of the table's forwarded load, run for a
//! fixed time, so `perf` or `strace` can be attached to the runner (its
//! pid is printed first) while nothing else happens: 100 B GETs, 1 MiB ones
//! with `--big`, WebSocket echo round trips with `--ws`.

use std::time::{Duration, Instant};

use super::load::{self, Target};
use super::run::{Options, Rig};
use super::server::{BIG, SMALL};
use crate::bench::{instructions, procstat};

/// What a soak sends: 100 B GETs, 1 MiB ones (`big`) or WebSocket echoes
/// (`ws`); GETs as fast as they are answered, or at `rate` per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Soak {
    pub big: bool,
    pub ws: bool,
    pub rate: Option<f64>,
}

/// Runs forwarded 100 B GETs over `clients` keep-alive connections for
/// `seconds` (at `rate` per second if given, see
/// [`load::http_load_paced`]), then prints the rate and the CPU per 1,000
/// requests of the runner and of the bench's process (client and
/// simulator).
pub async fn soak(opts: Options, seconds: u64, clients: usize, load: Soak) -> anyhow::Result<()> {
    let Soak { big, ws, rate } = load;
    let (path, len, batch) = if big {
        ("/big", BIG, 100)
    } else {
        ("/small", SMALL, 2000)
    };
    let rig = Rig::start(&opts).await?;
    let (direct, forwarded) = (&rig.direct, &rig.forwarded);
    let pid = rig.runner.pid();
    if ws {
        return ws_echoes(direct, forwarded, seconds).await;
    }
    eprintln!("runner pid {pid}; forwarding for {seconds} s");
    let bench = std::process::id();
    if opts.callgrind.is_some() {
        instructions::start(pid)?;
    }
    let (runner_cpu, bench_cpu) = (procstat::cpu_time(pid)?, procstat::cpu_time(bench)?);
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let batch = rate.map_or(batch, |rate| (rate as usize / 2).max(1));
        load::http_load_paced(forwarded, path, len, batch, clients, rate).await?;
        done += batch;
    }
    let wall = started.elapsed();
    if let Some(out) = &opts.callgrind {
        let counted = instructions::finish(pid, out)?;
        println!(
            "{done} forwarded GETs of {path}: runner {:.0} instructions per GET (user space, callgrind)",
            counted as f64 / done as f64
        );
        return Ok(());
    }
    let per_1000 = |d: Duration| d.as_secs_f64() * 1e6 / done as f64;
    let runner_ms = per_1000(procstat::cpu_time(pid)? - runner_cpu);
    let bench_ms = per_1000(procstat::cpu_time(bench)? - bench_cpu);
    let direct_rate = {
        let l = load::http_load(direct, path, len, batch * 10, clients).await?;
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

/// WebSocket echo round trips, direct and forwarded in turn, for `seconds`;
/// prints the p50 of each and their difference.
async fn ws_echoes(direct: &Target, forwarded: &Target, seconds: u64) -> anyhow::Result<()> {
    let (mut via_direct, mut via_runner) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        via_direct.extend(load::ws_echo(direct, 500).await?);
        via_runner.extend(load::ws_echo(forwarded, 500).await?);
    }
    let p50 = |samples: &[Duration]| {
        crate::bench::stats::quantile(samples, 0.5)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    let (d, f) = (p50(&via_direct), p50(&via_runner));
    println!(
        "{} WebSocket echoes each way: p50 direct {d:.3} ms, forwarded {f:.3} ms, added {:.3} ms",
        via_direct.len(),
        f - d
    );
    Ok(())
}
