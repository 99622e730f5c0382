//! Driving one instance in a test: its events as they come, what was seen,
//! and the commands with their answers; a fake model and directories per
//! test; scripted stand-ins for `codex`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner::codex::{
    self, ApprovalRequest, CommandError, Decision, InstanceCommand, InstanceEvent, InstanceHandle,
    InstanceOptions, Reply as CommandReply,
};
use runner::wire::{ResolveApprovalRequest, StartTurn};
use serde_json::Value;

use super::{CodexDirs, codex_bin, pinned_version};
use crate::fake_model::FakeModel;

/// How long one expected event may take (Codex is slow on a loaded machine).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A started instance and what it reported so far.
pub struct Instance {
    pub handle: InstanceHandle,
    pub events: codex::Events,
    /// Everything received so far, in order.
    pub seen: Vec<InstanceEvent>,
    pub thread_id: String,
    pub pid: u32,
}

impl Instance {
    pub async fn start(options: InstanceOptions) -> Instance {
        let held = codex::spawn(options)
            .unwrap_or_else(|err| panic!("spawn codex app-server: {}", runner::error_chain(&err)));
        let pid = held.pid();
        assert!(pid > 0);
        let (handle, events) = held
            .start()
            .unwrap_or_else(|err| panic!("start the instance: {}", runner::error_chain(&err)));
        let mut instance = Instance {
            handle,
            events,
            seen: Vec::new(),
            thread_id: String::new(),
            pid,
        };
        match instance.next().await {
            InstanceEvent::Started {
                thread_id,
                pid: started_pid,
                codex_version,
                ..
            } => {
                assert_eq!(started_pid, pid);
                assert_eq!(codex_version, pinned_version().unwrap());
                instance.thread_id = thread_id;
            }
            other => panic!("expected Started first, got {other:?}"),
        }
        instance
    }

    pub async fn next(&mut self) -> InstanceEvent {
        let event = tokio::time::timeout(EVENT_TIMEOUT, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no event within {EVENT_TIMEOUT:?}; seen: {:#?}",
                    self.methods()
                )
            })
            .expect("the events channel closed");
        self.seen.push(event.clone());
        event
    }

    /// Waits for the first event `pick` accepts.
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&InstanceEvent) -> Option<T>) -> T {
        loop {
            let event = self.next().await;
            if let Some(found) = pick(&event) {
                return found;
            }
            if let InstanceEvent::Stopped { .. } = event {
                panic!("stopped while waiting; seen: {:#?}", self.methods());
            }
        }
    }

    pub async fn notification(&mut self, method: &str) -> Value {
        self.until(|event| match event {
            InstanceEvent::Notification {
                method: m, params, ..
            } if m == method => Some(params.value()),
            _ => None,
        })
        .await
    }

    pub async fn approval(&mut self) -> ApprovalRequest {
        self.until(|event| match event {
            InstanceEvent::ApprovalRequest(request) => Some(request.clone()),
            _ => None,
        })
        .await
    }

    /// The next `approval_resolved`: its request id, decision and whether
    /// it was withdrawn.
    pub async fn resolution(&mut self) -> (String, Option<Decision>, bool) {
        self.until(|event| match event {
            InstanceEvent::ApprovalResolved {
                request_id,
                decision,
                withdrawn,
                ..
            } => Some((request_id.clone(), *decision, *withdrawn)),
            _ => None,
        })
        .await
    }

    pub async fn turn(&mut self, text: &str) -> String {
        match self
            .handle
            .call(InstanceCommand::StartTurn(StartTurn {
                instance_id: String::new(),
                text: text.into(),
                client_turn_id: Some("client-1".into()),
            }))
            .await
            .expect("turn/start")
        {
            CommandReply::TurnStarted { turn_id } => turn_id,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub async fn resolve(
        &self,
        request_id: &str,
        decision: Decision,
        for_session: bool,
    ) -> Result<CommandReply, CommandError> {
        self.handle
            .call(InstanceCommand::ResolveApproval(ResolveApprovalRequest {
                instance_id: String::new(),
                request_id: request_id.into(),
                decision,
                for_session,
                actor_user_id: None,
                actor_slug: None,
            }))
            .await
    }

    pub async fn stop(&mut self) -> InstanceEvent {
        self.handle.call(InstanceCommand::Stop).await.expect("stop");
        self.until(|event| matches!(event, InstanceEvent::Stopped { .. }).then(|| event.clone()))
            .await
    }

    pub fn methods(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|event| match event {
                InstanceEvent::Notification { method, .. } => method.clone(),
                other => format!("{other:?}").chars().take(120).collect(),
            })
            .collect()
    }

    /// The concatenated `item/agentMessage/delta` texts seen, and how many
    /// notifications carried them.
    pub fn agent_text(&self) -> (String, usize) {
        let deltas: Vec<String> = self
            .seen
            .iter()
            .filter_map(|event| match event {
                InstanceEvent::Notification { method, params, .. }
                    if method == "item/agentMessage/delta" =>
                {
                    params.value()["delta"].as_str().map(str::to_owned)
                }
                _ => None,
            })
            .collect();
        (deltas.concat(), deltas.len())
    }
}

/// A fake model and fresh directories (the Codex fixture must be there).
pub async fn rig() -> (FakeModel, CodexDirs) {
    codex_bin().expect("the Codex fixture");
    (
        FakeModel::start().await.expect("fake model"),
        CodexDirs::new().expect("temporary directories"),
    )
}

/// The first completed item of `kind` seen.
pub fn completed_item(instance: &Instance, kind: &str) -> Option<Value> {
    instance.seen.iter().find_map(|event| match event {
        InstanceEvent::Notification { method, params, .. } if method == "item/completed" => {
            let mut params = params.value();
            (params["item"]["type"] == kind).then(|| params["item"].take())
        }
        _ => None,
    })
}

/// Writes an executable stand-in for `codex` into `dir`.
pub fn script_codex(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("codex");
    std::fs::write(&bin, text).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}
