//! The procfs backend against real processes: `tests/fixtures/listener.py`
//! listens the way each test asks, the detector polls, the test reads its
//! snapshots. Unprivileged: runs everywhere Linux does.
#![cfg(target_os = "linux")]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runner::detect::{Detector, DetectorConfig, DetectorEvent, ListenerSocket, procfs};

/// Long enough for a loaded machine; tests end as soon as they see enough.
const PATIENCE: Duration = Duration::from_secs(30);
const FAST_POLL: Duration = Duration::from_millis(100);

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/listener.py")
}

fn scratch_file(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("kandan-procfs-{}-{tag}-{n}", std::process::id()))
}

/// A running fixture. Dropping it closes its stdin: every process of its
/// tree shares that pipe and exits on end of file.
struct Listener {
    child: Child,
    /// What the fixture wrote: `<port> <pid>` or `ERROR <errno>` and more.
    ready: Vec<String>,
}

impl Listener {
    /// Runs `python3 <script>` with `args`, waiting for its ready file.
    fn spawn_script(script: &[&str], args: &[&str]) -> Listener {
        let ready_file = scratch_file("ready");
        let mut child = Command::new("python3")
            .args(script)
            .args(args)
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--until-stdin-closes")
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let deadline = std::time::Instant::now() + PATIENCE;
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                break text;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("listener exited before ready: {status}");
            }
            assert!(std::time::Instant::now() < deadline, "listener never ready");
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_file(&ready_file);
        let ready: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        Listener { child, ready }
    }

    fn spawn(args: &[&str]) -> Listener {
        let script = fixture();
        Listener::spawn_script(&[script.to_str().unwrap()], args)
    }

    fn port(&self) -> u16 {
        self.ready[0].parse().expect("a port")
    }

    /// The process that called listen() (a grandchild with --fork-depth).
    fn listening_pid(&self) -> u32 {
        self.ready[1].parse().expect("a pid")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes stdin: the fixture closes its sockets and exits.
    fn close(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

fn start(poll_interval: Duration) -> Detector {
    procfs::start(&DetectorConfig {
        poll_interval,
        self_pid: std::process::id(),
        watch_cgroups: false,
    })
    .expect("procfs works here")
}

async fn next_snapshot(detector: &mut Detector) -> Vec<ListenerSocket> {
    match tokio::time::timeout(PATIENCE, detector.events.recv()).await {
        Ok(Some(DetectorEvent::Snapshot(sockets))) => sockets,
        Ok(Some(other)) => panic!("procfs sends only snapshots, got {other:?}"),
        Ok(None) => panic!("detector stopped"),
        Err(_) => panic!("no snapshot within {PATIENCE:?}"),
    }
}

/// Snapshots until one passes `done`; returns it.
async fn wait_for(
    detector: &mut Detector,
    what: &str,
    done: impl Fn(&[ListenerSocket]) -> bool,
) -> Vec<ListenerSocket> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = Vec::new();
    while tokio::time::Instant::now() < deadline {
        last = next_snapshot(detector).await;
        if done(&last) {
            return last;
        }
    }
    panic!("never saw {what}; last snapshot: {last:#?}");
}

fn on_port(sockets: &[ListenerSocket], port: u16) -> Vec<&ListenerSocket> {
    sockets.iter().filter(|s| s.port == port).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Starts a fixture with `args`, watches it, returns its sockets on its port.
async fn detect(args: &[&str]) -> (Listener, Vec<ListenerSocket>) {
    let listener = Listener::spawn(args);
    let mut detector = start(FAST_POLL);
    detector.roots.add_root(listener.pid()).unwrap();
    let port = listener.port();
    let sockets = wait_for(&mut detector, "the fixture's listener", |s| {
        !on_port(s, port).is_empty()
    })
    .await;
    let mine = on_port(&sockets, port).into_iter().cloned().collect();
    (listener, mine)
}

fn addrs(sockets: &[ListenerSocket]) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = sockets.iter().map(|s| s.addr).collect();
    addrs.sort();
    addrs
}

#[tokio::test]
async fn ipv4_loopback_with_its_process() {
    let (listener, sockets) = detect(&["--addr", "127.0.0.1"]).await;
    assert_eq!(addrs(&sockets), [ip("127.0.0.1")]);
    let socket = &sockets[0];
    assert_eq!(socket.pid, listener.pid());
    assert!(socket.id.0 > 0);
    assert!(
        // `python3 .../listener.py`: the script the interpreter runs.
        socket.process.label == "listener.py",
        "{:?}",
        socket.process
    );
    assert!(
        socket
            .process
            .command
            .contains("listener.py --addr 127.0.0.1")
    );
    assert!(socket.process.cwd.is_some());
}

#[tokio::test]
async fn ipv4_wildcard() {
    let (_listener, sockets) = detect(&["--addr", "0.0.0.0"]).await;
    assert_eq!(addrs(&sockets), [ip("0.0.0.0")]);
}

#[tokio::test]
async fn ipv6_loopback() {
    let (_listener, sockets) = detect(&["--addr", "::1"]).await;
    assert_eq!(addrs(&sockets), [ip("::1")]);
}

#[tokio::test]
async fn ipv6_wildcard() {
    let (_listener, sockets) = detect(&["--addr", "::"]).await;
    assert_eq!(addrs(&sockets), [ip("::")]);
}

#[tokio::test]
async fn dual_stack_is_one_ipv6_wildcard_socket() {
    let (_listener, sockets) = detect(&["--addr", "dual"]).await;
    assert_eq!(addrs(&sockets), [ip("::")]);
}

#[tokio::test]
async fn ipv4_and_ipv6_on_one_port_are_two_sockets() {
    let listener = Listener::spawn(&["--addr", "127.0.0.1", "--addr", "::1"]);
    let mut detector = start(FAST_POLL);
    detector.roots.add_root(listener.pid()).unwrap();
    let port = listener.port();
    let sockets = wait_for(&mut detector, "both sockets", |s| {
        on_port(s, port).len() == 2
    })
    .await;
    let mine: Vec<ListenerSocket> = on_port(&sockets, port).into_iter().cloned().collect();
    assert_eq!(addrs(&mine), [ip("127.0.0.1"), ip("::1")]);
    assert_ne!(mine[0].id, mine[1].id);
}

#[tokio::test]
async fn grandchild_listener_belongs_to_the_grandchild() {
    let (listener, sockets) = detect(&["--fork-depth", "2"]).await;
    assert_eq!(sockets.len(), 1);
    assert_ne!(listener.listening_pid(), listener.pid());
    assert_eq!(sockets[0].pid, listener.listening_pid());
}

#[tokio::test]
async fn thread_listener_belongs_to_its_process() {
    let (listener, sockets) = detect(&["--thread"]).await;
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].pid, listener.pid());
}

#[tokio::test]
async fn listen_without_bind_reports_the_real_port() {
    let (listener, sockets) = detect(&["--no-bind", "--addr", "0.0.0.0"]).await;
    assert_ne!(listener.port(), 0);
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].port, listener.port());
}

/// Two sockets bound to one port with SO_REUSEADDR: the first listen()
/// works, the second fails with EADDRINUSE and must not show up.
const EADDRINUSE_SCRIPT: &str = r#"
import os, socket, sys
args = sys.argv[1:]
ready = args[args.index("--ready-file") + 1]
def sock():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s
a = sock(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
b = sock(); b.bind(("127.0.0.1", port))
a.listen(8)
try:
    b.listen(8)
    err = 0
except OSError as e:
    err = e.errno
with open(ready + ".tmp", "w") as f:
    f.write(f"{port} {os.getpid()} {os.fstat(a.fileno()).st_ino} {os.fstat(b.fileno()).st_ino} {err}\n")
os.rename(ready + ".tmp", ready)
sys.stdin.read()
"#;

#[tokio::test]
async fn failed_listen_with_eaddrinuse_reports_nothing() {
    let listener = Listener::spawn_script(&["-c", EADDRINUSE_SCRIPT], &[]);
    let errno: i32 = listener.ready[4].parse().unwrap();
    assert_eq!(
        errno,
        libc::EADDRINUSE,
        "the fixture did not provoke EADDRINUSE"
    );
    let good: u64 = listener.ready[2].parse().unwrap();
    let failed: u64 = listener.ready[3].parse().unwrap();
    let mut detector = start(FAST_POLL);
    detector.roots.add_root(listener.pid()).unwrap();
    let port = listener.port();
    let sockets = wait_for(&mut detector, "the good socket", |s| {
        !on_port(s, port).is_empty()
    })
    .await;
    let ids: Vec<u64> = on_port(&sockets, port).iter().map(|s| s.id.0).collect();
    assert_eq!(ids, [good]);
    for _ in 0..3 {
        let sockets = next_snapshot(&mut detector).await;
        assert!(sockets.iter().all(|s| s.id.0 != failed));
    }
}

#[tokio::test]
async fn listener_predating_the_start_is_in_the_first_snapshot() {
    let listener = Listener::spawn(&["--addr", "127.0.0.1"]);
    let mut detector = start(Duration::from_secs(3600));
    // Nothing watched yet: the start snapshot is empty.
    assert!(next_snapshot(&mut detector).await.is_empty());
    detector.roots.add_root(listener.pid()).unwrap();
    // With an hour between polls, only the snapshot right after add_root
    // can show it.
    let sockets = next_snapshot(&mut detector).await;
    assert_eq!(on_port(&sockets, listener.port()).len(), 1);
}

#[tokio::test]
async fn listener_outside_the_tree_is_never_reported() {
    let outside = Listener::spawn(&["--addr", "127.0.0.1"]);
    let inside = Listener::spawn(&["--addr", "127.0.0.1"]);
    let mut detector = start(FAST_POLL);
    detector.roots.add_root(inside.pid()).unwrap();
    let sockets = wait_for(&mut detector, "the inside listener", |s| {
        !on_port(s, inside.port()).is_empty()
    })
    .await;
    assert!(on_port(&sockets, outside.port()).is_empty());
    for _ in 0..3 {
        let sockets = next_snapshot(&mut detector).await;
        assert!(on_port(&sockets, outside.port()).is_empty());
        assert!(sockets.iter().all(|s| s.pid != outside.pid()));
    }
}

#[tokio::test]
async fn runners_own_listener_is_never_reported() {
    // "Watch own descendants": the root is the runner (this test) itself.
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let own_port = own.local_addr().unwrap().port();
    let child = Listener::spawn(&["--addr", "127.0.0.1"]);
    let mut detector = start(FAST_POLL);
    detector.roots.add_root(std::process::id()).unwrap();
    let sockets = wait_for(&mut detector, "the child's listener", |s| {
        !on_port(s, child.port()).is_empty()
    })
    .await;
    assert!(on_port(&sockets, own_port).is_empty());
    assert!(sockets.iter().all(|s| s.pid != std::process::id()));
    drop(own);
}

#[tokio::test]
async fn closing_is_reported() {
    let mut listener = Listener::spawn(&["--addr", "127.0.0.1"]);
    let mut detector = start(FAST_POLL);
    detector.roots.add_root(listener.pid()).unwrap();
    let port = listener.port();
    wait_for(&mut detector, "the listener", |s| {
        !on_port(s, port).is_empty()
    })
    .await;
    listener.close();
    wait_for(&mut detector, "the close", |s| on_port(s, port).is_empty()).await;
    for _ in 0..3 {
        assert!(on_port(&next_snapshot(&mut detector).await, port).is_empty());
    }
}

#[tokio::test]
async fn closing_is_in_the_next_poll() {
    let mut listener = Listener::spawn(&["--addr", "127.0.0.1"]);
    let mut detector = start(Duration::from_secs(3600));
    next_snapshot(&mut detector).await;
    detector.roots.add_root(listener.pid()).unwrap();
    let port = listener.port();
    assert_eq!(on_port(&next_snapshot(&mut detector).await, port).len(), 1);
    listener.close();
    // Any scan after the exit must miss it: adding a root forces one.
    let other = Listener::spawn(&["--addr", "127.0.0.1"]);
    detector.roots.add_root(other.pid()).unwrap();
    let sockets = next_snapshot(&mut detector).await;
    assert!(on_port(&sockets, port).is_empty(), "{sockets:#?}");
    assert_eq!(on_port(&sockets, other.port()).len(), 1);
}

#[tokio::test]
async fn removed_root_is_no_longer_reported() {
    let listener = Listener::spawn(&["--addr", "127.0.0.1"]);
    let mut detector = start(Duration::from_secs(3600));
    next_snapshot(&mut detector).await;
    detector.roots.add_root(listener.pid()).unwrap();
    assert_eq!(
        on_port(&next_snapshot(&mut detector).await, listener.port()).len(),
        1
    );
    detector.roots.remove_root(listener.pid());
    assert!(on_port(&next_snapshot(&mut detector).await, listener.port()).is_empty());
}

#[tokio::test]
async fn custom_poll_interval_is_honoured() {
    let listener = Listener::spawn(&["--addr", "127.0.0.1"]);
    let interval = Duration::from_millis(400);
    let mut detector = start(interval);
    detector.roots.add_root(listener.pid()).unwrap();
    // The start snapshot and the add_root one come at once; count after.
    next_snapshot(&mut detector).await;
    next_snapshot(&mut detector).await;
    let mut previous = tokio::time::Instant::now();
    for _ in 0..3 {
        next_snapshot(&mut detector).await;
        let now = tokio::time::Instant::now();
        // Only a lower bound: a loaded machine may be late, never early.
        assert!(now - previous >= interval - Duration::from_millis(50));
        previous = now;
    }
}

#[tokio::test]
async fn adding_a_missing_root_fails() {
    let detector = start(FAST_POLL);
    assert!(detector.roots.add_root(u32::MAX - 1).is_err());
}

/// `python3 -c <code>` in its own process group, its stdout read by lines.
/// Dropping it kills the whole group, so no test leaves processes behind.
struct Script {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Script {
    fn spawn(code: &str) -> Script {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("python3")
            .args(["-c", code])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("python3 runs");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Script { child, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The numbers of the next line it prints.
    fn numbers(&mut self) -> Vec<u32> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).unwrap();
        assert!(!line.is_empty(), "script ended early");
        line.split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let group = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signals only the group this test created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    runner::detect::process_tree::ppid_from_stat(&stat)
}

/// The fields a fresh and a reused scanner must agree on.
fn essentials(sockets: &[ListenerSocket]) -> Vec<(u64, u16, IpAddr, u32)> {
    sockets
        .iter()
        .map(|s| (s.id.0, s.port, s.addr, s.pid))
        .collect()
}

#[test]
fn scanner_sees_a_listener_appearing_in_an_already_known_process() {
    // Some listener exists, so the first scan reads the root's fds.
    let _elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut script = Script::spawn(
        "import socket, sys\n\
         sys.stdin.readline()\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         print(s.getsockname()[1], flush=True)\n\
         sys.stdin.read()\n",
    );
    let mut scanner = procfs::Scanner::new(std::process::id());
    let roots = [script.pid()];
    assert!(scanner.scan(&roots).unwrap().is_empty());
    assert!(scanner.scan(&roots).unwrap().is_empty());
    script.say("listen");
    let port = u16::try_from(script.numbers()[0]).unwrap();
    let found = scanner.scan(&roots).unwrap();
    assert_eq!(
        found.iter().map(|s| (s.port, s.pid)).collect::<Vec<_>>(),
        [(port, script.pid())]
    );
    assert!(found[0].process.command.contains("python3"));
    assert_eq!(
        essentials(&scanner.scan(&roots).unwrap()),
        essentials(&found)
    );
}

/// Root (a subreaper when asked) -> parent -> grandchild listening; the
/// parent is killed between two scans of one scanner.
fn parent_exits_between_scans(subreaper: bool) -> (Vec<ListenerSocket>, u32, u16) {
    let prelude = if subreaper {
        "import ctypes; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\n" // PR_SET_CHILD_SUBREAPER
    } else {
        ""
    };
    let mut script = Script::spawn(&format!(
        "{prelude}import os, signal, socket, sys\n\
         if os.fork() == 0:\n    \
             if os.fork() == 0:\n        \
                 s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n        \
                 print(s.getsockname()[1], os.getpid(), os.getppid(), flush=True)\n        \
                 signal.pause()\n    \
             signal.pause()\n\
         signal.pause()\n"
    ));
    let numbers = script.numbers();
    let (port, grandchild, parent) = (u16::try_from(numbers[0]).unwrap(), numbers[1], numbers[2]);
    let roots = [script.pid()];
    let mut scanner = procfs::Scanner::new(std::process::id());
    let before = scanner.scan(&roots).unwrap();
    assert_eq!(
        before.iter().map(|s| (s.port, s.pid)).collect::<Vec<_>>(),
        [(port, grandchild)]
    );
    // SAFETY: kills the parent this test made.
    unsafe { libc::kill(libc::pid_t::try_from(parent).unwrap(), libc::SIGKILL) };
    let deadline = std::time::Instant::now() + PATIENCE;
    while ppid_of(grandchild) == Some(parent) {
        assert!(std::time::Instant::now() < deadline, "never re-parented");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = scanner.scan(&roots).unwrap();
    let fresh = procfs::scan(&roots, std::process::id()).unwrap();
    assert_eq!(essentials(&after), essentials(&fresh), "reused vs fresh");
    (after, grandchild, port)
}

#[test]
fn orphan_adopted_by_a_subreaper_root_stays_in_the_tree() {
    let (after, grandchild, port) = parent_exits_between_scans(true);
    assert_eq!(
        after.iter().map(|s| (s.port, s.pid)).collect::<Vec<_>>(),
        [(port, grandchild)]
    );
}

#[test]
fn orphan_adopted_outside_the_tree_leaves_it() {
    let (after, _, port) = parent_exits_between_scans(false);
    // Unless the test runs under a subreaper inside the tree (it cannot):
    // re-parented to init or a subreaper above the root.
    assert!(on_port(&after, port).is_empty(), "{after:?}");
}

/// A pid seen outside the tree exits and is reused by a new listener inside
/// it between two scans: the reused scanner must not keep the old parent.
/// Arranges the reuse with `/proc/sys/kernel/ns_last_pid` (root).
#[test]
fn reused_pid_joining_the_tree_is_seen() {
    if !integration_tests::support::privileged("reused_pid_joining_the_tree_is_seen") {
        return;
    }
    let mut root = Script::spawn(
        "import os, signal, socket, sys\n\
         for line in sys.stdin:\n    \
             with open('/proc/sys/kernel/ns_last_pid', 'w') as f: f.write(str(int(line) - 1))\n    \
             if os.fork() == 0:\n        \
                 s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n        \
                 print(s.getsockname()[1], os.getpid(), flush=True)\n        \
                 signal.pause()\n",
    );
    let roots = [root.pid()];
    let mut scanner = procfs::Scanner::new(std::process::id());
    for _attempt in 0..20 {
        let mut outsider = Command::new("sleep").arg("600").spawn().unwrap();
        let reused = outsider.id();
        // Something listens, so the scanner records the outsider's parent.
        let _elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        scanner.scan(&roots).unwrap();
        outsider.kill().unwrap();
        outsider.wait().unwrap();
        root.say(&reused.to_string());
        let numbers = root.numbers();
        let (port, pid) = (u16::try_from(numbers[0]).unwrap(), numbers[1]);
        if pid != reused {
            // Another process took the pid first; the scanner must still
            // see this listener, then try again.
            assert!(!on_port(&scanner.scan(&roots).unwrap(), port).is_empty());
            continue;
        }
        let found = scanner.scan(&roots).unwrap();
        assert_eq!(
            on_port(&found, port)
                .iter()
                .map(|s| s.pid)
                .collect::<Vec<_>>(),
            [reused],
            "{found:?}"
        );
        return;
    }
    panic!("could not arrange a pid reuse in 20 attempts");
}

/// Informal cost measurement, not a check: `cargo test -p integration-tests
/// --release --test detect_procfs scan_cost -- --ignored --nocapture`.
/// `KANDAN_SLEEPERS` sets how many idle processes to add (default 1000).
#[test]
#[ignore = "measurement: prints scan cost with many idle processes around"]
fn scan_cost_with_many_idle_processes() {
    /// CPU time (user + system) this process used so far; wall time is
    /// mostly other helpers' load on a shared machine.
    fn cpu() -> Duration {
        // SAFETY: getrusage only writes the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.unsigned_abs())
                + Duration::from_micros(t.tv_usec.unsigned_abs())
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
    /// Mean wall and CPU time of `runs` calls of `f`, and its last result.
    fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
        let started = std::time::Instant::now();
        let cpu_before = cpu();
        let mut last = f();
        for _ in 1..runs {
            last = f();
        }
        (started.elapsed() / runs, (cpu() - cpu_before) / runs, last)
    }
    fn measure(label: &str, root: u32) {
        let me = std::process::id();
        let runs = 50;
        let (cold, cold_cpu, found) = time(runs, || procfs::scan(&[root], me).unwrap().len());
        let mut scanner = procfs::Scanner::new(me);
        scanner.scan(&[root]).unwrap();
        let (steady, steady_cpu, steady_found) =
            time(runs, || scanner.scan(&[root]).unwrap().len());
        assert_eq!(found, steady_found);
        let (tree, _, _) = time(runs, || {
            runner::detect::process_tree::descendants(&[root]).unwrap()
        });
        let procs = std::fs::read_dir("/proc")
            .unwrap()
            .filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
            })
            .count();
        eprintln!(
            "{label}: {procs} processes, {found} listeners (mean of {runs}):\n  \
             cold scan (fresh scanner) {cold:?} wall / {cold_cpu:?} cpu\n  \
             steady poll (reused scanner) {steady:?} wall / {steady_cpu:?} cpu\n  \
             full stat walk alone {tree:?} wall"
        );
    }
    /// Kills and reaps the sleepers however the test ends.
    struct Sleepers(Vec<Child>);
    impl Drop for Sleepers {
        fn drop(&mut self) {
            for sleeper in &mut self.0 {
                let _ = sleeper.kill();
            }
            for sleeper in &mut self.0 {
                let _ = sleeper.wait();
            }
        }
    }
    let count: usize = std::env::var("KANDAN_SLEEPERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let listener = Listener::spawn(&["--fork-depth", "2", "--addr", "127.0.0.1", "--addr", "::1"]);
    measure("quiet", listener.pid());
    let mut sleepers = Sleepers(Vec::with_capacity(count));
    for _ in 0..count {
        sleepers
            .0
            .push(Command::new("sleep").arg("600").spawn().unwrap());
    }
    measure(&format!("{count} sleepers"), listener.pid());
}

/// `kandan-runner watch --json --backend procfs` running `sh -c script`;
/// its JSON lines once the command exits.
async fn watch_lines(debounce_ms: u32, script: &str) -> Vec<serde_json::Value> {
    let output = tokio::process::Command::new(integration_tests::support::runner_bin())
        .args([
            "watch",
            "--json",
            "--backend",
            "procfs",
            "--poll-interval-ms",
            "100",
        ])
        .arg(format!("--debounce-ms={debounce_ms}"))
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .expect("watch ends with its command")
        .expect("watch runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("stdout holds only JSON lines"))
        .collect()
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

fn events_on(lines: &[serde_json::Value], port: u16) -> Vec<&str> {
    lines
        .iter()
        .filter(|line| line["port"] == port)
        .map(|line| line["event"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn watch_never_reports_a_short_lived_listener() {
    let (short, long) = (free_port(), free_port());
    let fixture = fixture();
    let fixture = fixture.display();
    let script = format!(
        "python3 {fixture} --port {short} --hold 0.1; python3 {fixture} --port {long} --hold 3"
    );
    let lines = watch_lines(500, &script).await;
    assert!(events_on(&lines, short).is_empty(), "{lines:#?}");
    assert_eq!(
        events_on(&lines, long).first(),
        Some(&"opened"),
        "{lines:#?}"
    );
    let opened = lines.iter().find(|l| l["port"] == long).unwrap();
    assert_eq!(opened["backend"], "procfs");
    assert_eq!(opened["addresses"], serde_json::json!(["127.0.0.1"]));
}

#[tokio::test]
async fn watch_reports_a_restart_with_another_command_as_changed() {
    let port = free_port();
    let fixture = fixture();
    let fixture = fixture.display();
    let script = format!(
        "python3 {fixture} --port {port} --hold 2; \
         python3 {fixture} --port {port} --addr 0.0.0.0 --hold 2"
    );
    let lines = watch_lines(500, &script).await;
    let events = events_on(&lines, port);
    assert_eq!(
        events.get(..2),
        Some(&["opened", "changed"][..]),
        "{lines:#?}"
    );
    let changed = lines.iter().find(|l| l["event"] == "changed").unwrap();
    assert!(
        changed["command"]
            .as_str()
            .unwrap()
            .contains("--addr 0.0.0.0"),
        "{changed}"
    );
}

#[test]
fn scanner_describes_a_listener_again_after_an_exec() {
    let mut script = Script::spawn(
        "import os, socket, sys\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); s.set_inheritable(True)\n\
         print(s.getsockname()[1], flush=True)\n\
         sys.stdin.readline()\n\
         os.execv(sys.executable, [sys.executable, '-c', 'import sys; sys.stdin.read()', 'swapped-in', str(s.fileno())])\n",
    );
    let port = u16::try_from(script.numbers()[0]).unwrap();
    let roots = [script.pid()];
    let mut scanner = procfs::Scanner::new(std::process::id());
    let before = scanner.scan(&roots).unwrap();
    let before = on_port(&before, port);
    assert_eq!(before.len(), 1, "{before:?}");
    // The code itself names the next program; only it has `execv`.
    assert!(before[0].process.command.contains("execv"));
    script.say("exec");
    let deadline = std::time::Instant::now() + PATIENCE;
    let cmdline = format!("/proc/{}/cmdline", script.pid());
    // The old command line names "swapped-in" too (in its execv call); only
    // the new one lacks "execv".
    while !std::fs::read_to_string(&cmdline)
        .is_ok_and(|c| c.contains("swapped-in") && !c.contains("execv"))
    {
        assert!(std::time::Instant::now() < deadline, "never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = scanner.scan(&roots).unwrap();
    let after = on_port(&after, port);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].id, after[0].pid), (before[0].id, before[0].pid));
    assert!(
        !after[0].process.command.contains("execv"),
        "the scanner kept the description from before the exec: {:?}",
        after[0].process
    );
}

#[tokio::test]
async fn watch_reports_an_exec_swap_as_changed() {
    let ready = scratch_file("exec-swap");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/exec_swap.py");
    let script = format!("python3 {} {} 1 2", fixture.display(), ready.display());
    let lines = watch_lines(0, &script).await;
    let text = std::fs::read_to_string(&ready).expect("fixture ready");
    let _ = std::fs::remove_file(&ready);
    let (port, pid) = text.trim().split_once(' ').unwrap();
    let (port, pid): (u16, u64) = (port.parse().unwrap(), pid.parse().unwrap());
    assert_eq!(
        events_on(&lines, port).get(..2),
        Some(&["opened", "changed"][..]),
        "{lines:#?}"
    );
    let changed = lines
        .iter()
        .find(|l| l["port"] == port && l["event"] == "changed")
        .unwrap();
    let command = changed["command"].as_str().unwrap();
    assert!(
        command.contains("swapped-in") && !command.contains("exec_swap.py"),
        "{changed}"
    );
    assert_eq!(changed["pid"], pid, "{changed}");
}

#[tokio::test]
async fn watch_never_reports_a_listener_in_another_network_namespace() {
    if !integration_tests::support::privileged(
        "watch_never_reports_a_listener_in_another_network_namespace",
    ) {
        return;
    }
    let (inner, outer) = (scratch_file("inner"), scratch_file("outer"));
    let fixture = fixture();
    let fixture = fixture.display();
    // 0.0.0.0: the new namespace's loopback is down.
    let script = format!(
        "unshare --net python3 {fixture} --addr 0.0.0.0 --hold 3 --ready-file {inner} & \
         sleep 1; python3 {fixture} --addr 127.0.0.1 --hold 2 --ready-file {outer}; wait",
        inner = inner.display(),
        outer = outer.display(),
    );
    let lines = watch_lines(0, &script).await;
    let port_of = |path: &PathBuf| -> u16 {
        let text = std::fs::read_to_string(path).expect("fixture ready");
        let _ = std::fs::remove_file(path);
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (inner_port, outer_port) = (port_of(&inner), port_of(&outer));
    assert!(events_on(&lines, inner_port).is_empty(), "{lines:#?}");
    assert_eq!(
        events_on(&lines, outer_port).first(),
        Some(&"opened"),
        "{lines:#?}"
    );
}

#[test]
fn scanner_gives_a_socket_dropped_by_an_exec_to_the_process_still_holding_it() {
    // Close-on-exec socket (Python's default), kept by a forked child.
    let mut script = Script::spawn(
        "import os, signal, socket, sys\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         child = os.fork()\n\
         if child == 0:\n    \
             signal.pause()\n\
         print(s.getsockname()[1], child, flush=True)\n\
         sys.stdin.readline()\n\
         os.execv(sys.executable, [sys.executable, '-c', 'import sys; sys.stdin.read()', 'after' + '-exec'])\n",
    );
    let numbers = script.numbers();
    let (port, child) = (u16::try_from(numbers[0]).unwrap(), numbers[1]);
    let roots = [script.pid()];
    let mut scanner = procfs::Scanner::new(std::process::id());
    let before = scanner.scan(&roots).unwrap();
    assert_eq!(
        on_port(&before, port)
            .iter()
            .map(|s| s.pid)
            .collect::<Vec<_>>(),
        [script.pid()],
        "the holder nearest the root owns it"
    );
    script.say("exec");
    let deadline = std::time::Instant::now() + PATIENCE;
    let cmdline = format!("/proc/{}/cmdline", script.pid());
    while !std::fs::read_to_string(&cmdline).is_ok_and(|c| c.contains("after-exec")) {
        assert!(std::time::Instant::now() < deadline, "never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = scanner.scan(&roots).unwrap();
    let after = on_port(&after, port);
    assert_eq!(
        after.iter().map(|s| s.pid).collect::<Vec<_>>(),
        [child],
        "{after:?}"
    );
    assert!(
        !after[0].process.command.contains("after-exec"),
        "{:?}",
        after[0].process
    );
}
