//! The local editor under `connect` (PROTOCOL.md section 8): its controls
//! and forwarding to it by `editorId`; the registry sends its wire events
//! itself.

use std::path::PathBuf;

use crate::control::Session;
use crate::editor::{EditorConfig, Editors, StartRequest};
use crate::forward::EditorSockets;
use crate::wire::{
    ControlIds, ErrorCode, Event, Failure, ReadyEditor, StartLocalEditor, StopLocalEditor,
};

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
) -> (Registry, tokio::sync::mpsc::UnboundedReceiver<Event>) {
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
    pub(super) fn start_editor(&mut self, start: StartLocalEditor) -> Result<(), Failure> {
        // Opened now: code-server starts in this very directory.
        let checked = (self.cwds.check(Some(&start.cwd)))
            .map_err(|err| Failure::new(ErrorCode::CwdNotAllowed, crate::error_chain(&err)))?;
        let editors = self.editors.clone().map_err(|reason| {
            let message = format!("local editors are unavailable: {reason}");
            Failure::new(ErrorCode::EditorFailed, message)
        })?;
        let request = StartRequest {
            request_id: start.request_id,
            instance_id: start.instance_id,
            cwd: checked.path().to_path_buf(),
            dir: Some(checked.dir().clone()),
            collaboration: start.collaboration.map(serde_json::Value::Object),
        };
        // Its outcome comes back through the registry's events.
        tokio::spawn(async move { editors.start(request).await });
        Ok(())
    }

    pub(super) fn stop_editor(
        &mut self,
        session: Session,
        stop: StopLocalEditor,
        ids: &ControlIds,
    ) {
        let (to, ids) = (self.handle.responder(session), ids.clone());
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
                let failure = Failure::new(ErrorCode::UnknownEditor, message);
                to.send(ids.error(failure)).await;
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
