//! The user-level figure (third table of `cargo xtask bench forward`): a
//! page of the Vite fixture importing [`MODULES`] modules, loaded in
//! headless Chromium through the simulator's preview front (Vite under a
//! real `kandan-runner connect`) and directly from Vite. One request per
//! module is where the per-request cost of forwarding shows to a person.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::process::{Launch, RunnerProcess};
use crate::bench::procstat;
use crate::bench::stats::{median, ms};
use crate::browser::{Browser, PageLoad};
use crate::simulator::{SimConfig, Simulator};
use crate::vite::{self, INITIAL_MESSAGE, ViteApp};
use crate::{preview_client, support};

/// Modules the page imports besides its own.
pub const MODULES: usize = 300;

/// Vite's start, detection and approval on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Samples of each path (`--quick`: fewer).
fn samples(quick: bool) -> usize {
    if quick { 3 } else { 5 }
}

/// Starts Vite under the runner, loads the page both ways and prints the
/// table; everything started is stopped before it returns, on errors too.
pub async fn report(runner: &Path, quick: bool) -> anyhow::Result<()> {
    let app = ViteApp::new()?;
    app.add_modules(MODULES)?;
    let port = support::free_port()?;
    // The preview front keeps `/preview/<port>` in the forwarded path, so
    // Vite serves under that base and its URLs resolve both ways.
    let base = vite::preview_base(port);
    let sim = Simulator::start(SimConfig {
        auto_approve: true,
        keep_preview_prefix: true,
        record_forward_events: false,
        ..SimConfig::default()
    })
    .await?;
    let vite = app.command(port, &base);
    let runner = RunnerProcess::spawn(
        &sim,
        Launch {
            runner,
            runner_id: "bench-vite",
            command: vite.argv.iter().map(Into::into).collect(),
            env: vite.env.clone(),
            cwd: Some(vite.cwd.clone()),
            log: app.dir().join("runner.log"),
            callgrind: None,
        },
    )?;
    let result = measure(&sim, &runner, port, &base, quick).await;
    if let Err(err) = &result {
        eprintln!("runner and vite log:\n{}", runner.log_tail());
        eprintln!("page benchmark failed: {err:#}");
    }
    drop(runner);
    result
}

async fn measure(
    sim: &Simulator,
    runner: &RunnerProcess,
    port: u16,
    base: &str,
    quick: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    vite::wait_until_serving(port, base).await?;
    wait_forwarded(sim, port).await?;
    eprintln!(
        "vite page ({MODULES} modules) forwarded after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let direct = format!("http://127.0.0.1:{port}{base}");
    let forwarded = sim.preview_url(port);
    let mut browser = Browser::launch().await?;
    // Vite transforms each module on its first request: not measured.
    load(&mut browser, &direct).await?;
    load(&mut browser, &forwarded).await?;
    let count = samples(quick);
    let (mut direct_loads, mut forwarded_loads) = (Vec::new(), Vec::new());
    let mut runner_cpu = Duration::ZERO;
    for _ in 0..count {
        // Alternated, so a change in the machine's load hits both paths.
        direct_loads.push(load(&mut browser, &direct).await?);
        let before = procstat::cpu_time(runner.pid())?;
        forwarded_loads.push(load(&mut browser, &forwarded).await?);
        runner_cpu += procstat::cpu_time(runner.pid())? - before;
    }
    browser.close().await?;
    print_table(
        count,
        &direct_loads,
        &forwarded_loads,
        runner_cpu / count as u32,
    );
    Ok(())
}

/// Waits until the page answers 200 through the preview front (the runner
/// has detected Vite and the simulator approved the port).
async fn wait_forwarded(sim: &Simulator, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let answer = preview_client::get(sim, port, "/").await;
        if let Ok(page) = &answer
            && page.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the page never answered 200 through the preview front: {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One load in a fresh tab, cache disabled; an error unless the whole page
/// (every module, none from the cache nor revalidated) loaded and ran.
async fn load(browser: &mut Browser, url: &str) -> anyhow::Result<PageLoad> {
    let page = browser
        .time_load(url)
        .await
        .with_context(|| format!("loading {url}"))?;
    ensure!(
        page.status == Some(200)
            && page.failed_requests.is_empty()
            && page.text.as_deref() == Some(INITIAL_MESSAGE),
        "{url} did not load whole: {page:?}"
    );
    ensure!(
        page.resources as usize > MODULES && page.cached_resources == 0 && page.not_modified == 0,
        "{url}: expected every module fetched, none cached: {page:?}"
    );
    Ok(page)
}

fn print_table(count: usize, direct: &[PageLoad], forwarded: &[PageLoad], runner_cpu: Duration) {
    let times = |loads: &[PageLoad]| loads.iter().map(|l| l.load_ms).collect::<Vec<f64>>();
    let (d, f) = (times(direct), times(forwarded));
    let med = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let range = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{min:.0}..{max:.0}")
    };
    let requests = |loads: &[PageLoad]| loads.first().map_or(0, |l| l.resources + 1);
    let kib = |loads: &[PageLoad]| loads.first().map_or(0, |l| l.transfer_bytes / 1024);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n| Vite page, {MODULES} modules, headless Chromium, cache disabled | direct | forwarded | ratio |"
    );
    let _ = writeln!(out, "|:--|--:|--:|--:|");
    let _ = writeln!(
        out,
        "| navigation start -> load event, median of {count} fresh tabs (ms) | {:.0} | {:.0} | {:.2}x |",
        med(&d),
        med(&f),
        med(&f) / med(&d)
    );
    let _ = writeln!(
        out,
        "| navigation start -> load event, min..max (ms) | {} | {} | |",
        range(&d),
        range(&f)
    );
    let _ = writeln!(
        out,
        "| requests per load (document + resources) | {} | {} | |",
        requests(direct),
        requests(forwarded)
    );
    let _ = writeln!(
        out,
        "| KiB fetched per load (resources, headers included) | {} | {} | |",
        kib(direct),
        kib(forwarded)
    );
    let _ = writeln!(
        out,
        "| runner CPU per forwarded load (ms) | | {:.0} | |",
        ms(runner_cpu)
    );
}
