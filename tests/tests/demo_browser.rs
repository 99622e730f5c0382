//! `cargo xtask demo` in Chromium, end to end: the demo as `kandan-sim
//! --demo` starts it (same library code), then the stand-in page is clicked
//! through like a person would: approve the app's port and see its preview,
//! start Codex (the real pinned one, offline against the demo's fake
//! model), send a turn, approve its command and its file change, watch the
//! text stream in and the preview change, have it start a dev server and
//! preview that, then open the editor; stopped, nothing is left running.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use integration_tests::browser::{Browser, chromium_path};
use integration_tests::code_server::processes_mentioning;
use integration_tests::codex::codex_bin;
use integration_tests::demo::{Demo, DemoOptions, EDITED_MESSAGE, RUNNER_ID};
use integration_tests::fake_model::Reply;
use integration_tests::support::artifacts_dir;

/// Codex's start and a turn's steps on two loaded cores.
const CODEX_STEP: Duration = Duration::from_secs(90);

fn skip(test: &str) -> bool {
    let code_server =
        integration_tests::code_server::fixture_dir().join("node_modules/.bin/code-server");
    let missing = [
        (codex_bin().is_err(), "the Codex fixture"),
        (!code_server.exists(), "the code-server fixture"),
        (!chromium_path().exists(), "Chromium"),
    ];
    let Some((_, what)) = missing.iter().find(|(gone, _)| *gone) else {
        return false;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {what} is missing (cargo xtask setup --tests)"
    );
    eprintln!("{test}: skipped, {what} is missing");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_runs_the_whole_loop_in_chromium() -> Result<()> {
    let test = "the_demo_page_runs_the_whole_loop_in_chromium";
    if skip(test) {
        return Ok(());
    }
    let began = Instant::now();
    let root = tempfile::Builder::new().prefix("kandan-demo-").tempdir()?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let demo = Demo::start(DemoOptions {
        root: root.path().to_path_buf(),
        runner_addr: loopback,
        preview_addr: loopback,
        // The page's Open editor button starts it, as a person would.
        start_editor: false,
    })
    .await?;
    let ready = began.elapsed();
    let result = drive(&demo).await;
    let log = demo.runner_output();
    demo.stop().await?;
    eprintln!(
        "{test}: demo ready in {ready:?}, whole test {:?}",
        began.elapsed()
    );
    result.with_context(|| format!("runner log:\n{log}"))?;
    // What Ctrl-C does: nothing the demo started outlives it (they all
    // carry the demo's HOME in their environment).
    let needle = root.path().canonicalize()?.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "left running after stop: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn drive(demo: &Demo) -> Result<()> {
    let mut browser = Browser::launch().await?;
    let page = demo.page_url();
    ensure!(browser.goto(&page).await? == 200, "the page did not load");
    browser
        .wait_for_contains("#runners", RUNNER_ID, CODEX_STEP)
        .await?;

    // The app's port: asked about, approved on the page, then previewed.
    let port = demo.app_port();
    let row = format!("#ports tr[data-port=\"{port}\"]");
    browser
        .wait_for_contains(&row, "pending", CODEX_STEP)
        .await?;
    browser.click(&format!("{row} button.approve")).await?;
    browser
        .wait_for_contains(&row, "approved", CODEX_STEP)
        .await?;
    let href = browser
        .attribute(&format!("{row} a.preview"), "href")
        .await?
        .context("no preview link")?;
    ensure!(href == format!("/preview/{port}/"), "preview link {href}");
    let origin = format!("http://{}", demo.sim().preview_addr());
    let preview = browser.time_load(&format!("{origin}{href}")).await?;
    ensure!(preview.status == Some(200), "preview: {preview:?}");
    ensure!(
        preview.text.as_deref() == Some("Hello from the demo app."),
        "preview: {preview:?}"
    );

    // Codex: start it in the workspace, one turn, two approvals.
    browser.click("#start-instance").await?;
    browser
        .wait_for_contains("#instances", "(idle)", CODEX_STEP)
        .await?;
    browser.fill("#turn-text", "make a change").await?;
    browser.click("#send-turn").await?;
    let command = ".approval:has-text(\"date -u\")";
    browser
        .wait_for_contains("#approvals", "date -u", CODEX_STEP)
        .await?;
    browser.click(&format!("{command} button.approve")).await?;
    browser
        .wait_for_contains("#approvals", "index.html", CODEX_STEP)
        .await?;
    browser
        .click(".approval:has-text(\"index.html\") button.approve")
        .await?;
    let transcript = browser
        .wait_for_contains("#transcript", "start a dev server next.", CODEX_STEP)
        .await?;
    for line in [
        "> make a change",
        "[asks to run: /bin/bash -lc 'date -u",
        "[approved]",
    ] {
        ensure!(transcript.contains(line), "no {line:?} in {transcript}");
    }
    let checked = std::fs::read_to_string(demo.workspace().join("checked-at.txt"))
        .context("the approved command did not run")?;
    ensure!(checked.contains("UTC"), "checked-at.txt: {checked}");
    let preview = browser.time_load(&format!("{origin}{href}")).await?;
    ensure!(
        preview.text.as_deref() == Some(EDITED_MESSAGE),
        "the file change is not in the preview: {preview:?}"
    );

    // A dev server the agent starts: its command approved, then its port,
    // then its preview.
    browser.fill("#turn-text", "start a dev server").await?;
    browser.click("#send-turn").await?;
    browser
        .wait_for_contains("#approvals", "http.server", CODEX_STEP)
        .await?;
    browser
        .click(".approval:has-text(\"http.server\") button.approve")
        .await?;
    let dev = format!("#ports tr[data-port=\"{}\"]", demo.dev_port());
    let asked = browser
        .wait_for_contains(&dev, "pending", CODEX_STEP)
        .await?;
    ensure!(
        asked.contains("(agent instance-"),
        "not the agent's: {asked}"
    );
    browser.click(&format!("{dev} button.approve")).await?;
    browser
        .wait_for_contains(&dev, "approved", CODEX_STEP)
        .await?;
    let preview = browser
        .time_load(&format!("{origin}/preview/{}/", demo.dev_port()))
        .await?;
    ensure!(
        preview.text.as_deref() == Some("Started by the agent, forwarded with its instance."),
        "dev server preview: {preview:?}"
    );
    browser
        .wait_for_contains("#transcript", "open its preview.", CODEX_STEP)
        .await?;
    let shot = artifacts_dir("demo_browser").join("kandan-page.png");
    browser.screenshot(&shot).await?;

    // The editor: the button starts code-server in the workspace; its link
    // opens the workbench, which lists the workspace's files.
    browser.click("#open-editor").await?;
    let link = browser
        .attribute("#editor-link", "href")
        .await?
        .context("no editor link")?;
    ensure!(link.starts_with("/editor/"), "editor link {link}");
    ensure!(browser.goto(&format!("{origin}{link}")).await? == 200);
    browser
        .wait_for_contains(".explorer-folders-view", "README.md", CODEX_STEP)
        .await?;
    browser
        .screenshot(&artifacts_dir("demo_browser").join("editor.png"))
        .await?;
    let _ = browser.close().await;
    Ok(())
}

/// The attacker is the agent (or any process in the tree): a command line
/// with markup shows up in the port list, the approval and the transcript.
/// The page must show it as text, never as HTML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_a_command_line_stays_text_on_the_page() -> Result<()> {
    let test = "markup_in_a_command_line_stays_text_on_the_page";
    if skip(test) {
        return Ok(());
    }
    let root = tempfile::Builder::new().prefix("kandan-demo-").tempdir()?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let demo = Demo::start(DemoOptions {
        root: root.path().to_path_buf(),
        runner_addr: loopback,
        preview_addr: loopback,
        start_editor: false,
    })
    .await?;
    let result = inject(&demo).await;
    let log = demo.runner_output();
    demo.stop().await?;
    result.with_context(|| format!("runner log:\n{log}"))
}

async fn inject(demo: &Demo) -> Result<()> {
    // Escaped, the markup is in the text; injected, only "x" would be.
    let payload = "<b id=pwned>x</b>";
    let port = integration_tests::support::free_port()?;
    demo.model().push([
        Reply::exec_command(
            "evil_1",
            &format!("python3 -m http.server {port} --bind 127.0.0.1 --directory '{payload}'"),
        ),
        Reply::text(&[payload]),
    ]);
    let mut browser = Browser::launch().await?;
    ensure!(browser.goto(&demo.page_url()).await? == 200);
    browser.click("#start-instance").await?;
    browser
        .wait_for_contains("#instances", "(idle)", CODEX_STEP)
        .await?;
    browser.fill("#turn-text", "anything").await?;
    browser.click("#send-turn").await?;
    browser
        .wait_for_contains("#approvals", payload, CODEX_STEP)
        .await?;
    browser.click("#approvals button.approve").await?;
    let row = format!("#ports tr[data-port=\"{port}\"]");
    browser.wait_for_contains(&row, payload, CODEX_STEP).await?;
    let transcript = browser
        .wait_for_contains("#transcript", &format!("[approved]\n{payload}"), CODEX_STEP)
        .await?;
    ensure!(transcript.contains(payload), "{transcript}");
    let _ = browser.close().await;
    Ok(())
}
