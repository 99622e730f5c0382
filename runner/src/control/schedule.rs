//! Retry schedules: a list of first delays, then a fixed one forever.

use std::time::Duration;

/// Delay before retry number `attempt` (0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub steps: Vec<Duration>,
    pub then: Duration,
}

impl Backoff {
    /// Reconnect: 10, 50, 100, 150, 200, 250, 500, 1000, 2000, then every 5000 ms.
    pub(crate) fn reconnect() -> Backoff {
        Backoff::from_millis(&[10, 50, 100, 150, 200, 250, 500, 1000, 2000], 5000)
    }

    /// Rejoin: 1000, 2000, 5000, then every 10000 ms.
    pub(crate) fn rejoin() -> Backoff {
        Backoff::from_millis(&[1000, 2000, 5000], 10_000)
    }

    pub fn from_millis(steps: &[u64], then: u64) -> Backoff {
        Backoff {
            steps: steps.iter().copied().map(Duration::from_millis).collect(),
            then: Duration::from_millis(then),
        }
    }

    pub(crate) fn delay(&self, attempt: usize) -> Duration {
        self.steps.get(attempt).copied().unwrap_or(self.then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(backoff: &Backoff, n: usize) -> Vec<u128> {
        (0..n).map(|i| backoff.delay(i).as_millis()).collect()
    }

    #[test]
    fn reconnect_schedule_is_the_contract() {
        assert_eq!(
            millis(&Backoff::reconnect(), 12),
            [
                10, 50, 100, 150, 200, 250, 500, 1000, 2000, 5000, 5000, 5000
            ]
        );
        assert_eq!(Backoff::reconnect().delay(usize::MAX).as_millis(), 5000);
    }

    #[test]
    fn rejoin_schedule_is_the_contract() {
        assert_eq!(
            millis(&Backoff::rejoin(), 6),
            [1000, 2000, 5000, 10_000, 10_000, 10_000]
        );
    }
}
