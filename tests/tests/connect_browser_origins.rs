//! Chromium through the runner for what a stock setup needs, with one
//! browser: a stock Vite app (no `--base`) on its per-port origin
//! `http://p<port>.localhost:<front>/`, and a Vite dev server on HTTPS
//! (`@vitejs/plugin-basic-ssl`, a self-signed certificate) that the runner
//! finds out about and speaks TLS to. Each page loads (its module ran) and
//! takes a hot update of an edit through the forwarded HMR socket.

use anyhow::{Context, Result};
use integration_tests::browser::Browser;
use integration_tests::e2e::{self, WAIT};
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::vite::{self, INITIAL_MESSAGE, ViteApp};

/// A simulator and a runner running `app`'s Vite on a fresh port with
/// `base` (and `extra_env`), the port approved; returns them and the port.
async fn runner_with_vite(
    app: &ViteApp,
    base_for: impl Fn(u16) -> String,
    sim_config: SimConfig,
    extra_env: &[(&str, &str)],
) -> Result<(Simulator, RunnerProcess, u16)> {
    let port = vite::free_port()?;
    let sim = Simulator::start(sim_config).await?;
    let command = app.command(port, &base_for(port));
    let mut args = RunnerArgs::new("origins", command.argv.clone());
    args.env = command.env.clone();
    args.env.extend(
        extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    args.cwd = Some(command.cwd.clone());
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let request = sim
        .wait_for_request(port, WAIT)
        .await
        .with_context(|| format!("vite never asked about:\n{}", runner.output()))?;
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    Ok((sim, runner, port))
}

/// Loads `url`, checks the module ran, edits the message and checks the
/// page took it as a hot update on the socket at `hmr_prefix`.
async fn loads_and_hot_reloads(
    browser: &mut Browser,
    app: &ViteApp,
    runner: &RunnerProcess,
    url: &str,
    hmr_prefix: &str,
    edited: &str,
) -> Result<()> {
    let status = browser.goto(url).await?;
    assert_eq!(status, 200, "page status of {url}");
    browser
        .wait_for_text(INITIAL_MESSAGE)
        .await
        .with_context(|| format!("{url}\nrunner:\n{}", runner.output()))?;
    let boot_id = browser
        .state()
        .await?
        .boot_id
        .context("main.js sets window.__bootId")?;
    browser
        .wait_for_web_socket(hmr_prefix, "connected")
        .await
        .with_context(|| runner.output())?;
    app.edit_message(edited)?;
    if let Err(err) = browser.wait_for_text(edited).await {
        panic!(
            "{err:#}\npage: {:#?}\nrunner:\n{}",
            browser.state().await?,
            runner.output()
        );
    }
    browser
        .state()
        .await?
        .assert_hot_update(&boot_id, hmr_prefix);
    Ok(())
}

#[tokio::test]
async fn stock_vite_on_its_port_origin_and_https_vite_load_and_hot_reload() -> Result<()> {
    let mut browser = Browser::launch().await?;

    // A stock app: base "/", absolute `/@vite/client` and `/src/main.js`.
    let app = ViteApp::new()?;
    let (sim, runner, port) =
        runner_with_vite(&app, |_| "/".to_owned(), SimConfig::default(), &[]).await?;
    let origin = sim.port_origin_url(port);
    assert_eq!(
        origin,
        format!("http://p{port}.localhost:{}/", sim.preview_addr().port())
    );
    let hmr_prefix = format!("ws://p{port}.localhost:{}/?", sim.preview_addr().port());
    loads_and_hot_reloads(
        &mut browser,
        &app,
        &runner,
        &origin,
        &hmr_prefix,
        "edited on its own origin",
    )
    .await?;
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    // Leave the page while its server runs: what leaving aborts (Vite's
    // client's blob) lands in this record, not in the next page's.
    browser.goto(&format!("{}/requests", sim.api_url())).await?;
    drop(runner);
    drop(sim);

    // Vite on HTTPS, through `/preview/<port>/` (the simulator speaks plain
    // HTTP to the browser; the runner speaks TLS to Vite).
    let app = ViteApp::new()?;
    let keep_prefix = SimConfig {
        keep_preview_prefix: true,
        ..SimConfig::default()
    };
    let (sim, runner, port) = runner_with_vite(
        &app,
        vite::preview_base,
        keep_prefix,
        &[("VITE_HTTPS", "1")],
    )
    .await?;
    let url = sim.preview_url(port);
    let hmr_prefix = format!("ws://{}{}?", sim.preview_addr(), vite::preview_base(port));
    loads_and_hot_reloads(
        &mut browser,
        &app,
        &runner,
        &url,
        &hmr_prefix,
        "edited over https",
    )
    .await?;
    let plain = vite::http_get(port, "/", &format!("localhost:{port}")).await;
    assert!(
        !matches!(plain, Ok(ref r) if r.status == 200),
        "vite served plain HTTP: the test did not run it on HTTPS: {plain:?}"
    );
    // The person is told (and `status` shows the scheme).
    let told = format!("port {port} (vite): speaks HTTPS; forwarded over TLS");
    assert!(runner.output().contains(&told), "{}", runner.output());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());

    browser.close().await?;
    Ok(())
}
