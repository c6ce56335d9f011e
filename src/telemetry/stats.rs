//! Export counters: spans exported, dropped because the queue was full, or lost in a failed
//! export. Plain atomics, read by whoever reports metrics; warnings about losses are logged at
//! most once per [`LOG_INTERVAL`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shortest time between two warnings of the same kind.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counters of one telemetry pipeline.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    failed_exports: AtomicU64,
    last_drop_log: RateLimit,
    last_failure_log: RateLimit,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Spans the exporter accepted.
    pub exported: u64,
    /// Spans dropped because the export queue was full.
    pub dropped: u64,
    /// Spans lost because their export failed or timed out.
    pub failed: u64,
    /// Exports (batches) that failed or timed out.
    pub failed_exports: u64,
}

impl ExportStats {
    /// The counters now.
    pub fn counts(&self) -> ExportCounts {
        ExportCounts {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failed_exports: self.failed_exports.load(Ordering::Relaxed),
        }
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped_spans(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a span dropped at the queue, and warns now and then.
    pub(crate) fn record_drop(&self) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.last_drop_log.allow() {
            tracing::warn!(
                target: "darklight::telemetry",
                dropped_spans = total,
                "span export queue is full: dropping spans (the collector is slow or unreachable)"
            );
        }
    }

    /// Counts a finished export.
    pub(crate) fn record_export(&self, spans: usize, error: Option<&str>) {
        let spans = u64::try_from(spans).unwrap_or(u64::MAX);
        match error {
            None => {
                self.exported.fetch_add(spans, Ordering::Relaxed);
            }
            Some(error) => {
                let lost = self.failed.fetch_add(spans, Ordering::Relaxed) + spans;
                self.failed_exports.fetch_add(1, Ordering::Relaxed);
                if self.last_failure_log.allow() {
                    tracing::warn!(
                        target: "darklight::telemetry",
                        error = %error,
                        lost_spans = lost,
                        "span export failed"
                    );
                }
            }
        }
    }
}

/// Lets one event through per [`LOG_INTERVAL`], without locks.
#[derive(Debug, Default)]
struct RateLimit {
    /// Milliseconds since [`epoch`] of the last event let through, plus one (0 = never).
    last: AtomicU64,
}

impl RateLimit {
    fn allow(&self) -> bool {
        let now = u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let interval = u64::try_from(LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rate_limit() {
        let stats = ExportStats::default();
        for _ in 0..5 {
            stats.record_drop();
        }
        stats.record_export(10, None);
        stats.record_export(3, Some("timed out"));
        stats.record_export(2, Some("timed out"));
        assert_eq!(
            stats.counts(),
            ExportCounts {
                exported: 10,
                dropped: 5,
                failed: 5,
                failed_exports: 2,
            }
        );
        let limit = RateLimit::default();
        assert!(limit.allow());
        assert!(!limit.allow());
    }
}
