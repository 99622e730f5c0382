//! What a Codex instance reports (PROTOCOL.md sections 4 and 7): each
//! variant is an event of the contract without `instanceId`, `seq` and
//! `gap`, which [`InstanceWire`](super::InstanceWire) adds beside it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use serde_json::Value;

use super::fields::{ActorId, Decision};
use super::instance_wire::InstanceEventJson;
use super::params::Params;

/// One event of an instance, in the order the app-server caused them.
/// Serialized, it is the wire event of PROTOCOL.md section 4 without
/// `instanceId` and `seq` (see [`InstanceWire`](super::InstanceWire)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum InstanceEvent {
    /// `instance_started`: the app-server answered `thread/start` or
    /// `thread/resume`. Always the first event of a started instance
    /// (notifications sent before the answer follow it).
    #[serde(rename = "instance_started")]
    Started {
        thread_id: String,
        cwd: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        pid: u32,
        codex_version: String,
        /// `ws://127.0.0.1:<port>` with `launch_tui`.
        #[serde(skip_serializing_if = "Option::is_none")]
        tui_url: Option<String>,
    },
    /// `codex_notification`: `params` as sent (deltas possibly joined).
    #[serde(rename = "codex_notification")]
    Notification {
        method: String,
        params: Params,
        ids: Ids,
    },
    /// `approval_request`.
    #[serde(rename = "approval_request")]
    ApprovalRequest(ApprovalRequest),
    /// `approval_resolved`: answered (`decision`) or withdrawn by the
    /// app-server (`withdrawn`, no decision).
    #[serde(rename = "approval_resolved")]
    ApprovalResolved {
        request_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        decision: Option<Decision>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        withdrawn: bool,
        /// Who decided, as `resolve_approval_request` said.
        #[serde(skip_serializing_if = "Option::is_none")]
        actor_user_id: Option<ActorId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        actor_slug: Option<String>,
    },
    /// `thread_read`: the answer to `read_thread`.
    #[serde(rename = "thread_read")]
    ThreadRead { thread_id: String, thread: Value },
    /// `control_error` `instance_failed` for `start_instance`: the
    /// app-server could not be started or refused the thread. `Stopped`
    /// with reason `failed` follows. Not an event of its own on the wire.
    #[serde(rename = "instance_failed")]
    Failed { message: String },
    /// `instance_stopped`: the last event; the process group is gone.
    #[serde(rename = "instance_stopped")]
    Stopped {
        reason: StopReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stderr_tail: Option<String>,
    },
}

/// Room beyond the size hint for what the event adds to its message.
const TO_JSON_SLACK: usize = 4096;

impl InstanceEvent {
    /// The wire `type`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            InstanceEvent::Started { .. } => "instance_started",
            InstanceEvent::Notification { .. } => "codex_notification",
            InstanceEvent::ApprovalRequest(_) => "approval_request",
            InstanceEvent::ApprovalResolved { .. } => "approval_resolved",
            InstanceEvent::ThreadRead { .. } => "thread_read",
            InstanceEvent::Failed { .. } => "instance_failed",
            InstanceEvent::Stopped { .. } => "instance_stopped",
        }
    }

    /// Its JSON, serialized once: the replay log keeps it and every frame
    /// of it copies it ([`InstanceWire`](super::InstanceWire)).
    /// `size_hint` is about its length (the bytes charged for the lines it
    /// came from): the buffer is allocated once, [`TO_JSON_SLACK`] more (a
    /// message read back from the backlog's file is charged its line there,
    /// a little shorter than the event, its `type` and `ids`, and a buffer
    /// one byte short would double). The spare room is kept: trimming it
    /// split every megabyte block in the heap and left holes the next event
    /// could not use (400 events of 1 MiB after a stall: 115-122 MB peak
    /// resident trimmed, 104-107 MB not).
    pub(crate) fn to_json(&self, size_hint: usize) -> serde_json::Result<InstanceEventJson> {
        let mut json = Vec::with_capacity(size_hint.saturating_add(TO_JSON_SLACK));
        serde_json::to_writer(&mut json, self)?;
        Ok(InstanceEventJson {
            kind: self.kind(),
            json: json.into(),
        })
    }
}

/// The ids found in a notification's params (`ids` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ids {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Ids {
    /// `threadId`, `turnId`, `itemId`, `processId`, `requestId` at the top
    /// of `params`, else the `id` of `params.thread`, `.turn`, `.item`
    /// (`turn/started` carries the turn whole). Numbers become strings.
    pub(crate) fn find(params: &Value) -> Ids {
        let top = |key: &str| params.get(key).and_then(id_text);
        let nested = |key: &str| params.get(key).and_then(|v| v.get("id")).and_then(id_text);
        Ids {
            thread_id: top("threadId").or_else(|| nested("thread")),
            turn_id: top("turnId").or_else(|| nested("turn")),
            item_id: top("itemId").or_else(|| nested("item")),
            process_id: top("processId"),
            request_id: top("requestId"),
        }
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `approval_request`'s fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRequest {
    /// Runner-made, unique within the instance.
    pub request_id: String,
    pub kind: ApprovalKind,
    pub thread_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// File changes (from the item's `item/started`), or the permissions
    /// asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    Command,
    FileChange,
    Permissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `stop_instance` (or the runner's shutdown).
    Stopped,
    /// The app-server exited by itself.
    Exited,
    /// It could not be started, or the thread could not be opened.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_ids_at_the_top_and_nested() {
        let ids =
            Ids::find(&json!({"threadId": "t", "turnId": "u", "itemId": "i", "requestId": 0}));
        assert_eq!(ids.request_id.as_deref(), Some("0"));
        assert_eq!(
            serde_json::to_value(&ids).unwrap(),
            json!({"threadId": "t", "turnId": "u", "itemId": "i", "requestId": "0"})
        );
        let ids = Ids::find(&json!({"threadId": "t", "turn": {"id": "u", "items": []}}));
        assert_eq!(ids.turn_id.as_deref(), Some("u"));
        assert_eq!(
            Ids::find(&json!({"thread": {"id": "t"}}))
                .thread_id
                .as_deref(),
            Some("t")
        );
        assert_eq!(Ids::find(&json!(null)), Ids::default());
    }
}
