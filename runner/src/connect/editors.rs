//! The local editor under `connect` (PROTOCOL.md section 8): its controls,
//! its registry's events, and forwarding to it by `editorId`.

use std::path::PathBuf;

use crate::control::controls::{StartLocalEditor, StopLocalEditor};
use crate::control::events::{
    ControlErrorEvent, LocalEditorStarted, LocalEditorStopped, ReadyEditor,
};
use crate::control::{ErrorCode, Event, Session};
use crate::editor::{EditorConfig, EditorEvent, Editors, StartRequest};
use crate::forward::EditorSockets;

use super::Runner;

/// The registry, or why there is none (no state directory): every start is
/// then answered with that reason.
pub(super) type Registry = Result<Editors, String>;

/// The registry for `connect` and the receiver of its events.
pub(super) fn registry(
    code_server: Option<PathBuf>,
    url: &str,
    token: Option<&str>,
    containment: &crate::cgroup::Containment,
) -> (Registry, tokio::sync::mpsc::UnboundedReceiver<EditorEvent>) {
    match EditorConfig::for_runner(code_server, url, token.unwrap_or_default()) {
        Ok(mut config) => {
            config.containment = containment.clone();
            let (editors, events) = Editors::new(config);
            (Ok(editors), events)
        }
        Err(err) => {
            let reason = crate::error_chain(&err);
            tracing::warn!("local editors unavailable: {reason}");
            (Err(reason), tokio::sync::mpsc::unbounded_channel().1)
        }
    }
}

/// Forwarding finds editors' sockets here.
pub(super) struct Sockets(pub Option<Editors>);

impl EditorSockets for Sockets {
    fn socket(&self, editor_id: &str) -> Option<PathBuf> {
        self.0.as_ref()?.socket_path(editor_id).ok()
    }
}

/// The wire event for what the registry reports.
pub(super) fn event(event: EditorEvent) -> Event {
    match event {
        EditorEvent::Started {
            request_id,
            instance_id,
            editor_id,
            cwd,
        } => Event::LocalEditorStarted(LocalEditorStarted {
            request_id,
            instance_id,
            editor_id: editor_id.to_string(),
            cwd: cwd.display().to_string(),
        }),
        EditorEvent::Stopped {
            editor_id,
            reason,
            exit_code,
        } => Event::LocalEditorStopped(LocalEditorStopped {
            editor_id: editor_id.to_string(),
            reason: reason.as_str().to_owned(),
            exit_code,
        }),
        EditorEvent::Failed {
            request_id,
            instance_id,
            reason,
        } => Event::ControlError(ControlErrorEvent {
            request_id,
            instance_id,
            ..ControlErrorEvent::new("start_local_editor", ErrorCode::EditorFailed, reason)
        }),
    }
}

/// `runner_ready.editors`.
/// Tells `status` the editors now, with their cgroups for the figures.
pub(super) fn report_status(registry: &Registry, report: &crate::report::Report) {
    if let Ok(editors) = registry {
        for info in editors.list() {
            report.cgroup(info.editor_id.as_str(), info.cgroup);
        }
    }
    report.editors(ready(registry));
}

pub(super) fn ready(registry: &Registry) -> Vec<ReadyEditor> {
    let Ok(editors) = registry else {
        return Vec::new();
    };
    editors
        .list()
        .into_iter()
        .map(|info| ReadyEditor {
            editor_id: info.editor_id.to_string(),
            cwd: info.cwd.display().to_string(),
        })
        .collect()
}

impl Runner {
    pub(super) async fn start_editor(&mut self, session: Session, start: StartLocalEditor) {
        let refuse = |code, message| {
            Event::ControlError(ControlErrorEvent {
                request_id: start.request_id.clone(),
                instance_id: start.instance_id.clone(),
                ..ControlErrorEvent::new("start_local_editor", code, message)
            })
        };
        // Opened now: code-server starts in this very directory.
        let checked = match self.cwds.check(Some(&start.cwd)) {
            Ok(cwd) => cwd,
            Err(err) => {
                let message = crate::error_chain(&err);
                return self
                    .reply(session, refuse(ErrorCode::CwdNotAllowed, message))
                    .await;
            }
        };
        let editors = match &self.editors {
            Ok(editors) => editors.clone(),
            Err(reason) => {
                let message = format!("local editors are unavailable: {reason}");
                return self
                    .reply(session, refuse(ErrorCode::EditorFailed, message))
                    .await;
            }
        };
        let request = StartRequest {
            request_id: start.request_id,
            instance_id: start.instance_id,
            cwd: checked.path().to_path_buf(),
            dir: Some(checked.dir().clone()),
            collaboration: start.collaboration.map(serde_json::Value::Object),
        };
        // Its outcome comes back through the registry's events.
        tokio::spawn(async move { editors.start(request).await });
    }

    pub(super) fn stop_editor(&mut self, session: Session, stop: StopLocalEditor) {
        let to = self.handle.responder(session);
        let editors = self.editors.clone();
        tokio::spawn(async move {
            let stopped = match &editors {
                Ok(editors) => editors
                    .stop(&stop.editor_id)
                    .await
                    .map_err(|e| e.to_string()),
                Err(reason) => Err(reason.clone()),
            };
            if let Err(message) = stopped {
                let event = Event::ControlError(ControlErrorEvent {
                    editor_id: Some(stop.editor_id),
                    ..ControlErrorEvent::new("stop_local_editor", ErrorCode::UnknownEditor, message)
                });
                to.send(event).await;
            }
        });
    }

    /// After `update_runner_config`: a start under way in a cwd that lost
    /// its permission fails, running editors there stop. Their canonical
    /// cwds are compared as bytes, as checked.
    pub(super) fn retain_allowed_editors(&self) {
        let Ok(editors) = self.editors.clone() else {
            return;
        };
        // Before this returns: a start that has not begun yet sees it.
        editors.set_policy(self.cwds.clone());
        let cwds = self.cwds.clone();
        tokio::spawn(async move {
            editors
                .retain_allowed(|cwd: &std::path::Path| cwds.allows(cwd))
                .await;
        });
    }
}
