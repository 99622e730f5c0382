//! Codex instances against the real `codex app-server` (the pinned fixture)
//! and the fake model: start, turns, batching, approvals, interrupt, read and
//! resume, stop and crash, malformed output, eight at once.

use std::path::Path;
use std::time::Duration;

use integration_tests::codex::{CodexDirs, codex_bin};
use integration_tests::fake_model::{FakeModel, Reply};
use runner::codex::{
    self, ApprovalKind, ApprovalRequest, Command, CommandError, Decision, InstanceEvent,
    InstanceHandle, InstanceOptions, InstanceState, Reply as CommandReply, StopReason,
};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long one expected event may take (Codex is slow on a loaded machine).
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

struct Instance {
    handle: InstanceHandle,
    events: mpsc::Receiver<InstanceEvent>,
    /// Everything received so far, in order.
    seen: Vec<InstanceEvent>,
    thread_id: String,
    pid: u32,
}

impl Instance {
    async fn start(options: InstanceOptions) -> Instance {
        let held = codex::spawn(options)
            .unwrap_or_else(|err| panic!("spawn codex app-server: {}", runner::error_chain(&err)));
        let pid = held.pid();
        assert!(pid > 0);
        let (handle, events) = held
            .start()
            .unwrap_or_else(|err| panic!("start the instance: {}", runner::error_chain(&err)));
        let mut instance = Instance {
            handle,
            events,
            seen: Vec::new(),
            thread_id: String::new(),
            pid,
        };
        match instance.next().await {
            InstanceEvent::Started {
                thread_id,
                pid: started_pid,
                codex_version,
                ..
            } => {
                assert_eq!(started_pid, pid);
                assert_eq!(
                    codex_version,
                    integration_tests::codex::pinned_version().unwrap()
                );
                instance.thread_id = thread_id;
            }
            other => panic!("expected Started first, got {other:?}"),
        }
        instance
    }

    async fn next(&mut self) -> InstanceEvent {
        let event = tokio::time::timeout(EVENT_TIMEOUT, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no event within {EVENT_TIMEOUT:?}; seen: {:#?}",
                    self.methods()
                )
            })
            .expect("the events channel closed");
        self.seen.push(event.clone());
        event
    }

    /// Waits for the first event `pick` accepts.
    async fn until<T>(&mut self, mut pick: impl FnMut(&InstanceEvent) -> Option<T>) -> T {
        loop {
            let event = self.next().await;
            if let Some(found) = pick(&event) {
                return found;
            }
            if let InstanceEvent::Stopped { .. } = event {
                panic!("stopped while waiting; seen: {:#?}", self.methods());
            }
        }
    }

    async fn notification(&mut self, method: &str) -> Value {
        self.until(|event| match event {
            InstanceEvent::Notification {
                method: m, params, ..
            } if m == method => Some(params.clone()),
            _ => None,
        })
        .await
    }

    async fn approval(&mut self) -> ApprovalRequest {
        self.until(|event| match event {
            InstanceEvent::ApprovalRequest(request) => Some(request.clone()),
            _ => None,
        })
        .await
    }

    async fn turn(&mut self, text: &str) -> String {
        match self
            .handle
            .call(Command::StartTurn {
                text: text.into(),
                client_turn_id: Some("client-1".into()),
            })
            .await
            .expect("turn/start")
        {
            CommandReply::TurnStarted { turn_id } => turn_id,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    async fn resolve(
        &self,
        request_id: &str,
        approve: bool,
        for_session: bool,
    ) -> Result<CommandReply, CommandError> {
        self.handle
            .call(Command::ResolveApproval {
                request_id: request_id.into(),
                approve,
                for_session,
            })
            .await
    }

    async fn stop(&mut self) -> InstanceEvent {
        self.handle.call(Command::Stop).await.expect("stop");
        self.until(|event| matches!(event, InstanceEvent::Stopped { .. }).then(|| event.clone()))
            .await
    }

    fn methods(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|event| match event {
                InstanceEvent::Notification { method, .. } => method.clone(),
                other => format!("{other:?}").chars().take(120).collect(),
            })
            .collect()
    }

    /// The concatenated `item/agentMessage/delta` texts seen, and how many
    /// notifications carried them.
    fn agent_text(&self) -> (String, usize) {
        let deltas: Vec<&str> = self
            .seen
            .iter()
            .filter_map(|event| match event {
                InstanceEvent::Notification { method, params, .. }
                    if method == "item/agentMessage/delta" =>
                {
                    params["delta"].as_str()
                }
                _ => None,
            })
            .collect();
        (deltas.concat(), deltas.len())
    }
}

async fn rig() -> (FakeModel, CodexDirs) {
    codex_bin().expect("the Codex fixture");
    (
        FakeModel::start().await.expect("fake model"),
        CodexDirs::new().expect("temporary directories"),
    )
}

fn completed_item<'a>(instance: &'a Instance, kind: &str) -> Option<&'a Value> {
    instance.seen.iter().find_map(|event| match event {
        InstanceEvent::Notification { method, params, .. }
            if method == "item/completed" && params["item"]["type"] == kind =>
        {
            Some(&params["item"])
        }
        _ => None,
    })
}

#[tokio::test]
async fn text_turn_deltas_are_batched_without_changing_the_text() {
    let deltas: Vec<String> = (0..60).map(|i| format!("w{i} ")).collect();
    let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
    let expected = deltas.concat();
    let mut counts = Vec::new();
    for flush_ms in [100, 0] {
        let (model, dirs) = rig().await;
        model.push([Reply::text(&deltas)]);
        let mut options = dirs.options(&model).unwrap();
        options.stream_flush = Duration::from_millis(flush_ms);
        let mut instance = Instance::start(options).await;
        assert_eq!(instance.handle.status().state, InstanceState::Idle);
        instance.turn("say it").await;
        instance.notification("turn/completed").await;
        let (text, count) = instance.agent_text();
        assert_eq!(text, expected, "flush {flush_ms} ms");
        let completed = completed_item(&instance, "agentMessage").expect("the message completed");
        assert_eq!(completed["text"], expected.as_str());
        println!(
            "flush {flush_ms} ms: {count} delta notifications for {} deltas",
            deltas.len()
        );
        counts.push(count);
        assert!(model.requests()[0]["input"].to_string().contains("say it"));
        instance.stop().await;
    }
    assert!(
        counts[0] < deltas.len() / 2,
        "batched at 100 ms: {counts:?}"
    );
    assert_eq!(counts[1], deltas.len(), "one per delta at 0 ms");
}

#[tokio::test]
async fn approved_command_runs_and_its_output_is_in_item_completed() {
    let (model, dirs) = rig().await;
    model.push([
        Reply::exec_command("call_1", "echo ran > made.txt; echo kandan-output-42"),
        Reply::text(&["done"]),
    ]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    let turn_id = instance.turn("run it").await;
    let request = instance.approval().await;
    assert_eq!(request.kind, ApprovalKind::Command);
    assert_eq!(request.thread_id, instance.thread_id);
    assert_eq!(request.turn_id.as_deref(), Some(turn_id.as_str()));
    assert!(
        request
            .command
            .as_deref()
            .unwrap_or_default()
            .contains("made.txt"),
        "{request:?}"
    );
    assert_eq!(
        instance.handle.status().pending_approvals,
        vec![request.request_id.clone()]
    );
    assert!(!dirs.cwd().join("made.txt").exists(), "ran before approval");
    instance
        .resolve(&request.request_id, true, false)
        .await
        .unwrap();
    let resolved = instance
        .until(|event| match event {
            InstanceEvent::ApprovalResolved {
                request_id,
                decision,
                withdrawn,
            } => Some((request_id.clone(), *decision, *withdrawn)),
            _ => None,
        })
        .await;
    assert_eq!(
        resolved,
        (request.request_id.clone(), Some(Decision::Approve), false)
    );
    instance.notification("turn/completed").await;
    let item = completed_item(&instance, "commandExecution").expect("command item completed");
    assert_eq!(item["status"], "completed", "{item}");
    assert!(
        item["aggregatedOutput"]
            .as_str()
            .unwrap_or_default()
            .contains("kandan-output-42"),
        "{item}"
    );
    assert!(dirs.cwd().join("made.txt").exists());
    // The model got the command's output back.
    assert!(
        model.requests()[1]
            .to_string()
            .contains("function_call_output")
    );
    // The same decision again: already answered.
    let err = instance
        .resolve(&request.request_id, true, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_request");
    instance.stop().await;
}

#[tokio::test]
async fn denied_command_does_not_run() {
    let (model, dirs) = rig().await;
    model.push([
        Reply::exec_command("call_1", "echo ran > made.txt"),
        Reply::text(&["fine"]),
    ]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("run it").await;
    let request = instance.approval().await;
    instance
        .resolve(&request.request_id, false, false)
        .await
        .unwrap();
    instance.notification("turn/completed").await;
    let item = completed_item(&instance, "commandExecution").expect("command item completed");
    assert_eq!(item["status"], "declined", "{item}");
    assert!(
        !dirs.cwd().join("made.txt").exists(),
        "a denied command ran"
    );
    assert!(instance.seen.iter().any(|event| matches!(
        event,
        InstanceEvent::ApprovalResolved {
            decision: Some(Decision::Deny),
            withdrawn: false,
            ..
        }
    )));
    instance.stop().await;
}

#[tokio::test]
async fn file_change_approval_carries_the_changes_and_applies_them() {
    let (model, dirs) = rig().await;
    let patch = "*** Begin Patch\n*** Add File: notes.txt\n+from kandan\n*** End Patch\n";
    model.push([
        Reply::apply_patch("call_p", patch),
        Reply::text(&["patched"]),
    ]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("edit").await;
    let request = instance.approval().await;
    assert_eq!(request.kind, ApprovalKind::FileChange);
    let changes = request.changes.clone().expect("changes");
    assert!(changes.to_string().contains("notes.txt"), "{changes}");
    assert!(!dirs.cwd().join("notes.txt").exists());
    instance
        .resolve(&request.request_id, true, false)
        .await
        .unwrap();
    instance.notification("turn/completed").await;
    assert_eq!(
        std::fs::read_to_string(dirs.cwd().join("notes.txt")).unwrap(),
        "from kandan\n"
    );
    instance.stop().await;
}

#[tokio::test]
async fn approval_for_the_session_is_not_asked_again() {
    let (model, dirs) = rig().await;
    let command = "echo again >> log.txt";
    model.push([
        Reply::exec_command("call_1", command),
        Reply::exec_command("call_2", command),
        Reply::text(&["twice"]),
    ]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("twice").await;
    let request = instance.approval().await;
    instance
        .resolve(&request.request_id, true, true)
        .await
        .unwrap();
    instance.notification("turn/completed").await;
    let asked = instance
        .seen
        .iter()
        .filter(|event| matches!(event, InstanceEvent::ApprovalRequest(_)))
        .count();
    assert_eq!(asked, 1, "asked again: {:#?}", instance.methods());
    assert_eq!(
        std::fs::read_to_string(dirs.cwd().join("log.txt")).unwrap(),
        "again\nagain\n"
    );
    instance.stop().await;
}

#[tokio::test]
async fn withdrawn_approval_is_reported_and_a_late_decision_is_unknown() {
    let (model, dirs) = rig().await;
    model.push([Reply::exec_command("call_1", "echo ran > made.txt")]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("run it").await;
    let request = instance.approval().await;
    // Interrupting the turn withdraws its pending approval.
    instance
        .handle
        .call(Command::Interrupt { turn_id: None })
        .await
        .unwrap();
    let withdrawn = instance
        .until(|event| match event {
            InstanceEvent::ApprovalResolved {
                request_id,
                decision,
                withdrawn,
            } => Some((request_id.clone(), *decision, *withdrawn)),
            _ => None,
        })
        .await;
    assert_eq!(withdrawn, (request.request_id.clone(), None, true));
    assert!(instance.handle.status().pending_approvals.is_empty());
    let err = instance
        .resolve(&request.request_id, true, false)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::UnknownRequest { .. }), "{err}");
    assert_eq!(err.code(), "unknown_request");
    assert!(!dirs.cwd().join("made.txt").exists());
    instance.stop().await;
}

#[tokio::test]
async fn interrupt_ends_a_slow_turn() {
    let (model, dirs) = rig().await;
    model.push([Reply::hang("thinking...")]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    let turn_id = instance.turn("take your time").await;
    instance.notification("item/agentMessage/delta").await;
    assert_eq!(instance.handle.status().state, InstanceState::Running);
    instance
        .handle
        .call(Command::Interrupt {
            turn_id: Some(turn_id.clone()),
        })
        .await
        .unwrap();
    let completed = instance.notification("turn/completed").await;
    assert_eq!(completed["turn"]["id"], turn_id.as_str());
    assert_eq!(completed["turn"]["status"], "interrupted", "{completed}");
    assert_eq!(instance.handle.status().state, InstanceState::Idle);
    let err = instance
        .handle
        .call(Command::Interrupt { turn_id: None })
        .await
        .unwrap_err();
    assert_eq!(err, CommandError::NoRunningTurn);
    instance.stop().await;
}

#[tokio::test]
async fn idle_turn_is_interrupted_after_the_timeout() {
    let (model, dirs) = rig().await;
    model.push([Reply::hang("and then nothing")]);
    let mut options = dirs.options(&model).unwrap();
    options.turn_idle_timeout = Duration::from_secs(2);
    let mut instance = Instance::start(options).await;
    instance.turn("hang").await;
    let completed = instance.notification("turn/completed").await;
    assert_eq!(completed["turn"]["status"], "interrupted", "{completed}");
    instance.stop().await;
}

#[tokio::test]
async fn read_thread_with_turns_then_resume_it_in_a_new_instance() {
    let (model, dirs) = rig().await;
    model.push([Reply::text(&["first ", "answer"]), Reply::text(&["second"])]);
    let mut instance = Instance::start(dirs.options(&model).unwrap()).await;
    instance.turn("one").await;
    instance.notification("turn/completed").await;
    let thread_id = instance.thread_id.clone();
    instance
        .handle
        .call(Command::ReadThread {
            thread_id: thread_id.clone(),
            include_turns: true,
        })
        .await
        .unwrap();
    let thread = instance
        .until(|event| match event {
            InstanceEvent::ThreadRead {
                thread_id: id,
                thread,
            } => Some((id.clone(), thread.clone())),
            _ => None,
        })
        .await;
    assert_eq!(thread.0, thread_id);
    assert_eq!(thread.1["id"], thread_id.as_str());
    let turns = thread.1["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 1);
    assert!(thread.1.to_string().contains("first answer"));
    instance.stop().await;

    let mut options = dirs.options(&model).unwrap();
    options.thread_id = Some(thread_id.clone());
    let mut resumed = Instance::start(options).await;
    assert_eq!(resumed.thread_id, thread_id);
    resumed.turn("two").await;
    resumed.notification("turn/completed").await;
    // The model saw the first exchange again.
    assert!(model.requests()[1].to_string().contains("first answer"));
    resumed
        .handle
        .call(Command::ReadThread {
            thread_id: thread_id.clone(),
            include_turns: true,
        })
        .await
        .unwrap();
    let thread = resumed
        .until(|event| match event {
            InstanceEvent::ThreadRead { thread, .. } => Some(thread.clone()),
            _ => None,
        })
        .await;
    assert_eq!(thread["turns"].as_array().map(Vec::len), Some(2));
    resumed.stop().await;
}

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
        .call(Command::Interrupt { turn_id: None })
        .await
        .unwrap_err();
    assert_eq!(err, CommandError::Stopped);
    assert_eq!(instance.handle.status().state, InstanceState::Stopped);
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
    handle.call(Command::Stop).await.unwrap();
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

#[tokio::test]
async fn eight_instances_at_once() {
    let model = FakeModel::start().await.unwrap();
    codex_bin().expect("the Codex fixture");
    let dirs: Vec<CodexDirs> = (0..8).map(|_| CodexDirs::new().unwrap()).collect();
    let started = std::time::Instant::now();
    let runs = dirs.iter().map(|dirs| {
        let options = dirs.options(&model).unwrap();
        async move {
            let mut instance = Instance::start(options).await;
            instance.turn("hello").await;
            instance.notification("turn/completed").await;
            let (text, _) = instance.agent_text();
            let stopped = instance.stop().await;
            (instance.thread_id.clone(), text, stopped, instance.pid)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    println!(
        "eight instances started, ran a turn and stopped in {:?}",
        started.elapsed()
    );
    let mut threads: Vec<String> = results.iter().map(|r| r.0.clone()).collect();
    threads.sort();
    threads.dedup();
    assert_eq!(threads.len(), 8, "each instance has its own thread");
    for (_, text, stopped, pid) in results {
        assert_eq!(text, "ok");
        assert!(matches!(
            stopped,
            InstanceEvent::Stopped {
                reason: StopReason::Stopped,
                ..
            }
        ));
        assert!(!codex::group_alive(pid));
    }
}

#[tokio::test]
async fn launch_tui_drives_the_app_server_over_its_websocket() {
    let (model, dirs) = rig().await;
    model.push([Reply::text(&["over ", "the ", "socket"])]);
    let mut options = dirs.options(&model).unwrap();
    options.launch_tui = true;
    let held = codex::spawn(options).unwrap();
    let (handle, mut events) = held.start().unwrap();
    let first = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .unwrap()
        .unwrap();
    let InstanceEvent::Started {
        tui_url, thread_id, ..
    } = first
    else {
        panic!("{first:?}")
    };
    let url = tui_url.expect("a tuiUrl");
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    // Without the capability token the listener refuses.
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err()
    );
    let mut instance = Instance {
        handle,
        events,
        seen: Vec::new(),
        thread_id,
        pid: 0,
    };
    instance.turn("hello").await;
    instance.notification("turn/completed").await;
    assert_eq!(instance.agent_text().0, "over the socket");
    let token_dirs = || {
        let prefix = format!("kandan-codex-tui-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    };
    assert_eq!(token_dirs(), 1, "the token file exists while it runs");
    instance.stop().await;
    assert_eq!(
        token_dirs(),
        0,
        "the token file is removed with the instance"
    );
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a process whose program is `program` has `needle` in its command
/// line (the command itself, not the login shell that starts it).
fn runs_program(needle: &str, program: &str) -> bool {
    processes_with(needle).into_iter().any(|pid| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let first = raw.split(|&b| b == 0).next().unwrap_or_default();
        first.rsplit(|&b| b == b'/').next() == Some(program.as_bytes())
    })
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
        .resolve(&request.request_id, true, false)
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
        .resolve(&request.request_id, true, false)
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

#[tokio::test]
async fn a_turn_waiting_for_a_decision_is_not_idle() {
    let (model, dirs) = rig().await;
    model.push([
        Reply::exec_command("call_1", "echo late > late.txt"),
        Reply::text(&["after"]),
    ]);
    let mut options = dirs.options(&model).unwrap();
    options.turn_idle_timeout = Duration::from_secs(1);
    let mut instance = Instance::start(options).await;
    instance.turn("ask me").await;
    let request = instance.approval().await;
    // Longer than the idle timeout: the pending decision keeps the turn.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(instance.handle.status().state, InstanceState::Running);
    instance
        .resolve(&request.request_id, true, false)
        .await
        .unwrap();
    let completed = instance.notification("turn/completed").await;
    assert_eq!(completed["turn"]["status"], "completed", "{completed}");
    assert!(dirs.cwd().join("late.txt").exists());
    instance.stop().await;
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

fn script_codex(dir: &Path, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("codex");
    std::fs::write(&bin, text).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

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
    let withdrawn = instance
        .until(|event| match event {
            InstanceEvent::ApprovalResolved {
                request_id,
                decision,
                withdrawn,
            } => Some((request_id.clone(), *decision, *withdrawn)),
            _ => None,
        })
        .await;
    assert_eq!(withdrawn, (request.request_id.clone(), None, true));
    instance.notification("test/done").await;
    let err = instance
        .resolve(&request.request_id, true, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_request");
    instance.stop().await;
}

#[tokio::test]
async fn five_thousand_deltas_keep_their_text_and_batch_tenfold() {
    let deltas: Vec<String> = (0..5000).map(|i| format!("{i},")).collect();
    let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
    let expected = deltas.concat();
    let mut counts = Vec::new();
    for flush_ms in [0, 50] {
        let (model, dirs) = rig().await;
        model.push([Reply::text(&deltas)]);
        let mut options = dirs.options(&model).unwrap();
        options.stream_flush = Duration::from_millis(flush_ms);
        let mut instance = Instance::start(options).await;
        let started = std::time::Instant::now();
        instance.turn("stream").await;
        instance.notification("turn/completed").await;
        let (text, count) = instance.agent_text();
        println!(
            "flush {flush_ms} ms: {count} notifications for {} deltas, turn in {:?}",
            deltas.len(),
            started.elapsed()
        );
        assert_eq!(text, expected, "flush {flush_ms} ms");
        counts.push(count);
        instance.stop().await;
    }
    assert_eq!(counts[0], deltas.len());
    assert!(
        counts[1] * 10 <= counts[0],
        "not ten times fewer: {counts:?}"
    );
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
                .call(Command::StartTurn {
                    text: "too early".into(),
                    client_turn_id: None,
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    handle.call(Command::Stop).await.unwrap();
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
    handle.call(Command::Stop).await.unwrap();
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

/// The parent of `pid`, from /proc/<pid>/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    while pid > 1 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(parent) => pid = parent,
            None => return false,
        }
    }
    false
}

/// Where a dev server the agent starts runs: for the detector it must be in
/// the app-server's tree and, to be forwarded, in the runner's network
/// namespace (under `workspace-write` only with `workspace_network`).
#[tokio::test]
async fn a_dev_server_the_agent_starts_is_in_the_instance_tree() {
    use codex::SandboxMode::{DangerFullAccess, WorkspaceWrite};
    for (sandbox, workspace_network, shared) in [
        (DangerFullAccess, true, true),
        (WorkspaceWrite, true, true),
        (WorkspaceWrite, false, false),
    ] {
        let (model, dirs) = rig().await;
        let site = dirs.cwd().join(format!("site-{}", std::process::id()));
        std::fs::create_dir(&site).unwrap();
        let marker = site.to_string_lossy().into_owned();
        model.push([
            Reply::exec_command(
                "call_1",
                &format!("python3 -m http.server 0 --bind 127.0.0.1 --directory {marker}"),
            ),
            Reply::text(&["serving"]),
        ]);
        let mut options = dirs.options(&model).unwrap();
        options.sandbox = Some(sandbox);
        options.workspace_network = workspace_network;
        let mut instance = Instance::start(options).await;
        instance.turn("serve the site").await;
        let request = instance.approval().await;
        instance
            .resolve(&request.request_id, true, false)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
        let server = loop {
            // The python process itself (not the shell that runs it).
            let found = processes_with(&marker).into_iter().find(|&pid| {
                let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let program = raw.split(|&b| b == 0).next().unwrap_or_default();
                let name = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
                name.starts_with(b"python")
            });
            if let Some(pid) = found {
                break pid;
            }
            if std::time::Instant::now() > deadline {
                let ps = std::process::Command::new("sh")
                    .args(["-c", "ps -eo pid,ppid,sid,cmd | grep -E 'http.server|codex' | grep -v grep | cut -c1-200"])
                    .output()
                    .unwrap();
                while let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(100), instance.events.recv()).await
                {
                    instance.seen.push(event);
                }
                panic!(
                    "the server never started: {}\n{:#?}",
                    String::from_utf8_lossy(&ps.stdout),
                    instance.methods()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let netns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let same_netns = netns(server) == netns(std::process::id());
        let in_tree = descends_from(server, instance.pid);
        println!(
            "{sandbox:?}, workspace_network {workspace_network}: server {server} in the app-server's tree: {in_tree}, in our network namespace: {same_netns}"
        );
        assert!(in_tree, "{sandbox:?}: not a descendant of the app-server");
        assert_eq!(
            same_netns, shared,
            "{sandbox:?}, workspace_network {workspace_network}"
        );
        instance.stop().await;
        assert!(processes_with(&marker).is_empty());
    }
}
