//! [`Throttle`]: a log line at most once per interval, counting what it held back. Shared by
//! the emitter (its warnings) and the adapters' hand-off (its failure log), neither of which
//! reaches into the other for it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// Logs at most once per interval, counting what it suppressed.
#[derive(Debug)]
pub(crate) struct Throttle {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds after `start` of the last log, plus one (0: never).
    last: AtomicU64,
    pub(crate) suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(number suppressed since the last log)` when a log line is due now.
    pub(crate) fn ready(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Relaxed);
        if last != 0 && now < last + self.interval_ms {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        if self.last.compare_exchange(last, now, Relaxed, Relaxed).is_err() {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}
