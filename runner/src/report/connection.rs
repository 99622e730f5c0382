//! The Kandan connection's state lines, collapsed: one line when it starts
//! failing, one when it is back, however many attempts lie between (the
//! attempts and the last error are in `status`).

use std::time::Duration;

use super::Line;
use super::document::KandanStatus;

#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Not joined yet since the runner started.
    #[default]
    Starting,
    Joined,
    /// Lost, or never reached: attempts are made.
    Failing,
}

#[derive(Debug, Default)]
pub(super) struct Connection {
    phase: Phase,
    url: String,
    topic: String,
}

impl Connection {
    pub(crate) fn start(&mut self, url: &str, runner_id: &str) -> KandanStatus {
        self.url = url.to_owned();
        self.topic = format!("runner:{runner_id}");
        KandanStatus {
            url: url.to_owned(),
            runner_id: runner_id.to_owned(),
            state: "connecting".into(),
            since: crate::logging::timestamp(),
            attempts: None,
            last_error: None,
        }
    }

    pub(crate) fn joined(&mut self, kandan: Option<&mut KandanStatus>) -> Vec<Line> {
        let message = match self.phase {
            // A rejoin on the same socket: nothing a person needs to know.
            Phase::Joined => None,
            Phase::Starting => Some(format!(
                "connected to Kandan at {} as {}",
                self.url, self.topic
            )),
            Phase::Failing => Some(format!(
                "connected to Kandan again at {} as {}",
                self.url, self.topic
            )),
        };
        self.phase = Phase::Joined;
        if let Some(kandan) = kandan {
            set(kandan, "connected", None, None);
        }
        message
            .map(|message| {
                Line::new("connected", message)
                    .field("url", self.url.clone())
                    .field("topic", self.topic.clone())
            })
            .into_iter()
            .collect()
    }

    pub(crate) fn failed(
        &mut self,
        kandan: Option<&mut KandanStatus>,
        attempt: usize,
        delay: Duration,
        reason: &str,
    ) -> Vec<Line> {
        let attempts = u64::try_from(attempt).unwrap_or(u64::MAX);
        if let Some(kandan) = kandan {
            let since = kandan.since.clone();
            set(kandan, "reconnecting", Some(attempts), Some(reason));
            if self.phase == Phase::Failing {
                // Still the same outage: it began earlier.
                kandan.since = since;
            }
        }
        let message = match self.phase {
            Phase::Failing => return Vec::new(),
            Phase::Joined => format!("lost the connection to Kandan ({reason})"),
            Phase::Starting => format!("cannot reach Kandan at {} ({reason})", self.url),
        };
        self.phase = Phase::Failing;
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        vec![
            Line::new(
                "reconnecting",
                format!(
                    "{message}; reconnecting: attempt {attempt} in {delay:?}, later attempts quietly until it is back"
                ),
            )
            .level("warn")
            .field("url", self.url.clone())
            .field("attempt", attempts)
            .field("delayMs", delay_ms)
            .field("reason", reason),
        ]
    }
}

fn set(kandan: &mut KandanStatus, state: &str, attempts: Option<u64>, error: Option<&str>) {
    kandan.state = state.to_owned();
    kandan.since = crate::logging::timestamp();
    kandan.attempts = attempts;
    kandan.last_error = error.map(str::to_owned);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[Line]) -> Vec<&'static str> {
        lines.iter().map(|line| line.event).collect()
    }

    #[test]
    fn an_outage_is_one_line_down_and_one_line_back() {
        let mut connection = Connection::default();
        let mut kandan = connection.start("ws://k/runner/socket", "laptop");
        let mut lines = connection.joined(Some(&mut kandan));
        assert_eq!(kandan.state, "connected");
        for attempt in 1..=20 {
            let delay = Duration::from_millis(10);
            lines.extend(connection.failed(Some(&mut kandan), attempt, delay, "refused"));
        }
        assert_eq!(kandan.state, "reconnecting");
        assert_eq!(kandan.attempts, Some(20));
        lines.extend(connection.joined(Some(&mut kandan)));
        assert_eq!(events(&lines), ["connected", "reconnecting", "connected"]);
        assert!(
            lines[1].message.contains("lost the connection"),
            "{:?}",
            lines[1]
        );
        assert!(
            lines[1].message.contains("attempt 1 in 10ms"),
            "{:?}",
            lines[1]
        );
        assert!(lines[2].message.contains("again"), "{:?}", lines[2]);
        assert!(!lines.iter().any(|l| l.message.contains("token")));
    }

    #[test]
    fn failing_from_the_start_says_so_once() {
        let mut connection = Connection::default();
        let mut kandan = connection.start("ws://k/runner/socket", "laptop");
        let mut lines = Vec::new();
        for attempt in 1..=5 {
            let delay = Duration::from_millis(50);
            lines.extend(connection.failed(Some(&mut kandan), attempt, delay, "refused"));
        }
        assert_eq!(events(&lines), ["reconnecting"]);
        assert!(
            lines[0].message.contains("cannot reach Kandan"),
            "{:?}",
            lines[0]
        );
        assert!(
            lines[0].message.contains("attempt 1 in 50ms"),
            "{:?}",
            lines[0]
        );
        // A rejoin on a live socket prints nothing.
        assert_eq!(connection.joined(None).len(), 1);
        assert!(connection.joined(None).is_empty());
    }
}
