//! The Vite and browser fixtures on their own (no runner, no simulator):
//! a page served under the preview base path gets a hot update through
//! Vite's HMR WebSocket without a full reload, and Vite's host check is on.
//! The end-to-end tests build on both facts.

use anyhow::{Result, ensure};
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
    wait_for_hmr_socket(&mut browser, port, &base).await?;

    let edited = "edited through hmr";
    app.edit_message(edited)?;
    if let Err(err) = browser.wait_for_text(edited).await {
        panic!("{err:#}\nvite log:\n{}", server.log());
    }

    let after = browser.state().await?;
    assert_eq!(after.text.as_deref(), Some(edited));
    assert_eq!(
        after.boot_id.as_deref(),
        Some(boot_id.as_str()),
        "page reloaded"
    );
    assert!(!after.reloaded, "page reloaded: {after:#?}");
    assert_eq!(after.navigations, 1, "extra navigations: {after:#?}");
    let hmr = hmr_socket(&after, port, &base).expect("hmr socket");
    assert!(!hmr.closed, "hmr socket closed: {hmr:#?}");
    assert!(
        hmr.received
            .iter()
            .any(|frame| frame.contains("\"type\":\"update\"") && frame.contains("message.js")),
        "no hmr update frame for message.js: {hmr:#?}"
    );
    assert!(
        after.console_errors.is_empty(),
        "console errors: {after:#?}"
    );
    assert!(
        after.failed_requests.is_empty(),
        "failed requests: {after:#?}"
    );

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

/// The socket Vite's client opened at the base path of the page's origin.
fn hmr_socket<'a>(
    state: &'a integration_tests::browser::PageState,
    port: u16,
    base: &str,
) -> Option<&'a integration_tests::browser::WebSocketRecord> {
    let prefix = format!("ws://127.0.0.1:{port}{base}?");
    state
        .web_sockets
        .iter()
        .find(|ws| ws.url.starts_with(&prefix))
}

/// Vite's client connects after the first render; an edit before its
/// `connected` frame would not be seen as a hot update.
async fn wait_for_hmr_socket(browser: &mut Browser, port: u16, base: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = browser.state().await?;
        if let Some(ws) = hmr_socket(&state, port, base)
            && ws.received.iter().any(|frame| frame.contains("connected"))
        {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no connected hmr socket: {state:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
