//! What each control of PROTOCOL.md section 3 does.

use super::{Runner, translate};
use crate::approval::Resolution;
use crate::control::events::{ControlErrorEvent, RunnerConfigApplied};
use crate::control::{Control, Event, Session, controls};

/// What `update_runner_config` set. Stored and acknowledged; the editor and
/// instance controls that will use `allowedCwds` are later work.
#[derive(Debug, Default)]
pub(super) struct RunnerConfig {
    pub version: u64,
    pub allowed_cwds: Vec<std::path::PathBuf>,
}

impl Runner {
    pub(super) async fn dispatch(&mut self, session: Session, control: Control) {
        match control {
            Control::ResolvePortForwardRequest(resolve) => self.resolve(session, resolve).await,
            Control::ForwardHttpRequest(req) => {
                self.forwarder.http(req, self.handle.responder(session));
            }
            Control::ForwardHttpCancel(cancel) => self.forwarder.cancel(&cancel.request_id),
            Control::ForwardWebsocketOpen(open) => {
                let to = self.handle.responder(session);
                self.forwarder.ws_open(open, to).await;
            }
            Control::ForwardWebsocketSend(send) => {
                let to = self.handle.responder(session);
                self.forwarder.ws_send(send, &to).await;
            }
            Control::ForwardWebsocketClose(close) => {
                let to = self.handle.responder(session);
                self.forwarder.ws_close(close, &to).await;
            }
            Control::UpdateRunnerConfig(update) => {
                if let Some(version) = update.config_version {
                    self.config.version = version;
                    self.handle.set_config_version(version);
                }
                self.config.allowed_cwds =
                    update.allowed_cwds.into_iter().map(|cwd| cwd.0).collect();
                self.cwds.set_allowed(&self.config.allowed_cwds);
                self.retain_allowed_editors();
                let applied = Event::RunnerConfigApplied(RunnerConfigApplied {
                    config_version: self.config.version,
                    allowed_cwds: self
                        .config
                        .allowed_cwds
                        .iter()
                        .map(|cwd| cwd.display().to_string())
                        .collect(),
                });
                self.reply(session, applied).await;
            }
            Control::StartLocalEditor(start) => self.start_editor(session, start).await,
            Control::StopLocalEditor(stop) => self.stop_editor(session, stop),
            Control::StartInstance(start) => self.start_instance(session, start).await,
            Control::StartTurn(turn) => self.start_turn(session, turn),
            Control::InterruptTurn(interrupt) => self.interrupt_turn(session, interrupt),
            Control::ResolveApprovalRequest(resolve) => self.resolve_approval(session, resolve),
            Control::StopInstance(stop) => self.stop_instance(session, stop),
            Control::ReadThread(read) => self.read_thread(session, read),
        }
    }

    async fn resolve(&mut self, session: Session, resolve: controls::ResolvePortForwardRequest) {
        let resolution = Resolution {
            request_id: resolve.request_id.clone(),
            decision: resolve.decision,
            actor_user_id: resolve.actor_user_id,
            actor_slug: resolve.actor_slug,
        };
        match self.approval.resolve(resolution) {
            Ok(outputs) => {
                self.report.listeners(self.approval.listeners());
                for output in outputs {
                    let event =
                        translate::approval_event(output, |pid| self.instances.owner_of(pid));
                    self.send(event).await;
                }
            }
            Err(err) => {
                let error = Event::ControlError(ControlErrorEvent {
                    request_id: Some(resolve.request_id),
                    ..ControlErrorEvent::for_instance(
                        "resolve_port_forward_request",
                        &resolve.instance_id,
                        err.code(),
                        crate::error_chain(&err),
                    )
                });
                self.reply(session, error).await;
            }
        }
    }
}
