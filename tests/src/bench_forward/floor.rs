//! The runner beside the bare forwarder (`bare`), in turns on the same
//! machine: the share of direct throughput and the CPU per request that the
//! harness leaves to any forwarder, and what the runner adds to them.

use anyhow::Context;

use super::load;
use super::run::{Options, Rig, Rounds, per_1000};
use super::server::SMALL;
use crate::bench::procstat;

/// The forwarders compared, with their keys in [`Rounds`]: name, req/s, CPU
/// per 1,000 GETs.
const FORWARDERS: [(&str, &str, &str); 2] = [
    ("kandan-runner", "runner_rate", "runner_cpu"),
    (
        "bare forwarder (no checks; the harness's floor)",
        "bare_rate",
        "bare_cpu",
    ),
];

/// Starts a second rig with the bare forwarder, then runs `rounds` rounds of
/// `requests` 100 B GETs over `clients` connections: direct, through the
/// runner of `rig`, through the bare forwarder. Prints a table.
pub(super) async fn compare(
    rig: &Rig,
    rounds: usize,
    requests: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let bare = Options {
        runner: std::env::current_exe().context("finding the bench binary")?,
        quick: false,
        callgrind: None,
    };
    let bare = Rig::start(&bare).await?;
    // Warm the bare forwarder's connections as the runner's already are.
    load::http_load(&bare.forwarded, "/small", SMALL, 200, clients).await?;
    let mut r = Rounds::default();
    for _ in 0..rounds {
        let l = load::http_load(&rig.direct, "/small", SMALL, requests, clients).await?;
        r.add("direct", l.per_second());
        for (rig, (_, rate, cpu)) in [rig, &bare].into_iter().zip(FORWARDERS) {
            let pid = rig.runner.pid();
            let before = procstat::cpu_time(pid)?;
            let l = load::http_load(&rig.forwarded, "/small", SMALL, requests, clients).await?;
            r.add(cpu, per_1000(procstat::cpu_time(pid)? - before, requests));
            r.add(rate, l.per_second());
        }
    }
    let direct = r.median("direct");
    println!(
        "| 100 B GETs ({requests} req, {clients} conns), median of {rounds} | req/s | share of direct | forwarder CPU per 1,000 |"
    );
    println!("|:--|--:|--:|--:|");
    println!("| direct | {direct:.0} | 100% | |");
    for (name, rate, cpu) in FORWARDERS {
        let (rate, cpu) = (r.median(rate), r.median(cpu));
        println!(
            "| {name} | {rate:.0} | {:.0}% | {cpu:.1} ms |",
            100.0 * rate / direct
        );
    }
    Ok(())
}
