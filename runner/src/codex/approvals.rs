//! The app-server's requests: approvals it asks Kandan for (pending until
//! decided or withdrawn), and the requests the runner refuses.

use serde_json::{Value, json};
use tokio::time::Instant;

use super::command::{CommandError, Reply};
use super::messages;
use super::rpc::{RequestId, RpcError, error_line, response_line};
use super::state::State;
use crate::wire::{
    ApprovalKind, ApprovalRequest, Ids, InstanceEvent, Params, ResolveApprovalRequest,
};

/// An approval the app-server asked for, until Kandan decides or it is
/// withdrawn.
pub(super) struct PendingApproval {
    pub(super) id: String,
    pub(super) server_id: RequestId,
    kind: ApprovalKind,
    pub(super) turn_id: Option<String>,
    /// What a `permissions` request asked for: granted as is on approve.
    permissions: Value,
}

impl State {
    /// A request of the app-server: an approval Kandan is asked for, or
    /// refused.
    pub(super) async fn on_server_request(
        &mut self,
        id: RequestId,
        method: String,
        mut params: Value,
    ) {
        self.flush().await;
        self.last_activity = Instant::now();
        let kind = match method.as_str() {
            messages::COMMAND_APPROVAL => ApprovalKind::Command,
            messages::FILE_CHANGE_APPROVAL => ApprovalKind::FileChange,
            messages::PERMISSIONS_APPROVAL => ApprovalKind::Permissions,
            _ => return self.refuse(id, method, params).await,
        };
        let text = |params: &Value, key: &str| params[key].as_str().map(str::to_string);
        let request_id = format!("approval-{}", self.next_approval);
        self.next_approval += 1;
        let turn_id = text(&params, "turnId");
        let item_id = text(&params, "itemId");
        let changes = match kind {
            ApprovalKind::FileChange => item_id
                .as_ref()
                .and_then(|item| self.file_changes.get(item).cloned()),
            ApprovalKind::Permissions => Some(params["permissions"].clone()),
            ApprovalKind::Command => None,
        };
        let request = ApprovalRequest {
            request_id: request_id.clone(),
            kind,
            thread_id: text(&params, "threadId")
                .or_else(|| self.thread_id.clone())
                .unwrap_or_default(),
            turn_id: turn_id.clone(),
            item_id,
            command: text(&params, "command"),
            cwd: text(&params, "cwd"),
            reason: text(&params, "reason"),
            changes,
        };
        self.approvals.push(PendingApproval {
            id: request_id,
            server_id: id,
            kind,
            turn_id,
            permissions: params["permissions"].take(),
        });
        self.publish_status();
        self.emit(InstanceEvent::ApprovalRequest(request)).await;
    }

    /// Answers a request we do not handle with an error, and tells Kandan.
    pub(super) async fn refuse(&mut self, id: RequestId, method: String, params: Value) {
        tracing::info!(%method, "refusing an app-server request kandan-runner does not handle");
        let error = RpcError {
            code: -32601,
            message: format!("kandan-runner does not handle `{method}` requests"),
            data: None,
        };
        self.send_line(error_line(&id, &error));
        let mut ids = Ids::find(&params);
        ids.request_id = Some(id.to_string());
        let params = json!({"method": method, "requestId": id, "params": params});
        self.emit(InstanceEvent::Notification {
            method: "runner/serverRequestRefused".into(),
            params: Params::of(&params),
            ids,
        })
        .await;
    }

    /// Reports the approvals matching `which` as withdrawn and forgets them.
    pub(super) async fn withdraw(&mut self, which: impl Fn(&PendingApproval) -> bool) {
        let (gone, kept) = std::mem::take(&mut self.approvals)
            .into_iter()
            .partition::<Vec<_>, _>(|approval| which(approval));
        self.approvals = kept;
        if gone.is_empty() {
            return;
        }
        self.publish_status();
        for approval in gone {
            self.emit(InstanceEvent::ApprovalResolved {
                request_id: approval.id,
                decision: None,
                withdrawn: true,
                actor_user_id: None,
                actor_slug: None,
            })
            .await;
        }
    }

    /// Kandan's decision on a pending approval, answered to the app-server.
    pub(super) async fn resolve(
        &mut self,
        resolve: ResolveApprovalRequest,
    ) -> Result<Reply, CommandError> {
        let ResolveApprovalRequest {
            request_id,
            decision,
            for_session,
            actor_user_id,
            actor_slug,
            ..
        } = resolve;
        let Some(index) = self.approvals.iter().position(|a| a.id == request_id) else {
            return Err(CommandError::UnknownRequest { request_id });
        };
        let approval = self.approvals.remove(index);
        let result =
            messages::approval_answer(approval.kind, decision, for_session, &approval.permissions);
        self.flush().await;
        self.send_line(response_line(&approval.server_id, &result));
        self.last_activity = Instant::now();
        self.publish_status();
        self.emit(InstanceEvent::ApprovalResolved {
            request_id: approval.id,
            decision: Some(decision),
            withdrawn: false,
            actor_user_id,
            actor_slug,
        })
        .await;
        Ok(Reply::Done)
    }
}
