//! Ports: a line when a listener appears, is decided or closes, and for
//! refused forwards (once per port and cause until the port changes).

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Line;
use super::document::ListenerStatus;
use crate::forward::Scheme;
use crate::gate::GateRefusal;
use crate::pipeline::CandidateEvent;
use crate::redact::Redactor;
use crate::wire::{ListenerState, ReadyListener};

/// `status`'s word for an `on_detect = "silent"` listener.
pub(super) const SILENT: &str = "silent";

/// `status`'s word for an approval state: the wire's, so a person and
/// Kandan read the same word.
fn state_word(state: ListenerState) -> &'static str {
    match state {
        ListenerState::Pending => "pending",
        ListenerState::Approved => "approved",
        ListenerState::Denied => "denied",
    }
}

/// `listener` as `status` shows it; the scheme forwarding learned stays
/// while the listener (its request) does.
pub(super) fn status_of(ready: &ReadyListener, before: &[ListenerStatus]) -> ListenerStatus {
    let listener = &ready.listener;
    let request_id = listener.request_id.as_str();
    let scheme = (before.iter())
        .find(|old| old.port == listener.port && old.request_id.as_deref() == Some(request_id))
        .and_then(|old| old.scheme.clone());
    ListenerStatus {
        port: listener.port,
        label: listener.label.clone(),
        pid: listener.pid,
        // Redacted already, as Kandan hears of it.
        command: listener.command.clone(),
        cwd: listener.cwd.clone(),
        state: Some(state_word(ready.state).to_owned()),
        request_id: Some(request_id.to_owned()),
        addresses: listener.addresses.iter().map(ToString::to_string).collect(),
        scheme,
    }
}

/// Records `port`'s scheme; a line when a server turns out to speak HTTPS.
pub(super) fn scheme(listeners: &mut [ListenerStatus], port: u16, scheme: Scheme) -> Vec<Line> {
    let Some(listener) = listeners.iter_mut().find(|l| l.port == port) else {
        return Vec::new();
    };
    let word = scheme.to_string();
    if listener.scheme.as_deref() == Some(word.as_str()) {
        return Vec::new();
    }
    listener.scheme = Some(word.clone());
    if scheme != Scheme::Https {
        return Vec::new();
    }
    let line = Line::new(
        "port_scheme",
        format!(
            "port {port} ({}): speaks HTTPS; forwarded over TLS (its certificate is not verified)",
            listener.label
        ),
    )
    .field("port", port)
    .field("label", listener.label.clone())
    .field("scheme", word);
    vec![line]
}

/// The lines between the listeners `before` and `now`, each with its port;
/// `silent` are the `on_detect = "silent"` listeners listening now.
pub(super) fn diff(
    before: &[ListenerStatus],
    now: &[ReadyListener],
    silent: &[ListenerStatus],
) -> Vec<(u16, Line)> {
    let mut lines = Vec::new();
    for ready in now {
        let listener = &ready.listener;
        let old = before.iter().find(|old| old.port == listener.port);
        let word = state_word(ready.state);
        let same = old.is_some_and(|old| {
            old.request_id.as_deref() == Some(listener.request_id.as_str())
                && old.state.as_deref() == Some(word)
        });
        if !same {
            lines.push((listener.port, port_line(ready)));
        }
    }
    for old in before {
        // A silent listener is not approval's: its absence from `now` says
        // nothing about its socket, which may well still listen.
        // Nor is one that turned silent: approval let go of it, the socket
        // did not close.
        if old.state.as_deref() == Some(SILENT) || silent.iter().any(|l| l.port == old.port) {
            continue;
        }
        if !now.iter().any(|ready| ready.listener.port == old.port) {
            let line = Line::new(
                "port_closed",
                format!("port {} ({}): closed", old.port, old.label),
            )
            .field("port", old.port)
            .field("label", old.label.clone());
            lines.push((old.port, line));
        }
    }
    lines
}

fn port_line(ready: &ReadyListener) -> Line {
    let listener = &ready.listener;
    let (event, what) = match ready.state {
        ListenerState::Pending => ("port_pending", "waiting for approval"),
        ListenerState::Approved => ("port_approved", "approved"),
        ListenerState::Denied => ("port_denied", "denied"),
    };
    let addresses: Vec<String> = listener
        .addresses
        .iter()
        .map(|ip| SocketAddr::new(*ip, listener.port).to_string())
        .collect();
    Line::new(
        event,
        format!(
            "port {} ({}): {what}; listening on {}",
            listener.port,
            listener.label,
            addresses.join(", ")
        ),
    )
    .field("port", listener.port)
    .field("label", listener.label.clone())
    .field("state", state_word(ready.state))
    .field("pid", listener.pid)
    .field("requestId", listener.request_id.as_str())
    .field("addresses", addresses)
}

/// `silent` joins `listeners` (a port approval holds wins), in port order.
pub(super) fn add_silent(listeners: &mut Vec<ListenerStatus>, silent: &[ListenerStatus]) {
    for quiet in silent {
        if !listeners.iter().any(|l| l.port == quiet.port) {
            listeners.push(quiet.clone());
        }
    }
    listeners.sort_by_key(|l| l.port);
}

/// `watch`'s listeners follow its events.
pub(super) fn watched(
    listeners: &mut Vec<ListenerStatus>,
    event: &CandidateEvent,
    redactor: &Redactor,
) {
    match event {
        CandidateEvent::Opened(c)
        | CandidateEvent::Changed(c)
        | CandidateEvent::AddressesChanged(c) => {
            let status = ListenerStatus {
                port: c.port,
                label: c.process.label.clone(),
                pid: c.pid,
                command: redactor.command(&c.process.command),
                cwd: c.process.cwd.as_ref().map(|cwd| cwd.display().to_string()),
                state: None,
                request_id: None,
                addresses: c.addresses.iter().map(ToString::to_string).collect(),
                scheme: None,
            };
            listeners.retain(|l| l.port != c.port);
            listeners.push(status);
            listeners.sort_by_key(|l| l.port);
        }
        CandidateEvent::Closed { port, .. } => listeners.retain(|l| l.port != *port),
    }
}

/// The refusals already reported, by port.
#[derive(Debug, Default)]
pub(super) struct Refused(HashMap<u16, GateRefusal>);

impl Refused {
    /// The line for a refused forward, unless this port's refusal for this
    /// cause was reported since the port last changed.
    pub(crate) fn line(&mut self, port: u16, refusal: GateRefusal) -> Option<Line> {
        if self.0.insert(port, refusal) == Some(refusal) {
            return None;
        }
        Some(
            Line::new(
                "forward_refused",
                format!("refused a forward to port {port}: {refusal}"),
            )
            .level("warn")
            .field("port", port)
            .field("code", refusal.code().to_string())
            .field("reason", refusal.to_string()),
        )
    }

    /// Ports that changed may be refused (and reported) again.
    pub(crate) fn changed(&mut self, lines: &[(u16, Line)]) {
        for (port, _) in lines {
            self.0.remove(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ListenerInfo;

    fn listener(port: u16, id: &str, state: ListenerState) -> ReadyListener {
        let listener = ListenerInfo {
            instance_id: None,
            request_id: id.into(),
            port,
            pid: 42,
            command: "node vite --token=***".into(),
            label: "vite".into(),
            cwd: None,
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        ReadyListener { listener, state }
    }

    #[test]
    fn status_says_the_wire_word_for_each_state() {
        for state in [
            ListenerState::Pending,
            ListenerState::Approved,
            ListenerState::Denied,
        ] {
            let wire = serde_json::to_value(state).unwrap();
            assert_eq!(wire, state_word(state), "{state:?}");
        }
    }

    #[test]
    fn a_learned_scheme_stays_with_its_listener_and_https_is_told_once() {
        let approved = [listener(5173, "r1", ListenerState::Approved)];
        let mut shown: Vec<_> = approved.iter().map(|l| status_of(l, &[])).collect();
        assert_eq!(shown[0].scheme, None);
        let lines = scheme(&mut shown, 5173, Scheme::Https);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].message.contains("speaks HTTPS"), "{:?}", lines[0]);
        assert!(scheme(&mut shown, 5173, Scheme::Https).is_empty());
        assert!(scheme(&mut shown, 9999, Scheme::Https).is_empty());
        // A refresh keeps it for the same listener, not for a new one.
        let again: Vec<_> = approved.iter().map(|l| status_of(l, &shown)).collect();
        assert_eq!(again[0].scheme.as_deref(), Some("https"));
        let other = listener(5173, "r2", ListenerState::Pending);
        assert_eq!(status_of(&other, &again).scheme, None);
        // Plain HTTP is recorded without a line.
        let mut plain: Vec<_> = approved.iter().map(|l| status_of(l, &[])).collect();
        assert!(scheme(&mut plain, 5173, Scheme::Http).is_empty());
        assert_eq!(plain[0].scheme.as_deref(), Some("http"));
    }

    #[test]
    fn a_line_per_change_of_state_and_none_for_the_same_state() {
        let waiting = vec![listener(5173, "r1", ListenerState::Pending)];
        let lines = diff(&[], &waiting, &[]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].1.event, "port_pending");
        assert!(
            lines[0].1.message.contains("127.0.0.1:5173"),
            "{:?}",
            lines[0]
        );
        let before: Vec<_> = waiting.iter().map(|l| status_of(l, &[])).collect();
        assert!(diff(&before, &waiting, &[]).is_empty());
        let approved = vec![listener(5173, "r1", ListenerState::Approved)];
        assert_eq!(diff(&before, &approved, &[])[0].1.event, "port_approved");
        let closed = diff(&before, &[], &[]);
        assert_eq!(closed[0].1.event, "port_closed");
    }

    #[test]
    fn a_silent_listener_is_never_closed_while_it_listens() {
        let mut quiet = status_of(&listener(8001, "-", ListenerState::Pending), &[]);
        quiet.state = Some(SILENT.to_owned());
        quiet.request_id = None;
        let silent = vec![quiet.clone()];
        // The status list holds it (as `add_silent` puts it there); approval
        // does not, and that is no close.
        let mut before = vec![quiet];
        let other = [listener(5173, "r1", ListenerState::Pending)];
        let lines = diff(&before, &other, &silent);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].1.event, "port_pending");
        // An approved listener that turned silent is no close either.
        before = vec![status_of(
            &listener(8001, "r2", ListenerState::Approved),
            &[],
        )];
        assert!(diff(&before, &[], &silent).is_empty());
        // Once it left the silent list it closed.
        assert_eq!(diff(&before, &[], &[])[0].1.event, "port_closed");
    }

    #[test]
    fn a_refusal_is_reported_once_until_the_port_changes() {
        let mut refused = Refused::default();
        assert!(refused.line(8601, GateRefusal::Pending).is_some());
        assert!(refused.line(8601, GateRefusal::Pending).is_none());
        assert!(refused.line(8601, GateRefusal::Denied).is_some());
        let lines = diff(&[], &[listener(8601, "r", ListenerState::Approved)], &[]);
        refused.changed(&lines);
        assert!(refused.line(8601, GateRefusal::Denied).is_some());
    }
}
