//! Order statistics of small samples.

/// The `q`-quantile (0..=1) by nearest rank; `None` when empty.
pub fn quantile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of durations in nanoseconds.
pub fn median(samples: &[u64]) -> Option<u64> {
    quantile(samples, 0.5)
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
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(median(&[]), None);
    }
}
