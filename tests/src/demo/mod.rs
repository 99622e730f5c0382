//! `cargo xtask demo`: the whole loop on one machine, offline. The
//! simulator (a small Kandan with a page at `/`), a fake model that drives
//! the real pinned Codex with a demo script, and a runner connected to it
//! whose command serves a sample app from an allowed workspace.
//! `kandan-sim --demo` and the browser test both start it from here.

mod app;
mod script;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::codex::codex_bin;
use crate::fake_model::{FakeModel, MODEL};
use crate::runner_process::{RunnerArgs, RunnerProcess};
use crate::simulator::{SimConfig, Simulator};

pub use script::EDITED_MESSAGE;

/// Each start step's limit (code-server's first start is the slowest).
const WAIT: Duration = Duration::from_secs(120);
/// The runner id the demo's runner joins as.
pub const RUNNER_ID: &str = "demo";

/// Where and how the demo starts.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Holds the workspace, Codex's home and the runner's `HOME`
    /// (`target/demo` for `cargo xtask demo`).
    pub root: PathBuf,
    pub runner_addr: SocketAddr,
    pub preview_addr: SocketAddr,
    /// Start the editor before saying ready, so its URL can be printed.
    pub start_editor: bool,
}

/// A running demo; [`Demo::stop`] ends the runner and all it started.
pub struct Demo {
    sim: Arc<Simulator>,
    runner: RunnerProcess,
    // Serves Codex until the demo ends.
    model: FakeModel,
    workspace: PathBuf,
    app_port: u16,
    dev_port: u16,
    editor_url: Option<String>,
    /// The runner's private state (editors' sockets): short, under the
    /// temporary folder, since a Unix socket path holds at most 107 bytes
    /// and a checkout's `target/demo/home/.local/state/...` may not fit.
    _state: tempfile::TempDir,
}

impl Demo {
    /// Starts everything and waits until the app's port is asked about
    /// (and the editor runs, with `start_editor`).
    pub async fn start(options: DemoOptions) -> Result<Demo> {
        let codex = codex_bin()?;
        let code_server = crate::code_server::fixture_dir().join("node_modules/.bin/code-server");
        ensure!(
            code_server.exists(),
            "{} is missing: run `cargo xtask setup --tests`",
            code_server.display()
        );
        std::fs::create_dir_all(&options.root)?;
        let root = options.root.canonicalize()?;
        let workspace = root.join("workspace");
        let home = root.join("home");
        let codex_home = root.join("codex-home");
        for dir in [&workspace, &home, &codex_home] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        app::write(&workspace)?;
        let app_port = port_near(8000)?;
        let dev_port = port_near(app_port + 1)?;
        let model = FakeModel::start().await?;
        model.set_responder(script::responder(dev_port));
        let config = format!("model = \"{MODEL}\"\n{}", model.config_toml());
        std::fs::write(codex_home.join("config.toml"), config)?;

        let sim = Arc::new(
            Simulator::start(SimConfig {
                runner_addr: options.runner_addr,
                preview_addr: options.preview_addr,
                runner_id: Some(RUNNER_ID.into()),
                ..SimConfig::default()
            })
            .await?,
        );
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut args = RunnerArgs::new(
            RUNNER_ID,
            ["python3", "-m", "http.server", &app_port.to_string()]
                .into_iter()
                .map(str::to_owned)
                .chain(["--bind", "127.0.0.1", "--directory"].map(str::to_owned))
                .chain([path(&workspace)])
                .collect(),
        );
        args.flags = vec![
            "--allow-cwd".into(),
            path(&workspace),
            "--codex-bin".into(),
            path(&codex),
            "--code-server-bin".into(),
            path(&code_server),
        ];
        let state = tempfile::Builder::new().prefix("kandan-demo-").tempdir()?;
        args.env = vec![
            ("CODEX_HOME".into(), path(&codex_home)),
            // Codex's shells and code-server keep out of the user's dotfiles.
            ("HOME".into(), path(&home)),
            ("XDG_STATE_HOME".into(), path(state.path())),
        ];
        args.cwd = Some(workspace.clone());
        let runner = RunnerProcess::start(&sim, args)?;
        let mut demo = Demo {
            sim,
            runner,
            model,
            workspace,
            app_port,
            dev_port,
            editor_url: None,
            _state: state,
        };
        demo.ready(options.start_editor).await.with_context(|| {
            format!(
                "the demo did not start; runner log:\n{}",
                demo.runner.output()
            )
        })?;
        Ok(demo)
    }

    async fn ready(&mut self, start_editor: bool) -> Result<()> {
        self.sim.wait_joined(WAIT).await?;
        // What Kandan's admin would set: the workspace may hold agents and editors.
        let after = self.sim.event_count();
        self.sim.send_control(json!({
            "type": "update_runner_config", "allowedCwds": [self.workspace],
        }))?;
        self.sim
            .wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
            .await?;
        self.sim.wait_for_request(self.app_port, WAIT).await?;
        if start_editor {
            let after = self.sim.event_count();
            self.sim.send_control(json!({
                "type": "start_local_editor", "requestId": "demo-editor", "cwd": self.workspace,
            }))?;
            let (_, started) = self
                .sim
                .wait_for_event_after(after, "local_editor_started", |_| true, WAIT)
                .await?;
            let id = started["editorId"].as_str().context("editorId")?;
            self.editor_url = Some(self.sim.editor_url(id));
        }
        Ok(())
    }

    pub fn sim(&self) -> &Arc<Simulator> {
        &self.sim
    }

    /// The fake model: replies pushed to it come before the demo script's.
    pub fn model(&self) -> &FakeModel {
        &self.model
    }

    /// The allowed directory the app, Codex and the editor work in.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The port of the app the runner's command serves.
    pub fn app_port(&self) -> u16 {
        self.app_port
    }

    /// The port of the dev server the agent starts when asked.
    pub fn dev_port(&self) -> u16 {
        self.dev_port
    }

    /// The stand-in page, its Codex panel pointed at the workspace.
    pub fn page_url(&self) -> String {
        let cwd: String = (self.workspace.to_string_lossy().bytes())
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("http://{}/?cwd={cwd}", self.sim.preview_addr())
    }

    /// The app's preview (served once its port is approved).
    pub fn app_url(&self) -> String {
        self.sim.preview_url(self.app_port)
    }

    /// The editor's page, when started with `start_editor`.
    pub fn editor_url(&self) -> Option<&str> {
        self.editor_url.as_deref()
    }

    /// What the runner (and the app) printed so far.
    pub fn runner_output(&self) -> String {
        self.runner.output()
    }

    /// The lines `kandan-sim --demo` prints once ready.
    pub fn banner(&self) -> String {
        let editor = self
            .editor_url()
            .map_or_else(|| "the page's Open editor button".to_owned(), str::to_owned);
        format!(
            "Kandan demo ready, offline (a scripted fake model drives the real Codex).\n\
             \x20 kandan:  {}\n\
             \x20 app:     {}  (approve port {} on the page first)\n\
             \x20 editor:  {editor}\n\
             On the page: approve the port, start Codex, send \"make a change\" and approve its\n\
             command and file change, then \"start a dev server\" (port {}). Ctrl-C stops everything.",
            self.page_url(),
            self.app_url(),
            self.app_port,
            self.dev_port,
        )
    }

    /// Ends the runner gracefully (it stops Codex, the editor and the app),
    /// then the rest.
    pub async fn stop(mut self) -> Result<()> {
        let code = self.runner.terminate().await;
        drop(self);
        code.map(drop)
    }
}

/// `preferred` when free (easy to remember), else any free port.
fn port_near(preferred: u16) -> Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => crate::support::free_port(),
    }
}
