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

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::{Candidate, CandidateEvent};

/// Per-port stability window.
#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    ports: HashMap<u16, PortState>,
}

#[derive(Debug)]
struct PortState {
    /// What consumers were last told is open, if anything.
    reported: Option<Candidate>,
    /// What listens there right now.
    current: Option<Candidate>,
    /// When `current`'s presence or owner last changed.
    since: Instant,
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
    pub fn new(window: Duration) -> Self {
        Debouncer {
            window,
            ports: HashMap::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Tells the debouncer what listens on `port` now (`None`: nothing).
    /// Returns the events due at once (address changes); the others come
    /// from [`Debouncer::fire_due`].
    pub fn update(
        &mut self,
        port: u16,
        current: Option<Candidate>,
        now: Instant,
    ) -> Vec<CandidateEvent> {
        let state = self.ports.entry(port).or_insert(PortState {
            reported: None,
            current: None,
            since: now,
        });
        if state.current.as_ref().map(owner) != current.as_ref().map(owner) {
            state.since = now;
        }
        state.current = current;

        let mut events = Vec::new();
        match (&mut state.reported, &state.current) {
            (None, None) => {
                self.ports.remove(&port);
            }
            (Some(reported), Some(current))
                if owner(reported) == owner(current) && *reported != *current =>
            {
                // Same owner, new addresses (or label): keep consumers in step.
                *reported = current.clone();
                events.push(CandidateEvent::AddressesChanged(current.clone()));
            }
            _ => {}
        }
        events
    }

    /// The earliest instant at which [`Debouncer::fire_due`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ports
            .values()
            .filter_map(|state| state.deadline(self.window))
            .min()
    }

    /// Fires every event due at `now`, in port order.
    pub fn fire_due(&mut self, now: Instant) -> Vec<CandidateEvent> {
        let mut due: Vec<u16> = self
            .ports
            .iter()
            .filter(|(_, state)| state.deadline(self.window).is_some_and(|at| at <= now))
            .map(|(&port, _)| port)
            .collect();
        due.sort_unstable();

        let mut events = Vec::with_capacity(due.len());
        for port in due {
            let Some(state) = self.ports.get_mut(&port) else {
                continue;
            };
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
                    self.ports.remove(&port);
                }
                (Some(_), Some(current)) => {
                    events.push(CandidateEvent::Changed(current.clone()));
                    state.reported = Some(current.clone());
                }
                (None, None) => {
                    self.ports.remove(&port);
                }
            }
        }
        events
    }

    /// Ports with any state (reported or waiting), for tests and logs.
    pub fn tracked_ports(&self) -> usize {
        self.ports.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessInfo;

    const WINDOW: Duration = Duration::from_millis(750);

    fn cand(port: u16, pid: u32, command: &str, addresses: &[&str]) -> Candidate {
        Candidate {
            port,
            pid,
            process: ProcessInfo::from_argv(&[command.to_string()], Some("/x".into())),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
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
}
