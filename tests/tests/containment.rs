//! Containment in cgroups (PROTOCOL.md section 5), played by the processes
//! it is meant to hold: a dev server that double-forks, calls `setsid` and
//! clears its environment (`nohup ... &` as an agent writes it), a process
//! that claims an instance by setting `KANDAN_INSTANCE_ID`, an outsider
//! moved into the tree's cgroup, and the leftovers of a SIGKILLed runner.
//! Each fails if the rule breaks; the fallback (`--containment
//! process-group`) is run beside the cgroup path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use integration_tests::codex::driver::script_codex;
use integration_tests::e2e::allow_cwd;
use integration_tests::runner_process::{RunnerArgs, RunnerProcess};
use integration_tests::runner_run::{RunnerRun, alive, all_gone, watch_json_args};
use integration_tests::simulator::{SimConfig, Simulator};
use integration_tests::support::{free_port, privileged};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Writes a Python script into `dir` that leaves every trace of its tree:
/// it forks twice, calls `setsid`, clears its environment, then listens on
/// `port` and writes its pid to `pid_file`. Returns the script's path.
fn daemon_script(dir: &Path, port: u16, pid_file: &Path) -> Result<PathBuf> {
    let server = dir.join("server.py");
    std::fs::write(
        &server,
        format!(
            r#"import os, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port}))
s.listen()
open("{pid}.tmp", "w").write(str(os.getpid()))
os.rename("{pid}.tmp", "{pid}")
time.sleep(600)
"#,
            pid = pid_file.display()
        ),
    )?;
    let script = dir.join("daemon.py");
    std::fs::write(
        &script,
        format!(
            r#"import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve("/usr/bin/python3", ["python3", "{}"], {{}})
    os._exit(0)
os.wait()
"#,
            server.display()
        ),
    )?;
    Ok(script)
}

async fn read_pid(file: &Path) -> Result<u32> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return Ok(pid);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} never written",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cgroup v2 mount point (`/sys/fs/cgroup` or, beside v1 controllers,
/// `/sys/fs/cgroup/unified`).
fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split_whitespace().nth(4)?;
            (after.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
        })
        .context("no cgroup2 mount")
}

/// The cgroup folder of `pid`.
fn cgroup_dir(pid: u32) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let path = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .context("no cgroup v2 line")?;
    Ok(cgroup2_mount()?.join(path.trim_start_matches('/')))
}

/// Folders of the runner `pid` left under `kandan-runner/` (none once it
/// exited cleanly).
fn runner_folders(pid: u32) -> Vec<PathBuf> {
    let Ok(mount) = cgroup2_mount() else {
        return Vec::new();
    };
    let prefix = format!("{pid}.");
    std::fs::read_dir(mount.join("kandan-runner"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn opened_line(port: u16) -> impl Fn(&str) -> bool {
    move |line: &str| {
        line.contains(r#""event":"opened""#) && line.contains(&format!(r#""port":{port},"#))
    }
}

/// `watch` on `backend` over a command whose dev server double-forks,
/// calls setsid and clears its environment: the server is in the tree
/// (reported, with its own pid), and the runner's exit ends it.
async fn daemon_stays_in_the_tree(backend: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let pid_file = dir.path().join("daemon.pid");
    let mut args = watch_json_args();
    args[3] = backend.to_owned();
    args.extend(["--poll-interval-ms", "100", "--"].map(String::from));
    let daemon = daemon_script(dir.path(), port, &pid_file)?;
    args.extend(["sh", "-c"].map(String::from));
    args.push(format!("python3 {} && exec sleep 600", daemon.display()));
    let mut runner = RunnerRun::start(&args, &[])?;
    let daemon = read_pid(&pid_file).await?;
    let line = runner.wait_stdout_line(opened_line(port), WAIT).await?;
    let opened: Value = serde_json::from_str(&line)?;
    assert_eq!(opened["pid"], daemon, "{line}");
    let stderr = runner.stderr();
    let backend_line = stderr.lines().next().unwrap_or_default();
    assert!(!backend_line.contains("containment"), "{backend_line}");

    runner.signal(libc::SIGTERM);
    runner.wait(Duration::from_secs(5)).await?;
    assert!(
        all_gone(&[daemon], Duration::from_secs(3)).await,
        "the daemon outlived the runner"
    );
    assert_eq!(runner_folders(runner.pid()), Vec::<PathBuf>::new());
    Ok(())
}

#[tokio::test]
async fn a_double_forked_setsid_daemon_stays_in_the_tree_on_procfs() -> Result<()> {
    if !privileged("a_double_forked_setsid_daemon_stays_in_the_tree_on_procfs") {
        return Ok(());
    }
    daemon_stays_in_the_tree("procfs").await
}

#[tokio::test]
async fn a_double_forked_setsid_daemon_stays_in_the_tree_on_ebpf() -> Result<()> {
    if !privileged("a_double_forked_setsid_daemon_stays_in_the_tree_on_ebpf") {
        return Ok(());
    }
    daemon_stays_in_the_tree("ebpf").await
}

/// Without cgroups the first stderr line says so, and a `setsid` child
/// that keeps its environment is still ended by its marker.
#[tokio::test]
async fn the_fallback_says_so_and_ends_marked_children() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("child.pid");
    let mut args = watch_json_args();
    args.extend(["--containment", "process-group", "--", "sh", "-c"].map(String::from));
    args.push(format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 600' & exec sleep 600",
        pid_file.display()
    ));
    let mut runner = RunnerRun::start(&args, &[])?;
    let child = read_pid(&pid_file).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !runner.stderr().contains('\n') {
        ensure!(tokio::time::Instant::now() < deadline, "no backend line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = runner.stderr();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(
            "containment: process groups and pid ancestry (no cgroup: --containment process-group)"
        ),
        "{first}"
    );
    assert!(runner_folders(runner.pid()).is_empty(), "a cgroup was made");
    runner.signal(libc::SIGTERM);
    runner.wait(Duration::from_secs(5)).await?;
    assert!(
        all_gone(&[child], Duration::from_secs(3)).await,
        "the setsid child outlived the runner"
    );
    Ok(())
}

/// On eBPF the cgroup is the filter: a process that is no descendant of
/// the command, moved into its cgroup, is watched from then on.
#[tokio::test]
async fn a_process_moved_into_the_trees_cgroup_is_watched_on_ebpf() -> Result<()> {
    if !privileged("a_process_moved_into_the_trees_cgroup_is_watched_on_ebpf") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let go = dir.path().join("go");
    let root_file = dir.path().join("root.pid");
    // Started by the test, not by the runner: listens once `go` exists.
    let mut outsider = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os, socket, time\nwhile not os.path.exists('{}'): time.sleep(0.02)\n\
             s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)",
            go.display()
        ))
        .spawn()?;
    let mut args = watch_json_args();
    args[3] = "ebpf".into();
    args.extend(["--", "sh", "-c"].map(String::from));
    args.push(format!("echo $$ > {}; exec sleep 600", root_file.display()));
    let mut runner = RunnerRun::start(&args, &[])?;
    let root = read_pid(&root_file).await?;
    let tree = cgroup_dir(root)?;
    ensure!(
        tree.to_string_lossy().contains("kandan-runner"),
        "the command is not in a runner cgroup: {}",
        tree.display()
    );
    std::fs::write(tree.join("cgroup.procs"), outsider.id().to_string())
        .context("move the outsider in")?;
    std::fs::write(&go, "")?;
    let line = runner.wait_stdout_line(opened_line(port), WAIT).await?;
    let opened: Value = serde_json::from_str(&line)?;
    assert_eq!(opened["pid"], outsider.id(), "{line}");
    runner.signal(libc::SIGTERM);
    runner.wait(Duration::from_secs(5)).await?;
    // In the tree's cgroup, it ended with the tree.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if outsider.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = outsider.kill();
    ensure!(ended.is_ok(), "the moved process outlived the runner");
    Ok(())
}

/// A stand-in `codex app-server` whose thread start leaves a daemon (the
/// agent's `nohup server &`) listening on `port`.
fn codex_with_daemon(dir: &Path, port: u16, pid_file: &Path) -> Result<PathBuf> {
    let daemon = daemon_script(dir, port, pid_file)?;
    Ok(script_codex(
        dir,
        &format!(
            r#"#!/usr/bin/env python3
import json, subprocess, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({{"id": msg["id"], "result": {{"userAgent": "kandan-runner/9.9.9 (test)"}}}}), flush=True)
    elif msg.get("method") == "thread/start":
        subprocess.run(["python3", "{}"])
        print(json.dumps({{"id": msg["id"], "result": {{"thread": {{"id": "thr_fake"}}, "model": "m"}}}}), flush=True)
"#,
            daemon.display()
        ),
    ))
}

struct Connected {
    sim: Simulator,
    runner: RunnerProcess,
    dir: tempfile::TempDir,
}

/// `connect` with the daemon-leaving stand-in as Codex and a command that
/// claims instance `i1` through the variable the runner used to trust.
async fn connect_with_instance(port: u16, spoof_port: u16) -> Result<(Connected, u32)> {
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("daemon.pid");
    let bin = codex_with_daemon(dir.path(), port, &pid_file)?;
    let sim = Simulator::start(SimConfig::default()).await?;
    // The command sets the variable itself, as any process can.
    let spoof =
        format!("KANDAN_INSTANCE_ID=i1 exec python3 -m http.server {spoof_port} --bind 127.0.0.1");
    let mut args = RunnerArgs::new("containment", vec!["sh".into(), "-c".into(), spoof]);
    args.flags = vec!["--codex-bin".into(), bin.to_string_lossy().into_owned()];
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT).await?;
    let cwd = dir.path().canonicalize()?;
    allow_cwd(&sim, &cwd).await?;
    sim.send_control(json!({"type": "start_instance", "instanceId": "i1", "cwd": cwd}))?;
    sim.wait_for_event("instance_started", |e| e["instanceId"] == "i1", WAIT)
        .await
        .with_context(|| runner.output())?;
    let daemon = read_pid(&pid_file).await?;
    Ok((Connected { sim, runner, dir }, daemon))
}

async fn port_request(sim: &Simulator, port: u16) -> Result<Value> {
    Ok(sim
        .wait_for_event("port_forward_request", |e| e["port"] == port, WAIT)
        .await?)
}

/// The instance's daemon (setsid, cleared environment, re-parented to
/// init) is the instance's: attributed by its cgroup and ended by
/// `stop_instance`. A process of the command that sets
/// `KANDAN_INSTANCE_ID=i1` is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_their_cgroups_not_a_variable() -> Result<()> {
    if !privileged("instances_are_their_cgroups_not_a_variable") {
        return Ok(());
    }
    let (port, spoof_port) = (free_port()?, free_port()?);
    let (connected, daemon) = connect_with_instance(port, spoof_port).await?;
    let sim = &connected.sim;
    let request = port_request(sim, port).await?;
    assert_eq!(request["instanceId"], "i1", "{request}");
    assert_eq!(request["pid"], daemon, "{request}");
    let spoofed = port_request(sim, spoof_port).await?;
    assert!(spoofed.get("instanceId").is_none(), "{spoofed}");

    sim.send_control(json!({"type": "stop_instance", "instanceId": "i1"}))?;
    sim.wait_for_event("instance_stopped", |e| e["instanceId"] == "i1", WAIT)
        .await?;
    assert!(
        all_gone(&[daemon], Duration::from_secs(3)).await,
        "the instance's daemon outlived stop_instance"
    );
    let closed = sim
        .wait_for_event("port_forward_closed", |e| e["port"] == port, WAIT)
        .await?;
    assert_eq!(closed["instanceId"], "i1");
    drop(connected.dir);
    Ok(())
}

/// A SIGKILLed runner cannot end anything; the next runner of the same
/// user ends what its cgroups still hold, and removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_runner_ends_what_a_killed_runner_left() -> Result<()> {
    if !privileged("the_next_runner_ends_what_a_killed_runner_left") {
        return Ok(());
    }
    let (port, spoof_port) = (free_port()?, free_port()?);
    let (mut connected, daemon) = connect_with_instance(port, spoof_port).await?;
    let killed = connected.runner.pid();
    ensure!(!runner_folders(killed).is_empty(), "no cgroup folder");
    // SAFETY: kill on the runner's pid, our child.
    unsafe { libc::kill(killed as libc::pid_t, libc::SIGKILL) };
    // Until it has exited (reaped here): a runner still exiting holds its
    // lock, and the next runner rightly leaves its folder alone. A fixed
    // 500 ms was too short once on a loaded machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connected.runner.alive() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the killed runner has not exited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        alive(daemon),
        "the daemon died with the runner: nothing to test"
    );

    let mut next = RunnerRun::start(["watch", "--backend", "procfs", "--", "true"], &[])?;
    next.wait(Duration::from_secs(10)).await?;
    if !all_gone(&[daemon], Duration::from_secs(3)).await {
        bail!(
            "the killed runner's daemon survived the next runner: {}",
            next.output()
        );
    }
    assert_eq!(runner_folders(killed), Vec::<PathBuf>::new());
    drop(connected);
    Ok(())
}

/// A stand-in code-server: answers on its `--socket` as the real one does
/// (the listening line, `/healthz` 200) and leaves the same daemon an
/// editor's terminal could start.
fn code_server_with_daemon(dir: &Path, port: u16, pid_file: &Path) -> Result<PathBuf> {
    let daemon = daemon_script(dir, port, pid_file)?;
    let bin = dir.join("code-server");
    std::fs::write(
        &bin,
        format!(
            r#"#!/usr/bin/env python3
import http.server, socketserver, subprocess, sys
socket_path = sys.argv[sys.argv.index("--socket") + 1]
subprocess.run(["python3", "{}"])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
    def address_string(self):
        return "unix"
server = socketserver.UnixStreamServer(socket_path, Handler)
print("HTTP server listening on " + socket_path, flush=True)
server.serve_forever()
"#,
            daemon.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    Ok(bin)
}

/// What an editor starts (a `setsid` daemon with a cleared environment, as
/// a terminal opened in it may) ends with `stop_local_editor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_local_editor_ends_what_left_its_session() -> Result<()> {
    if !privileged("stop_local_editor_ends_what_left_its_session") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let pid_file = dir.path().join("daemon.pid");
    let bin = code_server_with_daemon(dir.path(), free_port()?, &pid_file)?;
    let sim = Simulator::start(SimConfig::default()).await?;
    let mut args = RunnerArgs::new("containment-editor", Vec::new());
    args.flags = vec![
        "--code-server-bin".into(),
        bin.to_string_lossy().into_owned(),
    ];
    args.env = vec![("XDG_STATE_HOME".into(), state.path().display().to_string())];
    let runner = RunnerProcess::start(&sim, args)?;
    sim.wait_joined(WAIT).await?;
    let cwd = dir.path().canonicalize()?;
    allow_cwd(&sim, &cwd).await?;
    sim.send_control(json!({"type": "start_local_editor", "cwd": cwd}))?;
    let started = sim
        .wait_for_event("local_editor_started", |_| true, WAIT)
        .await
        .with_context(|| runner.output())?;
    let daemon = read_pid(&pid_file).await?;
    ensure!(alive(daemon), "no daemon to end");
    sim.send_control(json!({"type": "stop_local_editor", "editorId": started["editorId"]}))?;
    sim.wait_for_event("local_editor_stopped", |_| true, WAIT)
        .await?;
    assert!(
        all_gone(&[daemon], Duration::from_secs(3)).await,
        "the editor's daemon outlived stop_local_editor"
    );
    Ok(())
}

/// A runner in another pid namespace (a container on the same cgroup
/// hierarchy, or `unshare --pid`) names its folder `1.<start>`: pid 1 is
/// alive here with another start time. The next runner must not take it
/// for a killed runner and end its tree: the live runner's lock on its
/// folder says it is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_in_another_pid_namespace_is_not_swept() -> Result<()> {
    if !privileged("a_runner_in_another_pid_namespace_is_not_swept") {
        return Ok(());
    }
    let runner = integration_tests::support::runner_bin();
    let mut inner = tokio::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"])
        .arg(&runner)
        .args(["watch", "--backend", "procfs", "--", "sleep", "600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // Its folder is 1.<start>, and its tree holds the sleep.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (folder, sleeper) = loop {
        let held = runner_folders(1).into_iter().find_map(|folder| {
            let procs = std::fs::read_to_string(folder.join("tree-1/cgroup.procs")).ok()?;
            let pid: u32 = procs.lines().next()?.trim().parse().ok()?;
            Some((folder, pid))
        });
        if let Some(held) = held {
            break held;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the runner in its own pid namespace made no 1.<start> folder with a tree"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut next = RunnerRun::start(["watch", "--backend", "procfs", "--", "true"], &[])?;
    next.wait(Duration::from_secs(10)).await?;
    let survived = alive(sleeper) && folder.exists();
    // SIGTERM to the runner itself (unshare's child: unshare blocks it).
    let unshare = inner.id().context("unshare's pid")?;
    let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))?;
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: kill(2) on the runner we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let _ = tokio::time::timeout(WAIT, inner.wait()).await;
    ensure!(
        survived,
        "the next runner ended a live runner's tree ({}): {}",
        folder.display(),
        next.output()
    );
    ensure!(
        all_gone(&[sleeper], Duration::from_secs(10)).await,
        "the namespaced runner's tree outlived it"
    );
    Ok(())
}
