//! One Codex instance: a task owning its `codex app-server` and the JSON-RPC
//! connection to it (PROTOCOL.md section 7). Commands go in through an
//! [`InstanceHandle`]; [`InstanceEvent`]s come out of a channel, in the
//! order the app-server caused them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};

use super::command::{CommandError, InstanceCommand, InstanceError, InstanceSnapshot, Reply};
use super::messages;
use super::options::InstanceOptions;
use super::process::{AppServer, AppServerCommand, Exit, HeldAppServer};
use super::state::{ReplyTx, State, Tag};
use super::transport::{self, MAX_LINE, Received, Transport};
use super::tui::{self, TuiAuth};
use crate::control::budget::Charge;
use crate::wire::{InstanceEvent, InstanceState, StopReason};

/// How long `stop` waits for the running turn to end after interrupting it.
const STOP_INTERRUPT_WAIT: Duration = Duration::from_secs(2);
/// How long `stop` waits for the app-server to exit after closing its stdin.
const STDIN_CLOSE_WAIT: Duration = Duration::from_millis(300);
/// SIGTERM to SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Events waiting for a caller of [`HeldInstance::start`]: when it is slow,
/// the app-server's output waits in its pipe.
const EVENT_QUEUE: usize = 256;

/// Spawns the app-server held before `exec`: register
/// [`HeldInstance::pid`] as a detector root, then [`HeldInstance::start`].
pub fn spawn(options: InstanceOptions) -> Result<HeldInstance, InstanceError> {
    let mut args = vec!["app-server".to_string()];
    let tui = if options.start.launch_tui {
        let auth = TuiAuth::new().map_err(InstanceError::TuiToken)?;
        args.extend(auth.args());
        Some(auth)
    } else {
        None
    };
    args.extend(options.extra_args.iter().cloned());
    let command = AppServerCommand {
        program: options.codex_bin.clone(),
        args,
        cwd: options.cwd.clone(),
        cwd_dir: options.cwd_dir.clone(),
        env: options.env.clone(),
        marker: options.marker.clone(),
        instance_marker: instance_marker()?,
        cgroup: options.cgroup.clone(),
    };
    let held = HeldAppServer::spawn(&command)?;
    Ok(HeldInstance { held, options, tui })
}

/// A value no other instance of any runner uses.
fn instance_marker() -> Result<String, InstanceError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(InstanceError::Random)?;
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{random}", std::process::id()))
}

/// An instance whose app-server has not exec'd yet.
pub struct HeldInstance {
    held: HeldAppServer,
    options: InstanceOptions,
    tui: Option<TuiAuth>,
}

impl HeldInstance {
    /// The app-server's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.held.pid()
    }

    /// [`HeldInstance::start_into`] a channel of its own, read through
    /// [`Events`].
    pub fn start(self) -> Result<(InstanceHandle, Events), InstanceError> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let handle = self.start_into(Arc::from(""), events_tx)?;
        Ok((handle, Events(events)))
    }

    /// Releases the app-server and starts the instance's task, which
    /// opens the thread and reports [`InstanceEvent::Started`] (or
    /// `Failed` then `Stopped`) to `events`, each tagged `instance_id`:
    /// the instances of a runner share one channel, no task in between.
    pub(crate) fn start_into(
        self,
        instance_id: Arc<str>,
        events: mpsc::Sender<Emitted>,
    ) -> Result<InstanceHandle, InstanceError> {
        let mut server = self.held.release()?;
        let (Some(stdin), Some(stdout)) = (server.child.stdin.take(), server.child.stdout.take())
        else {
            // Without pipes it cannot be driven: end it now.
            tokio::spawn(async move {
                server.terminate(KILL_GRACE).await;
            });
            return Err(InstanceError::NoPipes);
        };
        let connect = match self.tui {
            None => {
                let budget = self.options.event_budget.clone();
                Connect::Ready(transport::stdio(stdout, stdin, budget))
            }
            Some(auth) => {
                // The app-server speaks on its WebSocket; its stdout is only
                // drained, its stdin kept open as long as it runs.
                tokio::spawn(async move {
                    let _stdin = stdin;
                    let mut stdout = stdout;
                    let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
                });
                Connect::WebSocket(auth)
            }
        };
        let (command_tx, commands) = mpsc::channel(64);
        let (status_tx, status) = watch::channel(InstanceSnapshot {
            state: Some(InstanceState::Starting),
            thread_id: None,
            pending_approvals: Vec::new(),
        });
        let pid = server.pid();
        let state = State::new(self.options, pid, (instance_id, events), status_tx);
        tokio::spawn(run(state, server, connect, commands));
        Ok(InstanceHandle {
            commands: command_tx,
            status,
            pid,
        })
    }
}

/// One event of an instance, in the order the app-server caused them.
/// Its `charge` holds budget bytes (PROTOCOL.md section 5) until it is
/// dropped: keep it until the event is written to Kandan, or the
/// app-server's output stops being read.
#[derive(Debug)]
pub(crate) struct Emitted {
    pub(crate) instance_id: Arc<str>,
    pub(crate) event: InstanceEvent,
    pub(crate) charge: Charge,
}

/// The events of an instance started with [`HeldInstance::start`].
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Emitted>);

impl Events {
    /// The next event; its bytes go back at once.
    pub async fn recv(&mut self) -> Option<InstanceEvent> {
        self.0.recv().await.map(|emitted| emitted.event)
    }
}

/// Drives a running instance; cheap to clone.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    commands: mpsc::Sender<Envelope>,
    status: watch::Receiver<InstanceSnapshot>,
    pid: u32,
}

#[derive(Debug)]
struct Envelope {
    command: InstanceCommand,
    reply: ReplyTx,
}

impl InstanceHandle {
    /// Sends a command and waits for its outcome. Commands sent before
    /// the instance started wait until it has.
    pub async fn call(&self, command: InstanceCommand) -> Result<Reply, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Envelope { command, reply })
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.unwrap_or(Err(CommandError::Stopped))
    }

    /// The state, thread and pending approvals now.
    pub fn status(&self) -> InstanceSnapshot {
        self.status.borrow().clone()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Why the main loop ended.
enum End {
    /// `InstanceCommand::Stop` (its reply is sent after `Stopped`).
    Stop(Option<ReplyTx>),
    /// The app-server exited or closed its output.
    Exited(Option<Exit>),
    /// The thread could not be opened.
    Failed,
}

/// How the instance reaches its app-server.
enum Connect {
    Ready(Transport),
    /// `launchTui`: over its WebSocket, once it listens.
    WebSocket(TuiAuth),
}

async fn run(
    mut state: State,
    mut server: AppServer,
    connect: Connect,
    mut commands: mpsc::Receiver<Envelope>,
) {
    // `tui_auth` keeps the token file until the app-server is gone.
    let (transport, tui_auth) = open_transport(&mut state, &mut server, connect).await;
    let Transport {
        mut incoming,
        outgoing,
    } = transport;
    state.out = Some(outgoing);
    state.initialize();
    // Commands that came before the thread opened (all but `Stop`).
    let mut deferred: Vec<Envelope> = Vec::new();
    let end = serve(
        &mut state,
        &mut server,
        &mut incoming,
        &mut commands,
        &mut deferred,
    )
    .await;
    let (reason, exit, reply) = match end {
        End::Stop(reply) => {
            let exit = stop(&mut state, &mut server, &mut incoming).await;
            (StopReason::Stopped, exit, reply)
        }
        End::Exited(exit) => {
            let (reason, exit) = exited(&mut state, &mut server, &mut incoming, exit).await;
            (reason, exit, None)
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
    drop(tui_auth);
    state.status.send_modify(|status| status.state = None);
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
    // Commands that waited for a start that never came, or raced the stop.
    for Envelope { reply, .. } in deferred {
        let _ = reply.send(Err(CommandError::Stopped));
    }
    commands.close();
    while let Some(Envelope { reply, .. }) = commands.recv().await {
        let _ = reply.send(Err(CommandError::Stopped));
    }
}

/// The transport to the app-server: its stdio, or (`launchTui`) its
/// WebSocket once it listens; a transport that cannot open is a closed one
/// with `state.failure` set. The auth, if any, keeps the token file.
async fn open_transport(
    state: &mut State,
    server: &mut AppServer,
    connect: Connect,
) -> (Transport, Option<TuiAuth>) {
    match connect {
        Connect::Ready(transport) => (transport, None),
        Connect::WebSocket(auth) => {
            state.tui_token_file = Some(auth.file().clone());
            let budget = state.options.event_budget.clone();
            let transport = match tui::connect(server, &auth, budget).await {
                Ok((transport, url)) => {
                    state.tui_url = Some(url);
                    transport
                }
                Err(message) => {
                    state.failure = Some(message);
                    // A closed transport: the loop ends at once.
                    let (_, incoming) = mpsc::channel(1);
                    let (outgoing, _) = mpsc::unbounded_channel();
                    Transport { incoming, outgoing }
                }
            };
            (transport, Some(auth))
        }
    }
}

/// The instance's life: messages, commands, the backlog and timers, until
/// it stops, its app-server goes or it fails.
async fn serve(
    state: &mut State,
    server: &mut AppServer,
    incoming: &mut mpsc::Receiver<Received>,
    commands: &mut mpsc::Receiver<Envelope>,
    deferred: &mut Vec<Envelope>,
) -> End {
    let budget = state.options.event_budget.clone();
    loop {
        if state.failure.is_some() {
            return End::Failed;
        }
        if state.abandoned {
            return End::Stop(None);
        }
        if state.started {
            for Envelope { command, reply } in std::mem::take(deferred) {
                state.on_command(command, reply).await;
            }
        }
        let deadline = state.next_deadline();
        // What came before the thread and went to a file, one at a time.
        let backlog = state.backlog_next();
        tokio::select! {
            biased;
            // First, so that it drains while the app-server keeps writing
            // (what it writes meanwhile joins the file).
            charge = budget.charge(backlog.unwrap_or_default()), if backlog.is_some() => {
                state.on_backlog_charge(charge).await;
            }
            received = incoming.recv() => match received {
                Some(Received::Message(message, charge)) => state.on_message(message, charge).await,
                Some(Received::LineTooLong) => state.failure = Some(line_too_long()),
                None => return End::Exited(None),
            },
            status = server.child.wait() => return End::Exited(status.ok().map(Exit::from)),
            envelope = commands.recv() => match envelope {
                Some(Envelope { command: InstanceCommand::Stop, reply }) => return End::Stop(Some(reply)),
                Some(envelope) if !state.started => deferred.push(envelope),
                Some(Envelope { command, reply }) => state.on_command(command, reply).await,
                // Every handle is gone: nobody can stop it later.
                None => return End::Stop(None),
            },
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => state.on_timer().await,
        }
    }
}

/// The app-server exited or closed its output: what it wrote before it
/// went is read, then its group is made sure to be gone (its stdin closed
/// first: it may wait on it). A thread that never opened is a failure.
async fn exited(
    state: &mut State,
    server: &mut AppServer,
    incoming: &mut mpsc::Receiver<Received>,
    exit: Option<Exit>,
) -> (StopReason, Exit) {
    drain(state, incoming, Duration::from_secs(1)).await;
    state.out = None;
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
        return (StopReason::Exited, exit);
    }
    let message = format!(
        "the codex app-server exited before its thread opened ({})",
        describe(exit)
    );
    state.emit(InstanceEvent::Failed { message }).await;
    (StopReason::Failed, exit)
}

/// `stop_instance`: interrupt the running turn, close stdin, SIGTERM the
/// group, SIGKILL after 5 s.
async fn stop(
    state: &mut State,
    server: &mut AppServer,
    incoming: &mut mpsc::Receiver<Received>,
) -> Exit {
    if let (Some(turn_id), Some(thread_id)) = (state.turn.clone(), state.thread_id.clone()) {
        let params = messages::turn_interrupt(&thread_id, &turn_id);
        state.request(messages::TURN_INTERRUPT, params, Tag::Interrupt(None));
        let deadline = Instant::now() + STOP_INTERRUPT_WAIT;
        while state.turn.is_some() {
            tokio::select! {
                message = incoming.recv() => match message {
                    Some(Received::Message(message, charge)) => state.on_message(message, charge).await,
                    Some(Received::LineTooLong) | None => break,
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

/// Handles what is still queued from a process that is gone or going,
/// and what waits in the backlog's file.
async fn drain(state: &mut State, incoming: &mut mpsc::Receiver<Received>, limit: Duration) {
    let deadline = Instant::now() + limit;
    let budget = state.options.event_budget.clone();
    let mut open = true;
    loop {
        let backlog = state.backlog_next();
        if !open && backlog.is_none() {
            return;
        }
        tokio::select! {
            biased;
            message = incoming.recv(), if open => match message {
                Some(Received::Message(message, charge)) => state.on_message(message, charge).await,
                Some(Received::LineTooLong) | None => open = false,
            },
            charge = budget.charge(backlog.unwrap_or_default()), if backlog.is_some() => {
                state.on_backlog_charge(charge).await;
            }
            () = sleep_until(deadline) => return,
        }
    }
}

/// Why an instance whose app-server wrote too long a line stopped.
fn line_too_long() -> String {
    format!(
        "the codex app-server wrote a line over {} MiB, the longest kandan-runner reads",
        MAX_LINE >> 20
    )
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
