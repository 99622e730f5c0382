//! Labels (PROTOCOL.md section 1) name the tool behind the interpreter:
//! under `watch --json`, `python3 -m http.server` is `http.server`, a
//! shebang script in `node_modules/.bin/vite` is `vite` (its command line
//! starts with the interpreter), `python3 manage.py runserver` is `django`,
//! an unknown script the interpreter runs is its base name (`server.py`);
//! `connect`'s `port_forward_request` carries the same label.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, Result};
use integration_tests::e2e::WAIT;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::runner_run::RunnerRun;
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::vite::free_port;
use serde_json::Value;

/// Listens on the port given as its last argument until killed.
const LISTENER: &str = "#!/usr/bin/env python3\n\
    import socket, sys, time\n\
    s = socket.socket()\n\
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
    s.bind(('127.0.0.1', int(sys.argv[-1])))\n\
    s.listen()\n\
    while True:\n    time.sleep(1)\n";

#[tokio::test]
async fn labels_name_the_tool_behind_the_interpreter() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("node_modules/.bin");
    std::fs::create_dir_all(&bin)?;
    let vite = bin.join("vite");
    std::fs::write(&vite, LISTENER)?;
    std::fs::set_permissions(&vite, std::fs::Permissions::from_mode(0o755))?;
    let manage = dir.path().join("manage.py");
    std::fs::write(&manage, LISTENER)?;
    let server = dir.path().join("server.py");
    std::fs::write(&server, LISTENER)?;

    let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
    let script = format!(
        "python3 -m http.server {} --bind 127.0.0.1 & {} {} & python3 {} runserver {} & python3 -u {} {} & wait",
        ports[0],
        vite.display(),
        ports[1],
        manage.display(),
        ports[2],
        server.display(),
        ports[3]
    );
    let args = [
        "watch",
        "--json",
        "--backend",
        "procfs",
        "--poll-interval-ms",
        "100",
        "--debounce-ms",
        "100",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let runner = RunnerRun::start(args, &[("RUST_LOG", "warn")])?;
    let expected = ["http.server", "vite", "django", "server.py"];
    for (port, expected) in ports.into_iter().zip(expected) {
        let line = runner
            .wait_stdout_line(
                |line| line.contains("\"opened\"") && line.contains(&format!("\"port\":{port},")),
                WAIT + Duration::from_secs(10),
            )
            .await?;
        let opened: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        anyhow::ensure!(
            opened["label"] == expected,
            "port {port}: want label {expected}: {line}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn port_forward_request_carries_the_same_label() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = free_port()?;
    let command = [
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ]
    .map(str::to_owned)
    .to_vec();
    let args = RunnerArgs::new("labels", command).flags(["--backend", "procfs"]);
    let runner = RunnerProcess::start(&sim, args)?;
    let request = sim
        .wait_for_request(port, WAIT)
        .await
        .with_context(|| format!("no request for {port}:\n{}", runner.output()))?;
    anyhow::ensure!(request.event["label"] == "http.server", "{}", request.event);
    Ok(())
}
