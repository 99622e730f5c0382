//! What reading a control accepts and refuses, and the ids a refusal
//! echoes: the behaviour of `Control::parse`. The names and fields of the
//! contract are checked once, in `wire/tests.rs`.

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::wire::controls::*;
use crate::wire::fields::{self, *};
use crate::wire::parse::{ControlRejection, Problem};
use crate::wire::{ControlErrorEvent, ErrorCode, Event};

/// The `control_error` a rejection is answered with.
fn error_of(rejection: &ControlRejection) -> ControlErrorEvent {
    match rejection.to_event() {
        Event::ControlError(error) => error,
        other => panic!("not a control_error: {other:?}"),
    }
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

fn parse(value: Value) -> Control {
    Control::parse(&raw(&value)).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn reject(value: Value) -> Box<ControlRejection> {
    match Control::parse(&raw(&value)) {
        Ok(control) => panic!("{value} parsed as {control:?}"),
        Err(rejection) => rejection,
    }
}

fn assert_invalid(value: Value, field: &str) {
    let rejection = reject(value.clone());
    assert_eq!(rejection.code(), ErrorCode::InvalidControl, "{value}");
    let message = rejection.problem.to_string();
    assert!(message.contains(field), "{value}: {message}");
}

fn missing(value: Value, field: &str) {
    let rejection = reject(value.clone());
    assert_eq!(
        rejection.problem,
        Problem::Invalid(format!("missing field `{field}`")),
        "{value}"
    );
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers::of(pairs)
}

#[test]
fn resolve_port_forward_request() {
    let control = parse(
        json!({"type": "resolve_port_forward_request", "instanceId": "i1",
        "requestId": "r1", "decision": "approve", "actorUserId": 7, "actorSlug": "ann", "extra": 1}),
    );
    assert_eq!(
        control,
        Control::ResolvePortForwardRequest(ResolvePortForwardRequest {
            instance_id: "i1".into(),
            request_id: "r1".into(),
            decision: Decision::Approve,
            actor_user_id: Some(ActorId::Int(7)),
            actor_slug: Some("ann".into()),
        })
    );
    let control = parse(
        json!({"type": "resolve_port_forward_request", "instanceId": "i1",
        "requestId": "r1", "decision": "deny", "actorUserId": "u-7", "actorSlug": null}),
    );
    let Control::ResolvePortForwardRequest(resolve) = control else {
        panic!()
    };
    assert_eq!(resolve.decision, Decision::Deny);
    assert_eq!(resolve.actor_user_id, Some(ActorId::Str("u-7".into())));
    assert_eq!(resolve.actor_slug, None);
}

#[test]
fn resolve_errors() {
    let base = json!({"type": "resolve_port_forward_request", "instanceId": "i1", "requestId": "r1", "decision": "approve"});
    for (field, bad) in [
        ("decision", json!("maybe")),
        ("instanceId", json!(3)),
        ("actorUserId", json!([])),
    ] {
        let mut v = base.clone();
        v[field] = bad;
        assert_invalid(v, field);
    }
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("instanceId");
    let rejection = reject(v.clone());
    missing(v, "instanceId");
    assert_eq!(rejection.ids.request_id.as_deref(), Some("r1"));
    assert_eq!(
        error_of(&rejection).control_type,
        "resolve_port_forward_request"
    );
}

#[test]
fn forward_http_request_with_object_headers() {
    let control = parse(
        json!({"type": "forward_http_request", "requestId": "h1", "port": 5173,
        "method": "POST", "path": "/api", "queryString": "a=1",
        "headers": {"accept": "text/html", "cookie": ["a=1", "b=2"]},
        "bodyBase64": "aGVsbG8=", "acceptStreaming": true}),
    );
    let Control::ForwardHttpRequest(request) = control else {
        panic!()
    };
    assert_eq!(request.target, Target::Port(5173));
    assert_eq!(request.method.0, http::Method::POST);
    assert_eq!(request.path.0, "/api");
    assert_eq!(request.query_string.as_deref(), Some("a=1"));
    assert_eq!(
        request.headers,
        headers(&[
            ("accept", "text/html"),
            ("cookie", "a=1"),
            ("cookie", "b=2")
        ])
    );
    assert_eq!(&request.body.0[..], b"hello");
    assert!(request.accept_streaming);
}

#[test]
fn forward_http_request_with_pair_headers_and_defaults() {
    let control = parse(
        json!({"type": "forward_http_request", "requestId": "h1", "port": 65535,
        "method": "GET", "path": "/", "headers": [["x-a", "1"], ["x-a", "2"]]}),
    );
    let Control::ForwardHttpRequest(request) = control else {
        panic!()
    };
    assert_eq!(request.headers, headers(&[("x-a", "1"), ("x-a", "2")]));
    assert!(request.body.0.is_empty());
    assert!(!request.accept_streaming);
    assert_eq!(request.target, Target::Port(65535));
}

#[test]
fn forward_to_an_editor() {
    let control = parse(json!({"type": "forward_http_request", "requestId": "h1",
        "editorId": "ed-1", "method": "GET", "path": "/"}));
    let Control::ForwardHttpRequest(request) = control else {
        panic!()
    };
    assert_eq!(request.target, Target::Editor("ed-1".into()));
    let open = parse(json!({"type": "forward_websocket_open", "socketId": "s1",
        "editorId": "ed-1", "path": "/"}));
    let Control::ForwardWebsocketOpen(open) = open else {
        panic!()
    };
    assert_eq!(open.target, Target::Editor("ed-1".into()));
    assert_invalid(
        json!({"type": "forward_http_request", "requestId": "h1", "port": 80,
            "editorId": "ed-1", "method": "GET", "path": "/"}),
        "editorId",
    );
}

#[test]
fn forward_http_request_errors() {
    let base = json!({"type": "forward_http_request", "requestId": "h1", "port": 80, "method": "GET", "path": "/"});
    for (field, bad) in [
        ("port", json!(0)),
        ("port", json!(65536)),
        ("port", json!(-1)),
        ("port", json!("80")),
        ("port", json!(80.5)),
        ("method", json!("GE T")),
        ("method", json!(1)),
        ("path", json!("api")),
        ("path", json!("http://evil.example/")),
        ("bodyBase64", json!("not base64!")),
        ("bodyBase64", json!(12)),
        ("headers", json!("x")),
        ("headers", json!({"a": 1})),
        ("headers", json!({"a": ["1", 2]})),
        ("headers", json!([["a"]])),
        ("headers", json!([["a", "b", "c"]])),
        ("headers", json!([["a", 1]])),
        ("headers", json!([["bad name", "1"]])),
        ("headers", json!({"x-a": "line\nbreak"})),
        ("acceptStreaming", json!("yes")),
        ("queryString", json!(false)),
    ] {
        let mut v = base.clone();
        v[field] = bad;
        let rejection = reject(v.clone());
        assert_eq!(rejection.code(), ErrorCode::InvalidControl, "{v}");
        assert!(
            rejection.problem.to_string().contains(field),
            "{v}: {}",
            rejection.problem
        );
        assert_eq!(rejection.ids.request_id.as_deref(), Some("h1"));
        let event = error_of(&rejection);
        assert_eq!(event.control_type, "forward_http_request");
        assert_eq!(event.code, ErrorCode::InvalidControl);
    }
    for field in ["requestId", "method", "path"] {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        missing(v, field);
    }
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("port");
    assert_invalid(v, "port");
}

#[test]
fn null_optional_fields_count_as_absent() {
    let control = parse(
        json!({"type": "forward_http_request", "requestId": "h1", "port": 80,
        "method": "GET", "path": "/", "queryString": null, "instanceId": null}),
    );
    let Control::ForwardHttpRequest(request) = control else {
        panic!()
    };
    assert_eq!(request.query_string, None);
}

#[test]
fn header_floods_are_invalid_controls() {
    let many: Vec<Value> = (0..30_000)
        .map(|i| json!([format!("x-{i}"), "v"]))
        .collect();
    let big = "v".repeat(fields::MAX_HEADER_BYTES);
    let as_object: Map<String, Value> =
        (0..2_000).map(|i| (format!("x-{i}"), json!("v"))).collect();
    for (ty, id, headers) in [
        ("forward_http_request", "requestId", json!(many)),
        ("forward_websocket_open", "socketId", json!(many)),
        ("forward_http_request", "requestId", json!({"x-big": big})),
        (
            "forward_http_request",
            "requestId",
            json!({"x-many": vec!["v"; 1001]}),
        ),
        (
            "forward_websocket_open",
            "socketId",
            Value::Object(as_object),
        ),
    ] {
        let v = json!({"type": ty, id: "f1", "port": 80, "method": "GET", "path": "/", "headers": headers});
        let rejection = reject(v);
        assert_eq!(rejection.code(), ErrorCode::InvalidControl, "{ty}");
        assert!(rejection.problem.to_string().contains("1000 pairs"), "{ty}");
        let event = error_of(&rejection);
        assert_eq!(event.control_type, ty);
        let echoed = event.request_id.or(event.socket_id);
        assert_eq!(echoed.as_deref(), Some("f1"), "{ty}");
    }
    // Exactly at the caps is fine.
    let at_cap: Vec<Value> = (0..MAX_HEADER_PAIRS)
        .map(|i| json!([format!("x-{i}"), "v"]))
        .collect();
    parse(
        json!({"type": "forward_http_request", "requestId": "h", "port": 80, "method": "GET", "path": "/", "headers": at_cap}),
    );
    let at_bytes = "v".repeat(fields::MAX_HEADER_BYTES - 1);
    parse(
        json!({"type": "forward_http_request", "requestId": "h", "port": 80, "method": "GET", "path": "/", "headers": {"x": at_bytes}}),
    );
}

#[test]
fn websocket_controls() {
    let open = parse(
        json!({"type": "forward_websocket_open", "socketId": "s1", "port": 5173,
        "path": "/", "queryString": "token=x", "headers": {"sec-websocket-protocol": "vite-hmr"}}),
    );
    let Control::ForwardWebsocketOpen(open) = open else {
        panic!()
    };
    assert_eq!(open.socket_id, "s1");
    assert_eq!(open.target, Target::Port(5173));
    assert_eq!(open.query_string.as_deref(), Some("token=x"));
    assert_eq!(
        open.headers,
        headers(&[("sec-websocket-protocol", "vite-hmr")])
    );
    for (name, opcode) in [
        ("text", Opcode::Text),
        ("binary", Opcode::Binary),
        ("ping", Opcode::Ping),
        ("pong", Opcode::Pong),
    ] {
        let send = parse(
            json!({"type": "forward_websocket_send", "socketId": "s1", "opcode": name, "bodyBase64": "AQID"}),
        );
        assert_eq!(
            send,
            Control::ForwardWebsocketSend(ForwardWebsocketSend {
                socket_id: "s1".into(),
                opcode,
                body: Body(bytes::Bytes::from_static(&[1, 2, 3])),
            })
        );
    }
    let close =
        parse(json!({"type": "forward_websocket_close", "instanceId": "i", "socketId": "s1"}));
    assert_eq!(
        close,
        Control::ForwardWebsocketClose(ForwardWebsocketClose {
            socket_id: "s1".into()
        })
    );
}

#[test]
fn websocket_errors_keep_the_socket_id() {
    for v in [
        json!({"type": "forward_websocket_send", "socketId": "s9", "opcode": "close", "bodyBase64": ""}),
        json!({"type": "forward_websocket_send", "socketId": "s9", "opcode": "text"}),
        json!({"type": "forward_websocket_send", "socketId": "s9", "opcode": "text", "bodyBase64": "%%%"}),
        json!({"type": "forward_websocket_open", "socketId": "s9", "port": 70000, "path": "/"}),
        json!({"type": "forward_websocket_open", "socketId": "s9", "port": 80}),
    ] {
        let rejection = reject(v.clone());
        assert_eq!(rejection.code(), ErrorCode::InvalidControl, "{v}");
        assert_eq!(rejection.ids.socket_id.as_deref(), Some("s9"), "{v}");
    }
    assert_invalid(
        json!({"type": "forward_websocket_send", "socketId": "s", "opcode": "close", "bodyBase64": ""}),
        "opcode",
    );
    missing(json!({"type": "forward_websocket_close"}), "socketId");
}

#[test]
fn update_runner_config() {
    let control = parse(
        json!({"type": "update_runner_config", "allowedCwds": ["/work", "/home/me/x"], "configVersion": 5}),
    );
    assert_eq!(
        control,
        Control::UpdateRunnerConfig(UpdateRunnerConfig {
            allowed_cwds: vec![
                AbsolutePath("/work".into()),
                AbsolutePath("/home/me/x".into())
            ],
            config_version: Some(5),
        })
    );
    for bad in [
        json!({"type": "update_runner_config", "allowedCwds": ["/ok", "relative/dir"]}),
        json!({"type": "update_runner_config", "allowedCwds": "/work"}),
        json!({"type": "update_runner_config", "allowedCwds": [1]}),
    ] {
        assert_invalid(bad, "allowedCwds");
    }
    assert_invalid(
        json!({"type": "update_runner_config", "allowedCwds": [], "configVersion": -1}),
        "configVersion",
    );
    missing(json!({"type": "update_runner_config"}), "allowedCwds");
}

#[test]
fn editor_controls() {
    let editor = parse(
        json!({"type": "start_local_editor", "requestId": "e1", "cwd": "/work",
        "browserBaseUrl": "https://k/x",
        "collaboration": {"extensionAssetPath": "/a.vsix", "serverAssetPath": "/s", "room": 3}}),
    );
    let Control::StartLocalEditor(editor) = editor else {
        panic!()
    };
    assert_eq!(editor.request_id.as_deref(), Some("e1"));
    assert_eq!(editor.cwd, std::path::Path::new("/work"));
    assert_eq!(editor.browser_base_url.as_deref(), Some("https://k/x"));
    assert_eq!(editor.collaboration.unwrap()["room"], json!(3));
    missing(json!({"type": "start_local_editor"}), "cwd");
    // A relative cwd parses: the cwd policy refuses it (`cwd_not_allowed`).
    let Control::StartLocalEditor(relative) =
        parse(json!({"type": "start_local_editor", "cwd": "rel"}))
    else {
        panic!()
    };
    assert_eq!(relative.cwd, std::path::Path::new("rel"));
    assert_eq!(
        parse(json!({"type": "stop_local_editor", "editorId": "ed"})),
        Control::StopLocalEditor(StopLocalEditor {
            editor_id: "ed".into()
        })
    );
    missing(json!({"type": "stop_local_editor"}), "editorId");
}

#[test]
fn instance_controls() {
    let start = parse(
        json!({"type": "start_instance", "cwd": "/w", "threadId": "t",
        "launchTui": false, "model": "m", "reasoningEffort": "high", "approvalPolicy": "never",
        "sandbox": "workspace-write", "fast": true}),
    );
    assert_eq!(
        start,
        Control::StartInstance(StartInstance {
            instance_id: None,
            cwd: Some("/w".into()),
            thread_id: Some("t".into()),
            launch_tui: false,
            model: Some("m".into()),
            reasoning_effort: Some("high".into()),
            approval_policy: Some(ApprovalPolicy::Never),
            sandbox: Some(SandboxMode::WorkspaceWrite),
            fast: true,
        })
    );
    assert_eq!(
        parse(json!({"type": "start_instance"})),
        Control::StartInstance(StartInstance::default())
    );
    assert_invalid(json!({"type": "start_instance", "fast": "yes"}), "fast");
    assert_invalid(
        json!({"type": "start_instance", "approvalPolicy": "always"}),
        "approvalPolicy",
    );
    assert_invalid(
        json!({"type": "start_instance", "sandbox": "none"}),
        "sandbox",
    );
}

#[test]
fn turn_and_thread_controls() {
    assert_eq!(
        parse(json!({"type": "start_turn", "instanceId": "i1", "text": "hi", "clientTurnId": "c"})),
        Control::StartTurn(StartTurn {
            instance_id: "i1".into(),
            text: "hi".into(),
            client_turn_id: Some("c".into()),
        })
    );
    missing(json!({"type": "start_turn", "instanceId": "i1"}), "text");
    assert_eq!(
        parse(json!({"type": "interrupt_turn", "instanceId": "i1"})),
        Control::InterruptTurn(InterruptTurn {
            instance_id: "i1".into(),
            turn_id: None,
        })
    );
    assert_eq!(
        parse(
            json!({"type": "resolve_approval_request", "instanceId": "i1", "requestId": "a1",
            "decision": "approve", "forSession": true})
        ),
        Control::ResolveApprovalRequest(ResolveApprovalRequest {
            instance_id: "i1".into(),
            request_id: "a1".into(),
            decision: Decision::Approve,
            for_session: true,
            actor_user_id: None,
            actor_slug: None,
        })
    );
    let rejection = reject(
        json!({"type": "resolve_approval_request", "instanceId": "i1",
        "requestId": "a1", "decision": "later"}),
    );
    let event = error_of(&rejection);
    assert_eq!(event.instance_id.as_deref(), Some("i1"));
    assert_eq!(event.request_id.as_deref(), Some("a1"));
    assert_eq!(
        parse(json!({"type": "stop_instance", "instanceId": "i1"})),
        Control::StopInstance(StopInstance {
            instance_id: "i1".into()
        })
    );
    missing(json!({"type": "stop_instance"}), "instanceId");
    assert_eq!(
        parse(
            json!({"type": "read_thread", "instanceId": "i1", "threadId": "t1", "includeTurns": true})
        ),
        Control::ReadThread(ReadThread {
            instance_id: "i1".into(),
            thread_id: "t1".into(),
            include_turns: true,
        })
    );
    missing(
        json!({"type": "read_thread", "instanceId": "i1"}),
        "threadId",
    );
}

#[test]
fn unknown_and_untyped_controls() {
    let rejection = reject(json!({"type": "launch_rockets", "requestId": "x"}));
    assert_eq!(rejection.code(), ErrorCode::UnknownControl);
    let event = error_of(&rejection);
    assert_eq!(event.control_type, "launch_rockets");
    assert_eq!(event.request_id.as_deref(), Some("x"));

    for v in [json!({}), json!({"type": 3}), json!({"type": null})] {
        let rejection = reject(v);
        assert_eq!(rejection.problem, Problem::NoType);
        assert_eq!(rejection.code(), ErrorCode::InvalidControl);
        assert_eq!(error_of(&rejection).control_type, "");
    }
    for v in [json!([]), json!("x"), json!(null), json!(1)] {
        assert_eq!(reject(v).problem, Problem::NotAnObject);
    }
    // Ids of the wrong type are not echoed, and do not hide the real problem.
    let rejection = reject(json!({"type": "forward_websocket_close", "socketId": 7}));
    assert_eq!(rejection.ids.socket_id, None);
    assert!(rejection.problem.to_string().contains("socketId"));
}

#[test]
fn ids_of_other_json_types_are_left_out_and_the_rest_kept() {
    let rejection = reject(json!({
        "type": "start_turn", "requestId": 5, "socketId": {"a": [1, {"b": null}]},
        "editorId": [true, 1.5], "instanceId": "i1",
    }));
    assert_eq!(rejection.ids.control_type, "start_turn");
    assert_eq!(rejection.ids.instance_id.as_deref(), Some("i1"));
    assert_eq!(rejection.ids.request_id, None);
    assert_eq!(rejection.ids.socket_id, None);
    assert_eq!(rejection.ids.editor_id, None);
    let rejection = reject(json!({"type": null, "requestId": "r\u{e9}\"1"}));
    assert_eq!(rejection.problem, Problem::NoType);
    assert_eq!(rejection.ids.request_id.as_deref(), Some("r\u{e9}\"1"));
}

/// Controls that try to make the connection's one-pass read of a
/// forwarding control (`HotControl`) and the lenient read disagree: a
/// second `type`, one spelled with an escape, a repeated id, a `type`
/// inside a field. The one-pass read takes none of the smuggled ones (so
/// `Control::parse` answers them), and each is read exactly as the lenient
/// read alone would read it.
#[test]
fn a_smuggled_second_type_or_id_is_refused_as_before() {
    let request = r#""port":3000,"method":"GET","path":"/","headers":[],"bodyBase64":"""#;
    let refuse = |text: String| {
        let hot = serde_json::from_str::<crate::wire::HotControl>(&text);
        assert!(hot.is_err(), "the one-pass read took {text}: {hot:?}");
        match Control::parse(&RawValue::from_string(text.clone()).unwrap()) {
            Ok(control) => panic!("{text} parsed as {control:?}"),
            Err(rejection) => rejection,
        }
    };
    for text in [
        format!(
            r#"{{"type":"forward_http_cancel","requestId":"r","type":"forward_http_request",{request}}}"#
        ),
        format!(
            r#"{{"typ\u0065":"forward_http_cancel","requestId":"r","type":"forward_http_request",{request}}}"#
        ),
        format!(r#"{{"type":"forward_http_request","requestId":"r","requestId":"s",{request}}}"#),
        format!(
            r#"{{"type":"forward_http_request","requestId":"r","socketId":"a","socketId":"b",{request}}}"#
        ),
    ] {
        let rejection = refuse(text);
        assert_eq!(rejection.problem, Problem::NotAnObject);
        assert_eq!(rejection.ids.request_id, None);
    }
    // A `type` inside a field is that field's: the control's own is read,
    // by both.
    let text = concat!(
        r#"{"headers":{"type":"forward_http_cancel"},"requestId":"r","#,
        r#""type":"forward_http_request","port":3000,"method":"GET","path":"/","bodyBase64":""}"#
    );
    let parsed = Control::parse(&RawValue::from_string(text.into()).unwrap());
    match &parsed {
        Ok(Control::ForwardHttpRequest(req)) => {
            assert_eq!(req.headers, headers(&[("type", "forward_http_cancel")]));
        }
        other => panic!("{other:?}"),
    }
    let hot = serde_json::from_str::<crate::wire::HotControl>(text).map(|hot| hot.0);
    assert_eq!(hot.ok(), parsed.ok());
}
