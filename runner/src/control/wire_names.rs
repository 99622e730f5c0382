//! Every control and event against the field names of PROTOCOL.md sections
//! 3 and 4, copied here as the contract's tables: a renamed or missing
//! field fails here before another client notices.

use bytes::Bytes;
use serde_json::{Value, json};

use super::controls::{ActorId, Control, Decision, Opcode};
use super::events::*;
use crate::codex::{ApprovalKind, ApprovalRequest, Ids, InstanceEvent, StopReason};

/// Section 3: each control with all its fields.
const CONTROLS: &[(&str, &[&str])] = &[
    (
        "resolve_port_forward_request",
        &[
            "instanceId",
            "requestId",
            "decision",
            "actorUserId",
            "actorSlug",
        ],
    ),
    (
        "forward_http_request",
        &[
            "instanceId",
            "requestId",
            "port",
            "method",
            "path",
            "queryString",
            "headers",
            "bodyBase64",
            "acceptStreaming",
        ],
    ),
    ("forward_http_cancel", &["requestId"]),
    (
        "forward_websocket_open",
        &[
            "instanceId",
            "socketId",
            "port",
            "path",
            "queryString",
            "headers",
        ],
    ),
    (
        "forward_websocket_send",
        &["instanceId", "socketId", "opcode", "bodyBase64"],
    ),
    ("forward_websocket_close", &["instanceId", "socketId"]),
    (
        "update_runner_config",
        &["instanceId", "allowedCwds", "configVersion"],
    ),
    (
        "start_local_editor",
        &[
            "instanceId",
            "requestId",
            "cwd",
            "browserBaseUrl",
            "collaboration",
        ],
    ),
    ("stop_local_editor", &["editorId"]),
    (
        "start_instance",
        &[
            "instanceId",
            "cwd",
            "threadId",
            "launchTui",
            "model",
            "reasoningEffort",
            "approvalPolicy",
            "sandbox",
            "fast",
        ],
    ),
    ("start_turn", &["instanceId", "text", "clientTurnId"]),
    ("interrupt_turn", &["instanceId", "turnId"]),
    (
        "resolve_approval_request",
        &[
            "instanceId",
            "requestId",
            "decision",
            "forSession",
            "actorUserId",
            "actorSlug",
        ],
    ),
    ("stop_instance", &["instanceId"]),
    ("read_thread", &["instanceId", "threadId", "includeTurns"]),
];

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
fn every_control_reads_with_all_the_contracts_fields() {
    for (control_type, fields) in CONTROLS {
        let mut payload = serde_json::Map::new();
        payload.insert("type".into(), json!(control_type));
        for field in *fields {
            payload.insert((*field).into(), sample(field));
        }
        let text = Value::Object(payload).to_string();
        let raw = serde_json::value::RawValue::from_string(text.clone()).unwrap();
        let control = Control::parse(&raw).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(control.kind(), *control_type);
    }
    // Every type the parser knows is in the table.
    let known = [
        "resolve_port_forward_request",
        "forward_http_request",
        "forward_http_cancel",
        "forward_websocket_open",
        "forward_websocket_send",
        "forward_websocket_close",
        "update_runner_config",
        "start_local_editor",
        "stop_local_editor",
        "start_instance",
        "start_turn",
        "interrupt_turn",
        "resolve_approval_request",
        "stop_instance",
        "read_thread",
    ];
    assert_eq!(known.len(), CONTROLS.len());
}

/// Section 4: each event with all its fields (optional ones included).
const EVENTS: &[(&str, &[&str])] = &[
    (
        "runner_ready",
        &[
            "runnerId",
            "version",
            "backend",
            "backendReason",
            "configVersion",
            "listeners",
            "instances",
            "editors",
            "limits",
        ],
    ),
    (
        "port_forward_request",
        // `state`: ours, beside the contract's (unknown fields are ignored).
        &[
            "instanceId",
            "requestId",
            "port",
            "pid",
            "command",
            "label",
            "cwd",
            "addresses",
            "restarted",
            "state",
        ],
    ),
    ("port_forward_closed", &["instanceId", "requestId", "port"]),
    (
        "port_forward_resolved",
        &["requestId", "port", "decision", "actorUserId", "actorSlug"],
    ),
    (
        "forward_http_response",
        &["requestId", "status", "headers", "bodyBase64", "streaming"],
    ),
    (
        "forward_http_response_chunk",
        &["requestId", "seq", "bodyBase64", "done"],
    ),
    ("forward_websocket_opened", &["socketId", "protocol"]),
    (
        "forward_websocket_message",
        &["socketId", "opcode", "bodyBase64"],
    ),
    (
        "forward_websocket_closed",
        &["socketId", "code", "reason", "error"],
    ),
    ("runner_config_applied", &["configVersion", "allowedCwds"]),
    (
        "local_editor_started",
        &["requestId", "instanceId", "editorId", "cwd"],
    ),
    ("local_editor_stopped", &["editorId", "reason", "exitCode"]),
    // `seq` (and `gap`) on every event of an instance, as section 7 says,
    // also where the table of section 4 does not list them.
    (
        "instance_started",
        &[
            "instanceId",
            "threadId",
            "cwd",
            "model",
            "pid",
            "codexVersion",
            "tuiUrl",
            "seq",
            "gap",
        ],
    ),
    (
        "codex_notification",
        &["instanceId", "seq", "method", "params", "ids", "gap"],
    ),
    (
        "approval_request",
        &[
            "instanceId",
            "seq",
            "requestId",
            "kind",
            "threadId",
            "turnId",
            "itemId",
            "command",
            "cwd",
            "reason",
            "changes",
            "gap",
        ],
    ),
    (
        "approval_resolved",
        &[
            "instanceId",
            "seq",
            "requestId",
            "decision",
            "withdrawn",
            "actorUserId",
            "actorSlug",
            "gap",
        ],
    ),
    (
        "thread_read",
        &["instanceId", "threadId", "thread", "seq", "gap"],
    ),
    (
        "instance_stopped",
        &[
            "instanceId",
            "reason",
            "exitCode",
            "signal",
            "stderrTail",
            "seq",
            "gap",
        ],
    ),
    (
        "control_error",
        &[
            "controlType",
            "requestId",
            "socketId",
            "instanceId",
            "editorId",
            "code",
            "message",
        ],
    ),
];

fn s(text: &str) -> String {
    text.to_owned()
}

/// An instance's event as sent: with its instance, `seq` and a `gap`.
fn instance(event: InstanceEvent) -> Event {
    Event::Instance(InstanceWire {
        instance_id: s("i"),
        seq: 1,
        gap: true,
        event: event.to_json(0).unwrap(),
    })
}

/// One of each event, every optional field set.
fn every_event() -> Vec<Event> {
    let listener = ListenerInfo {
        instance_id: Some(s("i")),
        request_id: s("r"),
        port: 1,
        pid: 2,
        command: s("c"),
        label: s("l"),
        cwd: Some(s("/w")),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    vec![
        Event::RunnerReady(RunnerReady {
            runner_id: s("r"),
            version: s("v"),
            backend: s("b"),
            backend_reason: Some(s("why")),
            config_version: 1,
            listeners: vec![],
            instances: vec![],
            editors: vec![],
            limits: Limits {
                max_request_body: 1,
                max_response_body: 1,
                max_web_socket_message: 1,
            },
        }),
        Event::PortForwardRequest(PortForwardRequest {
            listener: listener.clone(),
            restarted: true,
            state: ListenerState::Pending,
        }),
        Event::PortForwardClosed(PortForwardClosed {
            instance_id: Some(s("i")),
            request_id: s("r"),
            port: 1,
        }),
        Event::PortForwardResolved(PortForwardResolved {
            request_id: s("r"),
            port: 1,
            decision: Decision::Approve,
            actor_user_id: Some(ActorId::Int(1)),
            actor_slug: Some(s("a")),
        }),
        Event::ForwardHttpResponse(ForwardHttpResponse {
            request_id: s("r"),
            status: 200,
            headers: vec![],
            streaming: Some(true),
            body: Default::default(),
        }),
        Event::ForwardHttpResponseChunk(ForwardHttpResponseChunk {
            request_id: s("r"),
            seq: 0,
            done: true,
            body: Bytes::new().into(),
        }),
        Event::ForwardWebsocketOpened(ForwardWebsocketOpened {
            socket_id: s("s"),
            protocol: Some(s("p")),
        }),
        Event::ForwardWebsocketMessage(ForwardWebsocketMessage {
            socket_id: s("s"),
            opcode: Opcode::Text,
            body: Bytes::new().into(),
        }),
        Event::ForwardWebsocketClosed(ForwardWebsocketClosed {
            socket_id: s("s"),
            code: Some(1000),
            reason: Some(s("r")),
            error: Some(s("e")),
        }),
        Event::RunnerConfigApplied(RunnerConfigApplied {
            config_version: 1,
            allowed_cwds: vec![],
        }),
        Event::LocalEditorStarted(LocalEditorStarted {
            request_id: Some(s("r")),
            instance_id: Some(s("i")),
            editor_id: s("e"),
            cwd: s("/w"),
        }),
        Event::LocalEditorStopped(LocalEditorStopped {
            editor_id: s("e"),
            reason: s("stopped"),
            exit_code: Some(0),
        }),
        instance(InstanceEvent::Started {
            thread_id: s("t"),
            cwd: "/w".into(),
            model: Some(s("m")),
            pid: 1,
            codex_version: s("0"),
            tui_url: Some(s("ws://127.0.0.1:1")),
        }),
        instance(InstanceEvent::Notification {
            method: s("m"),
            params: json!({}),
            ids: Ids::default(),
        }),
        instance(InstanceEvent::ApprovalRequest(ApprovalRequest {
            request_id: s("r"),
            kind: ApprovalKind::Command,
            thread_id: s("t"),
            turn_id: Some(s("u")),
            item_id: Some(s("it")),
            command: Some(s("ls")),
            cwd: Some(s("/w")),
            reason: Some(s("why")),
            changes: Some(json!({})),
        })),
        instance(InstanceEvent::ApprovalResolved {
            request_id: s("r"),
            decision: Some(Decision::Deny),
            withdrawn: true,
            actor_user_id: Some(ActorId::Str(s("u"))),
            actor_slug: Some(s("a")),
        }),
        instance(InstanceEvent::ThreadRead {
            thread_id: s("t"),
            thread: json!({}),
        }),
        instance(InstanceEvent::Stopped {
            reason: StopReason::Exited,
            exit_code: Some(1),
            signal: Some(9),
            stderr_tail: Some(s("x")),
        }),
        Event::ControlError(ControlErrorEvent {
            control_type: s("t"),
            request_id: Some(s("r")),
            socket_id: Some(s("s")),
            instance_id: Some(s("i")),
            editor_id: Some(s("e")),
            code: ErrorCode::Unsupported,
            message: s("m"),
        }),
    ]
}

#[test]
fn every_event_writes_the_contracts_fields_and_no_others() {
    let events = every_event();
    assert_eq!(events.len(), EVENTS.len());
    for (event, (event_type, fields)) in events.iter().zip(EVENTS) {
        assert_eq!(event.kind(), *event_type);
        let Value::Object(json) = serde_json::to_value(event).unwrap() else {
            panic!("{event_type} is not an object")
        };
        assert_eq!(json["type"], json!(event_type));
        let mut written: Vec<&str> = json.keys().map(String::as_str).collect();
        written.retain(|key| *key != "type");
        written.sort_unstable();
        let mut expected = fields.to_vec();
        expected.sort_unstable();
        assert_eq!(written, expected, "{event_type}");
    }
}
