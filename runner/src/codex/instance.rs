//! One Codex instance: a task owning its `codex app-server` and the JSON-RPC
//! connection to it (PROTOCOL.md section 7). Commands go in through an
//! [`InstanceHandle`]; [`InstanceEvent`]s come out of a channel, in the
//! order the app-server caused them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};

use super::batch::Batcher;
use super::event::{ApprovalKind, ApprovalRequest, Decision, Ids, InstanceEvent, StopReason};
use super::process::{AppServer, AppServerCommand, Exit, HeldAppServer};
use super::rpc::{
    Calls, Incoming, RequestId, RpcError, error_line, notification_line, response_line,
};
use super::transport::{self, Transport};
use crate::supervise::SpawnError;

/// `--stream-flush-ms` default.
pub const DEFAULT_STREAM_FLUSH: Duration = Duration::from_millis(50);
/// `--turn-idle-timeout-ms` default.
pub const DEFAULT_TURN_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long an answer to our requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for the running turn to end after interrupting it.
const STOP_INTERRUPT_WAIT: Duration = Duration::from_secs(2);
/// How long `stop` waits for the app-server to exit after closing its stdin.
const STDIN_CLOSE_WAIT: Duration = Duration::from_millis(300);
/// SIGTERM to SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Events waiting for the caller: when it is slow, the app-server's output
/// waits in its pipe.
const EVENT_QUEUE: usize = 256;

/// `approvalPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    Untrusted,
    OnRequest,
    Never,
}

/// `sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

/// How to start an instance (`start_instance`, plus the runner's flags).
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// The `codex` binary (`--codex-bin`, `KANDAN_CODEX_BIN`, `PATH`).
    pub codex_bin: PathBuf,
    /// Already checked by [`CwdPolicy`](crate::workdir::CwdPolicy).
    pub cwd: PathBuf,
    /// Resume this thread instead of starting one.
    pub thread_id: Option<String>,
    pub model: Option<String>,
    pub reasoning_effort: Option<String>,
    pub approval_policy: Option<ApprovalPolicy>,
    pub sandbox: Option<SandboxMode>,
    /// `serviceTier: "priority"`.
    pub fast: bool,
    /// `--stream-flush-ms` (zero: no batching).
    pub stream_flush: Duration,
    /// A running turn silent this long is interrupted.
    pub turn_idle_timeout: Duration,
    /// Arguments after `app-server` (e.g. `-c key=value` overrides).
    pub extra_args: Vec<String>,
    /// Variables added to the app-server's environment.
    pub env: Vec<(String, String)>,
    /// The runner's [`TREE_MARKER`](crate::supervise::TREE_MARKER) value.
    pub marker: String,
}

impl InstanceOptions {
    /// Defaults for everything but the binary and the cwd.
    pub fn new(codex_bin: PathBuf, cwd: PathBuf) -> Self {
        InstanceOptions {
            codex_bin,
            cwd,
            thread_id: None,
            model: None,
            reasoning_effort: None,
            approval_policy: None,
            sandbox: None,
            fast: false,
            stream_flush: DEFAULT_STREAM_FLUSH,
            turn_idle_timeout: DEFAULT_TURN_IDLE_TIMEOUT,
            extra_args: Vec::new(),
            env: Vec::new(),
            marker: String::new(),
        }
    }
}

/// A control for a running instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `start_turn`; answered with [`Reply::TurnStarted`].
    StartTurn {
        text: String,
        client_turn_id: Option<String>,
    },
    /// `interrupt_turn`: the given turn, else the running one.
    Interrupt { turn_id: Option<String> },
    /// `resolve_approval_request`.
    ResolveApproval {
        request_id: String,
        approve: bool,
        for_session: bool,
    },
    /// `read_thread`; the thread comes as [`InstanceEvent::ThreadRead`].
    ReadThread {
        thread_id: String,
        include_turns: bool,
    },
    /// `stop_instance`; answered once [`InstanceEvent::Stopped`] was sent.
    Stop,
}

/// A command's success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    TurnStarted { turn_id: String },
}

/// A command's failure; [`CommandError::code`] is its `control_error` code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No pending approval has this id (never made, answered, or withdrawn).
    #[error("no pending approval request `{request_id}`")]
    UnknownRequest { request_id: String },
    /// `interrupt_turn` without a turn id while no turn runs.
    #[error("no turn is running")]
    NoRunningTurn,
    /// The instance has stopped.
    #[error("the instance has stopped")]
    Stopped,
    /// The app-server answered with an error.
    #[error("`{method}` failed: {error}")]
    Rpc { method: String, error: RpcError },
    /// The app-server did not answer in time.
    #[error("`{method}` got no answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { method: String },
}

impl CommandError {
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::UnknownRequest { .. } => "unknown_request",
            CommandError::NoRunningTurn => "invalid_control",
            CommandError::Stopped => "unknown_instance",
            CommandError::Rpc { .. } | CommandError::Timeout { .. } => "instance_failed",
        }
    }
}

/// Errors of starting an instance (`instance_failed`).
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The app-server could not be spawned.
    #[error("cannot start the codex app-server")]
    Spawn(#[from] SpawnError),
    /// The child has no stdin or stdout pipe.
    #[error("the codex app-server has no stdio pipes")]
    NoPipes,
}

/// `runner_ready`'s `state` of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Idle,
    Running,
    Stopped,
}

/// What `runner_ready` lists for an instance (with the caller's `lastSeq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub state: InstanceState,
    pub thread_id: Option<String>,
    /// Runner-made ids of the approvals waiting for a decision.
    pub pending_approvals: Vec<String>,
}

/// Spawns the app-server held before `exec`: register
/// [`HeldInstance::pid`] as a detector root, then [`HeldInstance::start`].
pub fn spawn(options: InstanceOptions) -> Result<HeldInstance, InstanceError> {
    let mut args = vec!["app-server".to_string()];
    args.extend(options.extra_args.iter().cloned());
    let command = AppServerCommand {
        program: options.codex_bin.clone(),
        args,
        cwd: options.cwd.clone(),
        env: options.env.clone(),
        marker: options.marker.clone(),
    };
    let held = HeldAppServer::spawn(&command)?;
    Ok(HeldInstance { held, options })
}

/// An instance whose app-server has not exec'd yet.
pub struct HeldInstance {
    held: HeldAppServer,
    options: InstanceOptions,
}

impl HeldInstance {
    /// The app-server's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.held.pid()
    }

    /// Releases the app-server and starts the instance's task, which
    /// opens the thread and reports [`InstanceEvent::Started`] (or
    /// `Failed` then `Stopped`).
    pub fn start(self) -> Result<(InstanceHandle, mpsc::Receiver<InstanceEvent>), InstanceError> {
        let mut server = self.held.release()?;
        let (Some(stdin), Some(stdout)) = (server.child.stdin.take(), server.child.stdout.take())
        else {
            // Without pipes it cannot be driven: end it now.
            tokio::spawn(async move {
                server.terminate(KILL_GRACE).await;
            });
            return Err(InstanceError::NoPipes);
        };
        let transport = transport::stdio(stdout, stdin);
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (command_tx, commands) = mpsc::channel(64);
        let (status_tx, status) = watch::channel(InstanceStatus {
            state: InstanceState::Starting,
            thread_id: None,
            pending_approvals: Vec::new(),
        });
        let pid = server.pid();
        let state = State::new(self.options, pid, event_tx, status_tx);
        tokio::spawn(run(state, server, transport, commands));
        Ok((
            InstanceHandle {
                commands: command_tx,
                status,
                pid,
            },
            events,
        ))
    }
}

/// Drives a running instance; cheap to clone.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    commands: mpsc::Sender<Envelope>,
    status: watch::Receiver<InstanceStatus>,
    pid: u32,
}

type ReplyTx = oneshot::Sender<Result<Reply, CommandError>>;

#[derive(Debug)]
struct Envelope {
    command: Command,
    reply: ReplyTx,
}

impl InstanceHandle {
    /// Sends a command and waits for its outcome. Commands sent before
    /// the instance started wait until it has.
    pub async fn call(&self, command: Command) -> Result<Reply, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Envelope { command, reply })
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.unwrap_or(Err(CommandError::Stopped))
    }

    /// The state, thread and pending approvals now.
    pub fn status(&self) -> InstanceStatus {
        self.status.borrow().clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// What one of our requests was for.
enum Tag {
    Initialize,
    OpenThread,
    TurnStart(ReplyTx),
    Interrupt(Option<ReplyTx>),
    ReadThread { thread_id: String, reply: ReplyTx },
}

struct Approval {
    id: String,
    server_id: RequestId,
    kind: ApprovalKind,
    turn_id: Option<String>,
    /// What a `permissions` request asked for: granted as is on approve.
    permissions: Value,
}

/// The instance's state, apart from the process and the channels the
/// task selects on.
struct State {
    options: InstanceOptions,
    pid: u32,
    out: Option<mpsc::UnboundedSender<String>>,
    events: mpsc::Sender<InstanceEvent>,
    status: watch::Sender<InstanceStatus>,
    calls: Calls<Tag>,
    batcher: Batcher,
    codex_version: String,
    thread_id: Option<String>,
    started: bool,
    /// Notifications and requests that came before `thread/start`'s answer.
    backlog: Vec<Incoming>,
    turn: Option<String>,
    last_activity: Instant,
    approvals: Vec<Approval>,
    next_approval: u64,
    /// `item/started` file changes by item id, for file-change approvals.
    file_changes: std::collections::HashMap<String, Value>,
    /// Set when the instance cannot go on: `Failed` is reported.
    failure: Option<String>,
    /// The caller dropped the events receiver.
    abandoned: bool,
}

impl State {
    fn new(
        options: InstanceOptions,
        pid: u32,
        events: mpsc::Sender<InstanceEvent>,
        status: watch::Sender<InstanceStatus>,
    ) -> Self {
        State {
            batcher: Batcher::new(options.stream_flush),
            options,
            pid,
            out: None,
            events,
            status,
            calls: Calls::default(),
            codex_version: "unknown".into(),
            thread_id: None,
            started: false,
            backlog: Vec::new(),
            turn: None,
            last_activity: Instant::now(),
            approvals: Vec::new(),
            next_approval: 1,
            file_changes: Default::default(),
            failure: None,
            abandoned: false,
        }
    }

    fn send_line(&self, line: String) {
        if let Some(out) = &self.out {
            let _ = out.send(line);
        }
    }

    fn request(&mut self, method: &'static str, params: Value, tag: Tag) {
        let line = self.calls.start(method, &params, tag, REQUEST_TIMEOUT);
        self.send_line(line);
    }

    async fn emit(&mut self, event: InstanceEvent) {
        if self.events.send(event).await.is_err() {
            self.abandoned = true;
        }
    }

    async fn flush(&mut self) {
        if let Some((method, params)) = self.batcher.flush() {
            self.emit_notification(method, params).await;
        }
    }

    async fn emit_notification(&mut self, method: String, params: Value) {
        let ids = Ids::find(&params);
        self.emit(InstanceEvent::Notification {
            method,
            params,
            ids,
        })
        .await;
    }

    fn publish_status(&self) {
        let state = if !self.started {
            InstanceState::Starting
        } else if self.turn.is_some() {
            InstanceState::Running
        } else {
            InstanceState::Idle
        };
        let status = InstanceStatus {
            state,
            thread_id: self.thread_id.clone(),
            pending_approvals: self.approvals.iter().map(|a| a.id.clone()).collect(),
        };
        self.status.send_replace(status);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self
            .turn
            .as_ref()
            .map(|_| self.last_activity + self.options.turn_idle_timeout);
        [self.batcher.deadline(), self.calls.next_deadline(), idle]
            .into_iter()
            .flatten()
            .min()
    }

    fn initialize(&mut self) {
        let params = json!({
            "clientInfo": {"name": "kandan-runner", "title": "kandan-runner", "version": env!("CARGO_PKG_VERSION")},
            "capabilities": {"experimentalApi": false},
        });
        self.request("initialize", params, Tag::Initialize);
    }

    fn open_thread(&mut self) {
        let options = &self.options;
        let mut params = json!({"cwd": options.cwd});
        if let Some(model) = &options.model {
            params["model"] = json!(model);
        }
        if let Some(policy) = options.approval_policy {
            params["approvalPolicy"] = json!(policy);
        }
        if let Some(sandbox) = options.sandbox {
            params["sandbox"] = json!(sandbox);
        }
        if options.fast {
            params["serviceTier"] = json!("priority");
        }
        // thread/start has no effort field; the config key sets the default
        // (turn/start also carries it).
        if let Some(effort) = &options.reasoning_effort {
            params["config"] = json!({"model_reasoning_effort": effort});
        }
        match options.thread_id.clone() {
            Some(thread_id) => {
                params["threadId"] = json!(thread_id);
                self.request("thread/resume", params, Tag::OpenThread);
            }
            None => self.request("thread/start", params, Tag::OpenThread),
        }
    }

    async fn on_message(&mut self, message: Incoming) {
        match message {
            Incoming::Response { id, result } => self.on_answer(&id, Ok(result)).await,
            Incoming::Error { id, error } => self.on_answer(&id, Err(error)).await,
            other if !self.started => self.backlog.push(other),
            Incoming::Notification { method, params } => self.on_notification(method, params).await,
            Incoming::Request { id, method, params } => {
                self.on_server_request(id, method, params).await
            }
        }
    }

    async fn on_answer(&mut self, id: &RequestId, answer: Result<Value, RpcError>) {
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
                    self.send_line(notification_line("initialized"));
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
                if let Ok(turn_id) = &reply_value {
                    if self.turn.is_none() {
                        self.turn = Some(turn_id.clone());
                        self.last_activity = Instant::now();
                        self.publish_status();
                    }
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

    async fn on_thread_open(&mut self, method: &str, result: Value) {
        let Some(thread_id) = result["thread"]["id"].as_str().map(str::to_string) else {
            self.failure = Some(format!("{method} answered without thread.id"));
            return;
        };
        self.thread_id = Some(thread_id.clone());
        self.started = true;
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
            tui_url: None,
        })
        .await;
        for message in std::mem::take(&mut self.backlog) {
            match message {
                Incoming::Notification { method, params } => {
                    self.on_notification(method, params).await
                }
                Incoming::Request { id, method, params } => {
                    self.on_server_request(id, method, params).await
                }
                _ => {}
            }
        }
    }

    async fn on_notification(&mut self, method: String, params: Value) {
        let now = Instant::now();
        self.last_activity = now;
        let mut ended_turn = None;
        let mut resolved = None;
        match method.as_str() {
            "turn/started" => {
                if let Some(turn_id) = params["turn"]["id"].as_str() {
                    self.turn = Some(turn_id.to_string());
                    self.publish_status();
                }
            }
            "turn/completed" => ended_turn = params["turn"]["id"].as_str().map(str::to_string),
            "serverRequest/resolved" => {
                resolved = serde_json::from_value::<RequestId>(params["requestId"].clone()).ok();
            }
            "item/started" if params["item"]["type"] == "fileChange" => {
                if let Some(item_id) = params["item"]["id"].as_str() {
                    self.file_changes
                        .insert(item_id.to_string(), params["item"]["changes"].clone());
                }
            }
            _ => {}
        }
        for (method, params) in self.batcher.push(method, params, now) {
            self.emit_notification(method, params).await;
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

    async fn on_server_request(&mut self, id: RequestId, method: String, mut params: Value) {
        self.flush().await;
        self.last_activity = Instant::now();
        let kind = match method.as_str() {
            "item/commandExecution/requestApproval" => ApprovalKind::Command,
            "item/fileChange/requestApproval" => ApprovalKind::FileChange,
            "item/permissions/requestApproval" => ApprovalKind::Permissions,
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
        self.approvals.push(Approval {
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
    async fn refuse(&mut self, id: RequestId, method: String, params: Value) {
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
            params,
            ids,
        })
        .await;
    }

    /// Reports the approvals matching `which` as withdrawn and forgets them.
    async fn withdraw(&mut self, which: impl Fn(&Approval) -> bool) {
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
            })
            .await;
        }
    }

    /// Handles every command but `Stop`.
    async fn on_command(&mut self, command: Command, reply: ReplyTx) {
        let Some(thread_id) = self.thread_id.clone() else {
            let _ = reply.send(Err(CommandError::Stopped));
            return;
        };
        match command {
            Command::StartTurn {
                text,
                client_turn_id,
            } => {
                let mut params = json!({
                    "threadId": thread_id,
                    "input": [{"type": "text", "text": text, "text_elements": []}],
                });
                if let Some(id) = client_turn_id {
                    params["clientUserMessageId"] = json!(id);
                }
                if let Some(effort) = &self.options.reasoning_effort {
                    params["effort"] = json!(effort);
                }
                self.last_activity = Instant::now();
                self.request("turn/start", params, Tag::TurnStart(reply));
            }
            Command::Interrupt { turn_id } => match turn_id.or_else(|| self.turn.clone()) {
                Some(turn_id) => {
                    let params = json!({"threadId": thread_id, "turnId": turn_id});
                    self.request("turn/interrupt", params, Tag::Interrupt(Some(reply)));
                }
                None => {
                    let _ = reply.send(Err(CommandError::NoRunningTurn));
                }
            },
            Command::ResolveApproval {
                request_id,
                approve,
                for_session,
            } => {
                let outcome = self.resolve(&request_id, approve, for_session).await;
                let _ = reply.send(outcome);
            }
            Command::ReadThread {
                thread_id,
                include_turns,
            } => {
                let params = json!({"threadId": thread_id, "includeTurns": include_turns});
                self.request("thread/read", params, Tag::ReadThread { thread_id, reply });
            }
            Command::Stop => {
                // `run` handles it; never routed here.
                let _ = reply.send(Ok(Reply::Done));
            }
        }
    }

    async fn resolve(
        &mut self,
        request_id: &str,
        approve: bool,
        for_session: bool,
    ) -> Result<Reply, CommandError> {
        let Some(index) = self.approvals.iter().position(|a| a.id == request_id) else {
            return Err(CommandError::UnknownRequest {
                request_id: request_id.to_string(),
            });
        };
        let approval = self.approvals.remove(index);
        let result = match approval.kind {
            ApprovalKind::Command | ApprovalKind::FileChange => {
                let decision = match (approve, for_session) {
                    (true, false) => "accept",
                    (true, true) => "acceptForSession",
                    (false, _) => "decline",
                };
                json!({"decision": decision})
            }
            ApprovalKind::Permissions if approve => json!({
                "permissions": approval.permissions,
                "scope": if for_session { "session" } else { "turn" },
            }),
            ApprovalKind::Permissions => json!({"permissions": {}}),
        };
        self.flush().await;
        self.send_line(response_line(&approval.server_id, &result));
        self.publish_status();
        self.emit(InstanceEvent::ApprovalResolved {
            request_id: approval.id,
            decision: Some(if approve {
                Decision::Approve
            } else {
                Decision::Deny
            }),
            withdrawn: false,
        })
        .await;
        Ok(Reply::Done)
    }

    async fn on_timer(&mut self) {
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
        if let (Some(turn_id), Some(thread_id)) = (self.turn.clone(), self.thread_id.clone()) {
            if now >= self.last_activity + self.options.turn_idle_timeout {
                tracing::warn!(
                    %turn_id,
                    "no notification for {:?}: interrupting the turn",
                    self.options.turn_idle_timeout
                );
                self.last_activity = now;
                let params = json!({"threadId": thread_id, "turnId": turn_id});
                self.request("turn/interrupt", params, Tag::Interrupt(None));
            }
        }
    }

    /// Every request still waiting fails: the app-server is gone.
    fn fail_calls(&mut self) {
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

/// Why the main loop ended.
enum End {
    /// `Command::Stop` (its reply is sent after `Stopped`).
    Stop(Option<ReplyTx>),
    /// The app-server exited or closed its output.
    Exited(Option<Exit>),
    /// The thread could not be opened.
    Failed,
}

async fn run(
    mut state: State,
    mut server: AppServer,
    transport: Transport,
    mut commands: mpsc::Receiver<Envelope>,
) {
    let Transport {
        mut incoming,
        outgoing,
    } = transport;
    state.out = Some(outgoing);
    state.initialize();
    let end = loop {
        if state.failure.is_some() {
            break End::Failed;
        }
        if state.abandoned {
            break End::Stop(None);
        }
        let deadline = state.next_deadline();
        tokio::select! {
            biased;
            message = incoming.recv() => match message {
                Some(message) => state.on_message(message).await,
                None => break End::Exited(None),
            },
            status = server.child.wait() => break End::Exited(status.ok().map(Exit::from)),
            envelope = commands.recv(), if state.started => match envelope {
                Some(Envelope { command: Command::Stop, reply }) => break End::Stop(Some(reply)),
                Some(Envelope { command, reply }) => state.on_command(command, reply).await,
                // Every handle is gone: nobody can stop it later.
                None => break End::Stop(None),
            },
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => state.on_timer().await,
        }
    };
    let (reason, exit, reply) = match end {
        End::Stop(reply) => {
            let exit = stop(&mut state, &mut server, &mut incoming).await;
            (StopReason::Stopped, exit, reply)
        }
        End::Exited(exit) => {
            // Read what it wrote before it went, then make sure its group is gone.
            drain(&mut state, &mut incoming, Duration::from_secs(1)).await;
            let exit = match exit {
                Some(exit) => exit,
                None => match timeout(KILL_GRACE, server.child.wait()).await {
                    Ok(Ok(status)) => Exit::from(status),
                    _ => server.terminate(KILL_GRACE).await,
                },
            };
            let exit = server
                .end_group(Some(exit), Instant::now() + Duration::from_millis(500))
                .await;
            tracing::info!(pid = state.pid, ?exit, "the codex app-server exited");
            if state.started {
                (StopReason::Exited, exit, None)
            } else {
                let message = format!(
                    "the codex app-server exited before its thread opened ({})",
                    describe(exit)
                );
                state.emit(InstanceEvent::Failed { message }).await;
                (StopReason::Failed, exit, None)
            }
        }
        End::Failed => {
            let message = state.failure.clone().unwrap_or_default();
            tracing::warn!(pid = state.pid, "codex instance failed: {message}");
            state.out = None;
            let exit = server.terminate(KILL_GRACE).await;
            state.emit(InstanceEvent::Failed { message }).await;
            (StopReason::Failed, exit, None)
        }
    };
    state.flush().await;
    state.fail_calls();
    state.withdraw(|_| true).await;
    state.turn = None;
    server.tail.settle(Duration::from_millis(500)).await;
    state
        .status
        .send_modify(|status| status.state = InstanceState::Stopped);
    state
        .emit(InstanceEvent::Stopped {
            reason,
            exit_code: exit.code,
            signal: exit.signal,
            stderr_tail: server.tail.text(),
        })
        .await;
    if let Some(reply) = reply {
        let _ = reply.send(Ok(Reply::Done));
    }
    // Commands that raced the stop.
    commands.close();
    while let Some(Envelope { reply, .. }) = commands.recv().await {
        let _ = reply.send(Err(CommandError::Stopped));
    }
}

/// `stop_instance`: interrupt the running turn, close stdin, SIGTERM the
/// group, SIGKILL after 5 s.
async fn stop(
    state: &mut State,
    server: &mut AppServer,
    incoming: &mut mpsc::Receiver<Incoming>,
) -> Exit {
    if let (Some(turn_id), Some(thread_id)) = (state.turn.clone(), state.thread_id.clone()) {
        let params = json!({"threadId": thread_id, "turnId": turn_id});
        state.request("turn/interrupt", params, Tag::Interrupt(None));
        let deadline = Instant::now() + STOP_INTERRUPT_WAIT;
        while state.turn.is_some() {
            tokio::select! {
                message = incoming.recv() => match message {
                    Some(message) => state.on_message(message).await,
                    None => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
    }
    state.out = None;
    let exited = timeout(STDIN_CLOSE_WAIT, server.child.wait()).await;
    let exit = match exited {
        Ok(Ok(status)) => {
            server
                .end_group(Some(Exit::from(status)), Instant::now() + KILL_GRACE)
                .await
        }
        _ => server.terminate(KILL_GRACE).await,
    };
    drain(state, incoming, Duration::from_millis(500)).await;
    exit
}

/// Handles what is still queued from a process that is gone or going.
async fn drain(state: &mut State, incoming: &mut mpsc::Receiver<Incoming>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        tokio::select! {
            message = incoming.recv() => match message {
                Some(message) => state.on_message(message).await,
                None => return,
            },
            () = sleep_until(deadline) => return,
        }
    }
}

fn describe(exit: Exit) -> String {
    match (exit.code, exit.signal) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown status".into(),
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400)
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

    #[test]
    fn policy_and_sandbox_use_the_wire_names() {
        assert_eq!(json!(ApprovalPolicy::OnRequest), json!("on-request"));
        assert_eq!(
            json!(SandboxMode::DangerFullAccess),
            json!("danger-full-access")
        );
        let policy: ApprovalPolicy = serde_json::from_value(json!("untrusted")).unwrap();
        assert_eq!(policy, ApprovalPolicy::Untrusted);
    }
}
