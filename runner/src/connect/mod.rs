//! `kandan-runner connect`: the whole pipeline against Kandan. Candidates go
//! through approval to Kandan; Kandan's controls go to approval and
//! forwarding. One task owns the approval state, so there is no lock around
//! it; forwarded requests and sockets answer Kandan from their own tasks.

mod dispatch;
mod editors;
mod instances;
mod reported_gate;
mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::approval::Approval;
use crate::cli::ConnectArgs;
use crate::control::{
    ControlClient, ControlConfig, ControlHandle, ControlInput, JoinInfo, Session, Timing,
};
use crate::forward::{CloseCause, ForwardConfig, Forwarder};
use crate::gate::RevokeReason;
use crate::logging::Output;
use crate::pipeline::CandidateEvent;
use crate::report::Report;
use crate::root_pids::RootPids;
use crate::supervise::{RootCommand, RunnerStop, Signal, Signals};
use crate::trees::{self, Trees};
use crate::wire::{Event, RunnerReady};

/// Runs `connect` and returns the process exit code.
pub(crate) async fn run(args: ConnectArgs, output: Output) -> i32 {
    let report = Report::new(output);
    let token = match checked_token(&args, &report) {
        Ok(token) => token,
        Err(code) => return code,
    };
    if token.is_some() {
        crate::supervise::hide_from_tree();
    }
    // The gate first: the pipeline feeds it every port's live sockets.
    let approval = Approval::new(args.detector.redactor.clone());
    let gate = approval.gate();
    let (
        Trees {
            selection,
            candidates,
            command,
            finisher,
            roots,
            root_pids,
            containment,
        },
        signals,
    ) = match trees::start_for_command(
        &args.detector,
        trees::CommandOutput::default(),
        Some(gate.clone()),
        &report,
    ) {
        Ok(started) => started,
        Err(code) => return code,
    };

    let runner_id = args.identity.runner_id.clone().unwrap_or_else(hostname);
    report.started("connect", &selection.kind.to_string());
    report.kandan(&crate::control::endpoint::redact(&args.url), &runner_id);
    // Removed (with its socket) when `connect` returns.
    let _status = crate::status::serve(report.clone());
    let join = join_info(&runner_id, selection.kind.to_string());
    let code_server = (args.code_server_bin.as_deref()).map(crate::program::from_runner_cwd);
    let (editors, editor_events) =
        editors::registry(code_server, &args.url, token.as_deref(), &containment);
    let mut control_config = control_config(&args, token, join);
    // Events waiting for Kandan, forwarded traffic's and instances' alike.
    let event_budget =
        crate::control::budget::Budget::new(crate::control::budget::DEFAULT_EVENT_BUDGET);
    let sockets = editors::Sockets(editors.as_ref().ok().cloned());
    let forwarder = forwarder(&args, &gate, &report, sockets, event_budget.clone());
    // `forward_*` controls go from the connection straight to the forwarder.
    control_config.shortcut = Some(forwarder.clone());
    let channel = ControlClient::spawn(control_config);
    let inputs = channel.inputs;
    let settings = instance_settings(&args, event_budget);
    let (instances, instance_events) =
        instances::Instances::new(settings, roots, containment.clone());
    let mut runner = Runner {
        handle: channel.handle,
        approval,
        forwarder,
        runner_id,
        backend: selection.kind.to_string(),
        backend_reason: selection.reason.clone(),
        config: dispatch::RunnerConfig::default(),
        cwds: crate::workdir::CwdPolicy::new(&args.codex.allow_cwd),
        instances,
        marker: crate::supervise::new_marker(),
        editors,
        limits: ready_limits(&args),
        report,
    };

    let mut channels = Channels {
        candidates,
        inputs,
        editor_events,
        instance_events,
        command,
        root_pids,
        signals,
    };
    let (stop, refused) = match runner.main_loop(&mut channels).await {
        Ok(ended) => ended,
        Err(code) => return code,
    };
    let ends = channels.into_ends(finisher, channel.task);
    let code = runner.shut_down(stop, ends).await;
    containment.remove();
    if refused { REFUSED } else { code }
}

/// How Codex instances run, from the flags; their events share
/// `event_budget` with forwarded traffic's.
fn instance_settings(
    args: &ConnectArgs,
    event_budget: crate::control::budget::Budget,
) -> instances::Settings {
    instances::Settings {
        codex_bin: (args.codex.codex_bin.as_deref()).map(crate::program::from_runner_cwd),
        stream_flush: Duration::from_millis(args.codex.stream_flush_ms),
        turn_idle_timeout: Duration::from_millis(args.codex.turn_idle_timeout_ms),
        event_budget,
    }
}

/// `--url` checked and the token read, or the exit code (2) after saying
/// why: no retry can make such a URL or token work.
fn checked_token(args: &ConnectArgs, report: &Report) -> Result<Option<String>, i32> {
    if let Err(err) = crate::control::mount::check_mount(&args.url) {
        let shown = crate::control::endpoint::redact(&args.url);
        report.error(format!("--url {shown}: {err}"));
        return Err(2);
    }
    args.identity.token().map_err(|err| {
        report.error(crate::error_chain(&err));
        2
    })
}

/// What the runner joins with (PROTOCOL.md section 2).
fn join_info(runner_id: &str, backend: String) -> JoinInfo {
    JoinInfo {
        runner_id: runner_id.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: hostname(),
        os: std::env::consts::OS.to_string(),
        backend,
        config_version: 0,
    }
}

/// The channel to Kandan as the flags say: timing and the largest message.
fn control_config(args: &ConnectArgs, token: Option<String>, join: JoinInfo) -> ControlConfig {
    let mut config = ControlConfig::new(args.url.clone(), token, join);
    config.timing = Timing {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        heartbeat_timeout: Duration::from_millis(args.heartbeat_ms),
        ..Timing::default()
    };
    config.max_message = crate::control::connector::message_limit(args.max_request_body);
    config
}

/// The forwarder behind `gate`, its refusals and learned schemes shown in
/// `report`; a port the gate revokes stops at once.
fn forwarder(
    args: &ConnectArgs,
    gate: &crate::gate::Gate,
    report: &Report,
    editors: editors::Sockets,
    event_budget: crate::control::budget::Budget,
) -> Arc<Forwarder> {
    let forwarder = Arc::new(Forwarder::new(
        Arc::new(reported_gate::ReportedGate {
            gate: gate.clone(),
            report: report.clone(),
        }),
        Arc::new(editors),
        ForwardConfig {
            max_request_body: args.max_request_body,
            max_response_body: args.max_response_body,
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
            overall_timeout: Duration::from_millis(args.request_timeout_ms),
            event_budget,
            ..ForwardConfig::default()
        },
    ));
    let shown = report.clone();
    forwarder.on_scheme_learned(move |port, scheme| shown.scheme(port, scheme));
    // From whichever task revoked it (the detector's or the main loop);
    // weak, as the forwarder holds the gate.
    let closer = Arc::downgrade(&forwarder);
    gate.on_revoke(move |revocation| {
        let cause = match revocation.reason {
            RevokeReason::Closed => CloseCause::ListenerClosed,
            RevokeReason::OwnerChanged | RevokeReason::Denied => CloseCause::ApprovalRevoked,
        };
        if let Some(forwarder) = closer.upgrade() {
            forwarder.close_port(revocation.port, cause);
        }
    });
    forwarder
}

/// What the main loop waits on.
struct Channels {
    candidates: mpsc::Receiver<CandidateEvent>,
    inputs: mpsc::Receiver<ControlInput>,
    editor_events: mpsc::UnboundedReceiver<Event>,
    instance_events: mpsc::Receiver<instances::Queued>,
    command: Option<RootCommand>,
    root_pids: RootPids,
    signals: Signals,
}

impl Channels {
    /// What the shutdown still needs of them, with the pipeline's finisher
    /// and the control client's task.
    fn into_ends(
        self,
        finisher: crate::trees::Finisher,
        client: tokio::task::JoinHandle<()>,
    ) -> shutdown::Ends {
        shutdown::Ends {
            command: self.command,
            signals: self.signals,
            finisher,
            candidates: self.candidates,
            editor_events: self.editor_events,
            instance_events: self.instance_events,
            client,
        }
    }
}

impl Runner {
    /// Handles the detector's, Kandan's, the editors' and the instances'
    /// events until something stops the runner: why, and whether Kandan
    /// refused it; `Err` with the exit code when a channel broke.
    async fn main_loop(&mut self, ch: &mut Channels) -> Result<(RunnerStop, bool), i32> {
        loop {
            tokio::select! {
                event = ch.candidates.recv() => {
                    let Some(event) = event else {
                        self.report.error("the detector stopped");
                        return Err(1);
                    };
                    self.on_candidate(event).await;
                }
                input = ch.inputs.recv() => {
                    let Some(input) = input else {
                        self.report.error("the control channel stopped");
                        return Err(1);
                    };
                    if let ControlInput::Refused(refusal) = input {
                        // Stopped like a SIGTERM would: the command's tree ends.
                        self.report.error(refusal.to_string());
                        return Ok((RunnerStop::Signal(Signal::Terminate), true));
                    }
                    self.on_input(input).await;
                    self.handle.handled();
                }
                Some(event) = ch.editor_events.recv() => {
                    self.send(event).await;
                    editors::report_status(&self.editors, &self.report);
                }
                Some(emitted) = ch.instance_events.recv() => {
                    let changes_status = instances::Instances::changes_status(&emitted.event);
                    self.on_instance_event(emitted).await;
                    if changes_status {
                        self.report.instances(self.instances.ready());
                    }
                }
                code = crate::supervise::exit_code_of(&mut ch.command) => {
                    return Ok((RunnerStop::Exited(code), false));
                }
                () = ch.root_pids.all_ended() => return Ok((RunnerStop::Exited(0), false)),
                signal = ch.signals.recv() => return Ok((RunnerStop::Signal(signal), false)),
            }
        }
    }
}

/// Exit code when Kandan refused the runner (PROTOCOL.md section 1).
const REFUSED: i32 = 3;

/// The state the main loop owns.
struct Runner {
    handle: ControlHandle,
    approval: Approval,
    forwarder: Arc<Forwarder>,
    runner_id: String,
    backend: String,
    backend_reason: Option<String>,
    config: dispatch::RunnerConfig,
    /// Where instances and editors may run (PROTOCOL.md section 6).
    cwds: crate::workdir::CwdPolicy,
    editors: editors::Registry,
    instances: instances::Instances,
    /// The tree marker the app-servers carry.
    marker: String,
    /// Announced in `runner_ready`.
    limits: crate::wire::Limits,
    /// What a person sees on stderr and in `status`.
    report: Report,
}

/// `runner_ready.limits`: the body limits of `connect`'s flags and the
/// WebSocket message limit forwarding enforces.
fn ready_limits(args: &ConnectArgs) -> crate::wire::Limits {
    crate::wire::Limits {
        max_request_body: args.max_request_body,
        max_response_body: args.max_response_body,
        max_web_socket_message: ForwardConfig::default().ws_max_message,
    }
}

impl Runner {
    async fn send(&self, event: Event) {
        self.report.control_error(&event);
        if self.handle.send(event).await.is_err() {
            tracing::warn!("control channel stopped; event dropped");
        }
    }

    async fn reply(&self, session: Session, event: impl Into<crate::control::Charged>) {
        let event = event.into();
        self.report.control_error(&event.event);
        if self.handle.reply(session, event).await.is_err() {
            tracing::warn!("control channel stopped; reply dropped");
        }
    }

    async fn on_candidate(&mut self, event: crate::pipeline::CandidateEvent) {
        use crate::pipeline::CandidateEvent;
        let mut offered = None;
        let mut silent = false;
        if let CandidateEvent::Opened(candidate)
        | CandidateEvent::Changed(candidate)
        | CandidateEvent::AddressesChanged(candidate) = &event
        {
            silent = candidate.attributes.on_detect == crate::config::OnDetect::Silent;
            // The `[[ports]]` protocol, set before the listener can be approved.
            self.forwarder
                .set_protocol(candidate.port, candidate.attributes.protocol);
            offered = Some(candidate.port);
        }
        // Approval holds no silent listener; `status` still lists it.
        self.report.silent(&event, silent, self.approval.redactor());
        let instances = &self.instances;
        match (self.approval).on_candidate(event, |pid| instances.owner_of(pid)) {
            Ok(events) => {
                for event in events {
                    self.send(event).await;
                }
            }
            Err(err) => tracing::error!("approval: {}", crate::error_chain(&err)),
        }
        self.report.listeners(self.approval.listeners());
        // A scheme set by `protocol` is known before any request.
        if let Some((port, scheme)) =
            offered.and_then(|port| Some((port, self.forwarder.scheme(port)?)))
        {
            self.report.scheme(port, scheme);
        }
    }

    async fn on_input(&mut self, input: ControlInput) {
        match input {
            ControlInput::Joined(session) => {
                self.report.joined();
                let ready = Event::RunnerReady(RunnerReady {
                    runner_id: self.runner_id.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    backend: self.backend.clone(),
                    backend_reason: self.backend_reason.clone(),
                    config_version: self.config.version,
                    listeners: self.approval.snapshot(),
                    instances: self.instances.ready(),
                    editors: editors::ready(&self.editors),
                    limits: self.limits,
                });
                self.reply(session, ready).await;
                self.resend_unacked().await;
            }
            ControlInput::Control { session, control } => {
                self.dispatch(session, *control).await;
            }
            // The main loop stops on it before it gets here.
            ControlInput::Refused(_) => {}
            ControlInput::Acked(ack) => self.on_acked(ack),
            ControlInput::Reconnecting {
                attempt,
                delay,
                reason,
            } => self.report.connect_failed(attempt, delay, &reason),
            ControlInput::Disconnected => {
                // Kandan forgets its requests and sockets with the connection.
                self.forwarder.close_all();
            }
        }
    }
}

/// This machine's host name, or "localhost".
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates
    // when the name fits.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}
