//! Codex instances and local editors: a line when one starts or stops.

use super::Line;
use super::document::{EditorStatus, InstanceStatus};
use crate::wire::{ErrorCode, Event};
use crate::wire::{InstanceState, ReadyEditor, ReadyInstance};

fn instance_state(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Starting => "starting",
        InstanceState::Idle => "idle",
        InstanceState::Running => "running",
    }
}

/// The line for an `instance_failed` or `editor_failed` control error.
pub(super) fn failure(event: &Event) -> Option<Line> {
    let Event::ControlError(error) = event else {
        return None;
    };
    let (name, what, id) = match error.code {
        ErrorCode::InstanceFailed => ("instance_failed", "Codex instance", &error.instance_id),
        ErrorCode::EditorFailed => ("editor_failed", "editor", &error.editor_id),
        _ => return None,
    };
    let shown = (id.as_deref())
        .or(error.request_id.as_deref())
        .map_or_else(String::new, |id| format!(" {id}"));
    let mut line = Line::new(
        name,
        format!(
            "{what}{shown} failed ({}): {}",
            error.control_type, error.message
        ),
    )
    .level("warn")
    .field("controlType", error.control_type.clone());
    for (field, value) in [
        ("instanceId", &error.instance_id),
        ("editorId", &error.editor_id),
        ("requestId", &error.request_id),
    ] {
        if let Some(value) = value {
            line = line.field(field, value.clone());
        }
    }
    Some(line)
}

pub(super) fn instances(shown: &mut Vec<InstanceStatus>, now: &[ReadyInstance]) -> Vec<Line> {
    let now: Vec<InstanceStatus> = now
        .iter()
        .map(|instance| InstanceStatus {
            instance_id: instance.instance_id.clone(),
            thread_id: instance.thread_id.clone(),
            cwd: instance.cwd.clone(),
            state: instance_state(instance.state).to_owned(),
            usage: Default::default(),
        })
        .collect();
    let lines = changes(
        shown,
        &now,
        |i| &i.instance_id,
        |i, what| {
            Line::new(
                if what == "started" {
                    "instance_started"
                } else {
                    "instance_stopped"
                },
                format!("Codex instance {} {what} in {}", i.instance_id, i.cwd),
            )
            .field("instanceId", i.instance_id.clone())
            .field("cwd", i.cwd.clone())
        },
    );
    *shown = now;
    lines
}

pub(super) fn editors(shown: &mut Vec<EditorStatus>, now: &[ReadyEditor]) -> Vec<Line> {
    let now: Vec<EditorStatus> = now
        .iter()
        .map(|editor| EditorStatus {
            editor_id: editor.editor_id.clone(),
            cwd: editor.cwd.clone(),
            state: "running".into(),
            usage: Default::default(),
        })
        .collect();
    let lines = changes(
        shown,
        &now,
        |e| &e.editor_id,
        |e, what| {
            Line::new(
                if what == "started" {
                    "editor_started"
                } else {
                    "editor_stopped"
                },
                format!("editor {} {what} in {}", e.editor_id, e.cwd),
            )
            .field("editorId", e.editor_id.clone())
            .field("cwd", e.cwd.clone())
        },
    );
    *shown = now;
    lines
}

/// "started" for ids new in `now`, "stopped" for ids gone from it.
fn changes<T>(
    before: &[T],
    now: &[T],
    id: impl Fn(&T) -> &String,
    line: impl Fn(&T, &str) -> Line,
) -> Vec<Line> {
    let has = |list: &[T], item: &T| list.iter().any(|other| id(other) == id(item));
    let started = now.iter().filter(|item| !has(before, item));
    let stopped = before.iter().filter(|item| !has(now, item));
    started
        .map(|item| line(item, "started"))
        .chain(stopped.map(|item| line(item, "stopped")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editors_start_and_stop_once() {
        let mut shown = Vec::new();
        let editor = ReadyEditor {
            editor_id: "e1".into(),
            cwd: "/src".into(),
        };
        let lines = editors(&mut shown, std::slice::from_ref(&editor));
        assert_eq!(lines[0].event, "editor_started");
        assert!(editors(&mut shown, std::slice::from_ref(&editor)).is_empty());
        assert_eq!(editors(&mut shown, &[])[0].event, "editor_stopped");
        assert!(shown.is_empty());
    }
}
