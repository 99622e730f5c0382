//! What each control of PROTOCOL.md section 3 does. A handler that fails
//! returns a [`Failure`]; [`Runner::dispatch`] answers it with the
//! control's type and ids, and nothing else builds a `control_error`
//! (handlers that finish later carry the [`ControlIds`] with them).

use super::Runner;
use crate::control::{Session, Shortcut};
use crate::wire::{
    Control, ControlIds, Event, Failure, ResolvePortForwardRequest, RunnerConfigApplied,
    UpdateRunnerConfig,
};

/// What `update_runner_config` set. Stored and acknowledged; the editor and
/// instance controls that will use `allowedCwds` are later work.
#[derive(Debug, Default)]
pub(super) struct RunnerConfig {
    pub(crate) version: u64,
    pub(crate) allowed_cwds: Vec<std::path::PathBuf>,
}

impl Runner {
    pub(super) async fn dispatch(&mut self, session: Session, mut control: Control) {
        // A start without an instance id gets a fresh one: its errors name it.
        if let Control::StartInstance(start) = &mut control {
            start
                .instance_id
                .get_or_insert_with(super::instances::fresh_id);
        }
        let ids = control.ids();
        if let Err(failure) = self.act(session, control, &ids).await {
            self.reply(session, ids.error(failure)).await;
        }
    }

    async fn act(
        &mut self,
        session: Session,
        control: Control,
        ids: &ControlIds,
    ) -> Result<(), Failure> {
        match control {
            Control::ResolvePortForwardRequest(resolve) => return self.resolve(&resolve).await,
            // Here only when they waited behind the main loop's work (see
            // `control::shortcut`); otherwise the connection hands them over.
            control @ (Control::ForwardHttpRequest(_)
            | Control::ForwardHttpCancel(_)
            | Control::ForwardWebsocketOpen(_)
            | Control::ForwardWebsocketSend(_)
            | Control::ForwardWebsocketClose(_)) => {
                let to = self.handle.responder(session);
                let _ = self.forwarder.take(control, to);
            }
            Control::UpdateRunnerConfig(update) => self.update_config(session, update).await,
            Control::StartLocalEditor(start) => return self.start_editor(start),
            Control::StopLocalEditor(stop) => self.stop_editor(session, stop, ids),
            Control::StartInstance(start) => return self.start_instance(start).await,
            control @ (Control::StartTurn(_)
            | Control::InterruptTurn(_)
            | Control::ResolveApprovalRequest(_)
            | Control::StopInstance(_)
            | Control::ReadThread(_)) => return self.instance_command(session, ids, control),
        }
        Ok(())
    }

    async fn update_config(&mut self, session: Session, update: UpdateRunnerConfig) {
        if let Some(version) = update.config_version {
            self.config.version = version;
            self.handle.set_config_version(version);
        }
        self.config.allowed_cwds = update.allowed_cwds.into_iter().map(|cwd| cwd.0).collect();
        self.cwds.set_allowed(&self.config.allowed_cwds);
        self.retain_allowed_editors();
        let applied = Event::RunnerConfigApplied(RunnerConfigApplied {
            config_version: self.config.version,
            allowed_cwds: (self.config.allowed_cwds.iter())
                .map(|cwd| cwd.display().to_string())
                .collect(),
        });
        self.reply(session, applied).await;
    }

    async fn resolve(&mut self, resolve: &ResolvePortForwardRequest) -> Result<(), Failure> {
        let events = self.approval.resolve(resolve)?;
        self.report.listeners(self.approval.listeners());
        for event in events {
            self.send(event).await;
        }
        Ok(())
    }
}
