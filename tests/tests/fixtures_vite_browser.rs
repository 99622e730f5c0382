//! The Vite and browser fixtures on their own (no runner, no simulator):
//! a page served under the preview base path gets a hot update through
//! Vite's HMR WebSocket without a full reload, and Vite's host check is on.
//! The end-to-end tests build on both facts.

use anyhow::Result;
use integration_tests::browser::Browser;
use integration_tests::vite::{self, INITIAL_MESSAGE, ViteApp};

#[tokio::test]
async fn vite_page_updates_through_hmr_without_reload() -> Result<()> {
    let app = ViteApp::new()?;
    let port = vite::free_port()?;
    // The same base the preview front uses, so the HMR path is the one the
    // proxied test will see.
    let base = vite::preview_base(port);
    let server = app.start(port, &base).await?;
    let mut browser = Browser::launch().await?;

    let status = browser.goto(&server.url()).await?;
    assert_eq!(status, 200, "page status");
    browser.wait_for_text(INITIAL_MESSAGE).await?;
    let before = browser.state().await?;
    let boot_id = before
        .boot_id
        .clone()
        .expect("main.js sets window.__bootId");
    // Vite's client connects to the page's origin at the base path; an edit
    // before its `connected` frame would not come as a hot update.
    let hmr_prefix = format!("ws://127.0.0.1:{port}{base}?");
    browser
        .wait_for_web_socket(&hmr_prefix, "connected")
        .await?;

    let edited = "edited through hmr";
    app.edit_message(edited)?;
    if let Err(err) = browser.wait_for_text(edited).await {
        panic!("{err:#}\nvite log:\n{}", server.log());
    }

    let after = browser.state().await?;
    assert_eq!(after.text.as_deref(), Some(edited));
    after.assert_hot_update(&boot_id, &hmr_prefix);

    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn vite_host_check_blocks_foreign_hosts() -> Result<()> {
    let app = ViteApp::new()?;
    let port = vite::free_port()?;
    let base = vite::preview_base(port);
    let _server = app.start(port, &base).await?;

    let foreign = vite::http_get(port, &base, "evil.example").await?;
    assert_eq!(foreign.status, 403, "foreign host: {foreign:?}");
    assert!(
        foreign.body.contains("Blocked request"),
        "foreign host: {foreign:?}"
    );

    // What the runner sends when it forwards a request.
    let forwarded = vite::http_get(port, &base, &format!("localhost:{port}")).await?;
    assert_eq!(forwarded.status, 200, "forwarded host: {forwarded:?}");
    assert!(forwarded.body.contains("@vite/client"), "{forwarded:?}");
    Ok(())
}
