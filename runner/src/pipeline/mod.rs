//! From raw socket events to candidates: one service per port, a timer-based
//! stability window, change detection and the ignore policy.

use std::net::IpAddr;

use crate::config::{AttributeResolver, OnDetect, PortAttributes, PortRule};
use crate::detect::process_info::ProcessInfo;

/// A stable listener of a watched tree, one per port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub(crate) port: u16,
    pub(crate) pid: u32,
    /// Its `label` is the `[[ports]]` entry's when that has one.
    pub(crate) process: ProcessInfo,
    /// Local addresses bound on that port, sorted, deduplicated.
    pub(crate) addresses: Vec<IpAddr>,
    /// What the first matching `[[ports]]` entry says (never `ignore`:
    /// those are dropped before they become candidates).
    pub(crate) attributes: PortAttributes,
}

/// What the pipeline tells the rest of the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidateEvent {
    /// The port's listener has been stable for the debounce window.
    Opened(Candidate),
    /// The same port is now owned by another pid, command or cwd.
    Changed(Candidate),
    /// Only the bound addresses changed (an IPv6 socket joined later, say):
    /// not printed by `watch`, but forwarding must dial the right family.
    AddressesChanged(Candidate),
    /// The port's last socket closed and stayed closed for the window.
    Closed { port: u16, pid: u32 },
}

impl CandidateEvent {
    pub(crate) fn port(&self) -> u16 {
        match self {
            Self::Opened(c) | Self::Changed(c) | Self::AddressesChanged(c) => c.port,
            Self::Closed { port, .. } => *port,
        }
    }
}

mod debounce;
mod ignore;
mod services;
#[cfg(test)]
mod tests;

pub(crate) use debounce::Debouncer;
pub(crate) use ignore::{CommandPattern, IgnorePolicy};
pub(crate) use services::Services;

use std::collections::BTreeSet;
use std::future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::detect::DetectorEvent;
use crate::gate::Gate;

/// Default stability window (`--debounce-ms`).
pub(crate) const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(750);

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Stability window (`--debounce-ms`, default 750 ms).
    pub debounce: Duration,
    pub(crate) ignore: IgnorePolicy,
    /// The config file's `[[ports]]` entries; a project's
    /// `.kandan/ports.toml` adds its own after them.
    pub(crate) ports: Vec<PortRule>,
    /// Told every port's live sockets the moment they change, before the
    /// window: forwarding follows the live sockets (`connect` only).
    pub gate: Option<Gate>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            debounce: DEFAULT_DEBOUNCE,
            ignore: IgnorePolicy::default(),
            ports: Vec::new(),
            gate: None,
        }
    }
}

/// The synchronous core of [`run`]: detector events in, candidate events
/// out, time passed in by the caller.
#[derive(Debug)]
pub struct Pipeline {
    ignore: IgnorePolicy,
    attributes: AttributeResolver,
    services: Services,
    /// Ignored sockets: never candidates, but the gate sees them, so an
    /// ignored listener on an approved port (a project's `.kandan/ports.toml`
    /// can say `ignore`) stops forwarding like any other process would.
    ignored: Services,
    debouncer: Debouncer,
    gate: Option<Gate>,
}

impl Pipeline {
    pub(crate) fn new(config: PipelineConfig) -> Self {
        Pipeline {
            ignore: config.ignore,
            attributes: AttributeResolver::new(config.ports),
            services: Services::new(),
            ignored: Services::new(),
            debouncer: Debouncer::new(config.debounce),
            gate: config.gate,
        }
    }

    /// Applies one detector event at `now`. Returns what is due by then:
    /// timers that expired first (so an event arriving at a deadline never
    /// cancels it), then what the event itself causes.
    pub(crate) fn apply(&mut self, event: DetectorEvent, now: Instant) -> Vec<CandidateEvent> {
        let mut out = self.debouncer.fire_due(now);
        // Ports whose candidate may change, and ports of ignored sockets.
        let (touched, ignored): (Vec<u16>, Vec<u16>) = match event {
            DetectorEvent::Opened(socket) => {
                // A socket id may be reused by a listener on the other side.
                if self.ignores(socket.port, &socket.process) {
                    tracing::debug!(port = socket.port, command = %socket.process.command, "ignored listener");
                    let touched = self.services.close(socket.id).into_iter().collect();
                    (touched, vec![self.ignored.open(socket)])
                } else {
                    let ignored = self.ignored.close(socket.id).into_iter().collect();
                    (vec![self.services.open(socket)], ignored)
                }
            }
            DetectorEvent::Closed(id) => (
                self.services.close(id).into_iter().collect(),
                self.ignored.close(id).into_iter().collect(),
            ),
            DetectorEvent::Snapshot(sockets) => {
                let (dropped, kept): (Vec<_>, Vec<_>) =
                    (sockets.into_iter()).partition(|s| self.ignores(s.port, &s.process));
                (
                    self.services.replace(kept).into_iter().collect(),
                    self.ignored.replace(dropped).into_iter().collect(),
                )
            }
        };
        if let Some(gate) = &self.gate {
            let ports: BTreeSet<u16> = touched.iter().chain(&ignored).copied().collect();
            for port in ports {
                gate.set_live(
                    port,
                    self.services
                        .sockets(port)
                        .chain(self.ignored.sockets(port)),
                );
            }
        }
        for port in touched {
            let current = self.services.get(port);
            out.extend(self.debouncer.update(port, current, now));
        }
        // A zero window makes the new state due right away.
        out.extend(self.debouncer.fire_due(now));
        self.with_attributes(out)
    }

    /// Fires the timers due at `now`.
    pub(crate) fn fire_due(&mut self, now: Instant) -> Vec<CandidateEvent> {
        let due = self.debouncer.fire_due(now);
        self.with_attributes(due)
    }

    /// Whether a listener is never a candidate: the ignore policy, or a
    /// `[[ports]]` entry with `on_detect = "ignore"`. Dropped here, before
    /// the services, it is not live for the gate either: never forwarded.
    fn ignores(&mut self, port: u16, process: &ProcessInfo) -> bool {
        self.ignore.ignores(port, process)
            || self.attributes.attributes(port, process).on_detect == OnDetect::Ignore
    }

    /// The one place candidates get their `[[ports]]` attributes, so
    /// `watch` and `connect` see the same labels and `on_detect`.
    fn with_attributes(&mut self, mut events: Vec<CandidateEvent>) -> Vec<CandidateEvent> {
        for event in &mut events {
            if let CandidateEvent::Opened(candidate)
            | CandidateEvent::Changed(candidate)
            | CandidateEvent::AddressesChanged(candidate) = event
            {
                let attributes = self
                    .attributes
                    .attributes(candidate.port, &candidate.process);
                if let Some(label) = &attributes.label {
                    candidate.process.label.clone_from(label);
                }
                candidate.attributes = attributes;
            }
        }
        events
    }

    /// The runner stops: `Closed` for every reported port that no longer
    /// listens (see [`Finish`]), at once.
    pub(crate) fn finish(&mut self, finish: &Finish) -> Vec<CandidateEvent> {
        self.debouncer.finish(|port| {
            finish
                .listening
                .as_ref()
                .is_none_or(|listening| listening.contains(&port))
        })
    }

    /// When the next timer is due, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.debouncer.next_deadline()
    }
}

/// The runner is stopping (PROTOCOL.md section 9): [`run`] reports
/// `Closed` for every reported port that no longer listens, without waiting
/// for the window, and returns.
#[derive(Clone, Debug, Default)]
pub struct Finish {
    /// The ports that still listen, from a fresh scan; `None`: trust the
    /// detector's events so far.
    pub(crate) listening: Option<BTreeSet<u16>>,
}

/// Runs until `events` closes (what is still waiting for its window is
/// dropped, not flushed) or `finish` says so, sending candidates to `out`.
/// Stops early if `out` is closed, since nobody is listening any more.
pub async fn run(
    config: PipelineConfig,
    mut events: mpsc::Receiver<DetectorEvent>,
    out: mpsc::Sender<CandidateEvent>,
    mut finish: oneshot::Receiver<Finish>,
) {
    let mut pipeline = Pipeline::new(config);
    let mut finishing = true;
    loop {
        let deadline = pipeline.next_deadline();
        let timer = async {
            match deadline {
                Some(at) => sleep_until(at).await,
                None => future::pending().await,
            }
        };
        let emitted = tokio::select! {
            biased;
            () = timer => pipeline.fire_due(Instant::now()),
            event = events.recv() => match event {
                Some(event) => pipeline.apply(event, Instant::now()),
                None => break,
            },
            request = &mut finish, if finishing => match request {
                Ok(request) => {
                    for event in pipeline.finish(&request) {
                        if out.send(event).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                // Nobody will ask: run until the events end.
                Err(_) => {
                    finishing = false;
                    Vec::new()
                }
            },
        };
        for event in emitted {
            tracing::debug!(?event, "candidate");
            if out.send(event).await.is_err() {
                return;
            }
        }
    }
}
