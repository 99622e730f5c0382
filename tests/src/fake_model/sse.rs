//! The scripted answers: Responses API events as server-sent events.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::HANG_LIMIT;

/// One step of a reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// A Responses API event (`{"type": ...}`).
    Event(Value),
    /// Wait before the next step.
    Sleep(Duration),
    /// Keep the response open without sending anything more (until Codex
    /// gives up on it).
    Hang,
}

/// The answer to one `POST /v1/responses`; `response.created` comes first
/// and `response.completed` last, unless it hangs.
#[derive(Debug, Clone)]
pub struct Reply {
    steps: Vec<Step>,
}

impl Reply {
    /// An assistant message streamed as these deltas.
    pub fn text(deltas: &[&str]) -> Reply {
        Reply {
            steps: message_steps("msg_1", deltas, Duration::ZERO),
        }
    }

    /// A message whose deltas come `interval` apart.
    pub fn slow_text(deltas: &[&str], interval: Duration) -> Reply {
        Reply {
            steps: message_steps("msg_1", deltas, interval),
        }
    }

    /// A message that starts (the first delta) and then never ends.
    pub fn hang(first_delta: &str) -> Reply {
        let mut steps = vec![
            Step::Event(
                json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "role": "assistant", "id": "msg_h", "content": []}}),
            ),
            delta_event("msg_h", first_delta),
        ];
        steps.push(Step::Hang);
        Reply { steps }
    }

    /// The model runs `cmd` in a shell through the `exec_command` tool.
    pub fn exec_command(call_id: &str, cmd: &str) -> Reply {
        Reply::function_call(call_id, "exec_command", &json!({"cmd": cmd}))
    }

    /// The model calls tool `name` with `arguments`.
    pub fn function_call(call_id: &str, name: &str, arguments: &Value) -> Reply {
        Reply {
            steps: vec![Step::Event(json!({
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {"type": "function_call", "call_id": call_id, "name": name,
                    "arguments": arguments.to_string()}
            }))],
        }
    }

    /// The model edits files with `apply_patch` (a `*** Begin Patch` body).
    pub fn apply_patch(call_id: &str, patch: &str) -> Reply {
        Reply {
            steps: vec![Step::Event(json!({
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {"type": "custom_tool_call", "call_id": call_id, "name": "apply_patch", "input": patch}
            }))],
        }
    }

    /// Sends the reply as SSE chunks on `tx`.
    pub(super) async fn play(self, id: String, tx: mpsc::Sender<Bytes>) {
        let send = |event: Value| {
            let tx = tx.clone();
            async move {
                let kind = event["type"].as_str().unwrap_or("message").to_string();
                let chunk = format!("event: {kind}\ndata: {event}\n\n");
                tx.send(Bytes::from(chunk)).await.is_ok()
            }
        };
        if !send(json!({"type": "response.created", "response": {"id": id}})).await {
            return;
        }
        for step in self.steps {
            match step {
                Step::Event(event) => {
                    if !send(event).await {
                        return;
                    }
                }
                Step::Sleep(pause) => tokio::time::sleep(pause).await,
                Step::Hang => {
                    let _ = tokio::time::timeout(HANG_LIMIT, tx.closed()).await;
                    return;
                }
            }
        }
        send(json!({
            "type": "response.completed",
            "response": {"id": id, "usage": {
                "input_tokens": 10, "input_tokens_details": null,
                "output_tokens": 5, "output_tokens_details": null, "total_tokens": 15
            }}
        }))
        .await;
    }
}

fn delta_event(item_id: &str, delta: &str) -> Step {
    Step::Event(json!({
        "type": "response.output_text.delta",
        "item_id": item_id, "output_index": 0, "content_index": 0, "delta": delta
    }))
}

fn message_steps(item_id: &str, deltas: &[&str], interval: Duration) -> Vec<Step> {
    let mut steps = vec![Step::Event(json!({
        "type": "response.output_item.added", "output_index": 0,
        "item": {"type": "message", "role": "assistant", "id": item_id, "content": []}
    }))];
    for delta in deltas {
        if !interval.is_zero() {
            steps.push(Step::Sleep(interval));
        }
        steps.push(delta_event(item_id, delta));
    }
    let text: String = deltas.concat();
    steps.push(Step::Event(json!({
        "type": "response.output_item.done", "output_index": 0,
        "item": {"type": "message", "role": "assistant", "id": item_id,
            "content": [{"type": "output_text", "text": text}]}
    })));
    steps
}
