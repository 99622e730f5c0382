//! The eBPF detector against real processes (privileged; run with
//! `--test-threads=1`: kernel state is shared).

use std::{
    io::Write,
    net::{IpAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::support::privileged;
use runner::detect::{
    Detector, DetectorConfig, DetectorEvent, ListenerSocket,
    ebpf::{self, Tuning},
};

const WAIT: Duration = Duration::from_secs(15);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/listener.py")
}

fn start() -> Detector {
    ebpf::start(&DetectorConfig::default()).expect("eBPF detector starts")
}

/// A fixture process held behind a pipe until its root is registered.
struct Listener {
    child: Child,
    ready: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "kandan-ebpf-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Listener {
    /// Spawns `sh` waiting on stdin, then the fixture with `args`.
    fn spawn(args: &[&str]) -> Listener {
        Self::spawn_program(&format!(
            "python3 {} {}",
            fixture().display(),
            args.join(" ")
        ))
    }

    /// `program` gets `--ready-file <path>` appended.
    fn spawn_program(program: &str) -> Listener {
        let dir = TempDir::new();
        let ready = dir.0.join("ready");
        let script = format!("read _go; exec {program} --ready-file {}", ready.display());
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            // Own group, so Drop reaches forked descendants too.
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        Listener {
            child,
            ready,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The fixture's ready line: `<port> <pid>` or `ERROR <errno>`.
    async fn ready_line(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(line) = std::fs::read_to_string(&self.ready) {
                return line.trim().to_string();
            }
            assert!(Instant::now() < deadline, "fixture never got ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn port_pid(&self) -> (u16, u32) {
        let line = self.ready_line().await;
        let (port, pid) = line.split_once(' ').expect("port and pid");
        (port.parse().expect("port"), pid.parse().expect("pid"))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The whole group: the fixture may have forked.
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Next `Opened` for `port`, panicking on timeout. Other events are skipped.
async fn opened(detector: &mut Detector, port: u16) -> ListenerSocket {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, detector.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no Opened for port {port}"))
            .expect("detector alive");
        if let DetectorEvent::Opened(l) = event
            && l.port == port
        {
            return l;
        }
    }
}

/// Every event until `Opened` for `port`, which is returned last.
async fn events_until_opened(detector: &mut Detector, port: u16) -> Vec<DetectorEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout_at(deadline, detector.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no Opened for port {port}; saw {seen:?}"))
            .expect("detector alive");
        let done = matches!(&event, DetectorEvent::Opened(l) if l.port == port);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

async fn watched(detector: &Detector, args: &[&str]) -> Listener {
    let mut l = Listener::spawn(args);
    detector.roots.add_root(l.pid()).expect("add_root");
    l.go();
    l
}

async fn reports_bind(name: &str, addr: &str, expect: IpAddr) {
    if !privileged(name) {
        return;
    }
    let mut detector = start();
    let l = watched(&detector, &["--addr", addr]).await;
    let (port, pid) = l.port_pid().await;
    let got = opened(&mut detector, port).await;
    assert_eq!(got.addr, expect);
    assert_eq!(got.pid, pid);
    assert!(
        got.process.command.contains("listener.py"),
        "{:?}",
        got.process
    );
    // `python3 .../listener.py`: the script the interpreter runs.
    assert_eq!(got.process.label, "listener.py");
}

#[tokio::test]
async fn ipv4_loopback() {
    reports_bind("ipv4_loopback", "127.0.0.1", "127.0.0.1".parse().unwrap()).await;
}

#[tokio::test]
async fn ipv4_wildcard() {
    reports_bind("ipv4_wildcard", "0.0.0.0", "0.0.0.0".parse().unwrap()).await;
}

#[tokio::test]
async fn ipv6_loopback() {
    reports_bind("ipv6_loopback", "::1", "::1".parse().unwrap()).await;
}

#[tokio::test]
async fn ipv6_wildcard() {
    reports_bind("ipv6_wildcard", "::", "::".parse().unwrap()).await;
}

#[tokio::test]
async fn dual_stack() {
    reports_bind("dual_stack", "dual", "::".parse().unwrap()).await;
}

#[tokio::test]
async fn listen_without_bind_reports_the_real_port() {
    if !privileged("listen_without_bind_reports_the_real_port") {
        return;
    }
    let mut detector = start();
    let l = watched(&detector, &["--no-bind", "--addr", "0.0.0.0"]).await;
    let (port, _) = l.port_pid().await;
    assert_ne!(port, 0);
    let got = opened(&mut detector, port).await;
    assert_eq!(got.port, port);
}

#[tokio::test]
async fn grandchild() {
    if !privileged("grandchild") {
        return;
    }
    let mut detector = start();
    let l = watched(&detector, &["--fork-depth", "2"]).await;
    let (port, pid) = l.port_pid().await;
    assert_ne!(pid, l.pid());
    assert_eq!(opened(&mut detector, port).await.pid, pid);
}

#[tokio::test]
async fn thread() {
    if !privileged("thread") {
        return;
    }
    let mut detector = start();
    let l = watched(&detector, &["--thread"]).await;
    let (port, pid) = l.port_pid().await;
    // The process, not the thread.
    assert_eq!(opened(&mut detector, port).await.pid, pid);
}

/// Two sockets bound to one port with SO_REUSEADDR: the first listen()
/// succeeds, the second fails with EADDRINUSE (the kernel goes LISTEN then
/// CLOSE inside that call). Writes `<port> <outcome of the second>`.
const FAILING_LISTEN: &str = "python3 -c '
import os, socket, sys, time
def sock():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s
a = sock(); a.bind((\"127.0.0.1\", 0)); port = a.getsockname()[1]
b = sock(); b.bind((\"127.0.0.1\", port))
a.listen()
try:
    b.listen(); outcome = \"LISTENED\"
except OSError as err:
    outcome = \"ERROR %d\" % err.errno
open(sys.argv[2] + \".tmp\", \"w\").write(\"%d %s\" % (port, outcome))
os.rename(sys.argv[2] + \".tmp\", sys.argv[2])
time.sleep(600)
'";

#[tokio::test]
async fn failing_listen_reports_nothing() {
    if !privileged("failing_listen_reports_nothing") {
        return;
    }
    let mut detector = start();
    let mut fail = Listener::spawn_program(FAILING_LISTEN);
    detector.roots.add_root(fail.pid()).unwrap();
    fail.go();
    let line = fail.ready_line().await;
    let (port, outcome) = line.split_once(' ').unwrap();
    assert_eq!(outcome, "ERROR 98", "second listen() did not fail");
    let port: u16 = port.parse().unwrap();
    // A later listener proves events still flow; everything before it is
    // all the detector will say about the first two sockets.
    let sentinel = watched(&detector, &["--addr", "127.0.0.1"]).await;
    let (sentinel_port, _) = sentinel.port_pid().await;
    let seen = events_until_opened(&mut detector, sentinel_port).await;
    let opens = seen
        .iter()
        .filter(|e| matches!(e, DetectorEvent::Opened(l) if l.port == port))
        .count();
    assert_eq!(opens, 1, "only the successful listen() counts: {seen:?}");
}

#[tokio::test]
async fn outside_the_tree_is_never_reported() {
    if !privileged("outside_the_tree_is_never_reported") {
        return;
    }
    let mut detector = start();
    let mut outside = Listener::spawn(&["--addr", "127.0.0.1"]);
    outside.go();
    let (outside_port, _) = outside.port_pid().await;
    let inside = watched(&detector, &["--addr", "127.0.0.1"]).await;
    let (port, _) = inside.port_pid().await;
    let seen = events_until_opened(&mut detector, port).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, DetectorEvent::Opened(l) if l.port == outside_port)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn own_listener_is_never_reported() {
    if !privileged("own_listener_is_never_reported") {
        return;
    }
    let mut detector = start();
    // The test process is the runner here (self_pid is ours).
    detector.roots.add_root(std::process::id()).unwrap();
    let own = TcpListener::bind("127.0.0.1:0").unwrap();
    let own_port = own.local_addr().unwrap().port();
    let child = watched(&detector, &["--addr", "127.0.0.1"]).await;
    let (port, _) = child.port_pid().await;
    let seen = events_until_opened(&mut detector, port).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, DetectorEvent::Opened(l) if l.port == own_port)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn close_is_reported_when_the_process_dies() {
    if !privileged("close_is_reported_when_the_process_dies") {
        return;
    }
    let mut detector = start();
    let l = watched(&detector, &["--addr", "127.0.0.1"]).await;
    let (port, _) = l.port_pid().await;
    let id = opened(&mut detector, port).await.id;
    drop(l);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, detector.events.recv())
            .await
            .expect("no Closed")
            .unwrap();
        if event == DetectorEvent::Closed(id) {
            break;
        }
    }
}

/// Next snapshot, skipping other events.
async fn snapshot(detector: &mut Detector) -> Vec<ListenerSocket> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, detector.events.recv())
            .await
            .expect("no Snapshot")
            .unwrap();
        if let DetectorEvent::Snapshot(all) = event {
            return all;
        }
    }
}

#[tokio::test]
async fn listener_older_than_the_detector_is_backfilled() {
    if !privileged("listener_older_than_the_detector_is_backfilled") {
        return;
    }
    let mut old = Listener::spawn(&["--addr", "127.0.0.1"]);
    old.go();
    let (port, pid) = old.port_pid().await;
    let mut detector = start();
    detector.roots.add_root(old.pid()).unwrap();
    let all = snapshot(&mut detector).await;
    assert!(
        all.iter().any(|l| l.port == port && l.pid == pid),
        "{port} not in {all:?}"
    );
}

const BURST: usize = 300;

#[tokio::test]
async fn ring_buffer_drop_is_followed_by_a_resync_snapshot() {
    if !privileged("ring_buffer_drop_is_followed_by_a_resync_snapshot") {
        return;
    }
    // One page of ring (about 85 events) and a tiny channel the test does
    // not read during the burst: the event task blocks, the ring overflows.
    let tuning = Tuning {
        ring_bytes: 4096,
        channel: 2,
    };
    let mut detector = ebpf::start_tuned(&DetectorConfig::default(), tuning).unwrap();
    let script = format!(
        "python3 -c 'import socket,sys,time\nss=[]\nfor _ in range({BURST}):\n s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(); ss.append(s)\nopen(sys.argv[2]+\".tmp\",\"w\").write(\" \".join(str(s.getsockname()[1]) for s in ss))\nimport os; os.rename(sys.argv[2]+\".tmp\",sys.argv[2])\ntime.sleep(600)'"
    );
    let mut burst = Listener::spawn_program(&script);
    detector.roots.add_root(burst.pid()).unwrap();
    // The backfill of the empty tree.
    assert!(snapshot(&mut detector).await.is_empty());
    burst.go();
    let ports: Vec<u16> = burst
        .ready_line()
        .await
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), BURST);
    let mut opened = 0;
    let all = loop {
        let event = tokio::time::timeout(WAIT, detector.events.recv())
            .await
            .expect("no resync snapshot")
            .unwrap();
        match event {
            DetectorEvent::Opened(_) => opened += 1,
            DetectorEvent::Snapshot(all) => break all,
            DetectorEvent::Closed(_) => {}
        }
    };
    eprintln!("{opened} of {BURST} opens came through before the resync");
    assert!(opened < BURST, "no drop happened: {opened} opens");
    let mut got: Vec<u16> = all.iter().map(|l| l.port).collect();
    got.sort_unstable();
    let mut want = ports.clone();
    want.sort_unstable();
    assert_eq!(got, want, "resync snapshot after {opened} opens");
}

#[test]
fn probe_without_capabilities_says_why() {
    if !privileged("probe_without_capabilities_says_why") {
        return;
    }
    if std::env::var_os("KANDAN_PROBE_CHILD").is_some() {
        // Child half: run under capsh by the parent half below.
        println!("PROBE: {:?}", ebpf::probe());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("capsh")
        .args([
            "--drop=cap_bpf,cap_sys_admin,cap_perfmon",
            "--",
            "-c",
            &format!(
                "KANDAN_PROBE_CHILD=1 exec {} --exact probe_without_capabilities_says_why --nocapture --test-threads=1",
                exe.display()
            ),
        ])
        .output()
        .expect("capsh (Debian package libcap2-bin)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "PROBE: Err(Unavailable { reason: \"CAP_BPF and CAP_PERFMON missing from the effective capabilities (uid 0)\""
        ),
        "{stdout}"
    );
    // And with every capability it works.
    assert_eq!(ebpf::probe(), Ok(()));
}

/// Not a pass/fail check: prints listen() to userspace latency.
#[tokio::test]
async fn latency_report() {
    if !privileged("latency_report") {
        return;
    }
    let config = DetectorConfig {
        // Report the test process's own listeners.
        self_pid: u32::MAX,
        ..DetectorConfig::default()
    };
    let mut detector = ebpf::start(&config).unwrap();
    detector.roots.add_root(std::process::id()).unwrap();
    let mut micros = Vec::new();
    for _ in 0..300 {
        let t0 = Instant::now();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        opened(&mut detector, port).await;
        micros.push(t0.elapsed().as_micros());
    }
    micros.sort_unstable();
    let p = |q: f64| micros[((micros.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "listen() -> DetectorEvent latency over {}: p50 {} us, p99 {} us, max {} us",
        micros.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert_eq!(micros.len(), 300);
}

/// `kandan-runner watch --json --backend ebpf --debounce-ms 0` under
/// `prefix` (e.g. `unshare ...`), running `args` as its command; its JSON
/// lines and stderr once the command exits.
async fn watch(prefix: &[&str], args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let runner = integration_tests::support::runner_bin();
    let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    argv.push(runner.display().to_string());
    argv.extend(
        [
            "watch",
            "--json",
            "--backend",
            "ebpf",
            "--debounce-ms",
            "0",
            "--",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(args.iter().map(|s| s.to_string()));
    let output = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("watch ends with its command")
        .expect("watch runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{output:?}");
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("stdout holds only JSON lines"))
        .collect();
    (lines, stderr)
}

#[tokio::test]
async fn watch_backend_ebpf_reports_and_says_so() {
    if !privileged("watch_backend_ebpf_reports_and_says_so") {
        return;
    }
    let dir = TempDir::new();
    let ready = dir.0.join("ready");
    let fixture = fixture();
    let (lines, stderr) = watch(
        &[],
        &[
            "python3",
            fixture.to_str().unwrap(),
            "--hold",
            "2",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stderr.lines().any(|l| l.contains("backend: ebpf")),
        "{stderr}"
    );
    let port: u64 = std::fs::read_to_string(&ready)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let opened = lines
        .iter()
        .find(|l| l["event"] == "opened" && l["port"] == port)
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(opened["backend"], "ebpf");
}

#[tokio::test]
async fn pids_are_those_of_the_runners_pid_namespace() {
    if !privileged("pids_are_those_of_the_runners_pid_namespace") {
        return;
    }
    let dir = TempDir::new();
    let ready = dir.0.join("ready");
    let fixture = fixture();
    let (lines, stderr) = watch(
        &["unshare", "--pid", "--fork", "--mount-proc"],
        &[
            "python3",
            fixture.to_str().unwrap(),
            "--fork-depth",
            "1",
            "--hold",
            "2",
            "--ready-file",
            ready.to_str().unwrap(),
        ],
    )
    .await;
    let line = std::fs::read_to_string(&ready).unwrap();
    let (port, pid) = line.trim().split_once(' ').unwrap();
    let (port, pid): (u64, u64) = (port.parse().unwrap(), pid.parse().unwrap());
    let opened = lines
        .iter()
        .find(|l| l["event"] == "opened" && l["port"] == port)
        .unwrap_or_else(|| panic!("{lines:#?} {stderr}"));
    // The fixture's getpid() inside the namespace: small, not the host pid.
    assert_eq!(opened["pid"], pid, "{opened}");
    assert!(pid < 100, "the fixture ran in a new pid namespace: {pid}");
}

/// The events of `port` in `watch --json` lines, in order.
fn events_on(lines: &[serde_json::Value], port: u64) -> Vec<&serde_json::Value> {
    lines.iter().filter(|l| l["port"] == port).collect()
}

/// `<port> <pid>` from a fixture's ready file.
fn ready_port_pid(path: &Path) -> (u64, u64) {
    let line = std::fs::read_to_string(path).expect("fixture wrote its ready file");
    let (port, pid) = line.trim().split_once(' ').expect("port and pid");
    (port.parse().unwrap(), pid.parse().unwrap())
}

#[tokio::test]
async fn listener_in_another_network_namespace_is_not_reported() {
    if !privileged("listener_in_another_network_namespace_is_not_reported") {
        return;
    }
    let dir = TempDir::new();
    let (inner, outer) = (dir.0.join("inner"), dir.0.join("outer"));
    let fixture = fixture();
    let fixture = fixture.display();
    // Two descendants of the command: one in a network namespace of its own
    // (0.0.0.0: the new namespace's loopback is down), one in the runner's.
    let script = format!(
        "unshare --net python3 {fixture} --addr 0.0.0.0 --hold 3 --ready-file {inner} & \
         sleep 1; python3 {fixture} --addr 127.0.0.1 --hold 2 --ready-file {outer}; wait",
        inner = inner.display(),
        outer = outer.display(),
    );
    let (lines, stderr) = watch(&[], &["sh", "-c", &script]).await;
    let (inner_port, _) = ready_port_pid(&inner);
    let (outer_port, outer_pid) = ready_port_pid(&outer);
    assert!(
        events_on(&lines, inner_port).is_empty(),
        "a listener of another network namespace was reported: {lines:#?} {stderr}"
    );
    let outer = events_on(&lines, outer_port);
    assert_eq!(
        outer.first().map(|l| (&l["event"], &l["pid"])),
        Some((&"opened".into(), &outer_pid.into())),
        "{lines:#?} {stderr}"
    );
}

#[tokio::test]
async fn exec_of_another_program_keeping_the_socket_is_changed() {
    if !privileged("exec_of_another_program_keeping_the_socket_is_changed") {
        return;
    }
    let dir = TempDir::new();
    let ready = dir.0.join("ready");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/exec_swap.py");
    let (lines, stderr) = watch(
        &[],
        &[
            "python3",
            fixture.to_str().unwrap(),
            ready.to_str().unwrap(),
            "1",
            "2",
        ],
    )
    .await;
    let (port, pid) = ready_port_pid(&ready);
    let events = events_on(&lines, port);
    let names: Vec<&str> = events.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(
        names.get(..2),
        Some(&["opened", "changed"][..]),
        "{lines:#?} {stderr}"
    );
    let (opened, changed) = (events[0], events[1]);
    assert!(
        opened["command"].as_str().unwrap().contains("exec_swap.py"),
        "{opened}"
    );
    let command = changed["command"].as_str().unwrap();
    assert!(
        command.contains("swapped-in") && !command.contains("exec_swap.py"),
        "{changed}"
    );
    // Same process, same socket: only the program changed.
    assert_eq!(changed["pid"], pid, "{changed}");
}

#[tokio::test]
async fn close_of_a_backfilled_listener_is_reported() {
    if !privileged("close_of_a_backfilled_listener_is_reported") {
        return;
    }
    // Listening before the detector starts: the kernel never sees the open.
    let mut old = Listener::spawn(&["--addr", "127.0.0.1", "--fork-depth", "1"]);
    old.go();
    let (port, _) = old.port_pid().await;
    let mut detector = start();
    detector.roots.add_root(old.pid()).unwrap();
    let all = snapshot(&mut detector).await;
    let id = all
        .iter()
        .find(|l| l.port == port)
        .unwrap_or_else(|| panic!("{port} not backfilled: {all:?}"))
        .id;
    // The whole tree dies: the socket closes as the listener exits.
    drop(old);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, detector.events.recv())
            .await
            .expect("no Closed for the backfilled listener")
            .unwrap();
        if event == DetectorEvent::Closed(id) {
            break;
        }
    }
}

#[tokio::test]
async fn idle_watch_does_not_wake_up() {
    if !privileged("idle_watch_does_not_wake_up") {
        return;
    }
    use integration_tests::bench::procstat::WakeMeter;
    let mut runner = integration_tests::support::ebpf_watch_of_sleep(WAIT).await;
    let pid = runner.id().unwrap();
    // Past startup (the backfill scan), before the blocking pool's idle
    // thread exits (10 s after that scan), which would be one wakeup.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let meter = WakeMeter::start(pid).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (wakeups, seconds) = meter.wakeups().unwrap();
    assert!(
        runner.try_wait().unwrap().is_none(),
        "the runner exited early"
    );
    // A periodic timer of 1 s would give 5 and more.
    assert!(
        wakeups <= 1,
        "{wakeups} wakeups of an idle runner in {seconds:.1} s"
    );
}

/// Listens (close-on-exec, Python's default), forks a child that keeps the
/// socket, writes `<port> <pid>`, then execs a program that listens on
/// another port and writes that to `<ready file>2`.
const EXEC_DROPPING_THE_SOCKET: &str = "python3 -c '
import os, socket, sys, time
s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen()
if os.fork() == 0:
    time.sleep(600)
ready = sys.argv[2]
open(ready + \".tmp\", \"w\").write(\"%d %d\" % (s.getsockname()[1], os.getpid()))
os.rename(ready + \".tmp\", ready)
time.sleep(0.5)
then = \"import socket, sys, time\\ns = socket.socket(); s.bind((sys.argv[2], 0)); s.listen()\\nopen(sys.argv[1] + sys.argv[3], sys.argv[4]).write(str(s.getsockname()[1]))\\ntime.sleep(600)\"
os.execv(sys.executable, [sys.executable, \"-c\", then, ready, \"127.0.0.1\", \"2\", \"w\"])
'";

#[tokio::test]
async fn exec_that_drops_the_socket_does_not_take_it_over() {
    if !privileged("exec_that_drops_the_socket_does_not_take_it_over") {
        return;
    }
    let mut detector = start();
    let mut l = Listener::spawn_program(EXEC_DROPPING_THE_SOCKET);
    detector.roots.add_root(l.pid()).unwrap();
    l.go();
    let (port, pid) = l.port_pid().await;
    let first = opened(&mut detector, port).await;
    assert_eq!(first.pid, pid);
    // The program after the exec listens too: once its open is seen, every
    // event about the exec came before it.
    let next = l.ready.with_file_name("ready2");
    let deadline = Instant::now() + WAIT;
    let next_port: u16 = loop {
        if let Some(port) = std::fs::read_to_string(&next)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            break port;
        }
        assert!(
            Instant::now() < deadline,
            "the exec'd program never listened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let seen = events_until_opened(&mut detector, next_port).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, DetectorEvent::Opened(s) if s.id == first.id)),
        "the socket the exec closed (a child still holds it) was given to the new program: {seen:?}"
    );
}
