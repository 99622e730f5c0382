//! The stability window: turns what a port looks like right now into the
//! `opened` / `changed` / `closed` events of PROTOCOL.md section 1.
//!
//! Each port keeps what was last reported and what is there now. Whenever
//! the port's presence or owner (pid, command, cwd) changes, its clock
//! restarts; an event fires only when the clock reaches the window, so:
//!
//! - `opened` fires exactly `window` after the port started listening (after
//!   its owner last changed, if that happened while still unreported); a
//!   listener that closes before then is forgotten without a trace.
//! - `closed` fires `window` after the port's last socket closed, if nothing
//!   listened there since. Its pid is the last reported owner's.
//! - `changed` fires `window` after a new owner took the port (directly, or
//!   after a close): at the end of the new listener's window. If the port
//!   returns to the reported owner first, nothing fires.
//! - Address-only changes of a reported port fire `AddressesChanged` at once:
//!   forwarding must dial a family that is really bound, and `watch` does
//!   not print them, so there is nothing to debounce for.
//!
//! Pure logic over `tokio::time::Instant`: the caller says what time it is.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::{Candidate, CandidateEvent};

/// Per-port stability window.
#[derive(Debug)]
pub(crate) struct Debouncer {
    window: Duration,
    ports: HashMap<u16, PortState>,
    /// Every port's next deadline, earliest first (mirrors
    /// `PortState::scheduled`), so a flood of ports stays cheap.
    timers: BTreeSet<(Instant, u16)>,
}

#[derive(Debug)]
struct PortState {
    /// What consumers were last told is open, if anything.
    reported: Option<Candidate>,
    /// What listens there right now.
    current: Option<Candidate>,
    /// When `current`'s presence or owner last changed.
    since: Instant,
    /// The entry of this port in `Debouncer::timers`, if any.
    scheduled: Option<Instant>,
}

/// Who holds a port, as far as `changed` is concerned.
type Owner<'a> = (u32, &'a str, Option<&'a Path>);

fn owner(candidate: &Candidate) -> Owner<'_> {
    (
        candidate.pid,
        &candidate.process.command,
        candidate.process.cwd.as_deref(),
    )
}

impl PortState {
    /// When this port's next event is due, if one is.
    fn deadline(&self, window: Duration) -> Option<Instant> {
        let settled = match (&self.reported, &self.current) {
            (Some(reported), Some(current)) => owner(reported) == owner(current),
            // Nothing reported and nothing there: the state is dropped.
            (None, None) => true,
            _ => false,
        };
        (!settled).then(|| self.since + window)
    }
}

impl Debouncer {
    pub(crate) fn new(window: Duration) -> Self {
        Debouncer {
            window,
            ports: HashMap::new(),
            timers: BTreeSet::new(),
        }
    }

    /// Tells the debouncer what listens on `port` now (`None`: nothing).
    /// Returns the events due at once (address changes); the others come
    /// from [`Debouncer::fire_due`].
    pub(crate) fn update(
        &mut self,
        port: u16,
        current: Option<Candidate>,
        now: Instant,
    ) -> Vec<CandidateEvent> {
        let state = self.ports.entry(port).or_insert(PortState {
            reported: None,
            current: None,
            since: now,
            scheduled: None,
        });
        if state.current.as_ref().map(owner) != current.as_ref().map(owner) {
            state.since = now;
        }
        state.current = current;

        let mut events = Vec::new();
        if let (Some(reported), Some(current)) = (&mut state.reported, &state.current)
            && owner(reported) == owner(current)
            && *reported != *current
        {
            // Same owner, new addresses: keep consumers in step.
            *reported = current.clone();
            events.push(CandidateEvent::AddressesChanged(current.clone()));
        }
        self.reschedule(port);
        events
    }

    /// Brings `timers` in line with the port's state; forgets a port with
    /// nothing reported and nothing listening.
    fn reschedule(&mut self, port: u16) {
        let Some(state) = self.ports.get_mut(&port) else {
            return;
        };
        let deadline = state.deadline(self.window);
        if state.scheduled != deadline {
            if let Some(old) = state.scheduled.take() {
                self.timers.remove(&(old, port));
            }
            if let Some(at) = deadline {
                self.timers.insert((at, port));
            }
            state.scheduled = deadline;
        }
        if state.reported.is_none() && state.current.is_none() {
            self.ports.remove(&port);
        }
    }

    /// The earliest instant at which [`Debouncer::fire_due`] has work.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Fires every event due at `now`, by deadline, then port.
    pub(crate) fn fire_due(&mut self, now: Instant) -> Vec<CandidateEvent> {
        let mut events = Vec::new();
        while let Some(&(at, port)) = self.timers.first()
            && at <= now
        {
            self.timers.pop_first();
            let Some(state) = self.ports.get_mut(&port) else {
                continue;
            };
            state.scheduled = None;
            match (&state.reported, &state.current) {
                (None, Some(current)) => {
                    events.push(CandidateEvent::Opened(current.clone()));
                    state.reported = Some(current.clone());
                }
                (Some(reported), None) => {
                    events.push(CandidateEvent::Closed {
                        port,
                        pid: reported.pid,
                    });
                    state.reported = None;
                }
                (Some(_), Some(current)) => {
                    events.push(CandidateEvent::Changed(current.clone()));
                    state.reported = Some(current.clone());
                }
                (None, None) => {}
            }
            self.reschedule(port);
        }
        events
    }

    /// The runner stops: `Closed` now, by port, for every reported port
    /// that no longer listens (nothing there, or `listening` says no),
    /// without waiting for the window. Everything is forgotten after.
    pub(crate) fn finish(&mut self, listening: impl Fn(u16) -> bool) -> Vec<CandidateEvent> {
        let mut ports: Vec<(u16, PortState)> = self.ports.drain().collect();
        ports.sort_by_key(|(port, _)| *port);
        self.timers.clear();
        ports
            .into_iter()
            .filter_map(|(port, state)| {
                let reported = state.reported?;
                (state.current.is_none() || !listening(port)).then_some(CandidateEvent::Closed {
                    port,
                    pid: reported.pid,
                })
            })
            .collect()
    }

    /// Ports with any state (reported or waiting).
    #[cfg(test)]
    fn tracked_ports(&self) -> usize {
        self.ports.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::process_info::ProcessInfo;

    const WINDOW: Duration = Duration::from_millis(750);

    fn cand(port: u16, pid: u32, command: &str, addresses: &[&str]) -> Candidate {
        Candidate {
            port,
            pid,
            process: ProcessInfo::from_argv(&[command.to_string()], Some("/x".into())),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            attributes: Default::default(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_exactly_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        let c = cand(3000, 1, "vite", &["::1"]);
        assert!(d.update(3000, Some(c.clone()), t0).is_empty());
        assert_eq!(d.next_deadline(), Some(t0 + WINDOW));
        assert!(d.fire_due(t0 + WINDOW - ms(1)).is_empty());
        assert_eq!(d.fire_due(t0 + WINDOW), vec![CandidateEvent::Opened(c)]);
        assert_eq!(d.next_deadline(), None);
        assert!(d.fire_due(t0 + WINDOW * 10).is_empty());
    }

    #[test]
    fn owner_change_before_opening_restarts_the_window() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        d.update(3000, Some(cand(3000, 1, "sh", &["::"])), t0);
        let node = cand(3000, 2, "node", &["::"]);
        d.update(3000, Some(node.clone()), t0 + ms(500));
        assert!(d.fire_due(t0 + WINDOW).is_empty());
        assert_eq!(
            d.fire_due(t0 + ms(500) + WINDOW),
            vec![CandidateEvent::Opened(node)]
        );
    }

    #[test]
    fn closing_after_the_window_reports_the_last_owner() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        d.update(3000, Some(cand(3000, 7, "vite", &["::1"])), t0);
        d.fire_due(t0 + WINDOW);
        d.update(3000, None, t0 + ms(2000));
        assert_eq!(d.next_deadline(), Some(t0 + ms(2000) + WINDOW));
        assert!(d.fire_due(t0 + ms(2700)).is_empty());
        assert_eq!(
            d.fire_due(t0 + ms(2750)),
            vec![CandidateEvent::Closed { port: 3000, pid: 7 }]
        );
        assert_eq!(d.tracked_ports(), 0);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn zero_window_reports_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        let c = cand(3000, 7, "vite", &["::1"]);
        d.update(3000, Some(c.clone()), t0);
        assert_eq!(d.fire_due(t0), vec![CandidateEvent::Opened(c)]);
        d.update(3000, None, t0);
        assert_eq!(
            d.fire_due(t0),
            vec![CandidateEvent::Closed { port: 3000, pid: 7 }]
        );
    }

    #[test]
    fn address_change_of_a_reported_port_is_immediate() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        d.update(3000, Some(cand(3000, 7, "vite", &["127.0.0.1"])), t0);
        d.fire_due(t0 + WINDOW);
        let both = cand(3000, 7, "vite", &["127.0.0.1", "::1"]);
        assert_eq!(
            d.update(3000, Some(both.clone()), t0 + ms(1000)),
            vec![CandidateEvent::AddressesChanged(both.clone())]
        );
        assert_eq!(d.next_deadline(), None);
        // Re-reporting the same thing says nothing.
        assert!(d.update(3000, Some(both), t0 + ms(1100)).is_empty());
    }

    #[test]
    fn finish_closes_reported_ports_that_no_longer_listen_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        for port in [3000, 4000, 5000, 6000] {
            d.update(port, Some(cand(port, 7, "vite", &["::1"])), t0);
        }
        d.fire_due(t0 + WINDOW);
        // 3000 closed inside the window, 4000 still listens as far as the
        // detector knows but not any more, 5000 still listens; 7000 was
        // never reported.
        d.update(3000, None, t0 + ms(1000));
        d.update(7000, Some(cand(7000, 7, "vite", &["::1"])), t0 + ms(1000));
        let events = d.finish(|port| port != 4000);
        assert_eq!(
            events,
            vec![
                CandidateEvent::Closed { port: 3000, pid: 7 },
                CandidateEvent::Closed { port: 4000, pid: 7 },
            ]
        );
        assert_eq!(d.tracked_ports(), 0);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn events_due_together_fire_in_port_order() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        d.update(5000, Some(cand(5000, 1, "a", &["::"])), t0);
        d.update(4000, Some(cand(4000, 1, "a", &["::"])), t0);
        let ports: Vec<u16> = d
            .fire_due(t0 + WINDOW)
            .iter()
            .map(|event| match event {
                CandidateEvent::Opened(c) => c.port,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ports, vec![4000, 5000]);
    }

    #[test]
    fn many_ports_each_fire_once_at_their_own_deadline() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(WINDOW);
        for i in 0..5000u16 {
            let port = 10000 + i;
            d.update(
                port,
                Some(cand(port, 1, "x", &["::"])),
                t0 + ms(u64::from(i % 100)),
            );
        }
        assert_eq!(d.next_deadline(), Some(t0 + WINDOW));
        assert_eq!(d.fire_due(t0 + WINDOW).len(), 50);
        assert_eq!(d.fire_due(t0 + WINDOW + ms(99)).len(), 4950);
        assert_eq!(d.next_deadline(), None);
        for i in 0..5000u16 {
            d.update(10000 + i, None, t0 + ms(2000));
        }
        assert_eq!(d.fire_due(t0 + ms(2000) + WINDOW).len(), 5000);
        assert_eq!(d.tracked_ports(), 0);
    }
}
