//! The local editor (PROTOCOL.md section 8) with a real code-server: a
//! private socket, one editor per cwd, every way of stopping it leaving no
//! process, and the collaboration extension reading its settings in a real
//! headless Chromium.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use integration_tests::bench_editor::EXPLORER_ROW;
use integration_tests::browser::Browser;
use integration_tests::code_server::{
    AssetServer, TOKEN, UnixProxy, code_server_bin, collaboration_object, group_members,
    processes_mentioning, tcp_listen_ports, write_vsix,
};
use runner::editor::{EditorConfig, EditorId, Editors, KandanAccess, StartRequest, StopReason};
use runner::wire::{ControlErrorEvent, Event, LocalEditorStarted, LocalEditorStopped};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;

/// code-server is heavy for a two-core machine: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// How long an event may take (a start is ~1 s; a loaded machine is slower).
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A registry on a state directory of its own, and a cwd with a file in it.
struct Bench {
    state: TempDir,
    cwd: TempDir,
    editors: Editors,
    events: UnboundedReceiver<Event>,
}

impl Bench {
    fn new(code_server: &Path, kandan: Option<KandanAccess>) -> Result<Self> {
        let state = tempfile::Builder::new().prefix("kandan-ed-").tempdir()?;
        let cwd = tempfile::Builder::new().prefix("kandan-cwd-").tempdir()?;
        std::fs::write(cwd.path().join("hello.txt"), "hello from the editor test\n")?;
        let mut config = EditorConfig::new(
            code_server.to_path_buf(),
            state.path().join("kandan-runner"),
            kandan,
        );
        config.ready_timeout = Duration::from_secs(60);
        let (editors, events) = Editors::new(config);
        Ok(Bench {
            state,
            cwd,
            editors,
            events,
        })
    }

    fn cwd(&self) -> PathBuf {
        self.cwd.path().canonicalize().expect("cwd")
    }

    fn request(&self, cwd: &Path) -> StartRequest {
        StartRequest {
            request_id: Some("req-1".into()),
            instance_id: None,
            cwd: cwd.to_path_buf(),
            dir: None,
            collaboration: None,
        }
    }

    /// Starts an editor and returns its id, checking the event too.
    async fn start(&mut self, request: StartRequest) -> Result<String> {
        let returned = self.editors.start(request.clone()).await;
        let event = self.next_event().await?;
        ensure!(event == returned, "sent {event:?}, returned {returned:?}");
        match event {
            Event::LocalEditorStarted(LocalEditorStarted {
                request_id,
                editor_id,
                cwd,
                ..
            }) => {
                ensure!(request_id == request.request_id, "request id");
                ensure!(Path::new(&cwd) == request.cwd, "cwd {cwd}");
                Ok(editor_id)
            }
            other => bail!("expected Started, got {other:?}"),
        }
    }

    async fn next_event(&mut self) -> Result<Event> {
        tokio::time::timeout(EVENT_TIMEOUT, self.events.recv())
            .await
            .context("no editor event in time")?
            .context("event channel closed")
    }

    /// The string every process of this bench's editors has in its
    /// environment (its XDG dirs).
    fn marker(&self) -> String {
        self.state.path().to_string_lossy().into_owned()
    }

    fn editor_folders(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state.path().join("kandan-runner/editors"))
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Nothing of any editor remains: no process, no folder.
    async fn assert_nothing_left(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_mentioning(&self.marker());
            if left.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "processes left behind: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            self.editor_folders().is_empty(),
            "folders left: {:?}",
            self.editor_folders()
        );
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // A failed test must not leave code-server running.
        for pid in processes_mentioning(&self.marker()) {
            // SAFETY: kill has no memory preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// `GET path` over a Unix socket: status, `Location`, body.
async fn get_over_socket(socket: &Path, path: &str) -> Result<(u16, Option<String>, String)> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((
        status,
        location,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Tries to connect to `socket` as uid/gid 65534 (nobody); its stderr.
fn connect_as_nobody(socket: &Path) -> Result<(bool, String)> {
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "python3",
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint('connected')",
        ])
        .arg(socket)
        .output()
        .context("run setpriv")?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_workbench_on_a_private_socket_once_per_cwd() -> Result<()> {
    let Some(bin) = code_server_bin("serves_the_workbench_on_a_private_socket_once_per_cwd") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::new(&bin, None)?;
    let cwd = bench.cwd();
    let started = std::time::Instant::now();
    let id = bench.start(bench.request(&cwd)).await?;
    eprintln!("editor started in {:?}", started.elapsed());

    let list = bench.editors.list();
    assert_eq!(list.len(), 1);
    let info = &list[0];
    assert_eq!(info.editor_id.as_str(), id);
    assert_eq!(info.cwd, cwd);
    let socket = bench.editors.socket_path(id.as_str())?;
    assert_eq!(socket, info.socket);
    assert!(socket.starts_with(bench.state.path()));
    let meta = std::fs::metadata(&socket)?;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let state_dir = bench.state.path().join("kandan-runner");
    assert_eq!(
        std::fs::metadata(&state_dir)?.permissions().mode() & 0o777,
        0o700
    );

    // No TCP port: the group listens only on its Unix sockets.
    let members = group_members(info.pid);
    assert!(!members.is_empty(), "no process in group {}", info.pid);
    assert_eq!(
        tcp_listen_ports(&members),
        Vec::<u16>::new(),
        "TCP listeners"
    );
    // Nor does any code-server process carry the runner's secrets.
    for pid in &members {
        let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            !environ.contains("KANDAN_TOKEN="),
            "pid {pid} has KANDAN_TOKEN"
        );
    }

    // Another uid cannot connect; this one can.
    let (connected, stderr) = connect_as_nobody(&socket)?;
    assert!(!connected, "uid 65534 connected to the editor");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let stream = bench.editors.connect(id.as_str()).await?;
    drop(stream);

    // The workbench: a redirect to the folder, then the page.
    let (status, location, _) = get_over_socket(&socket, "/").await?;
    assert_eq!(status, 302);
    let location = location.context("no Location")?;
    assert_eq!(location, format!("./?folder={}", cwd.display()));
    let (status, _, body) =
        get_over_socket(&socket, &format!("/?folder={}", cwd.display())).await?;
    assert_eq!(status, 200);
    assert!(body.contains("workbench"), "not the workbench: {body:.300}");
    // A file of the cwd through the editor's own routes.
    let (status, _, body) = get_over_socket(
        &socket,
        &format!("/vscode-remote-resource?path={}/hello.txt", cwd.display()),
    )
    .await?;
    assert_eq!(status, 200, "{body:.300}");
    assert!(body.contains("hello from the editor test"), "{body:.300}");

    // A second start for the same cwd answers with the running editor.
    let mut again = bench.request(&cwd);
    again.request_id = Some("req-2".into());
    assert_eq!(bench.start(again).await?, id);
    assert_eq!(bench.editors.list().len(), 1);

    bench.editors.stop(id.as_str()).await?;
    match bench.next_event().await? {
        Event::LocalEditorStopped(LocalEditorStopped {
            editor_id, reason, ..
        }) => {
            assert_eq!(editor_id, id);
            assert_eq!(reason, StopReason::Stopped);
        }
        other => bail!("expected Stopped, got {other:?}"),
    }
    assert!(group_members(info.pid).is_empty(), "group left after stop");
    assert!(!socket.exists(), "socket left after stop");
    bench.assert_nothing_left().await;
    assert!(bench.editors.list().is_empty());
    assert!(
        bench.editors.stop(id.as_str()).await.is_err(),
        "stopped twice"
    );
    assert!(bench.editors.connect(id.as_str()).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_cwd_and_runner_exit_stop_every_process() -> Result<()> {
    let Some(bin) = code_server_bin("withdrawn_cwd_and_runner_exit_stop_every_process") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::new(&bin, None)?;
    let kept = bench.cwd();
    let other_dir = tempfile::Builder::new().prefix("kandan-cwd2-").tempdir()?;
    let withdrawn = other_dir.path().canonicalize()?;
    // Two starts at once for one cwd: one editor, both answered with it.
    let mut second = bench.request(&kept);
    second.request_id = Some("req-2".into());
    let (first, second) = tokio::join!(
        bench.editors.start(bench.request(&kept)),
        bench.editors.start(second)
    );
    let id_of = |event: &Event| match event {
        Event::LocalEditorStarted(started) => Some(started.editor_id.clone()),
        _ => None,
    };
    let kept_id = id_of(&first).context("first start failed")?;
    assert_eq!(id_of(&second), Some(kept_id.clone()), "{second:?}");
    for _ in 0..2 {
        assert!(id_of(&bench.next_event().await?).is_some());
    }
    assert_eq!(bench.editors.list().len(), 1);
    let withdrawn_id = bench.start(bench.request(&withdrawn)).await?;
    assert_ne!(kept_id, withdrawn_id);
    let pids: Vec<(String, u32)> = bench
        .editors
        .list()
        .into_iter()
        .map(|info| (info.editor_id.to_string(), info.pid))
        .collect();
    let pid_of = |id: &String| pids.iter().find(|(i, _)| i == id).map(|(_, p)| *p).unwrap();

    let stopped = bench
        .editors
        .retain_allowed(|cwd| cwd.starts_with(&kept))
        .await;
    let stopped: Vec<&str> = stopped.iter().map(EditorId::as_str).collect();
    assert_eq!(stopped, vec![withdrawn_id.as_str()]);
    match bench.next_event().await? {
        Event::LocalEditorStopped(LocalEditorStopped {
            editor_id, reason, ..
        }) => {
            assert_eq!(editor_id, withdrawn_id);
            assert_eq!(reason, StopReason::CwdWithdrawn);
        }
        other => bail!("expected Stopped, got {other:?}"),
    }
    assert!(group_members(pid_of(&withdrawn_id)).is_empty());
    assert!(
        !group_members(pid_of(&kept_id)).is_empty(),
        "the kept one stopped"
    );
    assert_eq!(bench.editors.list().len(), 1);

    bench.editors.stop_all().await;
    match bench.next_event().await? {
        Event::LocalEditorStopped(LocalEditorStopped {
            editor_id, reason, ..
        }) => {
            assert_eq!(editor_id, kept_id);
            assert_eq!(reason, StopReason::Shutdown);
        }
        other => bail!("expected Stopped, got {other:?}"),
    }
    assert!(group_members(pid_of(&kept_id)).is_empty());
    bench.assert_nothing_left().await;
    // After stop_all, nothing starts.
    match bench.editors.start(bench.request(&kept)).await {
        Event::ControlError(ControlErrorEvent { message, .. }) => {
            assert!(message.contains("stopping"), "{message}")
        }
        other => bail!("started after stop_all: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_editor_reports_stopped() -> Result<()> {
    let Some(bin) = code_server_bin("a_killed_editor_reports_stopped") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut bench = Bench::new(&bin, None)?;
    let cwd = bench.cwd();
    let id = bench.start(bench.request(&cwd)).await?;
    let pid = bench.editors.list()[0].pid;
    // Only the leader: its children stay until the runner ends them.
    // SAFETY: kill has no memory preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    match bench.next_event().await? {
        Event::LocalEditorStopped(LocalEditorStopped {
            editor_id,
            reason,
            exit_code,
        }) => {
            assert_eq!(editor_id, id);
            assert_eq!(reason, StopReason::Exited);
            assert_eq!(exit_code, Some(128 + libc::SIGKILL));
        }
        other => bail!("expected Stopped, got {other:?}"),
    }
    assert!(
        group_members(pid).is_empty(),
        "children left after the leader died"
    );
    bench.assert_nothing_left().await;
    assert!(bench.editors.list().is_empty());
    // The cwd can have an editor again.
    let again = bench.start(bench.request(&cwd)).await?;
    assert_ne!(again, id);
    bench.editors.stop_all().await;
    bench.assert_nothing_left().await;
    Ok(())
}

/// The probe extension: on activation, writes the setting it reads (without
/// declaring it) to `out`.
fn probe_extension(out: &Path) -> String {
    format!(
        r#"const vscode = require("vscode");
const fs = require("fs");
exports.activate = function () {{
  const value = vscode.workspace.getConfiguration().get("kandan.collaboration");
  fs.writeFileSync({out}, JSON.stringify(value === undefined ? null : value));
}};
exports.deactivate = function () {{}};
"#,
        out = serde_json::to_string(&out.to_string_lossy()).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collaboration_settings_reach_the_extension_in_a_browser() -> Result<()> {
    let Some(bin) = code_server_bin("collaboration_settings_reach_the_extension_in_a_browser")
    else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let scratch = tempfile::tempdir()?;
    let out = scratch.path().join("collaboration-seen.json");
    let vsix = scratch.path().join("probe.vsix");
    write_vsix(&vsix, &probe_extension(&out))?;
    let assets = AssetServer::start(std::fs::read(&vsix)?).await?;
    let mut bench = Bench::new(&bin, Some(assets.access(TOKEN)))?;
    let cwd = bench.cwd();
    let mut request = bench.request(&cwd);
    request.collaboration = Some(collaboration_object());
    let id = bench.start(request).await?;

    // Both assets, each with the bearer token.
    let seen = assets.seen.lock().unwrap().clone();
    let mut paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/assets/oct-server.js", "/assets/oct.vsix"]);
    for (path, auth) in &seen {
        assert_eq!(auth.as_deref(), Some(&*format!("Bearer {TOKEN}")), "{path}");
    }
    let info = bench.editors.list().remove(0);
    let folder = info.socket.parent().context("editor folder")?.to_path_buf();
    let expected = json!({
        "roomId": "room-42",
        "displayName": "Ada",
        "options": {"readOnly": false},
        "serverUrl": format!("http://127.0.0.1:{}/assets/oct-server.js", assets.port),
    });
    let settings: Value =
        serde_json::from_slice(&std::fs::read(folder.join("user-data/User/settings.json"))?)?;
    assert_eq!(settings, json!({ "kandan.collaboration": expected }));
    let installed: Vec<String> = std::fs::read_dir(folder.join("extensions"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        installed
            .iter()
            .any(|name| name.starts_with("kandan.collab-probe")),
        "extension not installed: {installed:?}"
    );

    // The workbench in a real browser, through a TCP -> Unix relay; the
    // extension activates some seconds after it opens.
    let proxy = UnixProxy::start(&info.socket).await?;
    let mut browser = Browser::launch().await?;
    let status = browser
        .goto(&format!("http://127.0.0.1:{}/", proxy.port()))
        .await?;
    assert_eq!(status, 200, "workbench status");
    // The workbench shows the cwd's file in its explorer.
    browser
        .wait_for_selector_text(EXPLORER_ROW, "hello.txt")
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !out.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the extension never wrote {}; browser log:\n{}",
                out.display(),
                browser.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Written in one call, but give a partial write a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    assert_eq!(read, expected);
    let _ = browser.close().await;

    bench.editors.stop(id.as_str()).await?;
    bench.assert_nothing_left().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_collaboration_gives_failed_and_leaves_nothing() -> Result<()> {
    let Some(bin) = code_server_bin("failed_collaboration_gives_failed_and_leaves_nothing") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let scratch = tempfile::tempdir()?;
    let vsix = scratch.path().join("probe.vsix");
    write_vsix(&vsix, "exports.activate = function () {};\n")?;
    let assets = AssetServer::start(std::fs::read(&vsix)?).await?;

    // Wrong token: 401.
    let mut bench = Bench::new(&bin, Some(assets.access("wrong-token")))?;
    let cwd = bench.cwd();
    let mut request = bench.request(&cwd);
    request.collaboration = Some(collaboration_object());
    let failure = expect_failed(&mut bench, request.clone()).await?;
    assert!(failure.contains("401"), "{failure}");
    assert!(
        !failure.contains("wrong-token"),
        "the token leaked: {failure}"
    );
    bench.assert_nothing_left().await;

    // Right token, missing asset: 404.
    let mut bench = Bench::new(&bin, Some(assets.access(TOKEN)))?;
    let mut missing = collaboration_object();
    missing["serverAssetPath"] = json!("/assets/gone.js");
    request.collaboration = Some(missing);
    let failure = expect_failed(&mut bench, request.clone()).await?;
    assert!(failure.contains("404"), "{failure}");
    bench.assert_nothing_left().await;

    // An asset path that leaves Kandan's origin: refused before any fetch.
    let before = assets.seen.lock().unwrap().len();
    let mut elsewhere = collaboration_object();
    elsewhere["extensionAssetPath"] = json!("https://elsewhere.example/x.vsix");
    request.collaboration = Some(elsewhere);
    let failure = expect_failed(&mut bench, request.clone()).await?;
    assert!(failure.contains("extensionAssetPath"), "{failure}");
    assert_eq!(assets.seen.lock().unwrap().len(), before, "fetched anyway");

    // A broken .vsix: the install fails.
    let broken = AssetServer::start(b"not a zip".to_vec()).await?;
    let mut bench = Bench::new(&bin, Some(broken.access(TOKEN)))?;
    request.collaboration = Some(collaboration_object());
    let failure = expect_failed(&mut bench, request).await?;
    assert!(failure.contains("install"), "{failure}");
    bench.assert_nothing_left().await;
    Ok(())
}

async fn expect_failed(bench: &mut Bench, request: StartRequest) -> Result<String> {
    let returned = bench.editors.start(request).await;
    eprintln!("start answered {returned:?}");
    let event = bench.next_event().await?;
    ensure!(event == returned, "sent {event:?}, returned {returned:?}");
    match event {
        Event::ControlError(ControlErrorEvent {
            request_id,
            message,
            ..
        }) => {
            ensure!(request_id.as_deref() == Some("req-1"));
            ensure!(bench.editors.list().is_empty(), "an editor is listed");
            Ok(message)
        }
        other => bail!("expected Failed, got {other:?}"),
    }
}

#[test]
fn doctor_reports_code_server_and_its_version() {
    let Some(bin) = code_server_bin("doctor_reports_code_server_and_its_version") else {
        return;
    };
    let doctor = |code_server: &Path| {
        let output = std::process::Command::new(integration_tests::support::runner_bin())
            .args(["doctor", "--json"])
            .env("KANDAN_CODE_SERVER_BIN", code_server)
            .output()
            .expect("run doctor");
        let report: Value = serde_json::from_slice(&output.stdout).expect("doctor json");
        report["codeServer"].clone()
    };
    let found = doctor(&bin);
    assert_eq!(found["path"], json!(bin));
    let version = found["version"].as_str().unwrap_or_default();
    assert!(version.starts_with("4.100.3 "), "{found}");
    let missing = doctor(Path::new("/nonexistent/code-server"));
    assert_eq!(missing["version"], Value::Null);
    assert!(
        missing["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/nonexistent/code-server")),
        "{missing}"
    );
}

/// Set for the child that plays a runner which dies with its editor running.
const DYING_RUNNER_STATE: &str = "KANDAN_TEST_DYING_RUNNER_STATE";

/// Not a test by itself: the body of the child process of
/// `editors_of_a_dead_runner_are_ended_by_the_next`. It starts an editor on
/// the given state directory, says so on stdout, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by editors_of_a_dead_runner_are_ended_by_the_next"]
async fn dying_runner_child() -> Result<()> {
    let Some(state) = std::env::var_os(DYING_RUNNER_STATE) else {
        return Ok(());
    };
    let bin = code_server_bin("dying_runner_child").context("no code-server")?;
    let state = PathBuf::from(state);
    let (editors, _events) =
        Editors::new(EditorConfig::new(bin, state.join("kandan-runner"), None));
    let cwd = state.join("cwd");
    std::fs::create_dir_all(&cwd)?;
    match editors
        .start(StartRequest {
            cwd: cwd.canonicalize()?,
            ..StartRequest::default()
        })
        .await
    {
        Event::LocalEditorStarted(_) => {
            let pid = editors.list()[0].pid;
            println!("EDITOR-PID {pid}");
        }
        other => bail!("{other:?}"),
    }
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editors_of_a_dead_runner_are_ended_by_the_next() -> Result<()> {
    let Some(bin) = code_server_bin("editors_of_a_dead_runner_are_ended_by_the_next") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let state = tempfile::Builder::new()
        .prefix("kandan-ed-dead-")
        .tempdir()?;
    let marker = state.path().to_string_lossy().into_owned();
    // This test binary again, running only the child above.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "dying_runner_child", "--ignored", "--nocapture"])
        .env(DYING_RUNNER_STATE, state.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let pid: u32 = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(pid) = line.strip_prefix("EDITOR-PID ") {
                return Ok(pid.trim().parse()?);
            }
        }
        bail!("the child ended without starting an editor")
    })
    .await
    .context("the child did not start an editor in time")??;

    // The "runner" dies without stopping anything: its editor stays.
    child.start_kill()?;
    child.wait().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !group_members(pid).is_empty(),
        "the editor died with its runner"
    );
    let editors_dir = state.path().join("kandan-runner/editors");
    assert_eq!(std::fs::read_dir(&editors_dir)?.count(), 1);

    // The next registry on that state directory ends it.
    let config = EditorConfig::new(bin, state.path().join("kandan-runner"), None);
    let (_editors, _events) = Editors::new(config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&marker).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "left running: {:?}",
            processes_mentioning(&marker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_dir(&editors_dir)?.count(), 0, "folder left");
    Ok(())
}
