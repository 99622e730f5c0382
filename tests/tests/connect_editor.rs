//! The local editor under `connect` (PROTOCOL.md sections 6 and 8): Kandan
//! starts code-server for an allowed cwd, reaches it only through the
//! forward by `editorId` (the simulator's `/editor/<id>/`), and every way
//! it ends leaves no process behind. Real code-server and Chromium.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::bench_editor::EXPLORER_ROW;
use integration_tests::browser::Browser;
use integration_tests::code_server::{
    UnixProxy, code_server_bin, collaboration_object, processes_mentioning, write_vsix,
};
use integration_tests::preview_client;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::artifacts_dir;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    sim: Simulator,
    runner: RunnerProcess,
    /// The runner's private state directory (`XDG_STATE_HOME`).
    state: tempfile::TempDir,
    /// The allowed root, with `hello.txt` in its `work/`.
    root: tempfile::TempDir,
}

impl Setup {
    async fn start(bin: &Path) -> Result<Setup> {
        let sim = Simulator::start(SimConfig::default()).await?;
        let state = tempfile::tempdir()?;
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join("work"))?;
        std::fs::write(
            root.path().join("work/hello.txt"),
            "hello from the workspace\n",
        )?;
        let mut args = RunnerArgs::new("editor-e2e", Vec::new());
        args.flags = vec![
            "--code-server-bin".into(),
            bin.to_string_lossy().into_owned(),
        ];
        args.env = vec![(
            "XDG_STATE_HOME".into(),
            state.path().to_string_lossy().into_owned(),
        )];
        let runner = RunnerProcess::start(&sim, args)?;
        sim.wait_joined(WAIT).await?;
        let setup = Setup {
            sim,
            runner,
            state,
            root,
        };
        setup.allow(&[setup.root.path()]).await?;
        Ok(setup)
    }

    fn work(&self) -> String {
        self.root.path().join("work").to_string_lossy().into_owned()
    }

    /// `update_runner_config` with these roots, once applied.
    async fn allow(&self, roots: &[&Path]) -> Result<()> {
        let after = self.sim.event_count();
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        self.sim.send_control(json!({
            "type": "update_runner_config", "allowedCwds": roots, "configVersion": after,
        }))?;
        self.sim
            .wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
            .await?;
        Ok(())
    }

    /// `start_local_editor`; the `local_editor_started` or `control_error` it got.
    async fn start_editor(&self, request_id: &str, cwd: &str, extra: Value) -> Result<Value> {
        let after = self.sim.event_count();
        let mut control =
            json!({"type": "start_local_editor", "requestId": request_id, "cwd": cwd});
        if let (Some(control), Value::Object(extra)) = (control.as_object_mut(), extra) {
            control.extend(extra);
        }
        self.sim.send_control(control)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for event in self.sim.events().into_iter().skip(after) {
                let answers = event["requestId"] == request_id
                    && matches!(
                        event["type"].as_str(),
                        Some("local_editor_started" | "control_error")
                    );
                if answers {
                    return Ok(event);
                }
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no answer to start_local_editor; runner log:\n{}",
                self.runner.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stopped(&self, editor_id: &str) -> Result<Value> {
        Ok(self
            .sim
            .wait_for_event("local_editor_stopped", |e| e["editorId"] == editor_id, WAIT)
            .await?)
    }

    /// code-server processes of this test's editors (their folders live
    /// under the state directory).
    fn editor_processes(&self) -> Vec<u32> {
        let runner = self.runner.pid();
        let mut pids = processes_mentioning(&self.state.path().to_string_lossy());
        pids.retain(|pid| *pid != runner);
        pids
    }
}

async fn gone(setup: &Setup) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !setup.editor_processes().is_empty() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "editor processes left: {:?}",
            setup.editor_processes()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workbench_loads_through_kandan_in_a_browser() -> Result<()> {
    let Some(bin) = code_server_bin("the_workbench_loads_through_kandan_in_a_browser") else {
        return Ok(());
    };
    let setup = Setup::start(&bin).await?;
    let started = setup.start_editor("e1", &setup.work(), json!({})).await?;
    ensure!(
        started["type"] == "local_editor_started",
        "not started: {started}\n{}",
        setup.runner.output()
    );
    let editor_id = started["editorId"].as_str().context("editorId")?.to_owned();
    let canonical = std::fs::canonicalize(setup.work())?;
    assert_eq!(started["cwd"], json!(canonical.display().to_string()));

    // A second start for the same cwd answers with the running editor.
    let again = setup.start_editor("e2", &setup.work(), json!({})).await?;
    assert_eq!(again["editorId"], json!(editor_id));

    // After a reconnect, runner_ready lists it.
    let readies = setup.sim.events_of("runner_ready").len();
    setup.sim.drop_connection()?;
    setup
        .sim
        .wait_for_event_type_count("runner_ready", readies + 1, WAIT)
        .await?;
    let ready = setup
        .sim
        .events_of("runner_ready")
        .pop()
        .context("runner_ready")?;
    assert_eq!(
        ready["editors"],
        json!([{"editorId": editor_id, "cwd": canonical.display().to_string()}])
    );

    // HTTP through the simulator's /editor/<id>/: the redirect to the
    // folder, then the workbench, then a file through the editor's routes.
    let url = setup.sim.editor_url(&editor_id);
    let path = format!("/editor/{editor_id}/");
    let get = || preview_client::fetch(&setup.sim, http::Method::GET, &path, Default::default());
    let response = get().await?;
    assert_eq!(response.status, 302);
    let location = response.headers.get("location").context("Location")?;
    assert!(location.to_str()?.contains("folder="), "{location:?}");

    // A file of the cwd through the editor's own routes, forwarded.
    let file = format!(
        "/editor/{editor_id}/vscode-remote-resource?path={}/hello.txt",
        canonical.display()
    );
    let response =
        preview_client::fetch(&setup.sim, http::Method::GET, &file, Default::default()).await?;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().contains("hello from the workspace"));

    // The workbench in Chromium: the explorer lists the cwd's file, which
    // needs the editor's WebSocket, forwarded.
    let mut browser = Browser::launch().await?;
    let status = browser.goto(&url).await?;
    assert_eq!(status, 200);
    browser
        .wait_for_selector_text(EXPLORER_ROW, "hello.txt")
        .await?;
    let shot = artifacts_dir("connect_editor").join("workbench.png");
    browser.screenshot(&shot).await?;
    let page = browser.state().await?;
    let sockets: Vec<&str> = page.web_sockets.iter().map(|w| w.url.as_str()).collect();
    ensure!(
        sockets
            .iter()
            .any(|url| url.contains(&format!("/editor/{editor_id}/"))),
        "no WebSocket through the forward: {sockets:?}"
    );
    let _ = browser.close().await;

    // stop_local_editor: stopped, nothing left, and the id is gone.
    setup
        .sim
        .send_control(json!({"type": "stop_local_editor", "editorId": editor_id}))?;
    let stopped = setup.stopped(&editor_id).await?;
    assert_eq!(stopped["reason"], "stopped");
    gone(&setup).await?;
    let response = get().await?;
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.error_code(), Some("unknown_editor"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwds_outside_the_allowed_roots_are_refused() -> Result<()> {
    let Some(bin) = code_server_bin("cwds_outside_the_allowed_roots_are_refused") else {
        return Ok(());
    };
    let setup = Setup::start(&bin).await?;
    let outside = tempfile::tempdir()?;
    let link = setup.root.path().join("escape");
    std::os::unix::fs::symlink(outside.path(), &link)?;
    let dotdot = format!("{}/../{}", setup.work(), "..");
    let missing = format!("{}/nope", setup.work());
    let file = format!("{}/hello.txt", setup.work());
    for (i, cwd) in [
        outside.path().to_string_lossy().into_owned(),
        link.to_string_lossy().into_owned(),
        dotdot,
        missing,
        file,
    ]
    .into_iter()
    .enumerate()
    {
        let answer = setup
            .start_editor(&format!("r{i}"), &cwd, json!({}))
            .await?;
        assert_eq!(answer["type"], "control_error", "{cwd}: {answer}");
        assert_eq!(answer["code"], "cwd_not_allowed", "{cwd}: {answer}");
    }
    ensure!(setup.editor_processes().is_empty(), "an editor started");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_cwd_killed_editor_and_runner_exit_leave_nothing() -> Result<()> {
    let Some(bin) = code_server_bin("withdrawn_cwd_killed_editor_and_runner_exit_leave_nothing")
    else {
        return Ok(());
    };
    let mut setup = Setup::start(&bin).await?;
    // Withdrawn: Kandan's new roots no longer hold the cwd.
    let started = setup.start_editor("w1", &setup.work(), json!({})).await?;
    let id = started["editorId"].as_str().context("editorId")?.to_owned();
    let elsewhere = tempfile::tempdir()?;
    setup.allow(&[elsewhere.path()]).await?;
    assert_eq!(setup.stopped(&id).await?["reason"], "cwd_not_allowed");
    gone(&setup).await?;

    // Killed from outside: local_editor_stopped with reason exited.
    setup.allow(&[setup.root.path()]).await?;
    let started = setup.start_editor("w2", &setup.work(), json!({})).await?;
    let id = started["editorId"].as_str().context("editorId")?.to_owned();
    for pid in setup.editor_processes() {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert_eq!(setup.stopped(&id).await?["reason"], "exited");
    gone(&setup).await?;

    // The runner's exit: no editor outlives it.
    let started = setup.start_editor("w3", &setup.work(), json!({})).await?;
    ensure!(started["type"] == "local_editor_started", "{started}");
    ensure!(!setup.editor_processes().is_empty());
    setup.runner.terminate().await?;
    gone(&setup).await?;
    Ok(())
}

/// PROTOCOL.md section 6: an `update_runner_config` that withdraws the cwd
/// while its editor is still starting wins: `editor_failed`, never
/// `local_editor_started`, and nothing of it keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_during_an_editor_start_wins() -> Result<()> {
    let Some(bin) = code_server_bin("a_withdrawal_during_an_editor_start_wins") else {
        return Ok(());
    };
    let setup = Setup::start(&bin).await?;
    let elsewhere = tempfile::tempdir()?;
    let after = setup.sim.event_count();
    setup.sim.send_control(
        json!({"type": "start_local_editor", "requestId": "c1", "cwd": setup.work()}),
    )?;
    // code-server takes seconds to answer; the withdrawal comes once it
    // runs, before it answers.
    let deadline = tokio::time::Instant::now() + WAIT;
    while setup.editor_processes().is_empty() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "code-server never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    setup.allow(&[elsewhere.path()]).await?;
    let answer = setup
        .start_editor("c1-wait", &setup.work(), json!({}))
        .await?;
    assert_eq!(answer["code"], "cwd_not_allowed", "{answer}");
    let (_, failed) = setup
        .sim
        .wait_for_event_after(after, "control_error", |e| e["requestId"] == "c1", WAIT)
        .await?;
    assert_eq!(failed["code"], "editor_failed", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or("")
            .contains("no longer allowed"),
        "{failed}"
    );
    gone(&setup).await?;
    // Still nothing a while later: no late start, no process.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = setup.sim.events_since(after);
    ensure!(
        !events.iter().any(|e| e["type"] == "local_editor_started"),
        "an editor started: {events:?}"
    );
    ensure!(setup.editor_processes().is_empty(), "an editor runs");
    Ok(())
}

/// An editor whose canonical cwd is not UTF-8 keeps running through an
/// `update_runner_config` that keeps it allowed (compared as bytes, not
/// through a lossy conversion), and stops on one that withdraws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cwd_that_is_not_utf8_survives_an_update_that_keeps_it() -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let Some(bin) = code_server_bin("a_cwd_that_is_not_utf8_survives_an_update_that_keeps_it")
    else {
        return Ok(());
    };
    let setup = Setup::start(&bin).await?;
    // JSON carries only UTF-8: Kandan names it through a symlink.
    let raw = setup
        .root
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&raw)?;
    let link = setup.root.path().join("ascii-name");
    std::os::unix::fs::symlink(&raw, &link)?;
    let started = setup
        .start_editor("u1", &link.to_string_lossy(), json!({}))
        .await?;
    ensure!(
        started["type"] == "local_editor_started",
        "not started: {started}\n{}",
        setup.runner.output()
    );
    let id = started["editorId"].as_str().context("editorId")?.to_owned();
    let after = setup.sim.event_count();
    setup.allow(&[setup.root.path()]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = setup.sim.events_since(after);
    ensure!(
        !events.iter().any(|e| e["type"] == "local_editor_stopped"),
        "stopped by an update that keeps it: {events:?}"
    );
    ensure!(!setup.editor_processes().is_empty(), "the editor is gone");
    let elsewhere = tempfile::tempdir()?;
    setup.allow(&[elsewhere.path()]).await?;
    assert_eq!(setup.stopped(&id).await?["reason"], "cwd_not_allowed");
    gone(&setup).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collaboration_assets_come_from_kandan_and_failures_say_why() -> Result<()> {
    let Some(bin) = code_server_bin("collaboration_assets_come_from_kandan_and_failures_say_why")
    else {
        return Ok(());
    };
    let setup = Setup::start(&bin).await?;
    let scratch = tempfile::tempdir()?;
    let vsix = scratch.path().join("probe.vsix");
    write_vsix(&vsix, "exports.activate = function () {};\n")?;
    let collaboration = collaboration_object();

    // A missing asset: editor_failed, nothing started.
    let failed = setup
        .start_editor("c1", &setup.work(), json!({"collaboration": collaboration}))
        .await?;
    assert_eq!(failed["code"], "editor_failed", "{failed}");
    ensure!(setup.editor_processes().is_empty());

    // Both assets served: fetched with the token, and the editor starts.
    setup
        .sim
        .serve_asset("/assets/oct.vsix", std::fs::read(&vsix)?);
    setup.sim.serve_asset("/assets/oct-server.js", "// server");
    let started = setup
        .start_editor("c2", &setup.work(), json!({"collaboration": collaboration}))
        .await?;
    ensure!(started["type"] == "local_editor_started", "{started}");
    let fetches = setup.sim.asset_fetches();
    for path in ["/assets/oct.vsix", "/assets/oct-server.js"] {
        ensure!(
            fetches.iter().any(|(p, auth)| p == path && *auth),
            "{path} not fetched with the token: {fetches:?}"
        );
    }
    Ok(())
}

/// The workbench through the runner shows no console error, failed request
/// or WebSocket error that the same code-server opened directly (through a
/// byte relay to its socket) does not show too. Both show code-server's own
/// (its build lacks `vsda`, so two 404s, and a webview's service worker
/// loses to code-server's, so "An unknown error occurred" twice): those are
/// upstream, and what this test holds is that forwarding adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workbench_console_is_as_clean_through_kandan_as_direct() -> Result<()> {
    let Some(bin) = code_server_bin("the_workbench_console_is_as_clean_through_kandan_as_direct")
    else {
        return Ok(());
    };
    let setup = Setup::start(&bin).await?;
    let started = setup.start_editor("c1", &setup.work(), json!({})).await?;
    ensure!(
        started["type"] == "local_editor_started",
        "not started: {started}\n{}",
        setup.runner.output()
    );
    let editor_id = started["editorId"].as_str().context("editorId")?;
    let socket = setup
        .state
        .path()
        .join("kandan-runner/editors")
        .join(editor_id)
        .join("socket");
    ensure!(socket.exists(), "no editor socket at {}", socket.display());
    let proxy = UnixProxy::start(&socket).await?;

    let direct = workbench_problems(&format!("http://127.0.0.1:{}/", proxy.port())).await?;
    let through = workbench_problems(&setup.sim.editor_url(editor_id)).await?;
    let added: Vec<&String> = through.difference(&direct).collect();
    ensure!(
        added.is_empty(),
        "through the runner only: {added:#?}\ndirect: {direct:#?}\nthrough the runner: {through:#?}"
    );
    Ok(())
}

/// Opens the workbench at `url` in a fresh browser, waits until its explorer
/// lists the cwd's file and it has settled, and returns what went wrong,
/// each with the page's origin, ids and query strings taken out.
async fn workbench_problems(url: &str) -> Result<std::collections::BTreeSet<String>> {
    let mut browser = Browser::launch().await?;
    let status = browser.goto(url).await?;
    ensure!(status == 200, "{url}: status {status}");
    browser
        .wait_for_selector_text(EXPLORER_ROW, "hello.txt")
        .await?;
    // The webviews' and extension host's errors come seconds after the
    // explorer shows.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let page = browser.state().await?;
    let _ = browser.close().await;
    let failed = (page.failed_requests.iter()).map(|r| format!("request {} {}", r.url, r.error));
    let sockets = (page.web_sockets.iter())
        .filter_map(|ws| Some(format!("websocket {} {}", ws.url, ws.error.as_ref()?)));
    Ok((page.console_errors.iter().cloned())
        .chain(failed)
        .chain(sockets)
        .map(|problem| anonymize(&problem))
        .collect())
}

/// `problem` with every `http://127.0.0.1:<port>[/editor/<id>]` replaced by
/// `<origin>`, query strings dropped and UUIDs replaced by `<uuid>`, so the
/// two ways in compare equal when the same thing went wrong.
fn anonymize(problem: &str) -> String {
    let mut out = String::new();
    for word in problem.split(' ') {
        let mut word = word.to_owned();
        for scheme in ["http://127.0.0.1:", "ws://127.0.0.1:"] {
            if let Some(rest) = word.strip_prefix(scheme) {
                let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                let rest = match rest.strip_prefix("/editor/") {
                    Some(tail) => &tail[tail.find('/').unwrap_or(tail.len())..],
                    None => rest,
                };
                word = format!("<origin>{}", rest.split('?').next().unwrap_or_default());
            }
        }
        let parts: Vec<String> = word
            .split('/')
            .map(|part| {
                let uuid = part.len() == 36
                    && part.chars().filter(|c| *c == '-').count() == 4
                    && part.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
                if uuid {
                    "<uuid>".to_owned()
                } else {
                    part.to_owned()
                }
            })
            .collect();
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&parts.join("/"));
    }
    out
}
