//! The config file and its `[[ports]]` attributes (issue 11; PROTOCOL.md
//! section 1), through the binary: `watch` hides `ignore` ports and shows
//! labels and `silent` ports; `connect` never asks Kandan about a `silent`
//! port nor forwards to it, sends labels, and applies a project's
//! `.kandan/ports.toml`; a bad file is one stderr line and exit 2.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use http::StatusCode;
use integration_tests::e2e::{self, WAIT};
use integration_tests::preview_client;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::runner_run::{RunnerRun, watch_json_args};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::runner_bin;
use integration_tests::vite;
use serde_json::Value;

/// A python3 that listens on each of `ports` (127.0.0.1) and sleeps.
fn listener(ports: &[u16]) -> Vec<String> {
    let script = format!(
        "import socket, time\n\
         held = []\n\
         for port in {ports:?}:\n    \
             s = socket.socket()\n    \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    \
             s.bind(('127.0.0.1', port))\n    \
             s.listen()\n    \
             held.append(s)\n\
         time.sleep(300)\n"
    );
    vec![
        "python3".into(),
        "-c".into(),
        script,
        "multi-listener".into(),
    ]
}

fn watch_args(config: &Path, command: Vec<String>) -> Vec<String> {
    let mut args = watch_json_args();
    args.extend(["--config".into(), config.display().to_string(), "--".into()]);
    args.extend(command);
    args
}

fn opened(line: &str, port: u16) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == "opened" && v["port"] == port)
}

#[tokio::test]
async fn watch_hides_ignored_ports_and_shows_labels_and_silent_ones() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ignored, labelled, silent) = (vite::free_port()?, vite::free_port()?, vite::free_port()?);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[ports]]\nport = {ignored}\non_detect = \"ignore\"\n\n\
             [[ports]]\nport = \"{labelled}\"\ncommand = \"*python3 -c *multi-listener\"\nlabel = \"my-web\"\n\n\
             [[ports]]\nport = \"{silent}-{silent}\"\non_detect = \"silent\"\n"
        ),
    )?;
    let mut runner = RunnerRun::start(
        watch_args(&config, listener(&[ignored, labelled, silent])),
        &[],
    )?;
    let line = runner
        .wait_stdout_line(|l| opened(l, labelled), WAIT)
        .await?;
    let line: Value = serde_json::from_str(&line)?;
    ensure!(line["label"] == "my-web", "label not applied: {line}");
    let line = runner.wait_stdout_line(|l| opened(l, silent), WAIT).await?;
    let line: Value = serde_json::from_str(&line)?;
    ensure!(line["label"] == "python3", "silent port relabelled: {line}");
    // The three sockets listened at once: the ignored one would be here by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner.signal(libc::SIGTERM);
    runner.wait(Duration::from_secs(10)).await?;
    let wanted = format!("\"port\":{ignored}");
    ensure!(
        !runner.stdout().contains(&wanted),
        "the ignored port was shown:\n{}",
        runner.output()
    );
    ensure!(
        runner.stdout().contains("\"closed\""),
        "no closed lines:\n{}",
        runner.output()
    );
    Ok(())
}

#[tokio::test]
async fn the_default_file_is_read_from_xdg_config_home() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = vite::free_port()?;
    std::fs::create_dir(dir.path().join("kandan-runner"))?;
    std::fs::write(
        dir.path().join("kandan-runner/config.toml"),
        format!(
            "debounce_ms = 100\nbackend = \"procfs\"\n[[ports]]\nport = {port}\nlabel = \"from-xdg\"\n"
        ),
    )?;
    let mut args: Vec<String> = ["watch", "--json", "--"].map(String::from).to_vec();
    args.extend(listener(&[port]));
    let xdg = dir.path().to_str().context("temp path")?;
    let runner = RunnerRun::start(&args, &[("XDG_CONFIG_HOME", xdg)])?;
    let line = runner.wait_stdout_line(|l| opened(l, port), WAIT).await?;
    let line: Value = serde_json::from_str(&line)?;
    ensure!(
        line["label"] == "from-xdg" && line["backend"] == "procfs",
        "{line}"
    );
    Ok(())
}

/// Runs `kandan-runner ARGS` to its end: exit code and stderr.
async fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String)> {
    let mut runner = RunnerRun::start(args, env)?;
    let (status, _) = runner.wait(Duration::from_secs(20)).await?;
    Ok((
        status.code().context("killed by a signal")?,
        runner.stderr(),
    ))
}

#[tokio::test]
async fn a_bad_config_exits_2_with_one_line_naming_file_line_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bad.toml");
    let path = config.display().to_string();
    for (text, line, key) in [
        (
            "url = \"ws://h/s\"\n\nlisten_port = 3\n",
            3,
            "unknown key `listen_port`",
        ),
        (
            "[[ports]]\nport = 80\non_detect = \"maybe\"\n",
            3,
            "ports[0].on_detect",
        ),
        ("[[ports]]\nport = \"90-80\"\n", 2, "ports[0].port"),
        ("# c\npoll_interval_ms = 0\n", 2, "poll_interval_ms"),
        ("backend = \"fast\"\n", 1, "backend"),
    ] {
        std::fs::write(&config, text)?;
        for command in [
            &["watch", "--config", &path, "--", "true"][..],
            &["connect", "--config", &path],
        ] {
            let (code, stderr) = run_to_end(command, &[]).await?;
            ensure!(
                code == 2,
                "{command:?} with {text:?}: exit {code}: {stderr}"
            );
            let lines: Vec<&str> = stderr.lines().collect();
            ensure!(
                lines.len() == 1
                    && lines[0].contains(&format!("{path}:{line}:"))
                    && lines[0].contains(key),
                "{command:?} with {text:?}: expected one line naming {path}:{line} and {key}, got {stderr:?}"
            );
        }
    }
    // An explicit file must exist; a missing default one is no config.
    let missing = dir.path().join("missing.toml");
    let (code, stderr) =
        run_to_end(&["doctor", "--config", missing.to_str().unwrap()], &[]).await?;
    ensure!(
        code == 2 && stderr.lines().count() == 1 && stderr.contains("missing.toml"),
        "{code}: {stderr}"
    );
    let empty = dir.path().to_str().unwrap();
    let (code, stderr) =
        run_to_end(&["completions", "bash"], &[("XDG_CONFIG_HOME", empty)]).await?;
    ensure!(code == 0, "{code}: {stderr}");
    Ok(())
}

#[tokio::test]
async fn connect_applies_silent_labels_and_the_projects_file() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let (silent, labelled, project) = (vite::free_port()?, vite::free_port()?, vite::free_port()?);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[ports]]\nport = {silent}\non_detect = \"silent\"\n\
             [[ports]]\nport = {labelled}\ncommand = \"*testserver.py serve*\"\nlabel = \"my-api\"\nprotocol = \"http\"\n"
        ),
    )?;
    // The servers run in the runner's cwd: the project file applies to them.
    let project_dir = dir.path().join("project");
    std::fs::create_dir_all(project_dir.join(".kandan"))?;
    std::fs::write(
        project_dir.join(".kandan/ports.toml"),
        format!(
            "[[ports]]\nport = {project}\nlabel = \"from-project\"\n[[ports]]\nport = {labelled}\nlabel = \"loses\"\n"
        ),
    )?;
    let mut args = RunnerArgs::supervising("config-ports")
        .flags(["--config", config.to_str().context("temp path")?]);
    args.cwd = Some(project_dir.clone());
    let state = dir.path().join("state");
    args.env
        .push(("XDG_STATE_HOME".into(), state.display().to_string()));
    let mut runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;

    runner.start_server("quiet", silent).await?;
    runner.start_server("api", labelled).await?;
    runner.start_server("proj", project).await?;
    let request = sim
        .wait_for_request(labelled, WAIT)
        .await
        .with_context(|| runner.output())?;
    let event = sim
        .wait_for_event("port_forward_request", |e| e["port"] == labelled, WAIT)
        .await?;
    ensure!(event["label"] == "my-api", "user label missing: {event}");
    let event = sim
        .wait_for_event("port_forward_request", |e| e["port"] == project, WAIT)
        .await
        .with_context(|| runner.output())?;
    ensure!(
        event["label"] == "from-project",
        "project label missing: {event}"
    );
    // The silent server started first: its request would be here by now.
    ensure!(
        !sim.events_of("port_forward_request")
            .iter()
            .any(|e| e["port"] == silent),
        "a silent port was requested: {:?}",
        sim.events_of("port_forward_request")
    );
    let resp = preview_client::get(&sim, silent, "/hello").await?;
    ensure!(
        resp.status == StatusCode::FORBIDDEN && resp.error_code() == Some("port_not_approved"),
        "a silent port was forwarded: {} {:?} {}",
        resp.status,
        resp.error_code(),
        resp.text()
    );
    ensure!(
        e2e::served_paths(silent).await?.is_empty(),
        "the silent server saw a forwarded request"
    );
    // `status` lists it, as silent.
    let output = tokio::process::Command::new(runner_bin())
        .args(["status", "--json"])
        .env("XDG_STATE_HOME", &state)
        .output()
        .await?;
    let document: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| String::from_utf8_lossy(&output.stderr).into_owned())?;
    let listeners = &document["runners"][0]["listeners"];
    let shown = (listeners.as_array().into_iter().flatten()).find(|l| l["port"] == silent);
    ensure!(
        shown.is_some_and(|l| l["state"] == "silent"),
        "silent port not in status as silent: {document}"
    );
    // Still listening, so never said to be closed (it was, on every
    // listener change after it appeared).
    let closed = format!("port {silent} ");
    ensure!(
        !runner
            .output()
            .lines()
            .any(|l| l.contains(&closed) && l.contains("closed")),
        "a listening silent port was printed closed:\n{}",
        runner.output()
    );
    // The labelled one forwards as usual.
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;
    e2e::expect_hello(&sim, labelled, "api").await?;

    // After a reconnect, runner_ready carries the label and not the silent port.
    let ready = e2e::reconnect_ready(&sim, &runner).await?;
    let listener = e2e::ready_listener(&ready, labelled).context("labelled port not ready")?;
    ensure!(listener["label"] == "my-api", "{ready}");
    ensure!(
        e2e::ready_listener(&ready, silent).is_none(),
        "silent port in runner_ready: {ready}"
    );
    Ok(())
}

#[tokio::test]
async fn connect_takes_url_from_the_environment_and_token_file_from_the_file() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", sim.token()))?;
    let config = dir.path().join("config.toml");
    // The file's URL goes nowhere: KANDAN_URL must win.
    std::fs::write(
        &config,
        format!(
            "url = \"ws://127.0.0.1:9/runner/socket\"\ntoken_file = \"{}\"\nrunner_id = \"from-file\"\n",
            token.display()
        ),
    )?;
    let url = sim.url();
    let config_path = config.to_str().context("temp path")?;
    let runner = RunnerRun::start(
        ["connect", "--config", config_path, "--backend", "procfs"],
        &[("KANDAN_URL", url.as_str())],
    )?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let ready = sim.wait_for_event("runner_ready", |_| true, WAIT).await?;
    ensure!(ready["runnerId"] == "from-file", "{ready}");
    ensure!(
        !runner.output().contains(sim.token()),
        "the token was logged: {}",
        runner.output()
    );
    Ok(())
}

#[tokio::test]
async fn the_files_redact_names_hide_more_values() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = vite::free_port()?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "redact = [\"--my-secret\", \"MY_VAR\"]\n")?;
    let mut command = listener(&[port]);
    command.extend(["--my-secret", "hunter2", "MY_VAR=abc", "--plain", "kept"].map(String::from));
    let mut args = watch_args(&config, command);
    args.insert(1, "--redact".into());
    let runner = RunnerRun::start(&args, &[])?;
    let line = runner.wait_stdout_line(|l| opened(l, port), WAIT).await?;
    let line: Value = serde_json::from_str(&line)?;
    let command = line["command"].as_str().context("no command")?;
    ensure!(
        command.ends_with("multi-listener --my-secret *** MY_VAR=*** --plain kept"),
        "not redacted as configured: {command}"
    );
    Ok(())
}

/// A python3 serving HTTPS (a self-signed certificate made here) on each
/// of `ports`, `GET /` answering "tls".
fn tls_servers(dir: &Path, ports: &[u16]) -> Result<Vec<String>> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("run openssl")?;
    ensure!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let script = format!(
        "import http.server, ssl, threading, time\n\
         class H(http.server.BaseHTTPRequestHandler):\n    \
             def do_GET(self):\n        \
                 self.send_response(200)\n        \
                 self.send_header('Content-Length', '3')\n        \
                 self.end_headers()\n        \
                 self.wfile.write(b'tls')\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain({cert:?}, {key:?})\n\
         for port in {ports:?}:\n    \
             srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), H)\n    \
             srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n    \
             threading.Thread(target=srv.serve_forever, daemon=True).start()\n\
         time.sleep(300)\n",
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    Ok(vec![
        "python3".into(),
        "-c".into(),
        script,
        "tls-servers".into(),
    ])
}

#[tokio::test]
async fn connect_speaks_the_protocol_a_port_entry_sets() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let (plain, tls) = (vite::free_port()?, vite::free_port()?);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[ports]]\nport = {plain}\nprotocol = \"http\"\n\
             [[ports]]\nport = {tls}\nprotocol = \"https\"\n"
        ),
    )?;
    let args = RunnerArgs::new("config-protocol", tls_servers(dir.path(), &[plain, tls])?)
        .flags(["--config", config.to_str().context("temp path")?]);
    let runner = RunnerProcess::start(&sim, args)?;
    for port in [plain, tls] {
        let request = sim
            .wait_for_request(port, WAIT)
            .await
            .with_context(|| runner.output())?;
        sim.approve(&request.request_id)?;
        e2e::wait_resolved(&sim, &request.request_id).await?;
    }
    let resp = preview_client::get(&sim, tls, "/").await?;
    ensure!(
        resp.status == StatusCode::OK && resp.text() == "tls",
        "https port: {} {:?} {}\n{}",
        resp.status,
        resp.error_code(),
        resp.text(),
        runner.output()
    );
    // Both speak TLS; `http` forbids the probe that `auto` would make.
    let resp = preview_client::get(&sim, plain, "/").await?;
    ensure!(
        resp.status != StatusCode::OK && resp.text() != "tls",
        "an http port was spoken to over TLS: {} {}",
        resp.status,
        resp.text()
    );
    // The person is told which port is spoken to over TLS, and only that one.
    let output = runner.output();
    ensure!(
        output.contains(&format!("port {tls} (python3): speaks HTTPS"))
            && !output.contains(&format!("port {plain} (python3): speaks HTTPS")),
        "{output}"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_project_file_is_a_warning_and_detection_goes_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join(".kandan"))?;
    let file = project.join(".kandan/ports.toml");
    std::fs::write(
        &file,
        "# a project\nurl = \"ws://elsewhere\"\n[[ports]]\nport = 1\n",
    )?;
    let (port, good) = (vite::free_port()?, vite::free_port()?);
    // The listener runs in the project (its cwd is what counts).
    let mut command = listener(&[port]);
    command[2] = format!(
        "import os\nos.chdir({:?})\n{}",
        project.display().to_string(),
        command[2]
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[[ports]]\nport = {good}\nlabel = \"good\"\n"),
    )?;
    let runner = RunnerRun::start(watch_args(&config, command), &[])?;
    let line = runner.wait_stdout_line(|l| opened(l, port), WAIT).await?;
    let line: Value = serde_json::from_str(&line)?;
    ensure!(line["label"] == "python3", "{line}");
    let stderr = runner.stderr();
    let warning = format!("config {}:2: unknown key `url`", file.display());
    ensure!(
        stderr.lines().filter(|l| l.contains(&warning)).count() == 1,
        "expected one warning naming {warning}:\n{stderr}"
    );
    Ok(())
}

/// A python3 (/usr/bin, which any user can run) that listens on `port` in
/// `cwd`.
fn listener_in(cwd: &Path, port: u16) -> Vec<String> {
    let mut command = listener(&[port]);
    command[0] = "/usr/bin/python3".into();
    command[2] = format!(
        "import os\nos.chdir({:?})\n{}",
        cwd.display().to_string(),
        command[2]
    );
    command
}

/// As git ignores a repository another user owns: a `.kandan/ports.toml`
/// someone else planted in a shared folder does not relabel this user's
/// listener, and says why once; the runner's own user's file (root here)
/// still counts.
#[tokio::test]
async fn another_users_project_file_is_ignored_with_a_warning() -> Result<()> {
    if !integration_tests::support::privileged(
        "another_users_project_file_is_ignored_with_a_warning",
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (mine, planted) = (dir.path().join("mine"), dir.path().join("shared"));
    let (mine_port, planted_port) = (vite::free_port()?, vite::free_port()?);
    for (project, port, label) in [
        (&mine, mine_port, "mine"),
        (&planted, planted_port, "planted"),
    ] {
        std::fs::create_dir_all(project.join(".kandan"))?;
        std::fs::write(
            project.join(".kandan/ports.toml"),
            format!("[[ports]]\nport = {port}\nlabel = \"{label}\"\n"),
        )?;
    }
    // User nobody wrote this one.
    std::os::unix::fs::chown(planted.join(".kandan/ports.toml"), Some(65534), Some(65534))?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "")?;
    let mut command = listener_in(&mine, mine_port);
    let other = listener_in(&planted, planted_port);
    // One tree, two listeners in two cwds.
    command = vec![
        "sh".into(),
        "-c".into(),
        r#""$0" -c "$1" x & exec "$0" -c "$2" y"#.into(),
        command[0].clone(),
        command[2].clone(),
        other[2].clone(),
    ];
    let runner = RunnerRun::start(watch_args(&config, command), &[])?;
    let line = runner
        .wait_stdout_line(|l| opened(l, mine_port), WAIT)
        .await?;
    let line: Value = serde_json::from_str(&line)?;
    ensure!(line["label"] == "mine", "{line}");
    let line = runner
        .wait_stdout_line(|l| opened(l, planted_port), WAIT)
        .await?;
    let line: Value = serde_json::from_str(&line)?;
    ensure!(
        line["label"] == "python3",
        "the planted file relabelled it: {line}"
    );
    let stderr = runner.stderr();
    let warning = format!(
        "config {}: owned by uid 65534, not by this user (uid 0) or root",
        planted.join(".kandan/ports.toml").display()
    );
    ensure!(
        stderr.lines().filter(|l| l.contains(&warning)).count() == 1,
        "expected one warning {warning}:\n{stderr}"
    );
    Ok(())
}

/// The system service runs as its user with `CAP_DAC_READ_SEARCH`. The
/// agent (that user) symlinks its project's `.kandan/ports.toml` to a
/// root-only file: the runner must not read it with the capability, and
/// its warning must not quote a byte of it.
#[tokio::test]
async fn a_symlinked_root_only_file_is_not_read_with_the_services_capability() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !integration_tests::support::privileged(
        "a_symlinked_root_only_file_is_not_read_with_the_services_capability",
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let secret_dir = dir.path().join("root-only");
    std::fs::create_dir(&secret_dir)?;
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700))?;
    let secret = secret_dir.join("secret.toml");
    // Read, it would be quoted: "unknown key `kandan_secret_4242`".
    std::fs::write(&secret, "kandan_secret_4242 = \"hunter2-4242\"\n")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join(".kandan"))?;
    std::os::unix::fs::symlink(&secret, project.join(".kandan/ports.toml"))?;
    for path in [&project, &project.join(".kandan")] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534))?;
    }
    std::os::unix::fs::lchown(project.join(".kandan/ports.toml"), Some(65534), Some(65534))?;
    let bin = dir.path().join("kandan-runner");
    std::fs::copy(runner_bin(), &bin)?;
    let port = vite::free_port()?;
    let mut args = watch_json_args();
    args.push("--".into());
    args.extend(listener_in(&project, port));
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let caps = "cap_dac_read_search";
    let mut child = tokio::process::Command::new("capsh")
        .args([
            &format!("--caps={caps}+eip cap_setpcap,cap_setuid,cap_setgid+ep"),
            "--keep=1",
            "--user=nobody",
            &format!("--addamb={caps}"),
            "--",
            "-c",
            &format!("exec {} {}", bin.display(), quoted.join(" ")),
        ])
        .env("XDG_CONFIG_HOME", "/nonexistent/kandan-runner-tests")
        .env("RUST_LOG", "info")
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("pid")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if opened(&line, port) {
                return Ok(line);
            }
        }
        anyhow::bail!("stdout closed")
    })
    .await
    .context("no opened line")??;
    // The runner held the capability (the test has teeth).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("CapEff")?
        .trim()
        .to_owned();
    ensure!(
        eff != "0000000000000000",
        "the runner has no capability: {status}"
    );
    // SAFETY: kill has no memory preconditions; the group is ours.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    let output = child.wait_with_output().await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line: Value = serde_json::from_str(&line)?;
    ensure!(line["label"] == "python3", "{line}");
    ensure!(
        !stderr.contains("kandan_secret_4242") && !stderr.contains("hunter2"),
        "the runner read the root-only file:\n{stderr}"
    );
    ensure!(
        stderr.contains("cannot read it") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    Ok(())
}
