//! The local-editor benchmark (`cargo xtask bench editor`): the time from
//! `Editors::start` to its `Started`, for the fixture's code-server.
//!
//! - cold: code-server's files evicted from the page cache first
//!   (`posix_fadvise(DONTNEED)` on each file of the fixture: only those
//!   pages, not the whole machine's cache);
//! - warm: the same start right after another;
//! - running: a second start for a cwd whose editor runs (the registry
//!   answers without starting anything);
//! - collaboration: warm, plus fetching both assets from a local origin and
//!   installing the `.vsix`;
//! - workbench: from the browser's navigation to the workbench showing the
//!   cwd's file in its explorer, in headless Chromium straight on the socket
//!   (through a TCP -> Unix relay): the direct baseline for the same measure
//!   through Kandan's preview front;
//! - through Kandan: a release `kandan-runner connect` to the simulator,
//!   `start_local_editor` -> `local_editor_started` as Kandan sees it, and
//!   the same workbench measure on the simulator's `/editor/<id>/`.
//!
//! Each start gets a fresh cwd and is stopped before the next.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use runner::editor::{EditorConfig, Editors, StartRequest};
use runner::wire::{Event, LocalEditorStarted};

use crate::bench::stats;
use crate::browser::Browser;
use crate::code_server::{AssetServer, TOKEN, UnixProxy, collaboration_object, write_vsix};

/// The first file row of VS Code's explorer.
pub const EXPLORER_ROW: &str = ".explorer-folders-view .monaco-list-row .label-name";

/// Medians and ranges of each kind of start, in milliseconds.
#[derive(Debug, Clone)]
pub struct EditorBench {
    pub runs: usize,
    pub cold: Vec<Duration>,
    pub warm: Vec<Duration>,
    pub running: Vec<Duration>,
    pub collaboration: Vec<Duration>,
    pub workbench: Vec<Duration>,
    pub kandan_start: Vec<Duration>,
    pub kandan_workbench: Vec<Duration>,
}

/// Runs every measure `runs` times with `code_server`; the through-Kandan
/// ones with the runner at `runner`.
pub async fn run(code_server: &Path, runner: &Path, runs: usize) -> Result<EditorBench> {
    let scratch = tempfile::Builder::new()
        .prefix("kandan-bench-ed-")
        .tempdir()?;
    let vsix = scratch.path().join("probe.vsix");
    write_vsix(&vsix, "exports.activate = function () {};\n")?;
    let assets = AssetServer::start(std::fs::read(&vsix)?).await?;
    let mut config = EditorConfig::new(
        code_server.to_path_buf(),
        scratch.path().join("state"),
        Some(assets.access(TOKEN)),
    );
    config.ready_timeout = Duration::from_secs(120);
    let (editors, mut events) = Editors::new(config);
    // Only the starts are measured; the channel is drained meanwhile.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let fixture_files = package_root(code_server);

    let mut bench = EditorBench {
        runs,
        cold: Vec::new(),
        warm: Vec::new(),
        running: Vec::new(),
        collaboration: Vec::new(),
        workbench: Vec::new(),
        kandan_start: Vec::new(),
        kandan_workbench: Vec::new(),
    };
    for _ in 0..runs {
        evict_from_page_cache(&fixture_files);
        bench.cold.push(timed_start(&editors, None).await?);
    }
    for _ in 0..runs {
        bench.warm.push(timed_start(&editors, None).await?);
    }
    {
        let cwd = tempfile::tempdir()?;
        let cwd = cwd.path().canonicalize()?;
        let id = started(&editors, &cwd, None).await?;
        for _ in 0..runs {
            let begin = Instant::now();
            started(&editors, &cwd, None).await?;
            bench.running.push(begin.elapsed());
        }
        editors.stop(id.as_str()).await?;
    }
    for _ in 0..runs {
        let collaboration = Some(collaboration_object());
        bench
            .collaboration
            .push(timed_start(&editors, collaboration).await?);
    }
    let mut browser = Browser::launch().await?;
    for _ in 0..runs {
        let cwd = tempfile::tempdir()?;
        std::fs::write(cwd.path().join("hello.txt"), "hello\n")?;
        let id = started(&editors, &cwd.path().canonicalize()?, None).await?;
        let proxy = UnixProxy::start(&editors.socket_path(id.as_str())?).await?;
        let begin = Instant::now();
        browser
            .goto(&format!("http://127.0.0.1:{}/", proxy.port()))
            .await?;
        browser
            .wait_for_selector_text(EXPLORER_ROW, "hello.txt")
            .await?;
        bench.workbench.push(begin.elapsed());
        editors.stop(id.as_str()).await?;
    }
    editors.stop_all().await;
    through_kandan(&mut bench, &mut browser, code_server, runner, runs).await?;
    let _ = browser.close().await;
    Ok(bench)
}

/// The start and the workbench through the simulator and a real runner.
async fn through_kandan(
    bench: &mut EditorBench,
    browser: &mut Browser,
    code_server: &Path,
    runner: &Path,
    runs: usize,
) -> Result<()> {
    use crate::simulator::{SimConfig, Simulator};
    use serde_json::json;
    let wait = Duration::from_secs(120);
    let sim = Simulator::start(SimConfig::default()).await?;
    let state = tempfile::tempdir()?;
    let root = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(runner)
        .args(["connect", "--url", &sim.url(), "--token", sim.token()])
        .arg("--code-server-bin")
        .arg(code_server)
        .env("XDG_STATE_HOME", state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    sim.wait_joined(wait).await?;
    let after = sim.event_count();
    sim.send_control(json!({"type": "update_runner_config",
        "allowedCwds": [root.path().canonicalize()?]}))?;
    sim.wait_for_event_after(after, "runner_config_applied", |_| true, wait)
        .await?;
    for run in 0..runs {
        let cwd = root.path().join(format!("w{run}"));
        std::fs::create_dir(&cwd)?;
        std::fs::write(cwd.join("hello.txt"), "hello\n")?;
        let request_id = format!("bench-{run}");
        let after = sim.event_count();
        let begin = Instant::now();
        sim.send_control(
            json!({"type": "start_local_editor", "requestId": request_id,
            "cwd": cwd}),
        )?;
        let (_, started) = sim
            .wait_for_event_after(
                after,
                "local_editor_started",
                |e| e["requestId"] == request_id.as_str(),
                wait,
            )
            .await?;
        bench.kandan_start.push(begin.elapsed());
        let id = started["editorId"].as_str().unwrap_or_default().to_owned();
        let begin = Instant::now();
        browser.goto(&sim.editor_url(&id)).await?;
        browser
            .wait_for_selector_text(EXPLORER_ROW, "hello.txt")
            .await?;
        bench.kandan_workbench.push(begin.elapsed());
        sim.send_control(json!({"type": "stop_local_editor", "editorId": id}))?;
        sim.wait_for_event(
            "local_editor_stopped",
            |e| e["editorId"] == id.as_str(),
            wait,
        )
        .await?;
    }
    // SAFETY: kill(2) on our own child.
    if let Some(pid) = child.id() {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Ok(())
}

/// One start in a fresh cwd, timed, then stopped.
async fn timed_start(
    editors: &Editors,
    collaboration: Option<serde_json::Value>,
) -> Result<Duration> {
    let cwd = tempfile::tempdir()?;
    let path = cwd.path().canonicalize()?;
    let begin = Instant::now();
    let id = started(editors, &path, collaboration).await?;
    let elapsed = begin.elapsed();
    editors.stop(id.as_str()).await?;
    Ok(elapsed)
}

async fn started(
    editors: &Editors,
    cwd: &Path,
    collaboration: Option<serde_json::Value>,
) -> Result<String> {
    let event = editors
        .start(StartRequest {
            cwd: cwd.to_path_buf(),
            collaboration,
            ..StartRequest::default()
        })
        .await;
    match event {
        Event::LocalEditorStarted(LocalEditorStarted { editor_id, .. }) => Ok(editor_id),
        other => bail!("the editor did not start: {other:?}"),
    }
}

/// The npm package folder holding the fixture's code-server
/// (`.../node_modules/code-server`), or the binary's folder.
fn package_root(code_server: &Path) -> PathBuf {
    let resolved = code_server
        .canonicalize()
        .unwrap_or_else(|_| code_server.to_path_buf());
    resolved
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "code-server"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| resolved.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// Drops every file under `dir` from the page cache (clean pages only; the
/// rest of the machine's cache stays).
fn evict_from_page_cache(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && let Ok(file) = std::fs::File::open(entry.path())
            {
                // SAFETY: fadvise on a descriptor we own.
                unsafe {
                    libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                }
            }
        }
    }
}

fn median(samples: &[Duration]) -> Duration {
    stats::median(samples).unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

impl EditorBench {
    /// The Markdown table for BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "| start_local_editor -> local_editor_started ({} runs) | median ms | min ms | max ms |\n|---|---:|---:|---:|\n",
            self.runs
        );
        for (name, samples) in [
            (
                "cold (code-server's files out of the page cache)",
                &self.cold,
            ),
            ("warm", &self.warm),
            ("already running (second start, same cwd)", &self.running),
            (
                "warm, with collaboration (2 assets + .vsix install)",
                &self.collaboration,
            ),
            (
                "workbench in Chromium, direct on the socket: navigation -> explorer lists the cwd",
                &self.workbench,
            ),
            (
                "through Kandan: start_local_editor -> local_editor_started at the simulator",
                &self.kandan_start,
            ),
            (
                "through Kandan: workbench on the simulator's /editor/<id>/, same measure",
                &self.kandan_workbench,
            ),
        ] {
            let min = samples.iter().min().copied().unwrap_or_default();
            let max = samples.iter().max().copied().unwrap_or_default();
            out.push_str(&format!(
                "| {name} | {} | {} | {} |\n",
                ms(median(samples)),
                ms(min),
                ms(max)
            ));
        }
        let ratio = median(&self.kandan_workbench).as_secs_f64()
            / median(&self.workbench).as_secs_f64().max(f64::EPSILON);
        out.push_str(&format!(
            "\nworkbench through Kandan / direct (medians): {ratio:.2}x (target: within 1.5x)\n"
        ));
        out
    }
}
