//! What each control of PROTOCOL.md section 3 does.

use bytes::Bytes;

use super::{Runner, translate};
use crate::approval::Resolution;
use crate::control::events::{ControlErrorEvent, RunnerConfigApplied};
use crate::control::{Control, ErrorCode, Event, Session, controls};
use crate::forward::{HttpRequest, WsOpen};

/// What `update_runner_config` set. Stored and acknowledged; the editor and
/// instance controls that will use `allowedCwds` are later work.
#[derive(Debug, Default)]
pub struct RunnerConfig {
    pub version: u64,
    pub allowed_cwds: Vec<std::path::PathBuf>,
}

impl Runner {
    pub(super) async fn dispatch(&mut self, session: Session, control: Control) {
        match control {
            Control::ResolvePortForwardRequest(resolve) => self.resolve(session, resolve).await,
            Control::ForwardHttpRequest(req) => {
                self.inflight.insert(req.request_id.clone(), session);
                self.forwarder.http(HttpRequest {
                    request_id: req.request_id,
                    port: req.port,
                    method: req.method,
                    path: req.path,
                    query_string: req.query_string,
                    headers: req.headers,
                    body: Bytes::from(req.body),
                    accept_streaming: req.accept_streaming,
                });
            }
            Control::ForwardWebsocketOpen(open) => {
                self.inflight.insert(open.socket_id.clone(), session);
                self.forwarder
                    .ws_open(WsOpen {
                        socket_id: open.socket_id,
                        port: open.port,
                        path: open.path,
                        query_string: open.query_string,
                        headers: open.headers,
                    })
                    .await;
            }
            Control::ForwardWebsocketSend(send) => {
                self.forwarder
                    .ws_send(&send.socket_id, send.opcode, Bytes::from(send.body))
                    .await;
            }
            Control::ForwardWebsocketClose(close) => {
                self.forwarder.ws_close(&close.socket_id).await
            }
            Control::UpdateRunnerConfig(update) => {
                if let Some(version) = update.config_version {
                    self.config.version = version;
                    self.handle.set_config_version(version);
                }
                self.config.allowed_cwds = update.allowed_cwds;
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
            Control::StartLocalEditor(editor) => {
                self.unsupported(session, "start_local_editor", editor.request_id)
                    .await;
            }
            Control::StartInstance(_) => self.unsupported(session, "start_instance", None).await,
            Control::StopInstance(_) => self.unsupported(session, "stop_instance", None).await,
            Control::ReadThread(_) => self.unsupported(session, "read_thread", None).await,
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
                for output in outputs {
                    self.send(translate::approval_event(output)).await;
                }
            }
            Err(err) => {
                let error = Event::ControlError(ControlErrorEvent {
                    control_type: "resolve_port_forward_request".to_string(),
                    request_id: Some(resolve.request_id),
                    socket_id: None,
                    code: err.code(),
                    message: crate::error_chain(&err),
                });
                self.reply(session, error).await;
            }
        }
    }

    async fn unsupported(&self, session: Session, control_type: &str, request_id: Option<String>) {
        let error = Event::ControlError(ControlErrorEvent {
            control_type: control_type.to_string(),
            request_id,
            socket_id: None,
            code: ErrorCode::Unsupported,
            message: format!("{control_type} is not supported by this runner yet"),
        });
        self.reply(session, error).await;
    }
}
