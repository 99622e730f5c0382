//! `kandan-runner status [--json]` against a running `connect` and a
//! running `watch` (issue 10): each serves its state on a socket of its
//! own in the private state directory (0700, the socket 0600), another
//! user cannot ask, stale sockets are cleaned up, and with nothing running
//! `status` says so and exits 1.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::{self, WAIT};
use integration_tests::runner_process::{RunnerArgs, RunnerProcess, test_server_script};
use integration_tests::runner_run::RunnerRun;
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::{privileged, runner_bin};
use integration_tests::vite;
use serde_json::Value;

/// `kandan-runner status ARGS` with this state directory: exit code, stdout, stderr.
async fn status(state: &Path, args: &[&str]) -> Result<(i32, String, String)> {
    let output = tokio::process::Command::new(runner_bin())
        .arg("status")
        .args(args)
        .env("XDG_STATE_HOME", state)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

async fn status_json(state: &Path) -> Result<Value> {
    let (code, stdout, stderr) = status(state, &["--json"]).await?;
    ensure!(code == 0, "status --json: {code} {stdout} {stderr}");
    serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))
}

/// Asks until `ready` holds for the document (the state follows events).
async fn wait_status(state: &Path, ready: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = status_json(state).await;
        if let Ok(document) = &last
            && ready(document)
        {
            return last;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "status never got there: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn listener(document: &Value, port: u16) -> Option<&Value> {
    document["runners"][0]["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["port"] == port)
}

fn socket_of(state: &Path, pid: u32) -> PathBuf {
    state.join(format!("kandan-runner/runner-{pid}.sock"))
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test]
async fn status_lists_a_running_connect_with_a_pending_and_an_approved_port() -> Result<()> {
    let state = tempfile::tempdir()?;
    // Open above ours, so that only the runner's own modes keep others out.
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755))?;
    let sim = Simulator::start(SimConfig::default()).await?;
    let mut args = RunnerArgs::supervising("status-connect");
    args.env
        .push(("XDG_STATE_HOME".into(), state.path().display().to_string()));
    let mut runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;

    let approved = e2e::serve_approved(&sim, &mut runner, "approved").await?;
    let (pending, request) = e2e::serve(&sim, &mut runner, "pending").await?;
    let document = wait_status(state.path(), |d| {
        listener(d, approved).is_some_and(|l| l["state"] == "approved")
            && listener(d, pending).is_some_and(|l| l["state"] == "pending")
            && d["runners"][0]["kandan"]["state"] == "connected"
    })
    .await?;
    let runners = document["runners"].as_array().context("runners")?;
    ensure!(runners.len() == 1, "{document}");
    let me = &runners[0];
    ensure!(
        me["pid"] == runner.pid() && me["command"] == "connect",
        "{me}"
    );
    let kandan = &me["kandan"];
    ensure!(kandan["url"] == sim.url(), "{kandan}");
    ensure!(kandan["runnerId"] == "status-connect", "{kandan}");
    ensure!(
        kandan["since"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{kandan}"
    );
    ensure!(
        !document.to_string().contains(sim.token()),
        "the token in {document}"
    );
    let waiting = listener(&document, pending).context("pending")?;
    ensure!(
        waiting["requestId"] == request.request_id.as_str(),
        "{waiting}"
    );
    ensure!(
        waiting["label"].is_string() && waiting["pid"].is_u64(),
        "{waiting}"
    );
    ensure!(
        waiting["command"]
            .as_str()
            .is_some_and(|c| c.contains("testserver")),
        "{waiting}"
    );
    ensure!(
        waiting["addresses"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{waiting}"
    );
    ensure!(waiting["cwd"].is_string(), "{waiting}");

    // The text form: one row per port with its state.
    let (code, text, _) = status(state.path(), &[]).await?;
    ensure!(code == 0, "{text}");
    let row = |port: u16| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&port.to_string()))
    };
    ensure!(
        row(approved).is_some_and(|r| r.contains("approved")),
        "{text}"
    );
    ensure!(
        row(pending).is_some_and(|r| r.contains("pending")),
        "{text}"
    );
    ensure!(text.contains("connected"), "{text}");

    // Private: the directory 0700, the socket 0600.
    let socket = socket_of(state.path(), runner.pid());
    ensure!(
        mode(&state.path().join("kandan-runner"))? == 0o700,
        "directory mode"
    );
    ensure!(mode(&socket)? == 0o600, "socket mode");
    another_user_cannot_ask(&socket).await?;

    // On exit the socket goes; then nothing runs: a clear line, exit 1.
    runner.terminate().await?;
    ensure!(!socket.exists(), "{} left behind", socket.display());
    let (code, stdout, stderr) = status(state.path(), &[]).await?;
    ensure!(code == 1, "{code} {stdout} {stderr}");
    ensure!(stderr.contains("no kandan-runner is running"), "{stderr}");
    Ok(())
}

/// Another uid is refused by the modes (and, were they wrong, by the
/// runner's peer check). Needs root to switch uid; skipped otherwise.
async fn another_user_cannot_ask(socket: &Path) -> Result<()> {
    if !privileged("status: another user cannot ask") {
        return Ok(());
    }
    let probe = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\n print(s.recv(65536).decode())\nexcept OSError as e:\n print('refused', e.errno)\n",
        socket.display().to_string()
    );
    let output = tokio::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // The system's python: a pyenv shim under /root is not theirs.
            "/usr/bin/python3",
            "-c",
            &probe,
        ])
        .output()
        .await
        .context("setpriv")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        stdout.starts_with("refused"),
        "uid 65534 read the status: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn status_lists_a_running_watch_and_cleans_up_stale_sockets() -> Result<()> {
    let state = tempfile::tempdir()?;
    let env = [("XDG_STATE_HOME", state.path().to_str().context("utf-8")?)];
    // A dead runner's socket: nobody listens on it.
    let dir = state.path().join("kandan-runner");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let stale = dir.join("runner-999999999.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    ensure!(stale.exists());

    let port = vite::free_port()?;
    let script = test_server_script();
    let script = script.to_str().context("utf-8")?;
    let port_text = port.to_string();
    let args = [
        "watch",
        "--json",
        "--debounce-ms",
        "200",
        "--poll-interval-ms",
        "100",
        "--",
        "python3",
        script,
        "serve",
        "--port",
        &port_text,
        "--name",
        "watched",
    ];
    let watch = RunnerRun::start(args, &env)?;
    watch
        .wait_stdout_line(|l| l.contains(r#""event":"opened""#), WAIT)
        .await?;
    // `ts` on watch --json lines (RFC 3339 UTC, milliseconds).
    let opened: Value = serde_json::from_str(
        &watch
            .wait_stdout_line(|l| l.contains(r#""event":"opened""#), WAIT)
            .await?,
    )?;
    ensure!(
        opened["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{opened}"
    );

    let document = wait_status(state.path(), |d| listener(d, port).is_some()).await?;
    ensure!(!stale.exists(), "the stale socket is still there");
    let runners = document["runners"].as_array().context("runners")?;
    ensure!(runners.len() == 1, "{document}");
    let me = &runners[0];
    ensure!(me["command"] == "watch" && me["pid"] == watch.pid(), "{me}");
    ensure!(me.get("kandan").is_none(), "{me}");
    let watched = listener(&document, port).context("listener")?;
    ensure!(
        watched.get("state").is_none(),
        "watch asks no one: {watched}"
    );
    ensure!(
        watched["pid"].is_u64() && watched["label"].is_string(),
        "{watched}"
    );
    let socket = socket_of(state.path(), watch.pid());
    ensure!(mode(&socket)? == 0o600, "socket mode");

    // SIGTERM: the socket goes with the runner; `--json` then says none.
    let mut watch = watch;
    watch.signal(libc::SIGTERM);
    watch.wait(WAIT).await?;
    ensure!(!socket.exists(), "{} left behind", socket.display());
    let (code, stdout, stderr) = status(state.path(), &["--json"]).await?;
    ensure!(code == 1, "{code} {stdout} {stderr}");
    let none: Value = serde_json::from_str(&stdout)?;
    ensure!(none == serde_json::json!({"runners": []}), "{stdout}");
    Ok(())
}

/// Waits for a runner stderr line with every one of `words`.
async fn wait_line(runner: &RunnerProcess, words: &[&str]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !runner
        .output()
        .lines()
        .any(|line| !line.starts_with("stdout: ") && words.iter().all(|w| line.contains(w)))
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no line with {words:?}:\n{}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn an_editor_shows_in_the_state_lines_and_in_status() -> Result<()> {
    let test = "an_editor_shows_in_the_state_lines_and_in_status";
    let Some(bin) = integration_tests::code_server::code_server_bin(test) else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    let root = tempfile::tempdir()?;
    let cwd = root.path().to_string_lossy().into_owned();
    let sim = Simulator::start(SimConfig::default()).await?;
    let mut args = RunnerArgs::new("status-editor", Vec::new());
    args.flags = vec![
        "--code-server-bin".into(),
        bin.to_string_lossy().into_owned(),
    ];
    args.env
        .push(("XDG_STATE_HOME".into(), state.path().display().to_string()));
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let after = sim.event_count();
    sim.send_control(serde_json::json!({
        "type": "update_runner_config", "allowedCwds": [cwd], "configVersion": 1,
    }))?;
    sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
        .await?;

    sim.send_control(serde_json::json!({
        "type": "start_local_editor", "requestId": "ed-1", "cwd": cwd,
    }))?;
    let started = sim
        .wait_for_event("local_editor_started", |e| e["requestId"] == "ed-1", WAIT)
        .await
        .with_context(|| runner.output())?;
    let editor_id = started["editorId"].as_str().context("editorId")?.to_owned();
    wait_line(&runner, &["editor", &editor_id, "started", &cwd]).await?;
    let document = wait_status(state.path(), |d| {
        d["runners"][0]["editors"][0]["editorId"] == editor_id.as_str()
    })
    .await?;
    let editor = &document["runners"][0]["editors"][0];
    ensure!(
        editor["cwd"] == cwd.as_str() && editor["state"] == "running",
        "{editor}"
    );
    ensure_cgroup_figures(&runner, editor)?;

    sim.send_control(serde_json::json!({"type": "stop_local_editor", "editorId": editor_id}))?;
    wait_line(&runner, &["editor", &editor_id, "stopped"]).await?;
    wait_status(state.path(), |d| {
        d["runners"][0]["editors"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await?;
    Ok(())
}

/// With cgroups (the runner's first line names no fallback), an instance's
/// or editor's CPU time is in `status` (it has started a program: more than
/// zero).
fn ensure_cgroup_figures(runner: &RunnerProcess, worker: &serde_json::Value) -> Result<()> {
    if runner.output().contains("containment: process groups") {
        eprintln!("no cgroups here: no figures to check");
        return Ok(());
    }
    ensure!(
        worker["cpuUsec"].as_u64().is_some_and(|usec| usec > 0),
        "no CPU time from the cgroup: {worker}"
    );
    Ok(())
}

#[tokio::test]
async fn a_codex_instance_shows_in_the_state_lines_and_in_status() -> Result<()> {
    use integration_tests::codex::{CodexDirs, codex_bin};
    use integration_tests::fake_model::FakeModel;

    let bin = codex_bin()?;
    let state = tempfile::tempdir()?;
    let sim = Simulator::start(SimConfig::default()).await?;
    let model = FakeModel::start().await?;
    let dirs = CodexDirs::new()?;
    std::fs::write(dirs.home().join("config.toml"), model.config_toml())?;
    let home = dirs.home().to_string_lossy().into_owned();
    let cwd = dirs.cwd().to_string_lossy().into_owned();
    let mut args = RunnerArgs::new("status-codex", Vec::new());
    args.flags = vec!["--codex-bin".into(), bin.to_string_lossy().into_owned()];
    args.env = vec![
        ("CODEX_HOME".into(), home.clone()),
        ("HOME".into(), home),
        ("XDG_STATE_HOME".into(), state.path().display().to_string()),
    ];
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let after = sim.event_count();
    sim.send_control(serde_json::json!({
        "type": "update_runner_config", "allowedCwds": [cwd],
    }))?;
    sim.wait_for_event_after(after, "runner_config_applied", |_| true, WAIT)
        .await?;

    sim.send_control(serde_json::json!({
        "type": "start_instance", "instanceId": "i-status", "cwd": cwd,
    }))?;
    sim.wait_for_event("instance_started", |e| e["instanceId"] == "i-status", WAIT)
        .await
        .with_context(|| runner.output())?;
    wait_line(&runner, &["Codex instance i-status started in", &cwd]).await?;
    let document = wait_status(state.path(), |d| {
        d["runners"][0]["instances"][0]["instanceId"] == "i-status"
    })
    .await?;
    let instance = &document["runners"][0]["instances"][0];
    ensure!(instance["cwd"] == cwd.as_str(), "{instance}");
    ensure!(instance["threadId"].is_string(), "{instance}");
    ensure!(instance["state"] == "idle", "{instance}");
    ensure_cgroup_figures(&runner, instance)?;

    sim.send_control(serde_json::json!({"type": "stop_instance", "instanceId": "i-status"}))?;
    wait_line(&runner, &["Codex instance i-status stopped"]).await?;
    wait_status(state.path(), |d| {
        d["runners"][0]["instances"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await?;
    Ok(())
}

/// A listener's command line is the process's to choose: with terminal
/// escapes in it (set the window title, clear the screen), the table shows
/// them escaped and writes no control character but newlines.
#[tokio::test]
async fn the_table_shows_control_characters_escaped() -> Result<()> {
    let state = tempfile::tempdir()?;
    let env = [("XDG_STATE_HOME", state.path().to_str().context("utf-8")?)];
    let port = vite::free_port()?;
    let script = format!(
        "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(300)\n"
    );
    let args = [
        "watch",
        "--json",
        "--debounce-ms",
        "100",
        "--",
        "python3",
        "-c",
        &script,
        "\x1b]0;owned\x07\x1b[2J\x1b[H",
    ];
    let watch = RunnerRun::start(args, &env)?;
    wait_status(state.path(), |d| listener(d, port).is_some()).await?;
    let (code, stdout, stderr) = status(state.path(), &[]).await?;
    drop(watch);
    ensure!(code == 0, "{code} {stdout} {stderr}");
    ensure!(
        !stdout.contains(|c: char| c.is_control() && c != '\n'),
        "a control character reached the terminal: {stdout:?}"
    );
    let row = stdout
        .lines()
        .find(|l| l.contains(&port.to_string()))
        .context("no row")?;
    ensure!(
        row.contains(r"\x1b]0;owned\x07\x1b[2J\x1b[H"),
        "not shown escaped: {row}"
    );
    Ok(())
}

/// Sockets in the state directory that accept and then trickle a byte every
/// 2 s, and one whose `connect` blocks (another process of the same user
/// can make them): `status` answers within its one deadline (3 s for the
/// whole answer, not per read), with an error, however many there are.
#[tokio::test]
async fn trickling_sockets_do_not_stall_status() -> Result<()> {
    let state = tempfile::tempdir()?;
    let dir = state.path().join("kandan-runner");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for n in 0..3 {
        let listener = std::os::unix::net::UnixListener::bind(
            dir.join(format!("runner-{}.sock", 999_999_900 + n)),
        )?;
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            use std::io::Write;
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if stream.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }));
    }
    // And one whose backlog is full, so that `connect` itself blocks.
    let full = dir.join("runner-999999999.sock");
    let mut backlog = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.bind(sys.argv[1])\n\
             s.listen(0)\n\
             c = socket.socket(socket.AF_UNIX)\n\
             c.connect(sys.argv[1])\n\
             print('full', flush=True)\n\
             time.sleep(60)\n",
        ])
        .arg(&full)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut said = tokio::io::BufReader::new(backlog.stdout.take().context("stdout")?);
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut said, &mut line).await?;
    ensure!(line.trim() == "full", "{line}");
    let start = std::time::Instant::now();
    let (code, stdout, stderr) = status(state.path(), &[]).await?;
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ensure!(
        took < Duration::from_secs(5),
        "status took {took:?}: {stderr}"
    );
    ensure!(code == 1, "{code} {stdout} {stderr}");
    ensure!(
        stderr.matches("no answer").count() == 4,
        "one warning per socket: {stderr}"
    );
    let _ = backlog.kill().await;
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}
