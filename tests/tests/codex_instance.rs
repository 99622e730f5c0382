//! Codex instances against the real `codex app-server` (the pinned fixture)
//! and the fake model: turns, batching, approvals, interrupt and the idle
//! timeout, read and resume, eight at once, `launchTui`, and where a dev
//! server the agent starts runs.

use std::time::Duration;

use integration_tests::codex::driver::{EVENT_TIMEOUT, Instance, completed_item, rig};
use integration_tests::codex::procs::{descends_from, processes_with};
use integration_tests::codex::{CodexDirs, codex_bin};
use integration_tests::fake_model::{FakeModel, Reply};
use runner::codex::{
    self, ApprovalKind, CommandError, Decision, InstanceCommand, InstanceEvent, StopReason,
};
use runner::wire::InstanceState;
use runner::wire::{InterruptTurn, ReadThread};

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
        assert_eq!(instance.handle.status().state, Some(InstanceState::Idle));
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
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap();
    let resolved = instance.resolution().await;
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
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap_err();
    assert_eq!(err.code().to_string(), "unknown_request");
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
        .resolve(&request.request_id, Decision::Deny, false)
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
        .resolve(&request.request_id, Decision::Approve, false)
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
        .resolve(&request.request_id, Decision::Approve, true)
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
        .call(InstanceCommand::Interrupt(InterruptTurn {
            instance_id: String::new(),
            turn_id: None,
        }))
        .await
        .unwrap();
    let withdrawn = instance.resolution().await;
    assert_eq!(withdrawn, (request.request_id.clone(), None, true));
    assert!(instance.handle.status().pending_approvals.is_empty());
    let err = instance
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::UnknownRequest { .. }), "{err}");
    assert_eq!(err.code().to_string(), "unknown_request");
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
    assert_eq!(instance.handle.status().state, Some(InstanceState::Running));
    instance
        .handle
        .call(InstanceCommand::Interrupt(InterruptTurn {
            instance_id: String::new(),
            turn_id: Some(turn_id.clone()),
        }))
        .await
        .unwrap();
    let completed = instance.notification("turn/completed").await;
    assert_eq!(completed["turn"]["id"], turn_id.as_str());
    assert_eq!(completed["turn"]["status"], "interrupted", "{completed}");
    assert_eq!(instance.handle.status().state, Some(InstanceState::Idle));
    let err = instance
        .handle
        .call(InstanceCommand::Interrupt(InterruptTurn {
            instance_id: String::new(),
            turn_id: None,
        }))
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
    assert_eq!(instance.handle.status().state, Some(InstanceState::Running));
    instance
        .resolve(&request.request_id, Decision::Approve, false)
        .await
        .unwrap();
    let completed = instance.notification("turn/completed").await;
    assert_eq!(completed["turn"]["status"], "completed", "{completed}");
    assert!(dirs.cwd().join("late.txt").exists());
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
        .call(InstanceCommand::ReadThread(ReadThread {
            instance_id: String::new(),
            thread_id: thread_id.clone(),
            include_turns: true,
        }))
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
    options.start.thread_id = Some(thread_id.clone());
    let mut resumed = Instance::start(options).await;
    assert_eq!(resumed.thread_id, thread_id);
    resumed.turn("two").await;
    resumed.notification("turn/completed").await;
    // The model saw the first exchange again.
    assert!(model.requests()[1].to_string().contains("first answer"));
    resumed
        .handle
        .call(InstanceCommand::ReadThread(ReadThread {
            instance_id: String::new(),
            thread_id: thread_id.clone(),
            include_turns: true,
        }))
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
async fn launch_tui_drives_the_app_server_over_its_websocket() {
    let (model, dirs) = rig().await;
    model.push([Reply::text(&["over ", "the ", "socket"])]);
    let mut options = dirs.options(&model).unwrap();
    options.start.launch_tui = true;
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

/// Where a dev server the agent starts runs: for the detector it must be in
/// the app-server's tree and, to be forwarded, in the runner's network
/// namespace (under `workspace-write` only with `workspace_network`).
#[tokio::test]
async fn a_dev_server_the_agent_starts_is_in_the_instance_tree() {
    use runner::wire::SandboxMode::{DangerFullAccess, WorkspaceWrite};
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
        options.start.sandbox = Some(sandbox);
        options.workspace_network = workspace_network;
        let mut instance = Instance::start(options).await;
        instance.turn("serve the site").await;
        let request = instance.approval().await;
        instance
            .resolve(&request.request_id, Decision::Approve, false)
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
