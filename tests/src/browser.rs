//! Headless Chromium driven by `tests/fixtures/browser/drive.mjs`, one step
//! at a time, so a test can edit files between steps.
//!
//! The script speaks JSON lines: one command on its stdin, one answer on its
//! stdout (see the comment at its top). Dropping a [`Browser`] kills both the
//! node process group and Chromium's own group (Playwright starts Chromium
//! detached, so killing node alone would leave it running).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::vite::kill_group;

/// How long one step may wait inside the browser (page load, text).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time for the answer to come back on top of the step's own limit.
const ANSWER_SLACK: Duration = Duration::from_secs(30);
/// Chromium's start on a loaded machine.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(90);

/// `tests/fixtures/browser` in this checkout.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/browser")
}

/// Chromium to drive: `$KANDAN_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("KANDAN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What the page looks like now and what happened since the last `goto`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageState {
    /// Text of the watched element (`#message`), if present.
    pub text: Option<String>,
    /// `window.__bootId` now.
    pub boot_id: Option<String>,
    /// `window.__bootId` right after the page first loaded.
    pub initial_boot_id: Option<String>,
    /// Main-frame navigations since `goto` (1 when nothing reloaded).
    pub navigations: u32,
    /// True when the page reloaded or navigated after `goto`.
    pub reloaded: bool,
    pub console_errors: Vec<String>,
    pub failed_requests: Vec<FailedRequest>,
    pub web_sockets: Vec<WebSocketRecord>,
}

impl PageState {
    /// The first socket whose URL starts with `prefix`, e.g. Vite's HMR
    /// socket `ws://<page host:port><base>?token=...` for the prefix
    /// `ws://<page host:port><base>?`.
    pub fn web_socket(&self, prefix: &str) -> Option<&WebSocketRecord> {
        self.web_sockets
            .iter()
            .find(|ws| ws.url.starts_with(prefix))
    }

    /// Panics unless the page took a Vite hot update of `src/message.js`:
    /// the same `boot_id` as at load, one navigation, the update frame on
    /// the HMR socket at `hmr_prefix` (still open), no console errors and no
    /// failed requests.
    pub fn assert_hot_update(&self, boot_id: &str, hmr_prefix: &str) {
        assert_eq!(self.boot_id.as_deref(), Some(boot_id), "page reloaded");
        assert!(!self.reloaded, "page reloaded: {self:#?}");
        assert_eq!(self.navigations, 1, "extra navigations: {self:#?}");
        let hmr = self
            .web_socket(hmr_prefix)
            .unwrap_or_else(|| panic!("no hmr socket at {hmr_prefix}: {self:#?}"));
        assert!(!hmr.closed, "hmr socket closed: {hmr:#?}");
        assert!(
            hmr.received.iter().any(|frame| {
                frame.contains("\"type\":\"update\"") && frame.contains("/src/message.js")
            }),
            "no hmr update frame for message.js: {hmr:#?}"
        );
        assert!(self.console_errors.is_empty(), "console errors: {self:#?}");
        assert!(
            self.failed_requests.is_empty(),
            "failed requests: {self:#?}"
        );
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct FailedRequest {
    pub url: String,
    pub error: String,
}

/// One WebSocket the page opened.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketRecord {
    pub url: String,
    pub frames_received: u32,
    pub frames_sent: u32,
    /// The first 200 characters of each text frame received (at most 100).
    pub received: Vec<String>,
    pub closed: bool,
    pub error: Option<String>,
}

impl WebSocketRecord {
    /// True when a received text frame contains `needle`.
    pub fn received_containing(&self, needle: &str) -> bool {
        self.received.iter().any(|frame| frame.contains(needle))
    }
}

/// One load of a page in a fresh tab (`timeLoad` in drive.mjs).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageLoad {
    /// HTTP status of the document.
    pub status: Option<u16>,
    /// Navigation start to the `load` event (`loadEventStart` of the
    /// navigation timing entry), in milliseconds.
    pub load_ms: f64,
    /// Resources the page fetched (resource timing entries).
    pub resources: u32,
    /// Bytes those moved (headers and bodies).
    pub transfer_bytes: u64,
    /// Requests served from the browser's cache without asking the server.
    pub cached_resources: u32,
    /// Requests the server answered 304 (revalidated from the cache).
    pub not_modified: u32,
    /// Text of the watched element (`#message`) at `load`.
    pub text: Option<String>,
    pub failed_requests: Vec<FailedRequest>,
}

/// A running headless Chromium and the script driving it.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    node_pgid: Option<libc::pid_t>,
    chromium_pgid: Option<libc::pid_t>,
    version: String,
    next_id: u64,
    // Holds the profile and the script's log; removed after the processes die.
    scratch: TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and waits until it is driveable.
    pub async fn launch() -> Result<Self> {
        let fixture = fixture_dir();
        ensure!(
            fixture.join("node_modules/playwright-core").exists(),
            "{} has no playwright-core: run `cargo xtask setup --tests`",
            fixture.display()
        );
        let chromium = chromium_path();
        ensure!(
            chromium.exists(),
            "{} missing: run `cargo xtask setup --tests` (apt-get install chromium)",
            chromium.display()
        );
        let scratch = tempfile::Builder::new()
            .prefix("kandan-browser-")
            .tempdir()
            .context("create a temporary browser directory")?;
        let profile = scratch.path().join("profile");
        std::fs::create_dir(&profile)?;
        let plan = json!({ "chromium": chromium, "userDataDir": profile });
        let log = std::fs::File::create(scratch.path().join("drive.log"))?;
        let mut child = Command::new("node")
            .arg(fixture.join("drive.mjs"))
            .arg(plan.to_string())
            .current_dir(&fixture)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn node drive.mjs")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut browser = Self {
            node_pgid: child.id().map(|pid| pid as libc::pid_t),
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            chromium_pgid: None,
            version: String::new(),
            next_id: 1,
            scratch,
        };
        let ready = browser.read_line(LAUNCH_TIMEOUT).await?;
        ensure!(
            ready["event"] == "ready",
            "drive.mjs did not start: {ready}"
        );
        browser.chromium_pgid = ready["browserPgid"]
            .as_i64()
            .and_then(|pgid| libc::pid_t::try_from(pgid).ok());
        browser.version = ready["browserVersion"].as_str().unwrap_or("").to_string();
        Ok(browser)
    }

    /// Chromium's version, as it reported it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What drive.mjs and Chromium wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("drive.log")).unwrap_or_default()
    }

    /// Loads `url` and starts a fresh record (errors, sockets, reloads).
    /// Returns the HTTP status of the page.
    pub async fn goto(&mut self, url: &str) -> Result<u16> {
        let answer = self
            .call(json!({ "cmd": "goto", "url": url, "timeoutMs": millis(STEP_TIMEOUT) }))
            .await?;
        answer["status"]
            .as_u64()
            .and_then(|status| u16::try_from(status).ok())
            .with_context(|| format!("goto {url}: no status in {answer}"))
    }

    /// Loads `url` in a new tab with the browser cache disabled (every
    /// resource is fetched), times it to the `load` event and closes the
    /// tab; the page `goto` drives and its record are left alone.
    pub async fn time_load(&mut self, url: &str) -> Result<PageLoad> {
        let answer = self
            .call(json!({ "cmd": "timeLoad", "url": url, "disableCache": true, "timeoutMs": millis(STEP_TIMEOUT) }))
            .await?;
        serde_json::from_value(answer).context("decode page load")
    }

    /// Waits until `#message` reads exactly `text`.
    pub async fn wait_for_text(&mut self, text: &str) -> Result<()> {
        self.call(json!({ "cmd": "waitForText", "text": text, "timeoutMs": millis(STEP_TIMEOUT) }))
            .await
            .map(drop)
    }

    /// Waits until the first element matching `selector` reads exactly
    /// `text` (e.g. a file name in VS Code's explorer).
    pub async fn wait_for_selector_text(&mut self, selector: &str, text: &str) -> Result<()> {
        self.call(json!({
            "cmd": "waitForText",
            "selector": selector,
            "text": text,
            "timeoutMs": millis(STEP_TIMEOUT),
        }))
        .await
        .map(drop)
    }

    /// Clicks the first element matching `selector` once it is visible and enabled.
    pub async fn click(&mut self, selector: &str) -> Result<()> {
        self.call(
            json!({ "cmd": "click", "selector": selector, "timeoutMs": millis(STEP_TIMEOUT) }),
        )
        .await
        .map(drop)
    }

    /// Types `text` into the input matching `selector` (replacing its value).
    pub async fn fill(&mut self, selector: &str, text: &str) -> Result<()> {
        self.call(json!({ "cmd": "fill", "selector": selector, "text": text, "timeoutMs": millis(STEP_TIMEOUT) }))
            .await
            .map(drop)
    }

    /// Waits until the first element matching `selector` contains `text`
    /// (waiting up to `limit`); returns its whole text.
    pub async fn wait_for_contains(
        &mut self,
        selector: &str,
        text: &str,
        limit: Duration,
    ) -> Result<String> {
        let answer = self
            .call_within(
                json!({ "cmd": "waitForContains", "selector": selector, "text": text, "timeoutMs": millis(limit) }),
                limit + ANSWER_SLACK,
            )
            .await?;
        Ok(answer["text"].as_str().unwrap_or_default().to_owned())
    }

    /// The attribute `name` of the first element matching `selector`.
    pub async fn attribute(&mut self, selector: &str, name: &str) -> Result<Option<String>> {
        let answer = self
            .call(json!({ "cmd": "attribute", "selector": selector, "name": name, "timeoutMs": millis(STEP_TIMEOUT) }))
            .await?;
        Ok(answer["value"].as_str().map(str::to_owned))
    }

    /// Writes a PNG of the page to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) -> Result<()> {
        self.call(json!({ "cmd": "screenshot", "path": path }))
            .await
            .map(drop)
    }

    /// The page's state and what happened since `goto`.
    pub async fn state(&mut self) -> Result<PageState> {
        let answer = self.call(json!({ "cmd": "state" })).await?;
        serde_json::from_value(answer).context("decode page state")
    }

    /// Waits until the page has a socket under `prefix` (see
    /// [`PageState::web_socket`]) that received a frame containing `needle`;
    /// for Vite's HMR socket, `"connected"` means edits now arrive as hot
    /// updates.
    pub async fn wait_for_web_socket(&mut self, prefix: &str, needle: &str) -> Result<PageState> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let state = self.state().await?;
            if state
                .web_socket(prefix)
                .is_some_and(|ws| ws.received_containing(needle))
            {
                return Ok(state);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no socket under {prefix} received {needle:?}: {state:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Closes Chromium cleanly and waits for the script to exit.
    pub async fn close(mut self) -> Result<()> {
        self.call(json!({ "cmd": "close" })).await?;
        let status = tokio::time::timeout(ANSWER_SLACK, self.child.wait())
            .await
            .context("drive.mjs did not exit after close")??;
        ensure!(status.success(), "drive.mjs exited with {status}");
        // Gone with its script: nothing left to kill (and the ids may be reused).
        self.chromium_pgid = None;
        self.node_pgid = None;
        Ok(())
    }

    /// Sends one command and returns its answer; an answer with `ok: false`
    /// becomes an error carrying the whole answer.
    async fn call(&mut self, command: Value) -> Result<Value> {
        self.call_within(command, STEP_TIMEOUT + ANSWER_SLACK).await
    }

    /// [`Browser::call`] for a step allowed `limit` to answer.
    async fn call_within(&mut self, mut command: Value, limit: Duration) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .context("write to drive.mjs")?;
        self.stdin.flush().await?;
        let answer = self.read_line(limit).await?;
        ensure!(
            answer["id"] == json!(id),
            "drive.mjs answered {answer} to command {id}"
        );
        if answer["ok"] != json!(true) {
            bail!("{} failed: {answer}", command["cmd"]);
        }
        Ok(answer)
    }

    async fn read_line(&mut self, limit: Duration) -> Result<Value> {
        let line = match tokio::time::timeout(limit, self.lines.next_line()).await {
            Err(_) => bail!("drive.mjs silent for {limit:?}; its log:\n{}", self.log()),
            Ok(line) => line.context("read drive.mjs")?,
        };
        let Some(line) = line else {
            bail!("drive.mjs exited; its log:\n{}", self.log());
        };
        serde_json::from_str(&line).with_context(|| format!("drive.mjs wrote {line:?}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pgid) = self.chromium_pgid.take() {
            kill_group(pgid);
        }
        if let Some(pgid) = self.node_pgid.take() {
            kill_group(pgid);
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
