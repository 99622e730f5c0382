//! Codex instances under `connect` (PROTOCOL.md sections 6 and 7): their
//! controls, their events numbered by `seq` and kept until Kandan's
//! `phx_reply` acknowledges them, and each app-server registered as a
//! watched root before it can fork.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cgroup::{Cgroup, Containment};
use crate::codex::{
    self, Emitted, InstanceCommand, InstanceEvent, InstanceHandle, InstanceOptions, Replay,
};
use crate::control::budget::{Budget, Charge};
use crate::control::{Ack, Charged, Session};
use crate::detect::RootRegistry;
use crate::wire::{
    Control, ControlIds, ControlType, ErrorCode, Event, Failure, InstanceEventJson, InstanceWire,
    ReadyInstance, StartInstance,
};

use super::Runner;

/// Instance events waiting for the main loop, from every instance (also
/// bounded in bytes: each holds its charge of the event budget).
const EVENT_QUEUE: usize = 1024;

/// An instance's event on its way to Kandan, with its budget bytes: each
/// instance sends it to the main loop itself.
pub(super) type Queued = Emitted;

/// The runner's Codex flags.
pub(super) struct Settings {
    pub(super) codex_bin: Option<PathBuf>,
    pub(super) stream_flush: Duration,
    pub(super) turn_idle_timeout: Duration,
    /// Shared with forwarding: instance events waiting for Kandan count in it.
    pub(super) event_budget: Budget,
}

struct Instance {
    /// None once it stopped; kept until Kandan has all its events.
    handle: Option<InstanceHandle>,
    /// The app-server's pid, for attribution without a cgroup.
    pid: u32,
    /// Its cgroup while it runs: a listener's instance is the cgroup it
    /// is in (PROTOCOL.md section 5), never a variable a process can set.
    cgroup: Option<Arc<Cgroup>>,
    cwd: PathBuf,
    /// Its events serialized, until Kandan acknowledges them.
    replay: Replay<InstanceEventJson>,
    /// Its `instance_started`, sent again to a `start_instance` of a
    /// running instance.
    started: Option<InstanceEventJson>,
}

pub(super) struct Instances {
    live: HashMap<String, Instance>,
    events_tx: mpsc::Sender<Queued>,
    settings: Settings,
    roots: Arc<dyn RootRegistry>,
    containment: Containment,
}

impl Instances {
    pub(super) fn new(
        settings: Settings,
        roots: Arc<dyn RootRegistry>,
        containment: Containment,
    ) -> (Self, mpsc::Receiver<Queued>) {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let instances = Instances {
            live: HashMap::new(),
            events_tx,
            settings,
            roots,
            containment,
        };
        (instances, events)
    }

    /// The running instance whose processes `pid` is one of: by its cgroup
    /// (whatever the process did to its environment or ancestry), or,
    /// without cgroups, by pid ancestry up to the app-server.
    pub(super) fn owner_of(&self, pid: u32) -> Option<String> {
        let running = || self.live.iter().filter(|(_, i)| i.handle.is_some());
        if let Some(cgroup) = crate::cgroup::cgroup_of(pid) {
            let owner = running().find(|(_, instance)| {
                (instance.cgroup.as_ref()).is_some_and(|own| cgroup.starts_with(own.name()))
            });
            if let Some((id, _)) = owner {
                return Some(id.clone());
            }
        }
        let ancestors = crate::detect::process_tree::ancestors(pid);
        running()
            .find(|(_, instance)| instance.cgroup.is_none() && ancestors.contains(&instance.pid))
            .map(|(id, _)| id.clone())
    }

    /// Whether `event` may change what `status` shows of its instance:
    /// not the stream of notifications, but a turn starting or ending.
    pub(super) fn changes_status(event: &InstanceEvent) -> bool {
        match event {
            InstanceEvent::Notification { method, .. } => {
                matches!(method.as_str(), "turn/started" | "turn/completed")
            }
            _ => true,
        }
    }

    /// `runner_ready.instances`.
    pub(super) fn ready(&self) -> Vec<ReadyInstance> {
        let mut ready: Vec<ReadyInstance> = (self.live.iter())
            .filter_map(|(id, instance)| {
                let status = instance.handle.as_ref()?.status();
                Some(ReadyInstance {
                    instance_id: id.clone(),
                    thread_id: status.thread_id,
                    cwd: instance.cwd.display().to_string(),
                    state: status.state?,
                    last_seq: instance.replay.last_seq(),
                    pending_approvals: status.pending_approvals,
                })
            })
            .collect();
        ready.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        ready
    }

    fn handle(&self, instance_id: &str) -> Option<InstanceHandle> {
        self.live.get(instance_id)?.handle.clone()
    }
}

/// Ends an app-server held before exec (not reaped yet, so the pid is
/// still its own); dropping it closes its gate too.
fn kill_held(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill has no memory preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// A fresh instance id: 16 random bytes in hex.
pub(super) fn fresh_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Runner {
    pub(super) async fn start_instance(&mut self, start: StartInstance) -> Result<(), Failure> {
        let instance_id = start.instance_id.clone().unwrap_or_else(fresh_id);
        let refuse = |code, message| Err(Failure::new(code, message));
        if let Some(instance) = self.instances.live.get_mut(&instance_id)
            && instance.handle.is_some()
        {
            // Running: its `instance_started` again.
            if let Some(started) = instance.started.clone() {
                self.emit(&instance_id, started, Charge::default()).await;
            }
            return Ok(());
        }
        // Opened now: the app-server starts in this very directory.
        let checked = match self.cwds.check(start.cwd.as_deref()) {
            Ok(cwd) => cwd,
            Err(err) => {
                let message = crate::error_chain(&err);
                return refuse(ErrorCode::CwdNotAllowed, message);
            }
        };
        let cwd = checked.path().to_path_buf();
        let options = self.instance_options(&instance_id, &checked, start)?;
        let cgroup = options.cgroup.clone();
        // Held before exec until it is a watched root: a dev server the
        // agent starts is detected from its first fork.
        let held = match codex::spawn(options) {
            Ok(held) => held,
            Err(err) => {
                let message = crate::error_chain(&err);
                return refuse(ErrorCode::InstanceFailed, message);
            }
        };
        // Its directory, once more, before it execs: moved out of its root
        // or withdrawn since the check, it never runs.
        if let Err(err) = self.cwds.verify_process(held.pid()) {
            kill_held(held.pid());
            drop(held);
            let message = crate::error_chain(&err);
            return refuse(ErrorCode::CwdNotAllowed, message);
        }
        if let Err(err) = self.instances.roots.add_root(held.pid()) {
            tracing::warn!(instance_id, "cannot watch the app-server's tree: {err}");
        }
        let events = self.instances.events_tx.clone();
        let started = held.start_into(Arc::from(instance_id.as_str()), events);
        let handle = match started {
            Ok(started) => started,
            Err(err) => {
                if let Some(cgroup) = &cgroup {
                    self.instances.roots.remove_cgroup(cgroup);
                }
                let message = crate::error_chain(&err);
                return refuse(ErrorCode::InstanceFailed, message);
            }
        };
        let pid = handle.pid();
        let replay = match self.instances.live.remove(&instance_id) {
            // A stopped instance started again keeps numbering its events.
            Some(old) => old.replay,
            None => Replay::new(codex::DEFAULT_MAX_BYTES),
        };
        tracing::info!(instance_id, pid, cwd = %cwd.display(), "codex instance started");
        self.report.cgroup(
            &instance_id,
            cgroup.as_ref().map(|c| c.path().to_path_buf()),
        );
        self.instances.live.insert(
            instance_id,
            Instance {
                handle: Some(handle),
                pid,
                cgroup,
                cwd,
                replay,
                started: None,
            },
        );
        Ok(())
    }

    /// How the app-server of `instance_id` starts: the runner's Codex
    /// flags, `start` as Kandan sent it, in the checked directory and a
    /// cgroup of its own (watched as a root, where one can be made).
    fn instance_options(
        &self,
        instance_id: &str,
        checked: &crate::workdir::CheckedCwd,
        start: StartInstance,
    ) -> Result<InstanceOptions, Failure> {
        let settings = &self.instances.settings;
        let bin = codex::resolve_bin(settings.codex_bin.as_deref())
            .map_err(|err| Failure::new(ErrorCode::InstanceFailed, crate::error_chain(&err)))?;
        let mut options = InstanceOptions::new(bin, checked.path().to_path_buf());
        options.cwd_dir = Some(checked.dir().clone());
        options.start = start;
        options.stream_flush = settings.stream_flush;
        options.turn_idle_timeout = settings.turn_idle_timeout;
        options.event_budget = settings.event_budget.clone();
        options.marker = self.marker.clone();
        options.cgroup = self.instances.containment.new_group("instance");
        if let Some(cgroup) = &options.cgroup
            && let Err(err) = self.instances.roots.add_cgroup(cgroup)
        {
            tracing::warn!(instance_id, "cannot watch the instance's cgroup: {err}");
        }
        Ok(options)
    }

    /// A control for a running instance (`start_turn`, `interrupt_turn`,
    /// `resolve_approval_request`, `read_thread`, `stop_instance`), run on
    /// the instance's task; a failure answers it as a `control_error` of
    /// `ids`.
    pub(super) fn instance_command(
        &self,
        session: Session,
        ids: &ControlIds,
        control: Control,
    ) -> Result<(), Failure> {
        let (instance_id, command) = match control {
            Control::StartTurn(turn) => {
                (turn.instance_id.clone(), InstanceCommand::StartTurn(turn))
            }
            Control::InterruptTurn(interrupt) => (
                interrupt.instance_id.clone(),
                InstanceCommand::Interrupt(interrupt),
            ),
            Control::ResolveApprovalRequest(resolve) => (
                resolve.instance_id.clone(),
                InstanceCommand::ResolveApproval(resolve),
            ),
            Control::ReadThread(read) => {
                (read.instance_id.clone(), InstanceCommand::ReadThread(read))
            }
            Control::StopInstance(stop) => (stop.instance_id, InstanceCommand::Stop),
            other => {
                let message = format!("{} is not a control for an instance", other.kind().name());
                return Err(Failure::new(ErrorCode::InvalidControl, message));
            }
        };
        let Some(handle) = self.instances.handle(&instance_id) else {
            let message = format!("no running instance {instance_id:?}");
            return Err(Failure::new(ErrorCode::UnknownInstance, message));
        };
        let (to, ids) = (self.handle.responder(session), ids.clone());
        tokio::spawn(async move {
            if let Err(err) = handle.call(command).await {
                let failure = Failure::new(err.code(), crate::error_chain(&err));
                to.send(ids.error(failure)).await;
            }
        });
        Ok(())
    }

    /// An instance's event: serialized, numbered, kept until acknowledged,
    /// sent; its budget bytes go back once it is written to Kandan.
    pub(super) async fn on_instance_event(&mut self, emitted: Emitted) {
        let Emitted {
            instance_id,
            event,
            charge,
        } = emitted;
        let json = match &event {
            InstanceEvent::Failed { message } => {
                let ids = ControlType::StartInstance.ids().instance(&*instance_id);
                let failure = Failure::new(ErrorCode::InstanceFailed, message.clone());
                return self.send(ids.error(failure)).await;
            }
            _ => match event.to_json(charge.bytes()) {
                Ok(json) => json,
                Err(err) => {
                    tracing::warn!(instance_id = &*instance_id, "instance event dropped: {err}");
                    return;
                }
            },
        };
        match &event {
            InstanceEvent::Started { .. } => {
                if let Some(instance) = self.instances.live.get_mut(&*instance_id) {
                    instance.started = Some(json.clone());
                }
            }
            InstanceEvent::Stopped { .. } => {
                if let Some(instance) = self.instances.live.get_mut(&*instance_id) {
                    instance.handle = None;
                    if let Some(cgroup) = instance.cgroup.take() {
                        self.instances.roots.remove_cgroup(&cgroup);
                        self.report.cgroup(&instance_id, None);
                    }
                }
            }
            _ => {}
        }
        drop(event);
        self.emit(&instance_id, json, charge).await;
    }

    /// Numbers `event` in the instance's log and sends it, tracked: the log
    /// and the frame share its one buffer.
    async fn emit(&mut self, instance_id: &str, event: InstanceEventJson, charge: Charge) {
        let Some(instance) = self.instances.live.get_mut(instance_id) else {
            return;
        };
        let bytes = event.json.len();
        let entry = instance.replay.push(event, bytes);
        let wire = InstanceWire {
            instance_id: instance_id.to_owned(),
            seq: entry.seq,
            gap: entry.gap,
            event: entry.event.clone(),
        };
        let ack = Ack {
            instance_id: instance_id.to_owned(),
            seq: entry.seq,
        };
        let charged = Charged {
            event: Event::Instance(wire),
            charge,
        };
        if self.handle.send_tracked(charged, ack).await.is_err() {
            tracing::warn!("control client stopped; instance event dropped");
        }
    }

    /// Kandan has the event: it leaves the log (and a stopped instance
    /// whose log is empty is forgotten).
    pub(super) fn on_acked(&mut self, ack: Ack) {
        let Some(instance) = self.instances.live.get_mut(&ack.instance_id) else {
            return;
        };
        instance.replay.ack(ack.seq);
        if instance.handle.is_none() && instance.replay.unacked().next().is_none() {
            self.instances.live.remove(&ack.instance_id);
        }
    }

    /// After `runner_ready`: every event Kandan has not acknowledged, again,
    /// in order per instance.
    pub(super) async fn resend_unacked(&mut self) {
        let mut pending = Vec::new();
        for (id, instance) in &self.instances.live {
            for entry in instance.replay.unacked() {
                let wire = InstanceWire {
                    instance_id: id.clone(),
                    seq: entry.seq,
                    gap: entry.gap,
                    event: entry.event.clone(),
                };
                pending.push((wire, entry.seq));
            }
        }
        for (wire, seq) in pending {
            let ack = Ack {
                instance_id: wire.instance_id.clone(),
                seq,
            };
            if self
                .handle
                .send_tracked(Event::Instance(wire), ack)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The runner is stopping: every instance stops (side by side).
    pub(super) async fn stop_instances(&self) {
        let handles: Vec<InstanceHandle> = (self.instances.live.values())
            .filter_map(|instance| instance.handle.clone())
            .collect();
        let stops = handles
            .iter()
            .map(|handle| handle.call(InstanceCommand::Stop));
        futures_util::future::join_all(stops).await;
    }
}
