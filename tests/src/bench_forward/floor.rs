//! The runner beside the bare forwarder (`bare`), in turns on the same
//! machine: the share of direct throughput and the CPU per request that the
//! harness leaves to any forwarder, and what the runner adds to them.

use anyhow::Context;

use super::load;
use super::run::{Options, Rig, Rounds, per_1000};
use super::server::SMALL;
use crate::bench::{instructions, procstat};

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
    // Half the slower forwarder's rate, for both: see `paced`.
    let rate = 0.5 * r.median("runner_rate").min(r.median("bare_rate"));
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
    paced([rig, &bare], rounds, requests, clients, rate).await?;
    instructions(rig, &bare.runner, clients).await
}

/// The same GETs sent at one `rate` to each forwarder in turn: as fast as
/// they are answered (above), the faster forwarder also gets more
/// requests per wake-up, which lowers its CPU per request whatever its
/// code does; at one pace both see the same arrivals.
async fn paced(
    rigs: [&Rig; 2],
    rounds: usize,
    requests: usize,
    clients: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let mut r = Rounds::default();
    for _ in 0..rounds {
        for (rig, (_, _, cpu)) in rigs.into_iter().zip(FORWARDERS) {
            let pid = rig.runner.pid();
            let before = procstat::cpu_time(pid)?;
            let forwarded = &rig.forwarded;
            load::http_load_paced(forwarded, "/small", SMALL, requests, clients, Some(rate))
                .await?;
            r.add(cpu, per_1000(procstat::cpu_time(pid)? - before, requests));
        }
    }
    println!();
    println!(
        "| 100 B GETs at {rate:.0}/s for both ({requests} req, {clients} conns), median of {rounds} | forwarder CPU per 1,000 |"
    );
    println!("|:--|--:|");
    for (name, _, cpu) in FORWARDERS {
        println!("| {name} | {:.1} ms |", r.median(cpu));
    }
    let (runner, bare) = (r.median(FORWARDERS[0].2), r.median(FORWARDERS[1].2));
    println!("| kandan-runner / bare forwarder | {:.2}x |", runner / bare);
    Ok(())
}

/// The same GETs counted in instructions, which repeat within about 1%
/// where the CPU times above move by 20%: each forwarder again, under
/// callgrind (see [`crate::bench::instructions`]).
async fn instructions(
    rig: &Rig,
    bare: &super::process::RunnerProcess,
    clients: usize,
) -> anyhow::Result<()> {
    const REQUESTS: usize = 4000;
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("\n(valgrind is not installed: no instruction counts)");
        return Ok(());
    }
    let mut counts = Vec::new();
    for runner in [&rig.runner, bare] {
        let profile = tempfile::tempdir()?;
        let out = profile.path().join("callgrind.out");
        let opts = Options {
            runner: runner.binary().to_owned(),
            quick: false,
            callgrind: Some(out.clone()),
        };
        let counted = Rig::start(&opts).await?;
        let pid = counted.runner.pid();
        // Warm the connections, as in the rounds above.
        load::http_load(&counted.forwarded, "/small", SMALL, 200, clients).await?;
        instructions::start(pid)?;
        load::http_load(&counted.forwarded, "/small", SMALL, REQUESTS, clients).await?;
        counts.push(instructions::finish(pid, &out)? as f64 / REQUESTS as f64);
    }
    println!();
    println!(
        "| 100 B GETs ({REQUESTS} req, {clients} conns), under callgrind | user-space instructions per GET |"
    );
    println!("|:--|--:|");
    for ((name, ..), count) in FORWARDERS.iter().zip(&counts) {
        println!("| {name} | {count:.0} |");
    }
    println!(
        "| kandan-runner / bare forwarder | {:.2}x |",
        counts[0] / counts[1]
    );
    Ok(())
}
