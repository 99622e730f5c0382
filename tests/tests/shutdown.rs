//! Shutdown and ownership (PROTOCOL.md section 9) through the binary: a
//! SIGTERM gives the final `closed` lines (`watch`) or `port_forward_closed`,
//! forwarded sockets closed with 1001, `phx_leave` and a normal close
//! (`connect`) at once, whatever the debounce window, and the runner exits
//! with the command's status within 2 s; the tree it started does not
//! outlive it, whether the command ends, the runner is signalled or killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::e2e::{self, WAIT};
use integration_tests::runner_run::{RunnerRun, alive, all_gone};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::privileged;
use integration_tests::vite::free_port;
use serde_json::Value;

/// The contract's bound from the signal to the runner's exit.
const EXIT_BOUND: Duration = Duration::from_secs(2);

/// A listener on `port` that exits with status 7 on SIGTERM.
fn listener_exiting_7(port: u16) -> Vec<String> {
    let script = format!(
        "import signal, socket, sys, time\n\
         signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen()\n\
         while True:\n    time.sleep(1)\n"
    );
    vec!["python3".into(), "-c".into(), script]
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

/// SIGTERM to `watch --json --debounce-ms 5000 -- <server>`: `closed` for
/// its port right away (the window would hold it 5 s), exit status 7 (the
/// server's SIGTERM handler) within 2 s.
async fn sigterm_to_watch(backend: &str) -> Result<()> {
    let port = free_port()?;
    let mut args: Vec<String> = [
        "watch",
        "--json",
        "--backend",
        backend,
        "--debounce-ms",
        "5000",
    ]
    .map(String::from)
    .to_vec();
    args.push("--".into());
    args.extend(listener_exiting_7(port));
    let mut runner = RunnerRun::start(&args, &[])?;
    let wanted = format!("\"port\":{port}");
    runner
        .wait_stdout_line(|l| l.contains("\"opened\"") && l.contains(&wanted), WAIT)
        .await?;

    runner.signal(libc::SIGTERM);
    let (status, took) = runner.wait(Duration::from_secs(10)).await?;
    ensure!(took < EXIT_BOUND, "exit took {took:?}: {}", runner.output());
    ensure!(status.code() == Some(7), "{status}: {}", runner.output());
    let events = json_lines(&runner.stdout());
    let closed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "closed" && e["port"] == port)
        .collect();
    ensure!(closed.len() == 1, "{events:?}");
    ensure!(closed[0]["backend"] == backend, "{events:?}");
    Ok(())
}

#[tokio::test]
async fn sigterm_to_watch_closes_every_port_at_once_and_exits_with_the_commands_status_procfs()
-> Result<()> {
    sigterm_to_watch("procfs").await
}

#[tokio::test]
async fn sigterm_to_watch_closes_every_port_at_once_and_exits_with_the_commands_status_ebpf()
-> Result<()> {
    if !privileged("sigterm_to_watch_..._ebpf") {
        return Ok(());
    }
    sigterm_to_watch("ebpf").await
}

/// A file in a fresh temporary directory (kept until the guard drops).
fn temp_file(name: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(name);
    Ok((dir, path))
}

/// Waits until `path` holds `lines` lines; returns them.
async fn read_lines(path: &Path, lines: usize) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<String> = text.lines().map(str::to_owned).collect();
        if found.len() >= lines {
            return Ok(found);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} holds {found:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pids(lines: &[String]) -> Result<Vec<u32>> {
    lines
        .iter()
        .map(|l| l.trim().parse().with_context(|| format!("not a pid: {l}")))
        .collect()
}

#[tokio::test]
async fn when_the_command_ends_the_rest_of_its_tree_is_ended() -> Result<()> {
    // A backgrounded grandchild, and one in a session of its own (what a
    // daemonizing server does): neither stays a descendant of the runner.
    let (_dir, pid_file) = temp_file("pids")?;
    let spared = tokio::process::Command::new("sleep")
        .arg("300")
        .kill_on_drop(true)
        .spawn()?;
    let spared_pid = spared.id().context("no pid")?;
    let script = format!(
        "sleep 300 & echo $! > {f}; setsid sleep 300 & echo $! >> {f}; exit 5",
        f = pid_file.display()
    );
    let spared_arg = spared_pid.to_string();
    let mut runner = RunnerRun::start(
        [
            "watch",
            "--backend",
            "procfs",
            "--root-pid",
            &spared_arg,
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    )?;
    let (status, _) = runner.wait(Duration::from_secs(10)).await?;
    ensure!(status.code() == Some(5), "{status}: {}", runner.output());
    let grandchildren = pids(&read_lines(&pid_file, 2).await?)?;
    ensure!(
        all_gone(&grandchildren, Duration::from_secs(2)).await,
        "still running: {grandchildren:?}"
    );
    ensure!(alive(spared_pid), "a --root-pid tree was touched");
    Ok(())
}

#[tokio::test]
async fn sigkill_of_the_runner_ends_the_command() -> Result<()> {
    // The command itself gets PR_SET_PDEATHSIG; it is all that is
    // guaranteed (a grandchild is the command's to end).
    let (_dir, pid_file) = temp_file("pid")?;
    let script = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let mut runner = RunnerRun::start(
        ["watch", "--backend", "procfs", "--", "sh", "-c", &script],
        &[],
    )?;
    let command = pids(&read_lines(&pid_file, 1).await?)?;
    ensure!(alive(command[0]));
    runner.signal(libc::SIGKILL);
    runner.wait(Duration::from_secs(10)).await?;
    ensure!(
        all_gone(&command, Duration::from_secs(2)).await,
        "the command outlived the runner"
    );
    Ok(())
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_is_killed_and_the_runner_still_exits_in_time() -> Result<()>
{
    let (_dir, pid_file) = temp_file("pid")?;
    let script = format!(
        "trap '' TERM INT HUP; echo $$ > {}; while :; do sleep 0.05; done",
        pid_file.display()
    );
    let mut runner = RunnerRun::start(
        ["watch", "--backend", "procfs", "--", "sh", "-c", &script],
        &[],
    )?;
    let command = pids(&read_lines(&pid_file, 1).await?)?;
    runner.signal(libc::SIGTERM);
    let (status, took) = runner.wait(Duration::from_secs(10)).await?;
    ensure!(took < EXIT_BOUND, "exit took {took:?}");
    ensure!(status.code() == Some(128 + libc::SIGKILL), "{status}");
    ensure!(all_gone(&command, Duration::from_secs(1)).await);
    Ok(())
}

/// SIGTERM to `connect` with an approved port and an open forwarded
/// WebSocket: the socket closes with 1001 on both sides, the port gets
/// `port_forward_closed` at once (the window is 3 s), then `phx_leave`
/// and a close with 1000; the exit status is the command's (9).
#[tokio::test]
async fn sigterm_to_connect_reports_closes_leaves_and_closes_normally() -> Result<()> {
    let sim = Simulator::start(SimConfig::default()).await?;
    let port = free_port()?;
    let (_dir, closes) = temp_file("closes")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ws_close_recorder.py");
    let port_arg = port.to_string();
    let mut runner = RunnerRun::start(
        [
            "connect",
            "--url",
            &sim.url(),
            "--token",
            sim.token(),
            "--runner-id",
            "shutdown",
            "--backend",
            "procfs",
            "--poll-interval-ms",
            "100",
            "--debounce-ms",
            "3000",
            "--",
            "python3",
            script.to_str().context("path")?,
            &port_arg,
            closes.to_str().context("path")?,
        ],
        &[],
    )?;
    sim.wait_joined(WAIT)
        .await
        .with_context(|| runner.output())?;
    let request = sim
        .wait_for_request(port, WAIT)
        .await
        .with_context(|| runner.output())?;
    sim.approve(&request.request_id)?;
    e2e::wait_resolved(&sim, &request.request_id).await?;

    let url = format!("ws://{}/preview/{port}/ws", sim.preview_addr());
    let (mut browser, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .context("preview websocket open timed out")??;
    let opened = sim
        .wait_for_event("forward_websocket_opened", |_| true, WAIT)
        .await?;
    let socket_id = opened["socketId"].clone();

    runner.signal(libc::SIGTERM);
    let (status, took) = runner.wait(Duration::from_secs(10)).await?;
    ensure!(took < EXIT_BOUND, "exit took {took:?}: {}", runner.output());
    ensure!(status.code() == Some(9), "{status}: {}", runner.output());

    let closed = sim
        .wait_for_event(
            "forward_websocket_closed",
            |e| e["socketId"] == socket_id,
            Duration::from_secs(1),
        )
        .await?;
    ensure!(
        closed["code"] == 1001 && closed.get("error").is_none_or(Value::is_null),
        "{closed}"
    );
    ensure!(
        read_lines(&closes, 1).await? == ["close 1001"],
        "the local server saw another close"
    );
    let port_closed = sim
        .wait_for_event(
            "port_forward_closed",
            |e| e["port"] == port,
            Duration::from_secs(1),
        )
        .await?;
    ensure!(
        port_closed["requestId"] == request.request_id.as_str(),
        "{port_closed}"
    );
    let frames = sim.frames();
    let leave = frames
        .iter()
        .position(|f| f.event == "phx_leave" && f.topic == "runner:shutdown")
        .context("no phx_leave")?;
    let closed_at = frames
        .iter()
        .position(|f| f.event == "event" && f.payload["type"] == "port_forward_closed")
        .context("no port_forward_closed frame")?;
    ensure!(closed_at < leave, "port_forward_closed after the leave");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while sim.close_codes().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(sim.close_codes() == [1000], "{:?}", sim.close_codes());
    ensure!(sim.violations().is_empty(), "{:?}", sim.violations());
    // The browser's socket through the preview front ends too.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut browser),
    )
    .await
    .context("the preview socket stayed open")?;
    Ok(())
}

/// A `--root-pid` tree is not the runner's: on SIGTERM its listener, still
/// listening, gets no `closed`, and the process is left alone.
#[tokio::test]
async fn sigterm_to_watch_leaves_a_root_pid_tree_and_its_open_ports_alone() -> Result<()> {
    let port = free_port()?;
    let argv = listener_exiting_7(port);
    let server = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .kill_on_drop(true)
        .spawn()?;
    let server_pid = server.id().context("no pid")?;
    let root = server_pid.to_string();
    let mut runner = RunnerRun::start(
        [
            "watch",
            "--json",
            "--backend",
            "procfs",
            "--poll-interval-ms",
            "100",
            "--debounce-ms",
            "300",
            "--root-pid",
            &root,
        ],
        &[],
    )?;
    let wanted = format!("\"port\":{port}");
    runner
        .wait_stdout_line(|l| l.contains("\"opened\"") && l.contains(&wanted), WAIT)
        .await?;
    runner.signal(libc::SIGTERM);
    let (status, took) = runner.wait(Duration::from_secs(10)).await?;
    ensure!(took < EXIT_BOUND, "exit took {took:?}");
    ensure!(status.code() == Some(128 + libc::SIGTERM), "{status}");
    let events = json_lines(&runner.stdout());
    ensure!(!events.iter().any(|e| e["event"] == "closed"), "{events:?}");
    ensure!(alive(server_pid), "a --root-pid process was signalled");
    Ok(())
}
