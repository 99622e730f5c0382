//! What the runner tells a person: state lines on stderr (connected,
//! reconnecting, each port's approval, instances and editors, refused
//! forwards) and the snapshot `kandan-runner status` reads.
//!
//! A handle, not a global. Each command's top level (`connect::run`,
//! `watch::run`, the one-shot commands) makes one [`Report`] from the
//! output flags and hands clones down to the code that knows what changed:
//! the main loops, the tree set-up, and the status socket, which reads the
//! same state through its clone. The report keeps the runner's current
//! state, prints a line only when something a person cares about changed
//! (reconnect attempts are collapsed into one line), and gives `status` a
//! snapshot. A handle rather than events to one printing task: `status`
//! reads the state on demand, and a line is printed before the next change
//! is decided; a mutex held for a few field updates gives both.
//!
//! The layers below `connect` do not import this module: the control
//! client says `ControlInput::Reconnecting`, the forwarder calls back with
//! the scheme it learned, and the gate it dials through is wrapped to tell
//! refusals (`connect/reported_gate.rs`); `connect` passes them on. So
//! imports go one way: the commands -> `report` -> what it describes.

mod connection;
pub(crate) mod document;
mod escape;
mod line;
mod listeners;
mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub(crate) use escape::escape;
pub(crate) use line::Line;

use crate::gate::GateRefusal;
use crate::logging::Output;
use crate::pipeline::CandidateEvent;
use crate::redact::Redactor;
use crate::wire::{ReadyEditor, ReadyInstance};
use document::{ListenerStatus, RunnerStatus};

/// The runner's report: cheap to clone (one `Arc`), every clone the same.
#[derive(Clone, Debug)]
pub(crate) struct Report(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    output: Output,
    /// The runner's state as `status` shows it, and what was last printed.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    status: RunnerStatus,
    /// `on_detect = "silent"` listeners: never offered to Kandan, so
    /// approval does not hold them, but `status` lists them.
    silent: Vec<ListenerStatus>,
    connection: connection::Connection,
    refused: listeners::Refused,
    /// The cgroup of each instance and editor that has one, by id.
    cgroups: HashMap<String, PathBuf>,
}

impl Report {
    /// A report that writes its lines as `output` says.
    pub(crate) fn new(output: Output) -> Self {
        Report(Arc::new(Inner {
            output,
            state: Mutex::new(State::default()),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` on the state and prints its lines.
    fn update(&self, change: impl FnOnce(&mut State) -> Vec<Line>) {
        let lines = change(&mut self.state());
        for line in lines {
            self.emit(&line);
        }
    }

    /// Writes a state line unless `--quiet`.
    fn emit(&self, line: &Line) {
        if !self.0.output.quiet {
            line.write(self.0.output.format);
        }
    }

    /// A line that always prints (an error the runner stops on), as text
    /// (`error: ...`) or as a JSON line with level `error`.
    pub(crate) fn error(&self, message: impl Into<String>) {
        let line = Line::new("error", message).level("error");
        line.write(self.0.output.format);
    }

    /// A one-off state line (a warning, what a bare `watch` watches).
    pub(crate) fn notice(&self, line: Line) {
        self.emit(&line);
    }

    /// The backend line: PROTOCOL.md section 1 makes it the first stderr
    /// line whatever the flags, so `--quiet` keeps it.
    pub(crate) fn backend(&self, line: Line) {
        line.write(self.0.output.format);
    }

    /// This process is `connect` or `watch` on `backend`: what `status` shows.
    pub(crate) fn started(&self, command: &str, backend: &str) {
        self.update(|state| {
            state.status.pid = std::process::id();
            state.status.command = command.to_owned();
            state.status.backend = backend.to_owned();
            state.status.started = crate::logging::timestamp();
            Vec::new()
        });
    }

    /// `connect` talks to Kandan at `url` (shown without the token) as `runner_id`.
    pub(crate) fn kandan(&self, url: &str, runner_id: &str) {
        self.update(|state| {
            state.status.kandan = Some(state.connection.start(url, runner_id));
            Vec::new()
        });
    }

    /// The channel is joined.
    pub(crate) fn joined(&self) {
        self.update(|state| state.connection.joined(state.status.kandan.as_mut()));
    }

    /// The connection failed or was lost (`reason`); attempt `attempt`
    /// (from 1) to reconnect is in `delay`.
    pub(crate) fn connect_failed(&self, attempt: usize, delay: Duration, reason: &str) {
        self.update(|state| {
            let kandan = state.status.kandan.as_mut();
            state.connection.failed(kandan, attempt, delay, reason)
        });
    }

    /// `connect`'s listeners now (after a candidate or a decision).
    pub(crate) fn listeners(&self, now: Vec<crate::wire::ReadyListener>) {
        self.update(|state| {
            let lines = listeners::diff(&state.status.listeners, &now, &state.silent);
            state.refused.changed(&lines);
            let before = std::mem::take(&mut state.status.listeners);
            state.status.listeners = (now.iter())
                .map(|listener| listeners::status_of(listener, &before))
                .collect();
            listeners::add_silent(&mut state.status.listeners, &state.silent);
            lines.into_iter().map(|(_, line)| line).collect()
        });
    }

    /// A listener event of `connect`, `silent` when its port's `on_detect`
    /// says so (a listener that stops being silent leaves the list).
    pub(crate) fn silent(&self, event: &CandidateEvent, silent: bool, redactor: &Redactor) {
        self.update(|state| {
            if silent {
                listeners::watched(&mut state.silent, event, redactor);
                for listener in &mut state.silent {
                    listener.state = Some(listeners::SILENT.to_owned());
                }
            } else {
                state.silent.retain(|l| l.port != event.port());
            }
            let listeners = &mut state.status.listeners;
            listeners.retain(|l| l.state.as_deref() != Some(listeners::SILENT));
            listeners::add_silent(listeners, &state.silent);
            Vec::new()
        });
    }

    /// Forwarding found out how the local server on `port` speaks.
    pub(crate) fn scheme(&self, port: u16, scheme: crate::forward::Scheme) {
        self.update(|state| listeners::scheme(&mut state.status.listeners, port, scheme));
    }

    /// A listener event of `watch` (no approval, no lines: `watch` prints
    /// its own).
    pub(crate) fn watched(&self, event: &CandidateEvent, redactor: &Redactor) {
        self.update(|state| {
            listeners::watched(&mut state.status.listeners, event, redactor);
            Vec::new()
        });
    }

    /// Kandan asked for a forward the gate refused.
    pub(crate) fn refused(&self, port: u16, refusal: GateRefusal) {
        self.update(|state| state.refused.line(port, refusal).into_iter().collect());
    }

    /// A `control_error` the runner sends: an instance or editor that
    /// failed to start gets a state line (Kandan shows it too, but the
    /// person at this machine is the one who can fix a wrong `--codex-bin`).
    pub(crate) fn control_error(&self, event: &crate::wire::Event) {
        if let Some(line) = workers::failure(event) {
            self.emit(&line);
        }
    }

    /// `connect`'s Codex instances now.
    pub(crate) fn instances(&self, now: Vec<ReadyInstance>) {
        self.update(|state| workers::instances(&mut state.status.instances, &now));
    }

    /// `connect`'s editors now.
    pub(crate) fn editors(&self, now: Vec<ReadyEditor>) {
        self.update(|state| workers::editors(&mut state.status.editors, &now));
    }

    /// The cgroup of instance or editor `id` (its CPU time and memory go
    /// into `status`); `None` forgets it.
    pub(crate) fn cgroup(&self, id: &str, path: Option<PathBuf>) {
        self.update(|state| {
            match path {
                Some(path) => state.cgroups.insert(id.to_owned(), path),
                None => state.cgroups.remove(id),
            };
            Vec::new()
        });
    }

    /// The state for the status socket, with each cgroup's figures read now
    /// (outside the lock: reading cgroup files must not hold up the main loop).
    pub(crate) fn snapshot(&self) -> RunnerStatus {
        let (mut status, cgroups) = {
            let state = self.state();
            (state.status.clone(), state.cgroups.clone())
        };
        let usage = |id: &String| cgroups.get(id).map(|path| crate::cgroup::usage(path));
        for instance in &mut status.instances {
            instance.usage = usage(&instance.instance_id).unwrap_or_default();
        }
        for editor in &mut status.editors {
            editor.usage = usage(&editor.editor_id).unwrap_or_default();
        }
        status
    }
}
