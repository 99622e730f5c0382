//! Order statistics of small samples, for both benchmarks.

use std::time::Duration;

/// The `q`-quantile (0..=1) by nearest rank; `None` when empty. An even
/// count's median is the lower middle.
pub fn quantile<T: Copy + PartialOrd>(samples: &[T], q: f64) -> Option<T> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    // Samples are counts, durations and rates: no NaN to order.
    sorted.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median (the lower middle for an even count); `None` when empty.
pub fn median<T: Copy + PartialOrd>(samples: &[T]) -> Option<T> {
    quantile(samples, 0.5)
}

/// Milliseconds, for the tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(quantile(&samples, 0.5), Some(100));
        assert_eq!(quantile(&samples, 0.99), Some(198));
        assert_eq!(quantile(&samples, 1.0), Some(200));
        assert_eq!(quantile(&[7u64], 0.99), Some(7));
        assert_eq!(median::<u64>(&[]), None);
    }

    #[test]
    fn durations_and_rates() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&s, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&s, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&s[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }
}
