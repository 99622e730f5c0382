//! A real Vite dev server from `tests/fixtures/vite-app`, for the HMR tests.
//!
//! Each test gets its own copy of the app's sources in a temporary directory
//! (with the fixture's `node_modules` linked in), so editing `message.js`
//! never dirties the tree and tests never race on one file.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The text `src/message.js` holds before any edit.
pub const INITIAL_MESSAGE: &str = "hello from vite";

/// How long Vite may take to answer its first request (it is slow on a
/// loaded two-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/fixtures/vite-app` in this checkout.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/vite-app")
}

/// The base path Kandan's preview front serves a port under; Vite must use
/// it as its `base` so its asset and HMR URLs go back through the proxy.
pub fn preview_base(port: u16) -> String {
    format!("/preview/{port}/")
}

// Where the tests have always found it.
pub use crate::support::free_port;

/// A command line that starts this app's Vite, for `Command` or for
/// `kandan-runner connect -- <argv>`.
#[derive(Debug, Clone)]
pub struct ViteCommand {
    /// Program and arguments: `node <app>/node_modules/vite/bin/vite.js`.
    pub argv: Vec<String>,
    /// Variables read by `vite.config.js` (port, base, host, cache).
    pub env: Vec<(String, String)>,
    /// The app directory Vite must run in.
    pub cwd: PathBuf,
}

impl ViteCommand {
    /// A `tokio` command for this line, in its own process group so the
    /// whole tree can be killed at once.
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .process_group(0);
        command
    }
}

/// A private copy of the fixture app.
#[derive(Debug)]
pub struct ViteApp {
    dir: TempDir,
}

impl ViteApp {
    /// Copies the fixture's sources to a fresh temporary directory and links
    /// its `node_modules` there (installed by `cargo xtask setup --tests`).
    pub fn new() -> Result<Self> {
        let fixture = fixture_dir();
        let modules = fixture.join("node_modules");
        ensure!(
            modules.join("vite/bin/vite.js").exists(),
            "{} has no vite: run `cargo xtask setup --tests` (npm ci in the fixture)",
            fixture.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("kandan-vite-app-")
            .tempdir()
            .context("create a temporary app directory")?;
        for file in ["index.html", "package.json", "vite.config.js"] {
            std::fs::copy(fixture.join(file), dir.path().join(file))
                .with_context(|| format!("copy {file}"))?;
        }
        std::fs::create_dir(dir.path().join("src"))?;
        for file in ["main.js", "message.js"] {
            std::fs::copy(
                fixture.join("src").join(file),
                dir.path().join("src").join(file),
            )
            .with_context(|| format!("copy src/{file}"))?;
        }
        std::os::unix::fs::symlink(&modules, dir.path().join("node_modules"))
            .context("link node_modules")?;
        let app = Self { dir };
        // The copy starts from a known text even if the fixture was edited.
        app.edit_message(INITIAL_MESSAGE)?;
        Ok(app)
    }

    /// The app directory (the copy).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites `src/message.js` to export `text`; a running Vite sends the
    /// page a hot update for it.
    pub fn edit_message(&self, text: &str) -> Result<()> {
        let literal = serde_json::to_string(text)?;
        let path = self.dir().join("src/message.js");
        std::fs::write(&path, format!("export const message = {literal};\n"))
            .with_context(|| format!("write {}", path.display()))
    }

    /// Makes the page load `count` more modules: `src/m000.js`, ... (each
    /// exporting one small function) all imported by `src/main.js` before
    /// its own code, for measuring a page of many requests.
    pub fn add_modules(&self, count: usize) -> Result<()> {
        let src = self.dir().join("src");
        let names: Vec<String> = (0..count).map(|i| format!("m{i:03}")).collect();
        let mut main = String::new();
        for name in &names {
            std::fs::write(
                src.join(format!("{name}.js")),
                format!("export function {name}(x) {{\n  return `${{x}}:{name}`;\n}}\n"),
            )
            .with_context(|| format!("write src/{name}.js"))?;
            main.push_str(&format!("import {{ {name} }} from \"./{name}.js\";\n"));
        }
        main.push_str(&format!(
            "window.__modules = [{}].map((f) => f(1)).length;\n",
            names.join(", ")
        ));
        let path = src.join("main.js");
        main.push_str(&std::fs::read_to_string(&path).context("read src/main.js")?);
        std::fs::write(&path, main).context("write src/main.js")
    }

    /// The command line for Vite on `127.0.0.1:<port>` with base `base`.
    pub fn command(&self, port: u16, base: &str) -> ViteCommand {
        let vite = self.dir().join("node_modules/vite/bin/vite.js");
        ViteCommand {
            argv: vec!["node".into(), vite.to_string_lossy().into_owned()],
            env: vec![
                ("VITE_PORT".into(), port.to_string()),
                ("VITE_BASE".into(), base.into()),
                ("VITE_HOST".into(), "127.0.0.1".into()),
                (
                    "VITE_CACHE_DIR".into(),
                    self.dir()
                        .join(".vite-cache")
                        .to_string_lossy()
                        .into_owned(),
                ),
            ],
            cwd: self.dir().to_path_buf(),
        }
    }

    /// Starts Vite directly (no runner) and waits until it serves `base`.
    pub async fn start(&self, port: u16, base: &str) -> Result<ViteServer<'_>> {
        let log_path = self.dir().join("vite.log");
        let log = std::fs::File::create(&log_path)?;
        let child = self
            .command(port, base)
            .to_command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawn node (vite)")?;
        let mut server = ViteServer {
            pgid: child.id().map(|pid| pid as libc::pid_t),
            child,
            port,
            base: base.to_string(),
            log_path,
            _app: PhantomData,
        };
        server.wait_ready().await?;
        Ok(server)
    }
}

/// A running Vite; dropping it kills its process group. It borrows its app
/// so the app's directory outlives it.
#[derive(Debug)]
pub struct ViteServer<'app> {
    child: Child,
    pgid: Option<libc::pid_t>,
    port: u16,
    base: String,
    log_path: PathBuf,
    _app: PhantomData<&'app ViteApp>,
}

impl ViteServer<'_> {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><base>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.base)
    }

    /// What Vite printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("vite exited early ({status}):\n{}", self.log());
            }
            if serves(self.port, &self.base).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("vite not ready after {READY_TIMEOUT:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until something on `127.0.0.1:<port>` answers `GET <base>` with
/// 200 for `Host: localhost:<port>`; for a Vite someone else started (the
/// runner under `connect -- ...`).
pub async fn wait_until_serving(port: u16, base: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while !serves(port, base).await {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing serves {base} on port {port} after {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn serves(port: u16, base: &str) -> bool {
    let host = format!("localhost:{port}");
    http_get(port, base, &host)
        .await
        .is_ok_and(|response| response.status == 200)
}

impl Drop for ViteServer<'_> {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }
}

/// Kills a process group we created (never our own, never init's).
pub fn kill_group(pgid: libc::pid_t) {
    // SAFETY: getpgrp and kill have no memory preconditions.
    unsafe {
        if pgid > 1 && pgid != libc::getpgrp() {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// A plain HTTP/1.1 answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The body as sent, chunk framing included (enough for `contains`).
    pub body: String,
}

/// `GET path` on `127.0.0.1:port` with the given `Host` header, read to the
/// end (`Connection: close`); enough to probe Vite's host check.
pub async fn http_get(port: u16, path: &str, host: &str) -> Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("http get timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}
