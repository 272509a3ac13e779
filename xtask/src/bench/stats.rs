//! Percentiles and medians.

use std::time::Duration;

/// Sorted latencies, in milliseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    sorted: Vec<f64>,
}

impl Samples {
    /// Samples from durations.
    pub(crate) fn from_durations(durations: impl IntoIterator<Item = Duration>) -> Samples {
        Samples::from_ms(durations.into_iter().map(|d| d.as_secs_f64() * 1000.0))
    }

    /// Samples from milliseconds.
    pub(crate) fn from_ms(ms: impl IntoIterator<Item = f64>) -> Samples {
        let mut sorted: Vec<f64> = ms.into_iter().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Samples { sorted }
    }

    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile `p` (0–100); NaN without samples.
    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let n = self.sorted.len();
        // The epsilon keeps 99.9 % of 1000 at rank 999 despite floating point.
        let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }
}

/// The median of `values` (NaN when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples::from_ms((1..=1000).map(f64::from));
        assert_eq!(s.pct(0.0), 1.0);
        assert_eq!(s.pct(50.0), 500.0);
        assert_eq!(s.pct(99.0), 990.0);
        assert_eq!(s.pct(99.9), 999.0);
        assert_eq!(s.pct(100.0), 1000.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
