//! The demo's fake model: its reply follows the turn's prompt and how far
//! the turn got (the tool outputs after the prompt), so turns may come in
//! any order and a denied step moves on like an approved one.
//!
//! - a prompt naming a "server": a long-running dev server on `dev_port`
//!   (a command to approve), then a word on where it runs;
//! - any other prompt: a command to approve, a file change to approve
//!   (index.html's message, seen in the preview), then a streamed summary.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::fake_model::{Reply, Responder};

/// The line of index.html the file change edits, and what it becomes.
pub(crate) const MESSAGE_LINE: &str = "<p id=\"message\">Hello from the demo app.</p>";
pub const EDITED_MESSAGE: &str = "Hello from the demo app, edited by Codex.";

/// Streamed a few words at a time, so the page shows the text arriving.
const WORD_INTERVAL: Duration = Duration::from_millis(60);

pub(crate) fn responder(dev_port: u16) -> Responder {
    Arc::new(move |body: &Value| reply_to(body, dev_port))
}

fn reply_to(body: &Value, dev_port: u16) -> Reply {
    let input = body["input"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let user = |item: &Value| item["role"] == "user";
    let prompt_at = input.iter().rposition(user);
    let prompt = prompt_at.map(|i| text_of(&input[i])).unwrap_or_default();
    // Unique call ids per turn: Codex keeps the whole thread.
    let turn = input.iter().filter(|item| user(item)).count();
    let step = prompt_at.map_or(0, |i| {
        (input[i + 1..].iter())
            .filter(|item| {
                item["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("_output"))
            })
            .count()
    });
    let id = format!("demo_{turn}_{step}");
    if prompt.to_lowercase().contains("server") {
        return match step {
            0 => Reply::exec_command(
                &id,
                &format!("python3 -m http.server {dev_port} --bind 127.0.0.1 --directory site"),
            ),
            _ => words(&format!(
                "The dev server runs on port {dev_port}. Approve the port on the page, then open its preview."
            )),
        };
    }
    match step {
        0 => Reply::exec_command(&id, "date -u | tee checked-at.txt"),
        1 => Reply::apply_patch(
            &id,
            &format!(
                "*** Begin Patch\n*** Update File: index.html\n@@\n-    {MESSAGE_LINE}\n+    <p id=\"message\">{EDITED_MESSAGE}</p>\n*** End Patch\n"
            ),
        ),
        _ => words(
            "I checked the time into checked-at.txt and edited index.html: reload the app's preview to see it. Ask me to start a dev server next.",
        ),
    }
}

/// `text` streamed word by word.
fn words(text: &str) -> Reply {
    let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    Reply::slow_text(&refs, WORD_INTERVAL)
}

/// The text of a Responses API message item.
fn text_of(item: &Value) -> String {
    match &item["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(text: &str) -> Value {
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    }

    #[test]
    fn the_reply_follows_the_prompt_and_the_step() {
        let body = json!({"input": [user("<environment_context/>"), user("make a change")]});
        assert!(format!("{:?}", reply_to(&body, 9)).contains("tee checked-at.txt"));
        let body = json!({"input": [user("make a change"),
            {"type": "function_call", "call_id": "demo_1_0"},
            {"type": "function_call_output", "call_id": "demo_1_0", "output": "denied"}]});
        assert!(format!("{:?}", reply_to(&body, 9)).contains("Update File: index.html"));
        let body = json!({"input": [user("make a change"), user("start a dev server")]});
        assert!(format!("{:?}", reply_to(&body, 9)).contains("http.server 9"));
    }
}
