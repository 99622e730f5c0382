//! The whole chain with a browser: `kandan-runner connect -- vite`, the
//! listener detected and approved through the simulator, the page loaded in
//! headless Chromium through the preview front, and a source edit arriving
//! as a hot update through the forwarded HMR WebSocket (no reload).

use anyhow::{Context, Result};
use integration_tests::browser::Browser;
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::vite::{self, INITIAL_MESSAGE, ViteApp};

#[tokio::test]
async fn vite_page_updates_through_the_forwarded_hmr_socket() -> Result<()> {
    let app = ViteApp::new()?;
    let port = vite::free_port()?;
    let base = vite::preview_base(port);
    let sim = Simulator::start(SimConfig {
        keep_preview_prefix: true,
        ..SimConfig::default()
    })
    .await?;
    let command = app.command(port, &base);
    let mut args = RunnerArgs::new("browser", command.argv.clone());
    args.env = command.env.clone();
    args.cwd = Some(command.cwd.clone());
    let runner = RunnerProcess::start(&sim, args)?;
    let backend = runner.backend_line().await?;
    assert!(backend.contains("backend"), "first line: {backend}");
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;

    // Detected, asked about, approved.
    let request = sim
        .wait_for_request(port, WAIT)
        .await
        .with_context(|| format!("vite never asked about:\n{}", runner.output()))?;
    assert!(
        request.event["command"]
            .as_str()
            .is_some_and(|c| c.contains("vite")),
        "{}",
        request.event
    );
    // Not reachable before the approval.
    let refused = preview_client::get(&sim, port, &base).await?;
    assert_eq!(
        refused.error_code(),
        Some("port_not_approved"),
        "{refused:?}"
    );
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;

    // The host check passes for forwarded requests.
    let page = preview_client::get(&sim, port, &base).await?;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(!page.text().contains("Blocked request"), "{}", page.text());
    assert!(page.text().contains("@vite/client"), "{}", page.text());

    let mut browser = Browser::launch().await?;
    let url = sim.preview_url(port);
    let status = browser.goto(&url).await?;
    assert_eq!(status, 200, "page status");
    browser.wait_for_text(INITIAL_MESSAGE).await?;
    let boot_id = browser
        .state()
        .await?
        .boot_id
        .context("main.js sets window.__bootId")?;
    // Vite's client opens its socket on the page's origin (the simulator),
    // at the base path; the runner forwards it to Vite.
    let hmr_prefix = format!("ws://{}{base}?", sim.preview_addr());
    browser
        .wait_for_web_socket(&hmr_prefix, "connected")
        .await
        .with_context(|| runner.output())?;

    let edited = "edited through the runner";
    app.edit_message(edited)?;
    if let Err(err) = browser.wait_for_text(edited).await {
        panic!("{err:#}\nrunner:\n{}", runner.output());
    }
    let after = browser.state().await?;
    after.assert_hot_update(&boot_id, &hmr_prefix);
    assert!(
        !sim.events_of("forward_websocket_opened").is_empty(),
        "the hmr socket did not go through the runner"
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(
        !runner.output().contains("Blocked request"),
        "{}",
        runner.output()
    );

    browser.close().await?;
    Ok(())
}
