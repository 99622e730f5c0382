//! The pipeline task end to end, with fake detector events and paused time.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use super::services::tests::sock;
use super::*;
use crate::detect::{ListenerSocket, SocketId};
use crate::gate::Identity;
use crate::gate::PortGate;

const WINDOW: Duration = Duration::from_millis(750);
/// Long enough that any pending timer would have fired (time is paused, so
/// waiting costs nothing).
const QUIET: Duration = Duration::from_secs(30);

struct Harness {
    tx: mpsc::Sender<DetectorEvent>,
    finish: Option<oneshot::Sender<Finish>>,
    rx: mpsc::Receiver<CandidateEvent>,
    t0: Instant,
    task: JoinHandle<()>,
}

impl Harness {
    fn start(debounce: Duration, ignore: IgnorePolicy) -> Self {
        let (tx, events) = mpsc::channel(16);
        let (out, rx) = mpsc::channel(16);
        let (finish, finish_rx) = oneshot::channel();
        let task = tokio::spawn(run(
            PipelineConfig {
                debounce,
                ignore,
                ports: Vec::new(),
                gate: None,
            },
            events,
            out,
            finish_rx,
        ));
        Harness {
            tx,
            finish: Some(finish),
            rx,
            t0: Instant::now(),
            task,
        }
    }

    fn new() -> Self {
        Self::start(WINDOW, IgnorePolicy::empty())
    }

    async fn send(&self, event: DetectorEvent) {
        self.tx.send(event).await.unwrap();
    }

    /// Sends `event` at `at` after the start.
    async fn send_at(&self, at: u64, event: DetectorEvent) {
        tokio::time::sleep_until(self.t0 + ms(at)).await;
        self.send(event).await;
    }

    /// The next candidate event and when it came, in ms after the start.
    async fn next(&mut self) -> (u128, CandidateEvent) {
        let event = timeout(QUIET, self.rx.recv())
            .await
            .expect("no candidate event")
            .expect("pipeline ended");
        (self.t0.elapsed().as_millis(), event)
    }

    async fn assert_quiet(&mut self) {
        if let Ok(event) = timeout(QUIET, self.rx.recv()).await {
            panic!("unexpected {event:?}");
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn open(socket: ListenerSocket) -> DetectorEvent {
    DetectorEvent::Opened(socket)
}

fn close(id: u64) -> DetectorEvent {
    DetectorEvent::Closed(SocketId(id))
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn opened(event: CandidateEvent) -> Candidate {
    match event {
        CandidateEvent::Opened(candidate) => candidate,
        other => panic!("expected opened, got {other:?}"),
    }
}

fn changed(event: CandidateEvent) -> Candidate {
    match event {
        CandidateEvent::Changed(candidate) => candidate,
        other => panic!("expected changed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn opened_fires_exactly_when_the_window_ends() {
    let mut h = Harness::new();
    h.send_at(100, open(sock(1, 5173, "127.0.0.1", 42, "node vite")))
        .await;
    let (at, event) = h.next().await;
    assert_eq!(
        at, 850,
        "opened at the end of the window, not at a later event"
    );
    let candidate = opened(event);
    assert_eq!(candidate.port, 5173);
    assert_eq!(candidate.pid, 42);
    assert_eq!(candidate.process.command, "node vite");
    // `node vite`: the tool, not the interpreter.
    assert_eq!(candidate.process.label, "vite");
    assert_eq!(candidate.addresses, addrs(&["127.0.0.1"]));
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn finish_reports_closes_at_once_and_ends_the_pipeline() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 1, "node a"))).await;
    h.send_at(0, open(sock(2, 4000, "::", 1, "node b"))).await;
    h.send_at(0, open(sock(3, 5000, "::", 1, "node c"))).await;
    for _ in 0..3 {
        opened(h.next().await.1);
    }
    // 3000 closes (its `closed` would wait for the window); a fresh scan
    // says 4000 no longer listens either; 5000 still does.
    h.send_at(1000, close(1)).await;
    h.send_at(1000, DetectorEvent::Closed(SocketId(99))).await;
    let listening = Some([5000].into_iter().collect());
    h.finish.take().unwrap().send(Finish { listening }).unwrap();
    assert_eq!(
        h.next().await,
        (1000, CandidateEvent::Closed { port: 3000, pid: 1 })
    );
    assert_eq!(
        h.next().await,
        (1000, CandidateEvent::Closed { port: 4000, pid: 1 })
    );
    assert!(h.rx.recv().await.is_none(), "the pipeline ended");
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn open_and_close_inside_the_window_is_silent() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 1, "node app"))).await;
    h.send_at(749, close(1)).await;
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_short_listeners_is_silent() {
    let mut h = Harness::new();
    for i in 0..2000u64 {
        let port = 20000 + (i % 50) as u16;
        h.send(open(sock(i, port, "127.0.0.1", 1, "probe"))).await;
        sleep(ms(3)).await;
        h.send(close(i)).await;
    }
    h.assert_quiet().await;

    // The pipeline still works afterwards.
    h.send(open(sock(9999, 20001, "127.0.0.1", 1, "server")))
        .await;
    assert_eq!(opened(h.next().await.1).process.command, "server");
}

#[tokio::test(start_paused = true)]
async fn v4_v6_and_reuseport_sockets_are_one_port() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 8000, "0.0.0.0", 10, "gunicorn app")))
        .await;
    h.send_at(10, open(sock(2, 8000, "::", 10, "gunicorn app")))
        .await;
    h.send_at(20, open(sock(3, 8000, "0.0.0.0", 11, "gunicorn worker")))
        .await;
    let (at, event) = h.next().await;
    assert_eq!(at, 750);
    let candidate = opened(event);
    assert_eq!(candidate.pid, 10, "the oldest socket's pid owns the port");
    assert_eq!(candidate.addresses, addrs(&["0.0.0.0", "::"]));
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn address_changes_are_reported_without_reopening() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 5173, "127.0.0.1", 1, "vite")))
        .await;
    opened(h.next().await.1);
    h.send_at(2000, open(sock(2, 5173, "::1", 1, "vite"))).await;
    let (at, event) = h.next().await;
    assert_eq!(at, 2000);
    match event {
        CandidateEvent::AddressesChanged(c) => {
            assert_eq!(c.addresses, addrs(&["127.0.0.1", "::1"]))
        }
        other => panic!("{other:?}"),
    }
    h.send_at(3000, close(1)).await;
    match h.next().await.1 {
        CandidateEvent::AddressesChanged(c) => assert_eq!(c.addresses, addrs(&["::1"])),
        other => panic!("{other:?}"),
    }
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn closed_is_held_for_the_window_and_names_the_last_owner() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 7, "node app"))).await;
    opened(h.next().await.1);
    h.send_at(5000, close(1)).await;
    let (at, event) = h.next().await;
    assert_eq!(at, 5750);
    assert_eq!(event, CandidateEvent::Closed { port: 3000, pid: 7 });
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn same_owner_back_inside_the_window_is_silent() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 7, "node app"))).await;
    opened(h.next().await.1);
    h.send_at(2000, close(1)).await;
    h.send_at(2700, open(sock(2, 3000, "::", 7, "node app")))
        .await;
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_inside_the_window_is_changed_not_closed_then_opened() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 7, "node app"))).await;
    opened(h.next().await.1);
    h.send_at(2000, close(1)).await;
    h.send_at(2300, open(sock(2, 3000, "::", 8, "node app")))
        .await;
    let (at, event) = h.next().await;
    assert_eq!(at, 3050, "at the end of the new listener's window");
    let candidate = changed(event);
    assert_eq!(candidate.pid, 8);
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_cwd_is_a_change() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 7, "node app"))).await;
    opened(h.next().await.1);
    let mut elsewhere = sock(2, 3000, "::", 7, "node app");
    elsewhere.process.cwd = Some("/y".into());
    h.send_at(1000, close(1)).await;
    h.send_at(1100, open(elsewhere)).await;
    let (at, event) = h.next().await;
    assert_eq!(at, 1850);
    assert_eq!(changed(event).process.cwd, Some("/y".into()));
}

#[tokio::test(start_paused = true)]
async fn owner_change_while_open_fires_once_the_new_owner_is_stable() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 8000, "::", 1, "master"))).await;
    h.send_at(10, open(sock(2, 8000, "::", 2, "worker"))).await;
    assert_eq!(opened(h.next().await.1).pid, 1);
    // The master's socket goes; the worker's remains and now owns the port.
    h.send_at(3000, close(1)).await;
    let (at, event) = h.next().await;
    assert_eq!(at, 3750);
    assert_eq!(changed(event).pid, 2);
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn an_owner_flip_and_back_inside_the_window_is_silent() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 8000, "::", 1, "a"))).await;
    opened(h.next().await.1);
    h.send_at(
        1000,
        DetectorEvent::Snapshot(vec![sock(1, 8000, "::", 2, "b")]),
    )
    .await;
    h.send_at(
        1500,
        DetectorEvent::Snapshot(vec![sock(1, 8000, "::", 1, "a")]),
    )
    .await;
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_reopen_of_another_owner_then_close_is_closed_with_the_old_pid() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 7, "a"))).await;
    opened(h.next().await.1);
    h.send_at(1000, close(1)).await;
    h.send_at(1200, open(sock(2, 3000, "::", 9, "b"))).await;
    h.send_at(1400, close(2)).await;
    let (at, event) = h.next().await;
    assert_eq!(at, 2150);
    assert_eq!(event, CandidateEvent::Closed { port: 3000, pid: 7 });
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn zero_debounce_reports_opens_and_closes_at_once() {
    let mut h = Harness::start(Duration::ZERO, IgnorePolicy::empty());
    h.send_at(100, open(sock(1, 3000, "::", 7, "a"))).await;
    let (at, event) = h.next().await;
    assert_eq!(at, 100);
    opened(event);
    h.send_at(200, close(1)).await;
    assert_eq!(
        h.next().await,
        (200, CandidateEvent::Closed { port: 3000, pid: 7 })
    );
}

#[tokio::test(start_paused = true)]
async fn snapshots_are_diffed() {
    let mut h = Harness::new();
    let a = sock(1, 3000, "127.0.0.1", 1, "a");
    let b = sock(2, 4000, "127.0.0.1", 2, "b");
    h.send_at(0, DetectorEvent::Snapshot(vec![a.clone(), b.clone()]))
        .await;
    let (at0, first) = h.next().await;
    let (at1, second) = h.next().await;
    assert_eq!((at0, at1), (750, 750));
    assert_eq!(opened(first).port, 3000);
    assert_eq!(opened(second).port, 4000);

    // Polls: `a` disappears, `c` appears; an unchanged `b` says nothing.
    let c = sock(3, 5000, "::1", 3, "c");
    h.send_at(1000, DetectorEvent::Snapshot(vec![b.clone(), c.clone()]))
        .await;
    // Both due at 1750, in port order.
    assert_eq!(
        h.next().await,
        (1750, CandidateEvent::Closed { port: 3000, pid: 1 })
    );
    let (at, event) = h.next().await;
    assert_eq!((at, opened(event).port), (1750, 5000));
    h.send_at(2000, DetectorEvent::Snapshot(vec![b.clone(), c.clone()]))
        .await;
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_resync_snapshot_closes_what_events_opened() {
    let mut h = Harness::new();
    h.send_at(0, open(sock(1, 3000, "::", 1, "a"))).await;
    h.send_at(10, open(sock(2, 4000, "::", 1, "a"))).await;
    opened(h.next().await.1);
    opened(h.next().await.1);
    // An eBPF ring-buffer drop lost the close of socket 1.
    h.send_at(
        2000,
        DetectorEvent::Snapshot(vec![sock(2, 4000, "::", 1, "a")]),
    )
    .await;
    assert_eq!(
        h.next().await,
        (2750, CandidateEvent::Closed { port: 3000, pid: 1 })
    );
    h.assert_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn ignored_ports_and_commands_never_produce_events() {
    let mut h = Harness::start(WINDOW, IgnorePolicy::default());
    h.send(open(sock(1, 9229, "127.0.0.1", 1, "node --inspect app.js")))
        .await;
    h.send(open(sock(
        2,
        41234,
        "127.0.0.1",
        2,
        "python3 -m ipykernel_launcher -f k.json",
    )))
    .await;
    h.send(DetectorEvent::Snapshot(vec![
        sock(1, 9229, "127.0.0.1", 1, "node --inspect app.js"),
        sock(3, 5678, "127.0.0.1", 3, "python -m debugpy"),
    ]))
    .await;
    h.send(close(1)).await;
    h.assert_quiet().await;

    // The app's own port in the same process is still reported.
    h.send(open(sock(4, 3000, "::", 1, "node --inspect app.js")))
        .await;
    assert_eq!(opened(h.next().await.1).port, 3000);
}

#[tokio::test(start_paused = true)]
async fn a_port_taken_over_by_an_ignored_command_closes() {
    let ignore = IgnorePolicy::from_cli(true, [], ["gopls".parse().unwrap()]);
    let mut h = Harness::start(WINDOW, ignore);
    h.send_at(0, open(sock(1, 3000, "::", 1, "a"))).await;
    opened(h.next().await.1);
    // Socket id 1 reused by an ignored listener: it is a close for us.
    h.send_at(1000, open(sock(1, 3000, "::", 2, "gopls serve")))
        .await;
    assert_eq!(
        h.next().await,
        (1750, CandidateEvent::Closed { port: 3000, pid: 1 })
    );
}

#[tokio::test(start_paused = true)]
async fn ends_when_input_closes_without_flushing() {
    let Harness {
        tx, mut rx, task, ..
    } = Harness::new();
    tx.send(open(sock(1, 3000, "::", 1, "a"))).await.unwrap();
    drop(tx);
    timeout(QUIET, task).await.unwrap().unwrap();
    assert_eq!(rx.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn timer_due_when_an_event_arrives_fires_first() {
    // Lived the full window, then closed at that very instant: opened.
    let mut p = Pipeline::new(PipelineConfig {
        debounce: WINDOW,
        ignore: IgnorePolicy::empty(),
        ports: Vec::new(),
        gate: None,
    });
    let t0 = Instant::now();
    assert!(p.apply(open(sock(1, 3000, "::", 1, "a")), t0).is_empty());
    let events = p.apply(close(1), t0 + WINDOW);
    assert_eq!(events.len(), 1);
    opened(events[0].clone());
    assert_eq!(p.next_deadline(), Some(t0 + WINDOW * 2));
}

#[tokio::test(start_paused = true)]
async fn ports_entries_drop_ignored_listeners_and_label_the_others() {
    let config = crate::config::Config::from_text(
        "/c.toml".into(),
        "[[ports]]\nport = 4000\non_detect = \"ignore\"\n\
         [[ports]]\ncommand = \"node *\"\nlabel = \"api\"\non_detect = \"silent\"\nprotocol = \"https\"\n"
            .into(),
    )
    .unwrap();
    let mut p = Pipeline::new(PipelineConfig {
        debounce: Duration::ZERO,
        ignore: IgnorePolicy::empty(),
        ports: config.ports().to_vec(),
        gate: None,
    });
    let t0 = Instant::now();
    assert!(
        p.apply(open(sock(1, 4000, "::", 1, "node a")), t0)
            .is_empty()
    );
    assert!(
        p.apply(
            DetectorEvent::Snapshot(vec![sock(2, 4000, "::", 1, "node a")]),
            t0
        )
        .is_empty()
    );
    let api = opened(
        p.apply(open(sock(3, 4001, "::", 2, "node a")), t0)
            .remove(0),
    );
    assert_eq!(api.process.label, "api");
    assert_eq!(api.process.command, "node a");
    let attributes = &api.attributes;
    assert_eq!(attributes.on_detect, crate::config::OnDetect::Silent);
    assert_eq!(attributes.protocol, crate::config::Protocol::Https);
    // Another program on the port: its own attributes (none match).
    let events = p.apply(close(3), t0);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, CandidateEvent::Closed { .. }))
    );
    let other = opened(
        p.apply(open(sock(4, 4001, "::", 3, "python3 b")), t0)
            .remove(0),
    );
    // `python3 b`: the script the interpreter runs.
    assert_eq!(other.process.label, "b");
    assert_eq!(other.attributes, crate::config::PortAttributes::default());
}

/// The attacker: a process that shares an approved port (SO_REUSEPORT)
/// and has itself ignored (a project's `.kandan/ports.toml` can). It is no
/// candidate, but the gate sees it and stops forwarding at once.
#[tokio::test(start_paused = true)]
async fn an_ignored_listener_on_an_approved_port_stops_forwarding() {
    let gate = Gate::new();
    let ignore = IgnorePolicy::from_cli(true, [], ["gopls".parse().unwrap()]);
    let mut p = Pipeline::new(PipelineConfig {
        debounce: WINDOW,
        ignore,
        ports: Vec::new(),
        gate: Some(gate.clone()),
    });
    let t0 = Instant::now();
    let vite = sock(1, 3000, "127.0.0.1", 1, "vite");
    gate.set_approved(&Identity::new(3000, &vite.process), true);
    p.apply(open(vite), t0);
    assert!(gate.target(3000).is_ok());

    let events = p.apply(open(sock(2, 3000, "127.0.0.1", 2, "gopls serve")), t0);
    assert!(
        events.is_empty(),
        "an ignored listener is no candidate: {events:?}"
    );
    assert!(
        gate.target(3000).is_err(),
        "forwarded beside an ignored listener"
    );
    // Gone again: forwarding resumes; a snapshot that lists it stops it again.
    p.apply(close(2), t0);
    assert!(gate.target(3000).is_ok());
    let both = vec![
        sock(1, 3000, "127.0.0.1", 1, "vite"),
        sock(3, 3000, "127.0.0.1", 2, "gopls serve"),
    ];
    p.apply(DetectorEvent::Snapshot(both), t0);
    assert!(
        gate.target(3000).is_err(),
        "a snapshot's ignored listener was missed"
    );
}
