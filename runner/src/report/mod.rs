//! What the runner tells a person: state lines on stderr (connected,
//! reconnecting, each port's approval, instances and editors, refused
//! forwards) and the snapshot `kandan-runner status` reads.
//!
//! The places that know (the main loops, the control client, forwarding)
//! tell this module what changed; it keeps the runner's current state,
//! prints a line only when something a person cares about changed
//! (reconnect attempts are collapsed into one line), and hands the state
//! to the status socket. One process-wide instance, like the logger: set
//! up by [`init`] in `main`; before that (unit tests) every call only
//! updates the snapshot.

mod connection;
mod escape;
mod line;
mod listeners;
mod workers;

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

pub(crate) use escape::escape;
pub(crate) use line::Line;

use crate::gate::GateRefusal;
use crate::logging::Output;
use crate::pipeline::CandidateEvent;
use crate::status::document::RunnerStatus;
use crate::wire::{ReadyEditor, ReadyInstance};

/// The output flags, once `main` set them.
static OUTPUT: OnceLock<Output> = OnceLock::new();

/// The runner's state as `status` shows it, and what was last printed.
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Sets the output flags for this process (from `main`, once).
pub(crate) fn init(output: Output) {
    let _ = OUTPUT.set(output);
}

#[derive(Debug, Default)]
struct State {
    status: RunnerStatus,
    /// `on_detect = "silent"` listeners: never offered to Kandan, so
    /// approval does not hold them, but `status` lists them.
    silent: Vec<crate::status::document::ListenerStatus>,
    connection: connection::Connection,
    refused: listeners::Refused,
    /// The cgroup of each instance and editor that has one, by id.
    cgroups: std::collections::HashMap<String, std::path::PathBuf>,
}

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `change` on the state (made on first use) and prints its lines.
fn update(change: impl FnOnce(&mut State) -> Vec<Line>) {
    let lines = {
        let mut guard = state();
        change(guard.get_or_insert_with(State::default))
    };
    for line in lines {
        emit(&line);
    }
}

/// Writes a state line unless `--quiet` (or before [`init`]).
fn emit(line: &Line) {
    let Some(output) = OUTPUT.get() else { return };
    if output.quiet {
        return;
    }
    line.write(output.format);
}

/// A line that always prints (an error the runner stops on), as text
/// (`error: ...`) or as a JSON line with level `error`.
pub(crate) fn error(message: impl Into<String>) {
    let line = Line::new("error", message).level("error");
    line.write(OUTPUT.get().map(|o| o.format).unwrap_or_default());
}

/// A one-off state line (a warning, what a bare `watch` watches).
pub(crate) fn notice(line: Line) {
    emit(&line);
}

/// The backend line: PROTOCOL.md section 1 makes it the first stderr line
/// whatever the flags, so `--quiet` keeps it.
pub(crate) fn backend(line: Line) {
    line.write(OUTPUT.get().map(|o| o.format).unwrap_or_default());
}

/// This process is `connect` or `watch` on `backend`: what `status` shows.
pub(crate) fn started(command: &str, backend: &str) {
    update(|state| {
        state.status.pid = std::process::id();
        state.status.command = command.to_owned();
        state.status.backend = backend.to_owned();
        state.status.started = crate::logging::timestamp();
        Vec::new()
    });
}

/// `connect` talks to Kandan at `url` (shown without the token) as `runner_id`.
pub(crate) fn kandan(url: &str, runner_id: &str) {
    update(|state| {
        state.status.kandan = Some(state.connection.start(url, runner_id));
        Vec::new()
    });
}

/// The channel is joined.
pub(crate) fn joined() {
    update(|state| state.connection.joined(state.status.kandan.as_mut()));
}

/// The connection failed or was lost (`reason`); attempt `attempt` (from
/// 1) to reconnect is in `delay`.
pub(crate) fn connect_failed(attempt: usize, delay: Duration, reason: &str) {
    update(|state| {
        let kandan = state.status.kandan.as_mut();
        state.connection.failed(kandan, attempt, delay, reason)
    });
}

/// `connect`'s listeners now (after a candidate or a decision).
pub(crate) fn listeners(now: Vec<crate::wire::ReadyListener>) {
    update(|state| {
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
pub(crate) fn silent(event: &CandidateEvent, silent: bool) {
    update(|state| {
        if silent {
            listeners::watched(&mut state.silent, event);
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
pub(crate) fn scheme(port: u16, scheme: crate::forward::Scheme) {
    update(|state| listeners::scheme(&mut state.status.listeners, port, scheme))
}

/// A listener event of `watch` (no approval, no lines: `watch` prints its own).
pub(crate) fn watched(event: &CandidateEvent) {
    update(|state| {
        listeners::watched(&mut state.status.listeners, event);
        Vec::new()
    });
}

/// Kandan asked for a forward the gate refused.
pub(crate) fn refused(port: u16, refusal: GateRefusal) {
    update(|state| state.refused.line(port, refusal).into_iter().collect());
}

/// A `control_error` the runner sends: an instance or editor that failed
/// to start gets a state line (Kandan shows it too, but the person at this
/// machine is the one who can fix a wrong `--codex-bin`).
pub(crate) fn control_error(event: &crate::wire::Event) {
    if let Some(line) = workers::failure(event) {
        update(|_| vec![line]);
    }
}

/// `connect`'s Codex instances now.
pub(crate) fn instances(now: Vec<ReadyInstance>) {
    update(|state| workers::instances(&mut state.status.instances, &now));
}

/// `connect`'s editors now.
pub(crate) fn editors(now: Vec<ReadyEditor>) {
    update(|state| workers::editors(&mut state.status.editors, &now));
}

/// The cgroup of instance or editor `id` (its CPU time and memory go into
/// `status`); `None` forgets it.
pub(crate) fn cgroup(id: &str, path: Option<std::path::PathBuf>) {
    update(|state| {
        match path {
            Some(path) => state.cgroups.insert(id.to_owned(), path),
            None => state.cgroups.remove(id),
        };
        Vec::new()
    });
}

/// The state for the status socket, with each cgroup's figures read now.
pub(crate) fn snapshot() -> RunnerStatus {
    let (mut status, cgroups) = state()
        .as_ref()
        .map(|state| (state.status.clone(), state.cgroups.clone()))
        .unwrap_or_default();
    let usage = |id: &String| cgroups.get(id).map(|path| crate::cgroup::usage(path));
    for instance in &mut status.instances {
        instance.usage = usage(&instance.instance_id).unwrap_or_default();
    }
    for editor in &mut status.editors {
        editor.usage = usage(&editor.editor_id).unwrap_or_default();
    }
    status
}
