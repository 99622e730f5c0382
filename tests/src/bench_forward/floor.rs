//! The runner beside the bare forwarder (`bare`), in turns on the same
//! machine: the share of direct throughput and the CPU per request that the
//! harness leaves to any forwarder, and what the runner adds to them.

use anyhow::Context;

use super::load;
use super::run::{Options, Rig, per_1000};
use super::server::SMALL;
use crate::bench::procstat;
use crate::bench::stats::median;

/// What one forwarder did over the rounds.
#[derive(Default)]
struct Samples {
    rate: Vec<f64>,
    cpu_per_1000: Vec<f64>,
}

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
    };
    let bare = Rig::start(&bare).await?;
    // Warm the bare forwarder's connections as the runner's already are.
    load::http_load(&bare.forwarded, "/small", SMALL, 200, clients).await?;
    let (mut direct, mut runner, mut floor) = (Vec::new(), Samples::default(), Samples::default());
    for _ in 0..rounds {
        let l = load::http_load(&rig.direct, "/small", SMALL, requests, clients).await?;
        direct.push(l.per_second());
        for (rig, samples) in [(rig, &mut runner), (&bare, &mut floor)] {
            let pid = rig.runner.pid();
            let before = procstat::cpu_time(pid)?;
            let l = load::http_load(&rig.forwarded, "/small", SMALL, requests, clients).await?;
            let cpu = procstat::cpu_time(pid)? - before;
            samples.rate.push(l.per_second());
            samples.cpu_per_1000.push(per_1000(cpu, requests));
        }
    }
    let direct = median(&direct).unwrap_or(f64::NAN);
    println!(
        "| 100 B GETs ({requests} req, {clients} conns), median of {rounds} | req/s | share of direct | forwarder CPU per 1,000 |"
    );
    println!("|:--|--:|--:|--:|");
    println!("| direct | {direct:.0} | 100% | |");
    for (name, samples) in [
        ("kandan-runner", &runner),
        ("bare forwarder (no checks; the harness's floor)", &floor),
    ] {
        let rate = median(&samples.rate).unwrap_or(f64::NAN);
        let cpu = median(&samples.cpu_per_1000).unwrap_or(f64::NAN);
        println!(
            "| {name} | {rate:.0} | {:.0}% | {cpu:.1} ms |",
            100.0 * rate / direct
        );
    }
    Ok(())
}
