//! The params of the requests we send and the answers we give, in the
//! shapes of the pinned app-server's schema (`schema/`, checked below).

use serde_json::{Value, json};

use super::options::InstanceOptions;
use crate::wire::{ApprovalKind, Decision};

pub(crate) const INITIALIZE: &str = "initialize";
pub(crate) const INITIALIZED: &str = "initialized";
pub(crate) const THREAD_START: &str = "thread/start";
pub(crate) const THREAD_RESUME: &str = "thread/resume";
pub(crate) const THREAD_READ: &str = "thread/read";
pub(crate) const TURN_START: &str = "turn/start";
pub(crate) const TURN_INTERRUPT: &str = "turn/interrupt";

pub(crate) const COMMAND_APPROVAL: &str = "item/commandExecution/requestApproval";
pub(crate) const FILE_CHANGE_APPROVAL: &str = "item/fileChange/requestApproval";
pub(crate) const PERMISSIONS_APPROVAL: &str = "item/permissions/requestApproval";

/// `initialize`.
pub(crate) fn initialize() -> Value {
    json!({
        "clientInfo": {"name": "kandan-runner", "title": "kandan-runner", "version": env!("CARGO_PKG_VERSION")},
        "capabilities": {"experimentalApi": false},
    })
}

/// `thread/start`, or `thread/resume` when the options name a thread.
pub(crate) fn open_thread(options: &InstanceOptions) -> (&'static str, Value) {
    let mut params = json!({"cwd": options.cwd});
    if let Some(model) = &options.start.model {
        params["model"] = json!(model);
    }
    if let Some(policy) = options.start.approval_policy {
        params["approvalPolicy"] = json!(policy);
    }
    if let Some(sandbox) = options.start.sandbox {
        params["sandbox"] = json!(sandbox);
    }
    if options.start.fast {
        params["serviceTier"] = json!("priority");
    }
    // Config overrides for this thread. The thread params have no effort
    // field; this key sets the thread's default (turn/start carries it too).
    let mut config = serde_json::Map::new();
    if let Some(effort) = &options.start.reasoning_effort {
        config.insert("model_reasoning_effort".into(), json!(effort));
    }
    if options.workspace_network {
        config.insert(
            "sandbox_workspace_write".into(),
            json!({"network_access": true}),
        );
    }
    if !config.is_empty() {
        params["config"] = Value::Object(config);
    }
    match &options.start.thread_id {
        Some(thread_id) => {
            params["threadId"] = json!(thread_id);
            (THREAD_RESUME, params)
        }
        None => (THREAD_START, params),
    }
}

/// `turn/start` with one text input.
pub(crate) fn turn_start(
    thread_id: &str,
    text: &str,
    client_turn_id: Option<&str>,
    effort: Option<&str>,
) -> Value {
    let mut params = json!({
        "threadId": thread_id,
        "input": [{"type": "text", "text": text, "text_elements": []}],
    });
    if let Some(id) = client_turn_id {
        params["clientUserMessageId"] = json!(id);
    }
    if let Some(effort) = effort {
        params["effort"] = json!(effort);
    }
    params
}

/// `turn/interrupt`.
pub(crate) fn turn_interrupt(thread_id: &str, turn_id: &str) -> Value {
    json!({"threadId": thread_id, "turnId": turn_id})
}

/// `thread/read`.
pub(crate) fn thread_read(thread_id: &str, include_turns: bool) -> Value {
    json!({"threadId": thread_id, "includeTurns": include_turns})
}

/// Our answer to an approval request: `accept` (`acceptForSession`) or
/// `decline`; a permissions request is granted what it asked for, for the
/// turn or the session, or nothing.
pub(crate) fn approval_answer(
    kind: ApprovalKind,
    decision: Decision,
    for_session: bool,
    asked: &Value,
) -> Value {
    let approve = decision == Decision::Approve;
    match kind {
        ApprovalKind::Command | ApprovalKind::FileChange => {
            let decision = match (approve, for_session) {
                (true, false) => "accept",
                (true, true) => "acceptForSession",
                (false, _) => "decline",
            };
            json!({"decision": decision})
        }
        ApprovalKind::Permissions if approve => json!({
            "permissions": asked,
            "scope": if for_session { "session" } else { "turn" },
        }),
        ApprovalKind::Permissions => json!({"permissions": {}}),
    }
}

#[cfg(test)]
mod tests {
    //! Every field we send is one the pinned schema declares, and every
    //! value we choose from an enum is one of its values.

    use super::*;
    use crate::wire::{ApprovalPolicy, SandboxMode};

    fn schema(file: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/codex/schema")
            .join(file);
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn assert_fields_declared(params: &Value, file: &str) {
        let schema = schema(file);
        let declared = schema["properties"].as_object().unwrap();
        for key in params.as_object().unwrap().keys() {
            assert!(declared.contains_key(key), "{file} declares no `{key}`");
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            assert!(
                params.get(required).is_some(),
                "{file} requires `{required}`"
            );
        }
    }

    /// The string values of a definition (`enum`, or `oneOf` of enums).
    fn enum_values(schema: &Value, definition: &str) -> Vec<String> {
        let def = &schema["definitions"][definition];
        let mut values: Vec<Value> = def["enum"].as_array().cloned().unwrap_or_default();
        for one in def["oneOf"].as_array().into_iter().flatten() {
            values.extend(one["enum"].as_array().cloned().unwrap_or_default());
        }
        values
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    fn full_options() -> InstanceOptions {
        let mut options = InstanceOptions::new("codex".into(), "/tmp".into());
        options.start.model = Some("gpt-5.5".into());
        options.start.approval_policy = Some(ApprovalPolicy::OnRequest);
        options.start.sandbox = Some(SandboxMode::ReadOnly);
        options.start.fast = true;
        options.start.reasoning_effort = Some("high".into());
        options
    }

    #[test]
    fn requests_match_the_schema() {
        assert_fields_declared(&initialize(), "v1/InitializeParams.json");
        let mut options = full_options();
        let (method, params) = open_thread(&options);
        assert_eq!(method, THREAD_START);
        assert_fields_declared(&params, "v2/ThreadStartParams.json");
        options.start.thread_id = Some("t".into());
        let (method, params) = open_thread(&options);
        assert_eq!(method, THREAD_RESUME);
        assert_fields_declared(&params, "v2/ThreadResumeParams.json");
        assert_fields_declared(
            &turn_start("t", "hi", Some("c"), Some("low")),
            "v2/TurnStartParams.json",
        );
        assert_fields_declared(&turn_interrupt("t", "u"), "v2/TurnInterruptParams.json");
        assert_fields_declared(&thread_read("t", true), "v2/ThreadReadParams.json");
    }

    #[test]
    fn enum_values_are_the_schemas() {
        let start = schema("v2/ThreadStartParams.json");
        let policies = enum_values(&start, "AskForApproval");
        for policy in [
            ApprovalPolicy::Untrusted,
            ApprovalPolicy::OnRequest,
            ApprovalPolicy::Never,
        ] {
            assert!(policies.contains(&json!(policy).as_str().unwrap().to_string()));
        }
        let sandboxes = enum_values(&start, "SandboxMode");
        for sandbox in [
            SandboxMode::ReadOnly,
            SandboxMode::WorkspaceWrite,
            SandboxMode::DangerFullAccess,
        ] {
            assert!(sandboxes.contains(&json!(sandbox).as_str().unwrap().to_string()));
        }
    }

    #[test]
    fn approval_answers_match_the_schema() {
        let cases = [
            (
                ApprovalKind::Command,
                "CommandExecutionRequestApprovalResponse.json",
                "CommandExecutionApprovalDecision",
            ),
            (
                ApprovalKind::FileChange,
                "FileChangeRequestApprovalResponse.json",
                "FileChangeApprovalDecision",
            ),
        ];
        for (kind, file, definition) in cases {
            let decisions = enum_values(&schema(file), definition);
            let (approve, deny) = (Decision::Approve, Decision::Deny);
            for (decision, for_session) in [(approve, false), (approve, true), (deny, false)] {
                let answer = approval_answer(kind, decision, for_session, &Value::Null);
                assert_fields_declared(&answer, file);
                let decision = answer["decision"].as_str().unwrap();
                assert!(
                    decisions.iter().any(|d| d == decision),
                    "{file}: {decision}"
                );
            }
        }
        let file = "PermissionsRequestApprovalResponse.json";
        let scopes = enum_values(&schema(file), "PermissionGrantScope");
        let asked = json!({"network": {"enabled": true}});
        for for_session in [false, true] {
            let answer = approval_answer(
                ApprovalKind::Permissions,
                Decision::Approve,
                for_session,
                &asked,
            );
            assert_fields_declared(&answer, file);
            assert!(scopes.iter().any(|s| answer["scope"] == s.as_str()));
            assert_eq!(answer["permissions"], asked);
        }
        assert_fields_declared(
            &approval_answer(ApprovalKind::Permissions, Decision::Deny, false, &asked),
            file,
        );
    }

    #[test]
    fn the_requests_we_handle_are_the_servers() {
        let server_requests = schema("ServerRequest.json");
        let methods: Vec<&str> = server_requests["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|one| one["properties"]["method"]["enum"][0].as_str())
            .collect();
        for method in [COMMAND_APPROVAL, FILE_CHANGE_APPROVAL, PERMISSIONS_APPROVAL] {
            assert!(methods.contains(&method), "{method} not in {methods:?}");
        }
        // What the approvals and their withdrawal carry.
        for (file, field) in [
            ("CommandExecutionRequestApprovalParams.json", "command"),
            ("CommandExecutionRequestApprovalParams.json", "cwd"),
            ("CommandExecutionRequestApprovalParams.json", "reason"),
            ("FileChangeRequestApprovalParams.json", "itemId"),
            ("PermissionsRequestApprovalParams.json", "permissions"),
            ("v2/ServerRequestResolvedNotification.json", "requestId"),
            ("v2/TurnCompletedNotification.json", "turn"),
            ("v2/TurnStartedNotification.json", "turn"),
            ("v2/AgentMessageDeltaNotification.json", "delta"),
            ("v1/InitializeResponse.json", "userAgent"),
        ] {
            assert!(
                schema(file)["properties"].get(field).is_some(),
                "{file}: {field}"
            );
        }
        assert!(
            schema("v2/TurnStartResponse.json")["required"]
                .to_string()
                .contains("turn")
        );
    }
}
