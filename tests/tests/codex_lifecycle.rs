//! How Codex instances end, and what cannot be trusted: stop, a SIGKILLed
//! app-server, the agent's commands and what escapes the process group,
//! malformed output, a `codex` that exits or never answers, requests the
//! runner refuses, the token kept out (real Codex where it matters,
//! scripted stand-ins where a fault must be made).

use std::path::Path;
use std::time::Duration;

use integration_tests::codex::driver::{EVENT_TIMEOUT, Instance, rig, script_codex};
use integration_tests::codex::procs::{processes_with, runs_program};
use integration_tests::fake_model::Reply;
use runner::codex::{
    self, CommandError, Decision, InstanceCommand, InstanceEvent, InstanceOptions, StopReason,
};
use runner::wire::{InterruptTurn, StartTurn};
use serde_json::Value;

#[tokio::test]
async fn stop_leaves_no_process_of_the_group() {
    let (model, dirs) = rig().await;
    model.push([Reply::hang("busy")]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("work").await;
    instance.notification("item/agentMessage/delta").await;
    let pid = instance.pid;
    assert!(codex::group_alive(pid));
    let started = std::time::Instant::now();
    let stopped = instance.stop().await;
    println!("stopped in {:?}", started.elapsed());
    assert!(
        matches!(
            stopped,
            InstanceEvent::Stopped {
                reason: StopReason::Stopped,
                ..
            }
        ),
        "{stopped:?}"
    );
    assert!(
        !codex::group_alive(pid),
        "processes of group {pid} are left"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // The instance is gone for good.
    let err = instance
        .handle
        .call(InstanceCommand::Interrupt(InterruptTurn {
            instance_id: String::new(),
            turn_id: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err, CommandError::Stopped);
    assert_eq!(instance.handle.status().state, None);
}

#[tokio::test]
async fn app_server_killed_from_outside_reports_exited_with_its_stderr() {
    let (model, dirs) = rig().await;
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    let pid = instance.pid;
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let stopped = instance
        .until(|event| matches!(event, InstanceEvent::Stopped { .. }).then(|| event.clone()))
        .await;
    let InstanceEvent::Stopped {
        reason,
        exit_code,
        signal,
        stderr_tail,
    } = stopped
    else {
        unreachable!()
    };
    assert_eq!(reason, StopReason::Exited);
    assert_eq!((exit_code, signal), (None, Some(libc::SIGKILL)));
    let tail = stderr_tail.expect("a stderr tail");
    assert!(!tail.is_empty() && tail.len() <= 4096, "{tail}");
    assert!(!codex::group_alive(pid));
}

#[tokio::test]
async fn stop_ends_a_command_the_agent_is_running() {
    let (model, dirs) = rig().await;
    let marker = format!("kandan-stop-{}", std::process::id());
    model.push([Reply::exec_command(
        "call_1",
        &format!("sh -c 'sleep 900; echo {marker}' {marker}"),
    )]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("run something long").await;
    let request = instance.approval().await;
    instance
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap();
    // Wait until the command runs.
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while !runs_program(&marker, "sh") {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    instance.stop().await;
    // Gone by the time Stopped is reported (zombies have no command line).
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "the agent's command survived stop"
    );
}

#[tokio::test]
async fn a_killed_app_server_leaves_no_command_behind() {
    let (model, dirs) = rig().await;
    let marker = format!("kandan-kill-{}", std::process::id());
    model.push([Reply::exec_command(
        "call_1",
        &format!("sh -c 'sleep 900; echo {marker}' {marker}"),
    )]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("run something long").await;
    let request = instance.approval().await;
    instance
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while !runs_program(&marker, "sh") {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe {
        libc::kill(instance.pid as libc::pid_t, libc::SIGKILL);
    }
    let stopped = instance
        .until(|event| matches!(event, InstanceEvent::Stopped { .. }).then(|| event.clone()))
        .await;
    assert!(matches!(
        stopped,
        InstanceEvent::Stopped {
            reason: StopReason::Exited,
            ..
        }
    ));
    // Gone by the time Stopped is reported (zombies have no command line).
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "the agent's command survived"
    );
}

/// A `codex` that answers the handshake between lines of garbage.
const GARBAGE_CODEX: &str = r#"#!/usr/bin/env python3
import json, sys
print("this is not json", flush=True)
print("{\"half\": ", flush=True)
print("", flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print("\x00\x01 binary junk", flush=True)
        print(json.dumps({"id": msg["id"], "result": {"userAgent": "kandan-runner/9.9.9 (test)"}}), flush=True)
    elif msg.get("method") == "thread/start":
        print("[1, 2, 3]", flush=True)
        print(json.dumps({"id": msg["id"], "result": {"thread": {"id": "thr_fake"}, "model": "m"}}), flush=True)
        print(json.dumps({"method": "first/note", "params": {"threadId": "thr_fake", "n": 1}}), flush=True)
        print("}{ garbage", flush=True)
        print(json.dumps({"id": 999, "result": {}}), flush=True)
        print(json.dumps({"method": "second/note", "params": {"n": 2}}), flush=True)
"#;

#[tokio::test]
async fn malformed_app_server_output_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script_codex(dir.path(), GARBAGE_CODEX);
    let options = InstanceOptions::new(bin, dir.path().canonicalize().unwrap());
    let held = codex::spawn(options).unwrap();
    let (handle, mut events) = held.start().unwrap();
    let mut next = async || {
        tokio::time::timeout(EVENT_TIMEOUT, events.recv())
            .await
            .expect("an event")
            .expect("open channel")
    };
    match next().await {
        InstanceEvent::Started {
            thread_id,
            codex_version,
            model,
            ..
        } => {
            assert_eq!(thread_id, "thr_fake");
            assert_eq!(codex_version, "9.9.9");
            assert_eq!(model.as_deref(), Some("m"));
        }
        other => panic!("{other:?}"),
    }
    for expected in ["first/note", "second/note"] {
        match next().await {
            InstanceEvent::Notification { method, ids, .. } => {
                assert_eq!(method, expected);
                if expected == "first/note" {
                    assert_eq!(ids.thread_id.as_deref(), Some("thr_fake"));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    handle.call(InstanceCommand::Stop).await.unwrap();
    assert!(matches!(
        next().await,
        InstanceEvent::Stopped {
            reason: StopReason::Stopped,
            ..
        }
    ));
}

#[tokio::test]
async fn a_codex_that_exits_at_once_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script_codex(
        dir.path(),
        "#!/bin/sh\necho 'codex: cannot start, config broken' >&2\nexit 3\n",
    );
    let held = codex::spawn(InstanceOptions::new(bin, dir.path().to_path_buf())).unwrap();
    let (_handle, mut events) = held.start().unwrap();
    let failed = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&failed, InstanceEvent::Failed { message } if message.contains("exit code 3")),
        "{failed:?}"
    );
    let stopped = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .unwrap()
        .unwrap();
    match stopped {
        InstanceEvent::Stopped {
            reason,
            exit_code,
            stderr_tail,
            ..
        } => {
            assert_eq!(reason, StopReason::Failed);
            assert_eq!(exit_code, Some(3));
            assert!(stderr_tail.unwrap_or_default().contains("config broken"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_codex_binary_is_a_spawn_error() {
    let err = codex::spawn(InstanceOptions::new(
        "/nonexistent/codex".into(),
        std::env::temp_dir(),
    ))
    .err()
    .expect("no such binary");
    assert!(
        runner::error_chain(&err).contains("/nonexistent/codex"),
        "{err}"
    );
}

/// A `codex` that asks for user input (refused) and withdraws an approval.
const SCRIPTED_CODEX: &str = r#"#!/usr/bin/env python3
import json, sys
def send(obj):
    print(json.dumps(obj), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    method = msg.get("method")
    if method == "initialize":
        send({"id": msg["id"], "result": {"userAgent": "kandan-runner/1.0.0"}})
    elif method == "thread/start":
        send({"id": msg["id"], "result": {"thread": {"id": "thr_s"}}})
        send({"id": 77, "method": "item/tool/requestUserInput",
              "params": {"threadId": "thr_s", "turnId": "u1", "itemId": "i0", "questions": []}})
    elif "id" in msg and msg["id"] == 77:
        send({"method": "test/answered", "params": {"answer": msg}})
        send({"id": 78, "method": "item/commandExecution/requestApproval",
              "params": {"threadId": "thr_s", "turnId": "u1", "itemId": "i1", "command": "make", "cwd": "/x", "startedAtMs": 1}})
        send({"method": "serverRequest/resolved", "params": {"threadId": "thr_s", "requestId": 78}})
        send({"method": "test/done", "params": {}})
"#;

#[tokio::test]
async fn other_server_requests_are_refused_and_withdrawn_approvals_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script_codex(dir.path(), SCRIPTED_CODEX);
    let held = codex::spawn(InstanceOptions::new(
        bin,
        dir.path().canonicalize().unwrap(),
    ))
    .unwrap();
    let pid = held.pid();
    let (handle, events) = held.start().unwrap();
    let mut instance = Instance {
        handle,
        events,
        seen: Vec::new(),
        thread_id: "thr_s".into(),
        pid,
    };
    instance.next().await;
    let refused = instance.notification("runner/serverRequestRefused").await;
    assert_eq!(refused["method"], "item/tool/requestUserInput");
    assert_eq!(refused["requestId"], 77);
    let answered = instance.notification("test/answered").await;
    assert_eq!(answered["answer"]["id"], 77);
    assert!(answered["answer"]["error"]["code"].is_i64(), "{answered}");
    assert!(answered["answer"].get("result").is_none());
    let request = instance.approval().await;
    assert_eq!(request.command.as_deref(), Some("make"));
    let withdrawn = instance.resolution().await;
    assert_eq!(withdrawn, (request.request_id.clone(), None, true));
    instance.notification("test/done").await;
    let err = instance
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap_err();
    assert_eq!(err.code().to_string(), "unknown_request");
    instance.stop().await;
}

#[tokio::test]
async fn stop_during_the_handshake_does_not_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    // Never answers.
    let bin = script_codex(dir.path(), "#!/bin/sh\nexec sleep 1000\n");
    let held = codex::spawn(InstanceOptions::new(bin, dir.path().to_path_buf())).unwrap();
    let pid = held.pid();
    let (handle, mut events) = held.start().unwrap();
    // A turn asked for before the start waits for it, and fails with it.
    let early = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .call(InstanceCommand::StartTurn(StartTurn {
                    instance_id: String::new(),
                    text: "too early".into(),
                    client_turn_id: None,
                }))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    handle.call(InstanceCommand::Stop).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let stopped = events.recv().await.unwrap();
    assert!(
        matches!(
            stopped,
            InstanceEvent::Stopped {
                reason: StopReason::Stopped,
                ..
            }
        ),
        "{stopped:?}"
    );
    assert_eq!(early.await.unwrap().unwrap_err(), CommandError::Stopped);
    assert!(!codex::group_alive(pid));
}

/// A `codex` that starts a daemon of its own session (as a sandbox does
/// for the agent's commands) and then serves the handshake.
const DAEMON_CODEX: &str = r#"#!/usr/bin/env python3
import json, subprocess, sys
marker = sys.argv[0] + "-daemon"
subprocess.Popen(["sh", "-c", "sleep 900; true", marker], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"id": msg["id"], "result": {"userAgent": "x/1"}}), flush=True)
    elif msg.get("method") == "thread/start":
        print(json.dumps({"id": msg["id"], "result": {"thread": {"id": "thr_d"}}}), flush=True)
"#;

#[tokio::test]
async fn stop_ends_what_the_app_server_started_in_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script_codex(dir.path(), DAEMON_CODEX);
    let marker = format!("{}-daemon", bin.display());
    let held = codex::spawn(InstanceOptions::new(bin, dir.path().to_path_buf())).unwrap();
    let (handle, mut events) = held.start().unwrap();
    let started = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(started, InstanceEvent::Started { .. }),
        "{started:?}"
    );
    assert!(!processes_with(&marker).is_empty(), "the daemon runs");
    handle.call(InstanceCommand::Stop).await.unwrap();
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "a process of another session survived stop"
    );
}

/// A `codex` that reports which runner variables it got.
const ENV_CODEX: &str = r#"#!/usr/bin/env python3
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"id": msg["id"], "result": {"userAgent": "x/1"}}), flush=True)
    elif msg.get("method") == "thread/start":
        print(json.dumps({"id": msg["id"], "result": {"thread": {"id": "thr_e"}}}), flush=True)
        names = ["KANDAN_TOKEN", "KANDAN_URL", "KANDAN_RUNNER_TREE", "KANDAN_CODEX_INSTANCE", "CODEX_HOME"]
        print(json.dumps({"method": "test/env", "params": {n: os.environ.get(n) for n in names}}), flush=True)
"#;

#[tokio::test]
async fn the_token_never_reaches_the_app_server() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script_codex(dir.path(), ENV_CODEX);
    let mut options = InstanceOptions::new(bin, dir.path().to_path_buf());
    options.marker = "tree-1".into();
    // Even when handed over explicitly.
    options.env = vec![
        ("KANDAN_TOKEN".into(), "secret".into()),
        ("CODEX_HOME".into(), "/somewhere".into()),
    ];
    let held = codex::spawn(options).unwrap();
    let (handle, events) = held.start().unwrap();
    let mut instance = Instance {
        handle,
        events,
        seen: Vec::new(),
        thread_id: "thr_e".into(),
        pid: 0,
    };
    instance.next().await;
    let env = instance.notification("test/env").await;
    assert_eq!(env["KANDAN_TOKEN"], Value::Null);
    assert_eq!(env["KANDAN_URL"], Value::Null);
    assert_eq!(env["KANDAN_RUNNER_TREE"], "tree-1");
    assert!(env["KANDAN_CODEX_INSTANCE"].is_string());
    assert_eq!(env["CODEX_HOME"], "/somewhere");
    instance.stop().await;
}

/// A `codex` that, once the thread is open, writes N delta notifications
/// 0.2 ms apart (a fast model; a flood would measure queueing instead),
/// each stamped with CLOCK_MONOTONIC.
const FLOOD_CODEX: &str = r#"#!/usr/bin/env python3
import json, sys, time
n = int(sys.argv[0].rsplit("-", 1)[1])
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        print(json.dumps({"id": msg["id"], "result": {"userAgent": "x/1"}}), flush=True)
    elif msg.get("method") == "thread/start":
        print(json.dumps({"id": msg["id"], "result": {"thread": {"id": "thr_f"}}}), flush=True)
        for i in range(n):
            note = {"method": "item/agentMessage/delta",
                    "params": {"threadId": "thr_f", "turnId": "u", "itemId": "m", "delta": f"{i},",
                               "sentNs": time.clock_gettime_ns(time.CLOCK_MONOTONIC)}}
            sys.stdout.write(json.dumps(note) + "\n")
            sys.stdout.flush()
            time.sleep(0.0002)
        print(json.dumps({"method": "test/done", "params": {}}), flush=True)
"#;

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Runner-added latency, from the app-server's line written to the event
/// in the caller's hands, at flush 0 (printed; the order and text are
/// checked).
#[tokio::test]
async fn latency_from_the_app_servers_line_to_the_event() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let bin = script_codex(dir.path(), FLOOD_CODEX);
    let bin = {
        let named = dir.path().join(format!("codex-{N}"));
        std::fs::rename(&bin, &named).unwrap();
        named
    };
    let mut options = InstanceOptions::new(bin, dir.path().to_path_buf());
    options.stream_flush = Duration::ZERO;
    let held = codex::spawn(options).unwrap();
    let (handle, mut events) = held.start().unwrap();
    let mut latencies = Vec::with_capacity(N);
    let mut text = String::new();
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
            .await
            .unwrap()
            .unwrap();
        let now = monotonic_ns();
        match event {
            InstanceEvent::Notification { method, params, .. }
                if method == "item/agentMessage/delta" =>
            {
                let params = params.value();
                latencies.push(now.saturating_sub(params["sentNs"].as_u64().unwrap()));
                text.push_str(params["delta"].as_str().unwrap());
            }
            InstanceEvent::Notification { method, .. } if method == "test/done" => break,
            _ => {}
        }
    }
    assert_eq!(latencies.len(), N);
    let expected: String = (0..N).map(|i| format!("{i},")).collect();
    assert_eq!(text, expected);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((N as f64 * q) as usize).min(N - 1)] as f64 / 1000.0;
    println!(
        "{N} notifications at flush 0: latency p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    handle.call(InstanceCommand::Stop).await.unwrap();
}
