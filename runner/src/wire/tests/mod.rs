//! The wire format, once: every control and event against the contract's
//! tables in `docs/protocol.md` (read from the file, so a renamed, missing
//! or extra field or type fails here), the exact JSON of each event, and
//! every way a control can be wrong.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::*;

mod parse;

const PROTOCOL: &str = include_str!("../../../../docs/protocol.md");

/// The rows of the first table under `## {section}`: each `type` with the
/// names in its last column (parenthesised notes left out, `?` dropped).
fn table(section: &str) -> Vec<(String, BTreeSet<String>)> {
    let start = PROTOCOL.find(&format!("\n## {section}\n")).expect(section);
    let rows = PROTOCOL[start..].lines().skip(2);
    let rows = rows.skip_while(|line| !line.starts_with('|'));
    let rows = rows.take_while(|line| line.starts_with('|')).skip(2);
    rows.map(|row| {
        let cells: Vec<&str> = row.split(" | ").collect();
        let kind = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        (kind, names(&without_notes(cells[cells.len() - 1])))
    })
    .collect()
}

/// `text` without its parenthesised parts.
fn without_notes(text: &str) -> String {
    let mut depth = 0;
    let kept = text.chars().filter(|&c| {
        depth += i32::from(c == '(') - i32::from(c == ')');
        depth == 0 && c != ')'
    });
    kept.collect()
}

/// The `code` spans of `text`, without a trailing `?`.
fn names(text: &str) -> BTreeSet<String> {
    let spans = text.split('`').skip(1).step_by(2);
    spans
        .map(|name| name.trim_end_matches('?').to_owned())
        .collect()
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

fn parse(value: Value) -> Control {
    Control::parse(&raw(&value)).unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// A valid value for a control field of that name.
fn sample(field: &str) -> Value {
    match field {
        "decision" => json!("approve"),
        "port" => json!(8080),
        "method" => json!("GET"),
        "path" => json!("/x"),
        "headers" => json!([["accept", "*/*"]]),
        "bodyBase64" => json!("AQID"),
        "opcode" => json!("binary"),
        "approvalPolicy" => json!("on-request"),
        "sandbox" => json!("workspace-write"),
        "allowedCwds" => json!(["/work"]),
        "cwd" => json!("/work"),
        "configVersion" | "actorUserId" => json!(7),
        "collaboration" => json!({"extensionAssetPath": "/e.vsix", "serverAssetPath": "/s"}),
        "acceptStreaming" | "launchTui" | "fast" | "forSession" | "includeTurns" => json!(true),
        _ => json!(format!("{field}-1")),
    }
}

#[test]
fn every_control_of_the_contract_reads_with_all_its_fields() {
    let controls = table("Controls");
    for (kind, fields) in &controls {
        let mut payload = Map::new();
        payload.insert("type".into(), json!(kind));
        // `port` or `editorId`: both in the table, one at a time here.
        for field in fields
            .iter()
            .filter(|f| *f != "editorId" || !fields.contains("port"))
        {
            payload.insert(field.clone(), sample(field));
        }
        let control = parse(Value::Object(payload));
        assert_eq!(control.kind().name(), *kind);
    }
    // The parser knows exactly the contract's types: serde lists them.
    let err = ControlType::deserialize("none".into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())
        .unwrap_err();
    let known = names(&err[err.find("expected").unwrap()..]);
    let documented: BTreeSet<String> = controls.into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(known, documented);
}

fn s(text: &str) -> String {
    text.to_owned()
}

/// An instance's event as sent, with its instance, `seq` and `gap`.
fn instance(seq: u64, gap: bool, event: InstanceEvent) -> Event {
    Event::Instance(InstanceWire {
        instance_id: s("i1"),
        seq,
        gap,
        event: event.to_json(0).unwrap(),
    })
}

fn listener(instance_id: Option<&str>, cwd: Option<&str>) -> ListenerInfo {
    ListenerInfo {
        instance_id: instance_id.map(s),
        request_id: s("req-1"),
        port: 5173,
        pid: 4242,
        command: s("node vite"),
        label: s("node"),
        cwd: cwd.map(s),
        addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
    }
}

fn limits(bytes: usize) -> Limits {
    Limits {
        max_request_body: bytes,
        max_response_body: bytes + 1,
        max_web_socket_message: bytes + 2,
    }
}

/// Events with every optional field set, and their exact JSON.
fn full_events() -> Vec<(Event, Value)> {
    vec![
        (
            Event::RunnerReady(RunnerReady {
                runner_id: s("r1"),
                version: s("0.1.0"),
                backend: s("procfs"),
                backend_reason: Some(s("ebpf unavailable: CAP_BPF missing")),
                config_version: 3,
                listeners: vec![ReadyListener {
                    listener: listener(None, Some("/x")),
                    state: ListenerState::Approved,
                }],
                instances: vec![ReadyInstance {
                    instance_id: s("i1"),
                    thread_id: Some(s("t1")),
                    cwd: s("/x"),
                    state: InstanceState::Running,
                    last_seq: 9,
                    pending_approvals: vec![s("a1")],
                }],
                editors: vec![ReadyEditor {
                    editor_id: s("e1"),
                    cwd: s("/x"),
                }],
                limits: limits(1),
            }),
            json!({"type": "runner_ready", "runnerId": "r1", "version": "0.1.0", "backend": "procfs",
                "backendReason": "ebpf unavailable: CAP_BPF missing", "configVersion": 3,
                "listeners": [{"requestId": "req-1", "port": 5173, "pid": 4242, "command": "node vite",
                    "label": "node", "cwd": "/x", "addresses": ["127.0.0.1", "::1"], "state": "approved"}],
                "instances": [{"instanceId": "i1", "threadId": "t1", "cwd": "/x", "state": "running",
                    "lastSeq": 9, "pendingApprovals": ["a1"]}],
                "editors": [{"editorId": "e1", "cwd": "/x"}],
                "limits": {"maxRequestBody": 1, "maxResponseBody": 2, "maxWebSocketMessage": 3}}),
        ),
        (
            // `state`: the runner's, beside the contract's fields (unknown
            // fields are ignored).
            Event::PortForwardRequest(PortForwardRequest {
                listener: listener(Some("i1"), Some("/x")),
                restarted: true,
                state: ListenerState::Pending,
            }),
            json!({"type": "port_forward_request", "instanceId": "i1", "requestId": "req-1",
                "port": 5173, "pid": 4242, "command": "node vite", "label": "node", "cwd": "/x",
                "addresses": ["127.0.0.1", "::1"], "restarted": true, "state": "pending"}),
        ),
        (
            Event::PortForwardClosed(PortForwardClosed {
                instance_id: Some(s("i1")),
                request_id: s("req-1"),
                port: 8000,
            }),
            json!({"type": "port_forward_closed", "instanceId": "i1", "requestId": "req-1", "port": 8000}),
        ),
        (
            Event::PortForwardResolved(PortForwardResolved {
                request_id: s("req-1"),
                port: 8000,
                decision: Decision::Deny,
                actor_user_id: Some(ActorId::Int(7)),
                actor_slug: Some(s("ann")),
            }),
            json!({"type": "port_forward_resolved", "requestId": "req-1", "port": 8000,
                "decision": "deny", "actorUserId": 7, "actorSlug": "ann"}),
        ),
        (
            Event::ForwardHttpResponse(ForwardHttpResponse {
                request_id: s("h1"),
                status: 200,
                headers: Headers::of(&[("content-type", "text/plain"), ("set-cookie", "a=1")]),
                body: Bytes::from_static(b"hello").into(),
                streaming: Some(true),
            }),
            json!({"type": "forward_http_response", "requestId": "h1", "status": 200,
                "headers": [["content-type", "text/plain"], ["set-cookie", "a=1"]],
                "bodyBase64": "aGVsbG8=", "streaming": true}),
        ),
        (
            Event::ForwardHttpResponseChunk(ForwardHttpResponseChunk {
                request_id: s("h1"),
                seq: 2,
                body: Bytes::from_static(&[0, 255]).into(),
                done: false,
            }),
            json!({"type": "forward_http_response_chunk", "requestId": "h1", "seq": 2,
                "bodyBase64": "AP8=", "done": false}),
        ),
        (
            Event::ForwardWebsocketOpened(ForwardWebsocketOpened {
                socket_id: s("s1"),
                protocol: Some(s("vite-hmr")),
            }),
            json!({"type": "forward_websocket_opened", "socketId": "s1", "protocol": "vite-hmr"}),
        ),
        (
            Event::ForwardWebsocketMessage(ForwardWebsocketMessage {
                socket_id: s("s1"),
                opcode: Opcode::Binary,
                body: Bytes::from_static(&[1, 2, 3]).into(),
            }),
            json!({"type": "forward_websocket_message", "socketId": "s1", "opcode": "binary",
                "bodyBase64": "AQID"}),
        ),
        (
            Event::ForwardWebsocketClosed(ForwardWebsocketClosed {
                socket_id: s("s1"),
                code: Some(1000),
                reason: Some(s("bye")),
                error: Some(s("e")),
            }),
            json!({"type": "forward_websocket_closed", "socketId": "s1", "code": 1000,
                "reason": "bye", "error": "e"}),
        ),
        (
            Event::RunnerConfigApplied(RunnerConfigApplied {
                config_version: 4,
                allowed_cwds: vec![s("/work")],
            }),
            json!({"type": "runner_config_applied", "configVersion": 4, "allowedCwds": ["/work"]}),
        ),
        (
            Event::LocalEditorStarted(LocalEditorStarted {
                request_id: Some(s("r")),
                instance_id: Some(s("i1")),
                editor_id: s("e1"),
                cwd: s("/work"),
            }),
            json!({"type": "local_editor_started", "requestId": "r", "instanceId": "i1",
                "editorId": "e1", "cwd": "/work"}),
        ),
        (
            Event::LocalEditorStopped(LocalEditorStopped {
                editor_id: s("e1"),
                reason: EditorStopReason::CwdWithdrawn,
                exit_code: Some(0),
            }),
            json!({"type": "local_editor_stopped", "editorId": "e1", "reason": "cwd_not_allowed",
                "exitCode": 0}),
        ),
        (
            instance(
                1,
                true,
                InstanceEvent::Started {
                    thread_id: s("t"),
                    cwd: "/w".into(),
                    model: Some(s("m")),
                    pid: 7,
                    codex_version: s("0.171.0"),
                    tui_url: Some(s("ws://127.0.0.1:1")),
                },
            ),
            json!({"type": "instance_started", "instanceId": "i1", "seq": 1, "gap": true,
                "threadId": "t", "cwd": "/w", "model": "m", "pid": 7, "codexVersion": "0.171.0",
                "tuiUrl": "ws://127.0.0.1:1"}),
        ),
        (
            instance(
                3,
                true,
                InstanceEvent::Notification {
                    method: s("turn/started"),
                    params: Params::of(&json!({"threadId": "t"})),
                    ids: Ids::find(&json!({"threadId": "t"})),
                },
            ),
            json!({"type": "codex_notification", "instanceId": "i1", "seq": 3, "gap": true,
                "method": "turn/started", "params": {"threadId": "t"}, "ids": {"threadId": "t"}}),
        ),
        (
            instance(
                4,
                true,
                InstanceEvent::ApprovalRequest(ApprovalRequest {
                    request_id: s("approval-1"),
                    kind: ApprovalKind::FileChange,
                    thread_id: s("t"),
                    turn_id: Some(s("u")),
                    item_id: Some(s("it")),
                    command: Some(s("ls")),
                    cwd: Some(s("/w")),
                    reason: Some(s("why")),
                    changes: Some(json!([])),
                }),
            ),
            json!({"type": "approval_request", "instanceId": "i1", "seq": 4, "gap": true,
                "requestId": "approval-1", "kind": "file_change", "threadId": "t", "turnId": "u",
                "itemId": "it", "command": "ls", "cwd": "/w", "reason": "why", "changes": []}),
        ),
        (
            instance(
                5,
                true,
                InstanceEvent::ApprovalResolved {
                    request_id: s("approval-1"),
                    decision: Some(Decision::Approve),
                    withdrawn: true,
                    actor_user_id: Some(ActorId::Str(s("u"))),
                    actor_slug: Some(s("a")),
                },
            ),
            json!({"type": "approval_resolved", "instanceId": "i1", "seq": 5, "gap": true,
                "requestId": "approval-1", "decision": "approve", "withdrawn": true,
                "actorUserId": "u", "actorSlug": "a"}),
        ),
        (
            instance(
                6,
                true,
                InstanceEvent::ThreadRead {
                    thread_id: s("t"),
                    thread: json!({}),
                },
            ),
            json!({"type": "thread_read", "instanceId": "i1", "seq": 6, "gap": true,
                "threadId": "t", "thread": {}}),
        ),
        (
            instance(
                7,
                true,
                InstanceEvent::Stopped {
                    reason: StopReason::Exited,
                    exit_code: Some(1),
                    signal: Some(9),
                    stderr_tail: Some(s("x")),
                },
            ),
            json!({"type": "instance_stopped", "instanceId": "i1", "seq": 7, "gap": true,
                "reason": "exited", "exitCode": 1, "signal": 9, "stderrTail": "x"}),
        ),
        (
            ControlIds {
                editor_id: Some(s("e1")),
                ..ControlType::ForwardHttpRequest
                    .ids()
                    .request("h1")
                    .socket("s1")
                    .instance("i1")
            }
            .error(Failure::new(
                ErrorCode::PortNotApproved,
                "port 9 is not approved",
            )),
            json!({"type": "control_error", "controlType": "forward_http_request", "requestId": "h1",
                "socketId": "s1", "instanceId": "i1", "editorId": "e1", "code": "port_not_approved",
                "message": "port 9 is not approved"}),
        ),
    ]
}

/// Events with their optional fields left out, and their exact JSON.
fn bare_events() -> Vec<(Event, Value)> {
    vec![
        (
            Event::RunnerReady(RunnerReady {
                runner_id: s("r1"),
                version: s("0.1.0"),
                backend: s("ebpf"),
                backend_reason: None,
                config_version: 0,
                listeners: vec![],
                instances: vec![],
                editors: vec![],
                limits: limits(16),
            }),
            json!({"type": "runner_ready", "runnerId": "r1", "version": "0.1.0", "backend": "ebpf",
                "configVersion": 0, "listeners": [], "instances": [], "editors": [],
                "limits": {"maxRequestBody": 16, "maxResponseBody": 17, "maxWebSocketMessage": 18}}),
        ),
        (
            Event::PortForwardRequest(PortForwardRequest {
                listener: listener(None, None),
                restarted: false,
                state: ListenerState::Denied,
            }),
            json!({"type": "port_forward_request", "requestId": "req-1", "port": 5173, "pid": 4242,
                "command": "node vite", "label": "node", "addresses": ["127.0.0.1", "::1"],
                "restarted": false, "state": "denied"}),
        ),
        (
            Event::PortForwardClosed(PortForwardClosed {
                instance_id: None,
                request_id: s("req-1"),
                port: 8000,
            }),
            json!({"type": "port_forward_closed", "requestId": "req-1", "port": 8000}),
        ),
        (
            Event::ForwardWebsocketClosed(ForwardWebsocketClosed {
                socket_id: s("s1"),
                code: Some(1000),
                reason: Some(s("bye")),
                error: None,
            }),
            json!({"type": "forward_websocket_closed", "socketId": "s1", "code": 1000, "reason": "bye"}),
        ),
        (
            Event::LocalEditorStarted(LocalEditorStarted {
                request_id: None,
                instance_id: None,
                editor_id: s("e1"),
                cwd: s("/work"),
            }),
            json!({"type": "local_editor_started", "editorId": "e1", "cwd": "/work"}),
        ),
        (
            instance(
                1,
                false,
                InstanceEvent::Started {
                    thread_id: s("t"),
                    cwd: "/w".into(),
                    model: None,
                    pid: 7,
                    codex_version: s("0.171.0"),
                    tui_url: None,
                },
            ),
            json!({"type": "instance_started", "instanceId": "i1", "seq": 1, "threadId": "t",
                "cwd": "/w", "pid": 7, "codexVersion": "0.171.0"}),
        ),
        (
            instance(
                2,
                false,
                InstanceEvent::ApprovalResolved {
                    request_id: s("approval-2"),
                    decision: None,
                    withdrawn: false,
                    actor_user_id: None,
                    actor_slug: None,
                },
            ),
            json!({"type": "approval_resolved", "instanceId": "i1", "seq": 2,
                "requestId": "approval-2"}),
        ),
        (
            instance(
                3,
                false,
                InstanceEvent::Stopped {
                    reason: StopReason::Stopped,
                    exit_code: None,
                    signal: None,
                    stderr_tail: None,
                },
            ),
            json!({"type": "instance_stopped", "instanceId": "i1", "seq": 3, "reason": "stopped"}),
        ),
        (
            ControlIds::default().error(Failure::new(ErrorCode::InvalidControl, "m")),
            json!({"type": "control_error", "controlType": "", "code": "invalid_control", "message": "m"}),
        ),
    ]
}

#[test]
fn every_event_is_the_contracts_json() {
    for (event, expected) in full_events().into_iter().chain(bare_events()) {
        assert_eq!(serde_json::to_value(&event).unwrap(), expected);
        assert_eq!(json!(event.kind()), expected["type"]);
    }
}

#[test]
fn every_event_of_the_contract_has_all_its_fields_and_no_others() {
    let events = table("Events");
    let written = full_events();
    assert_eq!(written.len(), events.len());
    for ((event, json), (kind, fields)) in written.iter().zip(&events) {
        assert_eq!(json["type"], json!(kind));
        let mut expected = fields.clone();
        // `seq` and `gap` on every event of an instance (section 7), `state`
        // beside a request's fields (unknown fields are ignored).
        match event {
            Event::Instance(_) => expected.extend([s("seq"), s("gap")]),
            Event::PortForwardRequest(_) => expected.extend([s("state")]),
            _ => {}
        }
        let mut keys: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
        keys.remove("type");
        assert_eq!(keys, expected, "{kind}");
    }
}

#[test]
fn every_name_is_the_contracts() {
    let codes = [
        (ErrorCode::InvalidControl, "invalid_control"),
        (ErrorCode::UnknownControl, "unknown_control"),
        (ErrorCode::PortNotApproved, "port_not_approved"),
        (ErrorCode::PortNotListening, "port_not_listening"),
        (ErrorCode::UpstreamUnreachable, "upstream_unreachable"),
        (ErrorCode::UpstreamTimeout, "upstream_timeout"),
        (ErrorCode::BodyTooLarge, "body_too_large"),
        (ErrorCode::CwdNotAllowed, "cwd_not_allowed"),
        (ErrorCode::UnknownSocket, "unknown_socket"),
        (ErrorCode::Unsupported, "unsupported"),
        (ErrorCode::UnknownInstance, "unknown_instance"),
        (ErrorCode::UnknownRequest, "unknown_request"),
        (ErrorCode::UnknownEditor, "unknown_editor"),
        (ErrorCode::InstanceFailed, "instance_failed"),
        (ErrorCode::EditorFailed, "editor_failed"),
    ];
    for (code, name) in codes {
        assert_eq!(serde_json::to_value(code).unwrap(), json!(name));
        assert_eq!(code.to_string(), name);
    }
    let start = PROTOCOL.find("Error codes:").unwrap();
    let end = start + PROTOCOL[start..].find("\n\n").unwrap();
    let documented = names(&PROTOCOL[start..end]);
    let ours: BTreeSet<String> = codes.iter().map(|(_, name)| s(name)).collect();
    assert_eq!(ours, documented);
    let reasons = [
        (EditorStopReason::Stopped, "stopped"),
        (EditorStopReason::Exited, "exited"),
        (EditorStopReason::CwdWithdrawn, "cwd_not_allowed"),
        (EditorStopReason::Shutdown, "shutdown"),
    ];
    for (reason, name) in reasons {
        assert_eq!(serde_json::to_value(reason).unwrap(), json!(name));
        assert_eq!(reason.to_string(), name);
    }
}
