//! A fixed-bucket latency histogram on atomics: three relaxed additions per observation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds for classification: it takes about half a microsecond.
pub const CLASSIFICATION_BUCKETS_NANOS: &[u64] = &[
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Bucket bounds for whole requests, upstream included.
pub const REQUEST_BUCKETS_NANOS: &[u64] = &[
    1_000_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Observations counted per bucket (not cumulative: rendering adds them up).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One counter per bound, plus the `+Inf` bucket.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with upper bounds `bounds` (nanoseconds, ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|&bound| bound < nanos);
        if let Some(counter) = self.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of metric `name` (HELP/TYPE excluded).
    pub fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0u64;
        for (bound, counter) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += counter.load(Ordering::Relaxed);
            let seconds = *bound as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{le=\"{seconds}\"}} {cumulative}");
        }
        if let Some(last) = self.buckets.last() {
            cumulative += last.load(Ordering::Relaxed);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_in_seconds() {
        let histogram = Histogram::new(&[1_000, 10_000]);
        histogram.observe(Duration::from_nanos(500));
        histogram.observe(Duration::from_nanos(1_000));
        histogram.observe(Duration::from_nanos(5_000));
        histogram.observe(Duration::from_secs(1));
        let mut out = String::new();
        histogram.render(&mut out, "x_seconds");
        assert_eq!(
            out,
            "x_seconds_bucket{le=\"0.000001\"} 2\n\
             x_seconds_bucket{le=\"0.00001\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\n\
             x_seconds_sum 1.0000065\n\
             x_seconds_count 4\n"
        );
        assert_eq!(histogram.count(), 4);
    }
}
