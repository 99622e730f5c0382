//! Controls Kandan sends to the runner (PROTOCOL.md section 3), parsed by
//! hand so that every way a control can be wrong gets its own clear message
//! and the ids of a broken control can still be echoed in the `control_error`.
//! Unknown fields are ignored; a `null` optional field counts as absent.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Map, Value};

use super::events::{ControlErrorEvent, ErrorCode};

/// One control, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    ResolvePortForwardRequest(ResolvePortForwardRequest),
    ForwardHttpRequest(ForwardHttpRequest),
    ForwardWebsocketOpen(ForwardWebsocketOpen),
    ForwardWebsocketSend(ForwardWebsocketSend),
    ForwardWebsocketClose(ForwardWebsocketClose),
    UpdateRunnerConfig(UpdateRunnerConfig),
    StartLocalEditor(StartLocalEditor),
    StartInstance(StartInstance),
    StopInstance(StopInstance),
    ReadThread(ReadThread),
}

/// `approve` / `deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approve" => Some(Decision::Approve),
            "deny" => Some(Decision::Deny),
            _ => None,
        }
    }
}

/// A Kandan user id, echoed back as it came (number or string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ActorId {
    Int(i64),
    Str(String),
}

/// WebSocket frame kinds carried by `forward_websocket_send` / `_message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Opcode {
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Ping (payload at most 125 bytes).
    Ping,
    /// Pong (payload at most 125 bytes).
    Pong,
}

impl Opcode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Opcode::Text => "text",
            Opcode::Binary => "binary",
            Opcode::Ping => "ping",
            Opcode::Pong => "pong",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(Opcode::Text),
            "binary" => Some(Opcode::Binary),
            "ping" => Some(Opcode::Ping),
            "pong" => Some(Opcode::Pong),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvePortForwardRequest {
    pub instance_id: String,
    pub request_id: String,
    pub decision: Decision,
    pub actor_user_id: Option<ActorId>,
    pub actor_slug: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardHttpRequest {
    pub instance_id: Option<String>,
    pub request_id: String,
    pub port: u16,
    /// A valid HTTP method token.
    pub method: String,
    /// Starts with `/`.
    pub path: String,
    pub query_string: Option<String>,
    /// Normalized to pairs, in the order received.
    pub headers: Vec<(String, String)>,
    /// Decoded `bodyBase64` (empty when absent).
    pub body: Vec<u8>,
    pub accept_streaming: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardWebsocketOpen {
    pub instance_id: Option<String>,
    pub socket_id: String,
    pub port: u16,
    pub path: String,
    pub query_string: Option<String>,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardWebsocketSend {
    pub instance_id: Option<String>,
    pub socket_id: String,
    pub opcode: Opcode,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardWebsocketClose {
    pub instance_id: Option<String>,
    pub socket_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRunnerConfig {
    pub instance_id: Option<String>,
    /// Absolute paths.
    pub allowed_cwds: Vec<PathBuf>,
    pub config_version: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StartLocalEditor {
    pub instance_id: Option<String>,
    pub request_id: Option<String>,
    pub cwd: PathBuf,
    pub browser_base_url: Option<String>,
    pub collaboration: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StartInstance {
    pub instance_id: Option<String>,
    pub cwd: Option<PathBuf>,
    pub launch_tui: Option<bool>,
    pub model: Option<String>,
    pub reasoning_effort: Option<String>,
    pub approval_policy: Option<String>,
    pub sandbox: Option<String>,
    pub fast: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StopInstance {
    pub instance_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReadThread {
    pub instance_id: String,
    pub thread_id: String,
    pub include_turns: Option<bool>,
}

/// A control that cannot be acted on; becomes a `control_error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{control_type:?} control refused: {problem}")]
pub struct ControlRejection {
    /// The `type` as received ("" when missing or not a string).
    pub control_type: String,
    pub request_id: Option<String>,
    pub socket_id: Option<String>,
    pub problem: Problem,
}

/// What is wrong with a control.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The payload is not a JSON object.
    #[error("control is not a json object")]
    NotAnObject,
    /// `type` is missing or not a string.
    #[error("control has no string `type`")]
    NoType,
    /// `type` names no control of the contract.
    #[error("unknown control type")]
    UnknownType,
    /// A required field is absent (or null).
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong JSON type or an invalid value.
    #[error("field `{field}` {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
}

impl ControlRejection {
    /// `unknown_control` for unknown types, `invalid_control` otherwise.
    pub fn code(&self) -> ErrorCode {
        match self.problem {
            Problem::UnknownType => ErrorCode::UnknownControl,
            _ => ErrorCode::InvalidControl,
        }
    }

    /// The event to send back.
    pub fn to_event(&self) -> ControlErrorEvent {
        ControlErrorEvent {
            control_type: self.control_type.clone(),
            request_id: self.request_id.clone(),
            socket_id: self.socket_id.clone(),
            code: self.code(),
            message: self.problem.to_string(),
        }
    }
}

impl Control {
    /// Parses the payload of a `control` push.
    pub fn parse(payload: &Value) -> Result<Control, ControlRejection> {
        let Value::Object(map) = payload else {
            return Err(rejection("", None, None, Problem::NotAnObject));
        };
        // Ids are read leniently first so that even a broken control is answered
        // with the ids Kandan needs to match the error to its request.
        let request_id = map
            .get("requestId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let socket_id = map
            .get("socketId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(control_type) = map.get("type").and_then(Value::as_str) else {
            return Err(rejection("", request_id, socket_id, Problem::NoType));
        };
        let fields = Fields(map);
        parse_typed(control_type, &fields)
            .map_err(|problem| rejection(control_type, request_id, socket_id, problem))
    }

    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::ResolvePortForwardRequest(_) => "resolve_port_forward_request",
            Control::ForwardHttpRequest(_) => "forward_http_request",
            Control::ForwardWebsocketOpen(_) => "forward_websocket_open",
            Control::ForwardWebsocketSend(_) => "forward_websocket_send",
            Control::ForwardWebsocketClose(_) => "forward_websocket_close",
            Control::UpdateRunnerConfig(_) => "update_runner_config",
            Control::StartLocalEditor(_) => "start_local_editor",
            Control::StartInstance(_) => "start_instance",
            Control::StopInstance(_) => "stop_instance",
            Control::ReadThread(_) => "read_thread",
        }
    }
}

fn rejection(
    control_type: &str,
    request_id: Option<String>,
    socket_id: Option<String>,
    problem: Problem,
) -> ControlRejection {
    ControlRejection {
        control_type: control_type.to_owned(),
        request_id,
        socket_id,
        problem,
    }
}

fn parse_typed(control_type: &str, f: &Fields<'_>) -> Result<Control, Problem> {
    Ok(match control_type {
        "resolve_port_forward_request" => {
            Control::ResolvePortForwardRequest(ResolvePortForwardRequest {
                instance_id: f.string("instanceId")?,
                request_id: f.string("requestId")?,
                decision: f.decision("decision")?,
                actor_user_id: f.opt_actor("actorUserId")?,
                actor_slug: f.opt_string("actorSlug")?,
            })
        }
        "forward_http_request" => Control::ForwardHttpRequest(ForwardHttpRequest {
            instance_id: f.opt_string("instanceId")?,
            request_id: f.string("requestId")?,
            port: f.port("port")?,
            method: f.method("method")?,
            path: f.path("path")?,
            query_string: f.opt_string("queryString")?,
            headers: f.headers("headers")?,
            body: f.opt_base64("bodyBase64")?.unwrap_or_default(),
            accept_streaming: f.opt_bool("acceptStreaming")?.unwrap_or(false),
        }),
        "forward_websocket_open" => Control::ForwardWebsocketOpen(ForwardWebsocketOpen {
            instance_id: f.opt_string("instanceId")?,
            socket_id: f.string("socketId")?,
            port: f.port("port")?,
            path: f.path("path")?,
            query_string: f.opt_string("queryString")?,
            headers: f.headers("headers")?,
        }),
        "forward_websocket_send" => Control::ForwardWebsocketSend(ForwardWebsocketSend {
            instance_id: f.opt_string("instanceId")?,
            socket_id: f.string("socketId")?,
            opcode: f.opcode("opcode")?,
            body: f
                .opt_base64("bodyBase64")?
                .ok_or(Problem::Missing("bodyBase64"))?,
        }),
        "forward_websocket_close" => Control::ForwardWebsocketClose(ForwardWebsocketClose {
            instance_id: f.opt_string("instanceId")?,
            socket_id: f.string("socketId")?,
        }),
        "update_runner_config" => Control::UpdateRunnerConfig(UpdateRunnerConfig {
            instance_id: f.opt_string("instanceId")?,
            allowed_cwds: f.absolute_paths("allowedCwds")?,
            config_version: f.opt_u64("configVersion")?,
        }),
        "start_local_editor" => Control::StartLocalEditor(StartLocalEditor {
            instance_id: f.opt_string("instanceId")?,
            request_id: f.opt_string("requestId")?,
            cwd: PathBuf::from(f.string("cwd")?),
            browser_base_url: f.opt_string("browserBaseUrl")?,
            collaboration: f.opt_bool("collaboration")?,
        }),
        "start_instance" => Control::StartInstance(StartInstance {
            instance_id: f.opt_string("instanceId")?,
            cwd: f.opt_string("cwd")?.map(PathBuf::from),
            launch_tui: f.opt_bool("launchTui")?,
            model: f.opt_string("model")?,
            reasoning_effort: f.opt_string("reasoningEffort")?,
            approval_policy: f.opt_string("approvalPolicy")?,
            sandbox: f.opt_string("sandbox")?,
            fast: f.opt_bool("fast")?,
        }),
        "stop_instance" => Control::StopInstance(StopInstance {
            instance_id: f.string("instanceId")?,
        }),
        "read_thread" => Control::ReadThread(ReadThread {
            instance_id: f.string("instanceId")?,
            thread_id: f.string("threadId")?,
            include_turns: f.opt_bool("includeTurns")?,
        }),
        _ => return Err(Problem::UnknownType),
    })
}

/// Typed access to a control's fields.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The field, with `null` treated as absent.
    fn get(&self, name: &'static str) -> Option<&Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    fn required(&self, name: &'static str) -> Result<&Value, Problem> {
        self.get(name).ok_or(Problem::Missing(name))
    }

    fn string(&self, name: &'static str) -> Result<String, Problem> {
        as_string(name, self.required(name)?)
    }

    fn opt_string(&self, name: &'static str) -> Result<Option<String>, Problem> {
        self.get(name)
            .map(|value| as_string(name, value))
            .transpose()
    }

    fn opt_bool(&self, name: &'static str) -> Result<Option<bool>, Problem> {
        self.get(name)
            .map(|value| value.as_bool().ok_or(invalid(name, "must be a boolean")))
            .transpose()
    }

    fn opt_u64(&self, name: &'static str) -> Result<Option<u64>, Problem> {
        self.get(name)
            .map(|value| {
                value
                    .as_u64()
                    .ok_or(invalid(name, "must be a non-negative integer"))
            })
            .transpose()
    }

    fn port(&self, name: &'static str) -> Result<u16, Problem> {
        self.required(name)?
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port != 0)
            .ok_or(invalid(name, "must be an integer from 1 to 65535"))
    }

    fn method(&self, name: &'static str) -> Result<String, Problem> {
        let method = self.string(name)?;
        http::Method::from_bytes(method.as_bytes())
            .map_err(|_| invalid(name, "must be an http method token"))?;
        Ok(method)
    }

    fn path(&self, name: &'static str) -> Result<String, Problem> {
        let path = self.string(name)?;
        if !path.starts_with('/') {
            return Err(invalid(name, "must start with `/`"));
        }
        Ok(path)
    }

    fn decision(&self, name: &'static str) -> Result<Decision, Problem> {
        (self.required(name)?.as_str())
            .and_then(Decision::parse)
            .ok_or(invalid(name, "must be `approve` or `deny`"))
    }

    fn opcode(&self, name: &'static str) -> Result<Opcode, Problem> {
        (self.required(name)?.as_str())
            .and_then(Opcode::parse)
            .ok_or(invalid(name, "must be `text`, `binary`, `ping` or `pong`"))
    }

    fn opt_actor(&self, name: &'static str) -> Result<Option<ActorId>, Problem> {
        self.get(name)
            .map(|value| match value {
                Value::String(s) => Ok(ActorId::Str(s.clone())),
                Value::Number(n) => n
                    .as_i64()
                    .map(ActorId::Int)
                    .ok_or(invalid(name, "must be an integer or a string")),
                _ => Err(invalid(name, "must be an integer or a string")),
            })
            .transpose()
    }

    fn opt_base64(&self, name: &'static str) -> Result<Option<Vec<u8>>, Problem> {
        self.get(name)
            .map(|value| {
                let text = value.as_str().ok_or(invalid(name, "must be a string"))?;
                STANDARD
                    .decode(text)
                    .map_err(|_| invalid(name, "must be valid base64"))
            })
            .transpose()
    }

    fn absolute_paths(&self, name: &'static str) -> Result<Vec<PathBuf>, Problem> {
        let Value::Array(items) = self.required(name)? else {
            return Err(invalid(name, "must be a list of absolute paths"));
        };
        items
            .iter()
            .map(|item| match item.as_str() {
                Some(path) if Path::new(path).is_absolute() => Ok(PathBuf::from(path)),
                _ => Err(invalid(name, "must be a list of absolute paths")),
            })
            .collect()
    }

    /// `headers`: an object of string or list-of-strings values, or a list
    /// of `[name, value]` pairs; absent means none. At most
    /// [`MAX_HEADER_PAIRS`] pairs of [`MAX_HEADER_BYTES`] in all.
    fn headers(&self, name: &'static str) -> Result<Vec<(String, String)>, Problem> {
        const EXPECTED: &str =
            "must be an object of strings or string lists, or a list of [name, value] pairs";
        let bad = || invalid(name, EXPECTED);
        let mut pairs = HeaderPairs::default();
        match self.get(name) {
            None => {}
            Some(Value::Object(map)) => {
                for (header, value) in map {
                    match value {
                        Value::String(v) => pairs.push(name, header, v)?,
                        Value::Array(values) => {
                            for v in values {
                                pairs.push(name, header, v.as_str().ok_or_else(bad)?)?;
                            }
                        }
                        _ => return Err(bad()),
                    }
                }
            }
            Some(Value::Array(items)) => {
                for item in items {
                    match item.as_array().map(Vec::as_slice) {
                        Some([Value::String(h), Value::String(v)]) => pairs.push(name, h, v)?,
                        _ => return Err(bad()),
                    }
                }
            }
            Some(_) => return Err(bad()),
        }
        Ok(pairs.pairs)
    }
}

/// Most header pairs a control may carry. A flood is refused here, before
/// anything is built from it (an `http::HeaderMap` panics past 32,768).
pub const MAX_HEADER_PAIRS: usize = 1000;
/// Most header bytes (names and values) a control may carry.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// Header pairs collected under the caps.
#[derive(Default)]
struct HeaderPairs {
    pairs: Vec<(String, String)>,
    bytes: usize,
}

impl HeaderPairs {
    fn push(&mut self, field: &'static str, name: &str, value: &str) -> Result<(), Problem> {
        self.bytes += name.len() + value.len();
        if self.pairs.len() >= MAX_HEADER_PAIRS || self.bytes > MAX_HEADER_BYTES {
            return Err(invalid(
                field,
                "must hold at most 1000 pairs and 256 KiB of names and values",
            ));
        }
        self.pairs.push((name.to_owned(), value.to_owned()));
        Ok(())
    }
}

fn as_string(name: &'static str, value: &Value) -> Result<String, Problem> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or(invalid(name, "must be a string"))
}

fn invalid(field: &'static str, expected: &'static str) -> Problem {
    Problem::Invalid { field, expected }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Control {
        Control::parse(&value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    fn reject(value: Value) -> ControlRejection {
        match Control::parse(&value) {
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
        let rejection = reject(v);
        assert_eq!(rejection.problem, Problem::Missing("instanceId"));
        assert_eq!(rejection.request_id.as_deref(), Some("r1"));
        assert_eq!(rejection.control_type, "resolve_port_forward_request");
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
        assert_eq!(request.port, 5173);
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api");
        assert_eq!(request.query_string.as_deref(), Some("a=1"));
        assert_eq!(
            request.headers,
            vec![
                ("accept".to_string(), "text/html".to_string()),
                ("cookie".to_string(), "a=1".to_string()),
                ("cookie".to_string(), "b=2".to_string()),
            ]
        );
        assert_eq!(request.body, b"hello");
        assert!(request.accept_streaming);
        assert_eq!(request.instance_id, None);
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
        assert_eq!(
            request.headers,
            vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())]
        );
        assert!(request.body.is_empty());
        assert!(!request.accept_streaming);
        assert_eq!(request.port, 65535);
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
            ("bodyBase64", json!("not base64!")),
            ("bodyBase64", json!(12)),
            ("headers", json!("x")),
            ("headers", json!({"a": 1})),
            ("headers", json!({"a": ["1", 2]})),
            ("headers", json!([["a"]])),
            ("headers", json!([["a", "b", "c"]])),
            ("headers", json!([["a", 1]])),
            ("acceptStreaming", json!("yes")),
            ("queryString", json!(false)),
        ] {
            let mut v = base.clone();
            v[field] = bad;
            let rejection = reject(v.clone());
            assert_eq!(rejection.code(), ErrorCode::InvalidControl, "{v}");
            assert!(rejection.problem.to_string().contains(field), "{v}");
            assert_eq!(rejection.request_id.as_deref(), Some("h1"));
            let event = rejection.to_event();
            assert_eq!(event.control_type, "forward_http_request");
            assert_eq!(event.code, ErrorCode::InvalidControl);
        }
        for field in ["requestId", "port", "method", "path"] {
            let mut v = base.clone();
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(reject(v).problem, Problem::Missing(field));
        }
    }

    #[test]
    fn header_floods_are_invalid_controls() {
        let many: Vec<Value> = (0..30_000)
            .map(|i| json!([format!("x-{i}"), "v"]))
            .collect();
        let big = "v".repeat(MAX_HEADER_BYTES);
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
            let event = rejection.to_event();
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
        let at_bytes = "v".repeat(MAX_HEADER_BYTES - 1);
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
        assert_eq!(
            open,
            Control::ForwardWebsocketOpen(ForwardWebsocketOpen {
                instance_id: None,
                socket_id: "s1".into(),
                port: 5173,
                path: "/".into(),
                query_string: Some("token=x".into()),
                headers: vec![("sec-websocket-protocol".into(), "vite-hmr".into())],
            })
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
                    instance_id: None,
                    socket_id: "s1".into(),
                    opcode,
                    body: vec![1, 2, 3],
                })
            );
        }
        let close =
            parse(json!({"type": "forward_websocket_close", "instanceId": "i", "socketId": "s1"}));
        assert_eq!(
            close,
            Control::ForwardWebsocketClose(ForwardWebsocketClose {
                instance_id: Some("i".into()),
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
            assert_eq!(rejection.socket_id.as_deref(), Some("s9"), "{v}");
        }
        assert_invalid(
            json!({"type": "forward_websocket_send", "socketId": "s", "opcode": "close", "bodyBase64": ""}),
            "opcode",
        );
        let rejection = reject(json!({"type": "forward_websocket_close"}));
        assert_eq!(rejection.problem, Problem::Missing("socketId"));
    }

    #[test]
    fn update_runner_config() {
        let control = parse(
            json!({"type": "update_runner_config", "allowedCwds": ["/work", "/home/me/x"], "configVersion": 5}),
        );
        assert_eq!(
            control,
            Control::UpdateRunnerConfig(UpdateRunnerConfig {
                instance_id: None,
                allowed_cwds: vec!["/work".into(), "/home/me/x".into()],
                config_version: Some(5),
            })
        );
        assert_invalid(
            json!({"type": "update_runner_config", "allowedCwds": ["/ok", "relative/dir"]}),
            "allowedCwds",
        );
        assert_invalid(
            json!({"type": "update_runner_config", "allowedCwds": "/work"}),
            "allowedCwds",
        );
        assert_invalid(
            json!({"type": "update_runner_config", "allowedCwds": [1]}),
            "allowedCwds",
        );
        assert_invalid(
            json!({"type": "update_runner_config", "allowedCwds": [], "configVersion": -1}),
            "configVersion",
        );
        assert_eq!(
            reject(json!({"type": "update_runner_config"})).problem,
            Problem::Missing("allowedCwds")
        );
    }

    #[test]
    fn instance_and_editor_controls() {
        let editor = parse(
            json!({"type": "start_local_editor", "requestId": "e1", "cwd": "/work",
            "browserBaseUrl": "https://k/x", "collaboration": true}),
        );
        assert_eq!(
            editor,
            Control::StartLocalEditor(StartLocalEditor {
                instance_id: None,
                request_id: Some("e1".into()),
                cwd: "/work".into(),
                browser_base_url: Some("https://k/x".into()),
                collaboration: Some(true),
            })
        );
        assert_eq!(
            reject(json!({"type": "start_local_editor"})).problem,
            Problem::Missing("cwd")
        );
        let start = parse(
            json!({"type": "start_instance", "cwd": "/w", "launchTui": false, "model": "m",
            "reasoningEffort": "high", "approvalPolicy": "never", "sandbox": "workspace-write", "fast": true}),
        );
        assert_eq!(
            start,
            Control::StartInstance(StartInstance {
                instance_id: None,
                cwd: Some("/w".into()),
                launch_tui: Some(false),
                model: Some("m".into()),
                reasoning_effort: Some("high".into()),
                approval_policy: Some("never".into()),
                sandbox: Some("workspace-write".into()),
                fast: Some(true),
            })
        );
        assert_eq!(
            parse(json!({"type": "start_instance"})).kind(),
            "start_instance"
        );
        assert_invalid(json!({"type": "start_instance", "fast": "yes"}), "fast");
        assert_eq!(
            parse(json!({"type": "stop_instance", "instanceId": "i1"})),
            Control::StopInstance(StopInstance {
                instance_id: "i1".into()
            })
        );
        assert_eq!(
            reject(json!({"type": "stop_instance"})).problem,
            Problem::Missing("instanceId")
        );
        assert_eq!(
            parse(
                json!({"type": "read_thread", "instanceId": "i1", "threadId": "t1", "includeTurns": true})
            ),
            Control::ReadThread(ReadThread {
                instance_id: "i1".into(),
                thread_id: "t1".into(),
                include_turns: Some(true)
            })
        );
        assert_eq!(
            reject(json!({"type": "read_thread", "instanceId": "i1"})).problem,
            Problem::Missing("threadId")
        );
    }

    #[test]
    fn unknown_and_untyped_controls() {
        let rejection = reject(json!({"type": "launch_rockets", "requestId": "x"}));
        assert_eq!(rejection.code(), ErrorCode::UnknownControl);
        let event = rejection.to_event();
        assert_eq!(event.control_type, "launch_rockets");
        assert_eq!(event.request_id.as_deref(), Some("x"));

        for v in [json!({}), json!({"type": 3}), json!({"type": null})] {
            let rejection = reject(v);
            assert_eq!(rejection.problem, Problem::NoType);
            assert_eq!(rejection.code(), ErrorCode::InvalidControl);
            assert_eq!(rejection.control_type, "");
        }
        for v in [json!([]), json!("x"), json!(null), json!(1)] {
            assert_eq!(reject(v).problem, Problem::NotAnObject);
        }
    }
}
