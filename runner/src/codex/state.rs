//! The instance's state and how each message and command changes it.

use std::path::PathBuf;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::approvals::PendingApproval;
use super::backlog::Backlog;
use super::batch::Batcher;
use super::command::{CommandError, InstanceSnapshot, REQUEST_TIMEOUT, Reply};
use super::instance::Emitted;
use super::options::InstanceOptions;
use super::rpc::{Calls, Incoming, RequestId, RpcError, notification_line};
use super::{InstanceCommand, messages};
use crate::control::budget::Charge;
use crate::wire::{Ids, InstanceEvent, InstanceState, Params};

pub(super) type ReplyTx = oneshot::Sender<Result<Reply, CommandError>>;

/// What one of our requests was for.
pub(super) enum Tag {
    Initialize,
    OpenThread,
    TurnStart(ReplyTx),
    Interrupt(Option<ReplyTx>),
    ReadThread { thread_id: String, reply: ReplyTx },
}

/// The instance's state, apart from the process and the channels the
/// task selects on.
pub(super) struct State {
    pub(super) options: InstanceOptions,
    pub(super) pid: u32,
    pub(super) out: Option<mpsc::UnboundedSender<String>>,
    /// Where its events go, tagged with `instance_id`.
    pub(super) events: mpsc::Sender<Emitted>,
    pub(super) instance_id: std::sync::Arc<str>,
    /// The budget bytes of the message being handled: they go with the
    /// first event it causes (or back, when it causes none).
    pub(super) charge: Charge,
    pub(super) status: watch::Sender<InstanceSnapshot>,
    pub(super) calls: Calls<Tag>,
    pub(super) batcher: Batcher,
    pub(super) codex_version: String,
    pub(super) thread_id: Option<String>,
    pub(super) started: bool,
    /// Notifications and requests that came before `thread/start`'s answer.
    pub(super) backlog: Backlog,
    pub(super) turn: Option<String>,
    pub(super) last_activity: Instant,
    pub(super) approvals: Vec<PendingApproval>,
    pub(super) next_approval: u64,
    /// `item/started` file changes by item id, for file-change approvals.
    pub(super) file_changes: std::collections::HashMap<String, Value>,
    /// Set when the instance cannot go on: `Failed` is reported.
    pub(super) failure: Option<String>,
    /// The caller dropped the events receiver.
    pub(super) abandoned: bool,
    /// `launchTui`: the app-server's WebSocket address.
    pub(super) tui_url: Option<String>,
    /// `launchTui`: the file holding the WebSocket capability token.
    pub(super) tui_token_file: Option<PathBuf>,
}

impl State {
    pub(super) fn new(
        options: InstanceOptions,
        pid: u32,
        (instance_id, events): (std::sync::Arc<str>, mpsc::Sender<Emitted>),
        status: watch::Sender<InstanceSnapshot>,
    ) -> Self {
        State {
            batcher: Batcher::new(options.stream_flush),
            options,
            pid,
            out: None,
            events,
            instance_id,
            charge: Charge::default(),
            status,
            calls: Calls::default(),
            codex_version: "unknown".into(),
            thread_id: None,
            started: false,
            backlog: Backlog::default(),
            turn: None,
            last_activity: Instant::now(),
            approvals: Vec::new(),
            next_approval: 1,
            file_changes: Default::default(),
            failure: None,
            abandoned: false,
            tui_url: None,
            tui_token_file: None,
        }
    }

    pub(super) fn send_line(&self, line: String) {
        if let Some(out) = &self.out {
            let _ = out.send(line);
        }
    }

    pub(super) fn request(&mut self, method: &'static str, params: Value, tag: Tag) {
        let line = self.calls.start(method, &params, tag, REQUEST_TIMEOUT);
        self.send_line(line);
    }

    /// Sends `event` with the current message's charge (see [`State::charge`]).
    pub(super) async fn emit(&mut self, event: InstanceEvent) {
        let charge = std::mem::take(&mut self.charge);
        self.emit_charged(event, charge).await;
    }

    async fn emit_charged(&mut self, event: InstanceEvent, charge: Charge) {
        let instance_id = self.instance_id.clone();
        let emitted = Emitted {
            instance_id,
            event,
            charge,
        };
        if self.events.send(emitted).await.is_err() {
            self.abandoned = true;
        }
    }

    pub(super) async fn flush(&mut self) {
        if let Some((method, params, charge)) = self.batcher.flush() {
            self.emit_notification(method, params, charge).await;
        }
    }

    async fn emit_notification(&mut self, method: String, params: Params, charge: Charge) {
        let ids = Ids::of(&params);
        let event = InstanceEvent::Notification {
            method,
            params,
            ids,
        };
        self.emit_charged(event, charge).await;
    }

    pub(super) fn publish_status(&self) {
        let state = if !self.started {
            InstanceState::Starting
        } else if self.turn.is_some() {
            InstanceState::Running
        } else {
            InstanceState::Idle
        };
        let status = InstanceSnapshot {
            state: Some(state),
            thread_id: self.thread_id.clone(),
            pending_approvals: self.approvals.iter().map(|a| a.id.clone()).collect(),
        };
        self.status.send_replace(status);
    }

    /// A running turn is watched for silence, unless it waits for a
    /// person's decision (that may take longer than the timeout).
    fn idle_watched(&self) -> bool {
        self.turn.is_some() && self.approvals.is_empty()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let idle = self
            .idle_watched()
            .then(|| self.last_activity + self.options.turn_idle_timeout);
        [self.batcher.deadline(), self.calls.next_deadline(), idle]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn initialize(&mut self) {
        self.request(
            messages::INITIALIZE,
            messages::initialize(),
            Tag::Initialize,
        );
    }

    fn open_thread(&mut self) {
        let (method, params) = messages::open_thread(&self.options);
        self.request(method, params, Tag::OpenThread);
    }

    /// Handles one message; `charge` holds the budget bytes of its line.
    pub(super) async fn on_message(&mut self, message: Incoming, charge: Charge) {
        self.charge = charge;
        match message {
            Incoming::Response { id, result } => self.on_answer(&id, Ok(result)).await,
            Incoming::Error { id, error } => self.on_answer(&id, Err(error)).await,
            other if !self.started || self.backlog.spilling() => {
                if !self.started {
                    // Writing, so alive: `thread/start` gets REQUEST_TIMEOUT
                    // of silence, however long what comes before it takes.
                    let until = Instant::now() + REQUEST_TIMEOUT;
                    self.calls
                        .postpone(until, |tag| matches!(tag, Tag::OpenThread));
                }
                // Kept outside the budget (see `backlog`): its bytes go back.
                let bytes = std::mem::take(&mut self.charge).bytes();
                if let Err(err) = self.backlog.push(other, bytes) {
                    self.failure = Some(crate::error_chain(&err));
                }
            }
            Incoming::Notification { method, params } => self.on_notification(method, params).await,
            Incoming::Request { id, method, params } => {
                self.on_server_request(id, method, params).await
            }
        }
        self.charge = Charge::default();
    }

    pub(super) async fn on_answer(&mut self, id: &RequestId, answer: Result<Value, RpcError>) {
        let Some((tag, method)) = self.calls.finish(id) else {
            tracing::debug!(%id, "an answer to no request of ours: ignored");
            return;
        };
        let error = |error: RpcError| CommandError::Rpc {
            method: method.to_string(),
            error,
        };
        match tag {
            Tag::Initialize => match answer {
                Ok(result) => {
                    if let Some(version) =
                        result["userAgent"].as_str().and_then(version_of_user_agent)
                    {
                        self.codex_version = version;
                    }
                    self.send_line(notification_line(messages::INITIALIZED));
                    self.open_thread();
                }
                Err(err) => self.failure = Some(format!("initialize failed: {err}")),
            },
            Tag::OpenThread => match answer {
                Ok(result) => self.on_thread_open(method, result).await,
                Err(err) => self.failure = Some(format!("{method} failed: {err}")),
            },
            Tag::TurnStart(reply) => {
                let reply_value = answer.map_err(error).and_then(|result| {
                    let turn_id = result["turn"]["id"].as_str().map(str::to_string);
                    turn_id.ok_or_else(|| CommandError::Rpc {
                        method: method.into(),
                        error: RpcError {
                            code: 0,
                            message: "answer without turn.id".into(),
                            data: None,
                        },
                    })
                });
                if let Ok(turn_id) = &reply_value
                    && self.turn.is_none()
                {
                    self.turn = Some(turn_id.clone());
                    self.last_activity = Instant::now();
                    self.publish_status();
                }
                let _ = reply.send(reply_value.map(|turn_id| Reply::TurnStarted { turn_id }));
            }
            Tag::Interrupt(reply) => {
                let outcome = answer.map(|_| Reply::Done).map_err(error);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(outcome);
                    }
                    None => {
                        if let Err(err) = outcome {
                            tracing::warn!("interrupting the turn: {err}");
                        }
                    }
                }
            }
            Tag::ReadThread { thread_id, reply } => match answer {
                Ok(mut result) => {
                    self.flush().await;
                    let thread = result["thread"].take();
                    self.emit(InstanceEvent::ThreadRead { thread_id, thread })
                        .await;
                    let _ = reply.send(Ok(Reply::Done));
                }
                Err(err) => {
                    let _ = reply.send(Err(error(err)));
                }
            },
        }
    }

    pub(super) async fn on_thread_open(&mut self, method: &str, result: Value) {
        let Some(thread_id) = result["thread"]["id"].as_str().map(str::to_string) else {
            self.failure = Some(format!("{method} answered without thread.id"));
            return;
        };
        self.thread_id = Some(thread_id.clone());
        self.started = true;
        if let (Some(url), Some(file)) = (&self.tui_url, &self.tui_token_file) {
            tracing::info!(
                "attach to Codex instance {thread_id}: CODEX_TUI_TOKEN=$(cat {}) codex resume --remote {url} --remote-auth-token-env CODEX_TUI_TOKEN {thread_id}",
                file.display()
            );
        }
        self.publish_status();
        let cwd = result["cwd"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.options.cwd.clone());
        self.emit(InstanceEvent::Started {
            thread_id,
            cwd,
            model: result["model"].as_str().map(str::to_string),
            pid: self.pid,
            codex_version: self.codex_version.clone(),
            tui_url: self.tui_url.clone(),
        })
        .await;
        self.handle_backlog().await;
    }

    pub(super) async fn on_notification(&mut self, method: String, params: Params) {
        let now = Instant::now();
        self.last_activity = now;
        let mut ended_turn = None;
        let mut resolved = None;
        // Only these notifications' fields are read (the others, deltas
        // above all, go out without being parsed to a tree).
        match method.as_str() {
            "turn/started" => {
                if let Some(turn_id) = params.value()["turn"]["id"].as_str() {
                    self.turn = Some(turn_id.to_string());
                    self.publish_status();
                }
            }
            "turn/completed" => {
                ended_turn = params.value()["turn"]["id"].as_str().map(str::to_string);
            }
            "serverRequest/resolved" => {
                let id = params.value()["requestId"].take();
                resolved = serde_json::from_value::<RequestId>(id).ok();
            }
            "item/started" => {
                let mut params = params.value();
                let item = &mut params["item"];
                if item["type"] == "fileChange"
                    && let Some(item_id) = item["id"].as_str()
                {
                    let item_id = item_id.to_string();
                    self.file_changes.insert(item_id, item["changes"].take());
                }
            }
            _ => {}
        }
        let charge = std::mem::take(&mut self.charge);
        for (method, params, charge) in self.batcher.push(method, params, charge, now) {
            self.emit_notification(method, params, charge).await;
        }
        if let Some(server_id) = resolved {
            self.withdraw(|approval| approval.server_id == server_id)
                .await;
        }
        if let Some(turn_id) = ended_turn {
            self.withdraw(|approval| approval.turn_id.as_deref() == Some(turn_id.as_str()))
                .await;
            if self.turn.as_deref() == Some(turn_id.as_str()) {
                self.turn = None;
                self.file_changes.clear();
            }
            self.publish_status();
        }
    }

    /// Handles every command but `Stop`.
    pub(super) async fn on_command(&mut self, command: InstanceCommand, reply: ReplyTx) {
        let Some(thread_id) = self.thread_id.clone() else {
            let _ = reply.send(Err(CommandError::Stopped));
            return;
        };
        match command {
            InstanceCommand::StartTurn(turn) => {
                let params = messages::turn_start(
                    &thread_id,
                    &turn.text,
                    turn.client_turn_id.as_deref(),
                    self.options.start.reasoning_effort.as_deref(),
                );
                self.request(messages::TURN_START, params, Tag::TurnStart(reply));
            }
            InstanceCommand::Interrupt(interrupt) => {
                match interrupt.turn_id.or_else(|| self.turn.clone()) {
                    Some(turn_id) => {
                        let params = messages::turn_interrupt(&thread_id, &turn_id);
                        self.request(
                            messages::TURN_INTERRUPT,
                            params,
                            Tag::Interrupt(Some(reply)),
                        );
                    }
                    None => {
                        let _ = reply.send(Err(CommandError::NoRunningTurn));
                    }
                }
            }
            InstanceCommand::ResolveApproval(resolve) => {
                let outcome = self.resolve(resolve).await;
                let _ = reply.send(outcome);
            }
            InstanceCommand::ReadThread(read) => {
                let thread_id = read.thread_id;
                let params = messages::thread_read(&thread_id, read.include_turns);
                self.request(
                    messages::THREAD_READ,
                    params,
                    Tag::ReadThread { thread_id, reply },
                );
            }
            InstanceCommand::Stop => {
                // `run` handles it; never routed here.
                let _ = reply.send(Ok(Reply::Done));
            }
        }
    }

    pub(super) async fn on_timer(&mut self) {
        let now = Instant::now();
        if self
            .batcher
            .deadline()
            .is_some_and(|deadline| deadline <= now)
        {
            self.flush().await;
        }
        for (tag, method) in self.calls.expired(now) {
            let timeout = || CommandError::Timeout {
                method: method.to_string(),
            };
            match tag {
                Tag::Initialize | Tag::OpenThread => {
                    self.failure = Some(format!(
                        "`{method}` got no answer within {}s",
                        REQUEST_TIMEOUT.as_secs()
                    ));
                }
                Tag::TurnStart(reply)
                | Tag::Interrupt(Some(reply))
                | Tag::ReadThread { reply, .. } => {
                    let _ = reply.send(Err(timeout()));
                }
                Tag::Interrupt(None) => tracing::warn!("interrupting the turn: no answer"),
            }
        }
        if let (Some(turn_id), Some(thread_id)) = (self.turn.clone(), self.thread_id.clone())
            && self.idle_watched()
            && now >= self.last_activity + self.options.turn_idle_timeout
        {
            tracing::warn!(
                %turn_id,
                "no notification for {:?}: interrupting the turn",
                self.options.turn_idle_timeout
            );
            self.last_activity = now;
            let params = messages::turn_interrupt(&thread_id, &turn_id);
            self.request(messages::TURN_INTERRUPT, params, Tag::Interrupt(None));
        }
    }

    /// Every request still waiting fails: the app-server is gone.
    pub(super) fn fail_calls(&mut self) {
        for (tag, _) in self.calls.drain() {
            match tag {
                Tag::TurnStart(reply)
                | Tag::Interrupt(Some(reply))
                | Tag::ReadThread { reply, .. } => {
                    let _ = reply.send(Err(CommandError::Stopped));
                }
                _ => {}
            }
        }
    }
}

/// The user agent starts with `<client name>/<codex version>`.
fn version_of_user_agent(agent: &str) -> Option<String> {
    let first = agent.split_whitespace().next()?;
    let (_, version) = first.split_once('/')?;
    (!version.is_empty()).then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_user_agent() {
        assert_eq!(
            version_of_user_agent("kandan-runner/0.171.0 (Debian 12.0.0; x86_64) xterm").as_deref(),
            Some("0.171.0")
        );
        assert_eq!(version_of_user_agent("nothing"), None);
        assert_eq!(version_of_user_agent(""), None);
    }
}
