//! Counters, the delivery-latency histogram and the [`Stats`] snapshot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

/// A snapshot of the emitter's state, from [`Emitter::stats`](super::Emitter::stats).
///
/// Counts are totals since the emitter started.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Events accepted by an emit call.
    pub accepted: u64,
    /// Events waiting for a sender.
    pub queued: usize,
    /// Events waiting for their retry time after a failed attempt.
    pub retrying: usize,
    /// Events held by senders (an attempt in flight).
    pub in_flight: usize,
    /// Events WorkOS (or the sink) accepted.
    pub delivered: u64,
    /// Attempts that failed with a retryable error and were scheduled again.
    pub retried: u64,
    /// Events dropped by the overflow policy.
    pub dropped: Dropped,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Of those, events whose answer was a success status but not WorkOS's (the destination is
    /// not the WorkOS API: check `WORKOS_BASE_URL`); dead-lettered with
    /// [`DeadLetterReason::NotWorkOs`](super::DeadLetterReason::NotWorkOs).
    pub not_workos: u64,
    /// Dead-letter writes that failed (or panicked); the event stayed and the write was tried
    /// again.
    pub dead_letter_failures: u64,
    /// Panics caught in the sink, dead-letter destinations or the senders themselves; the event
    /// was retried or dead-lettered and the sender went on.
    pub panics: u64,
    /// The text of the latest error (no secrets).
    pub last_error: Option<String>,
    /// Whether delivery is held because WorkOS refused the API key (401/403).
    pub auth_failed: bool,
    /// Since when delivery is held for that reason.
    pub held_since: Option<SystemTime>,
    /// Whether every sender waits for a `Retry-After` right now.
    pub paused: bool,
    /// Events accepted per second over about the last five seconds.
    pub accept_rate: f64,
    /// Events delivered per second over the same window. Above `accept_rate`, the backlog
    /// shrinks; below it, the backlog grows (warned about at a bounded rate).
    pub delivery_rate: f64,
    /// How long the events waiting now take to drain at these rates (`Some(0)` when none wait;
    /// `None` while the backlog does not shrink).
    pub time_to_drain: Option<Duration>,
    /// How many senders may work at once now (it follows WorkOS's latency under a rate limit;
    /// see [`EmitterBuilder::max_senders`](super::EmitterBuilder::max_senders)).
    pub concurrency: usize,
    /// Time from acceptance to delivery, 50th percentile (`None` before the first delivery).
    pub latency_p50: Option<Duration>,
    /// 90th percentile.
    pub latency_p90: Option<Duration>,
    /// 99th percentile.
    pub latency_p99: Option<Duration>,
    /// Dead letters per action and reason, with the last hour's count, what WorkOS said and the
    /// fix; most in the last hour first (see [`rejections`](super::rejections)).
    pub rejections: Vec<super::Rejection>,
    /// The spool's depth, oldest age, commit latency and faults (`None` without a spool).
    #[cfg(feature = "spool")]
    pub spool: Option<super::SpoolStats>,
}

/// Events dropped by the overflow policy, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// Refused because the queue was full (policy [`Overflow::DropNewest`](super::Overflow::DropNewest)).
    pub newest: u64,
    /// Evicted to make room for a newer event (policy [`Overflow::DropOldest`](super::Overflow::DropOldest)).
    pub oldest: u64,
}

impl Dropped {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.newest + self.oldest
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Written by the emitting threads; on its own cache line, away from the senders' counters
    /// (sharing one line would make every emit and every delivery fight over it).
    pub(crate) accepted: Padded<AtomicU64>,
    pub(crate) delivered: Padded<AtomicU64>,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dead_lettered_at_deadline: AtomicU64,
    pub(crate) not_workos: AtomicU64,
    pub(crate) dead_letter_failures: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) dropped_newest: AtomicU64,
    pub(crate) dropped_oldest: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) latency: Histogram,
    /// Dead letters per action and reason.
    pub(crate) rejections: super::rejections::Rejections,
}

impl Counters {
    pub(crate) fn set_last_error(&self, e: &crate::Error) {
        *crate::sync::lock(&self.last_error) = Some(e.to_string());
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        crate::sync::lock(&self.last_error).clone()
    }

    pub(crate) fn dropped(&self) -> Dropped {
        Dropped {
            newest: self.dropped_newest.load(Relaxed),
            oldest: self.dropped_oldest.load(Relaxed),
        }
    }
}

/// A value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A log-linear histogram of microseconds: 8 sub-buckets per power of two (at most 12.5 %
/// error), lock-free recording.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
}

const SUB: u32 = 8;
const SUB_BITS: u32 = 3;
const BUCKETS: usize = (SUB as usize) * 42;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < u64::from(SUB) {
        return micros as usize;
    }
    let exp = 63 - micros.leading_zeros(); // ≥ SUB_BITS
    let sub = (micros >> (exp - SUB_BITS)) & u64::from(SUB - 1);
    let idx = ((exp - SUB_BITS + 1) * SUB) as usize + sub as usize;
    idx.min(BUCKETS - 1)
}

/// The midpoint of a bucket, in microseconds.
fn value_of(bucket: usize) -> u64 {
    let sub_count = SUB as usize;
    if bucket < sub_count {
        return bucket as u64;
    }
    let exp = (bucket / sub_count) as u32 + SUB_BITS - 1;
    let sub = (bucket % sub_count) as u64;
    let low = (1u64 << exp) + (sub << (exp - SUB_BITS));
    let width = 1u64 << (exp - SUB_BITS);
    low + width / 2
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Relaxed);
    }

    /// The given percentiles (0 to 100), `None` when nothing was recorded.
    pub(crate) fn percentiles<const N: usize>(&self, ps: [f64; N]) -> [Option<Duration>; N] {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let mut out = [None; N];
        if total == 0 {
            return out;
        }
        for (slot, p) in out.iter_mut().zip(ps) {
            let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    *slot = Some(Duration::from_micros(value_of(i)));
                    break;
                }
            }
        }
        out
    }
}

pub(crate) use crate::throttle::Throttle;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [
            0u64, 1, 7, 8, 9, 15, 16, 100, 1_000, 12_345, 1_000_000, 60_000_000,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "{v}");
            last = b;
            let mid = value_of(b) as f64;
            assert!((mid - v as f64).abs() <= (v as f64) * 0.125 + 1.0, "{v} -> {mid}");
        }
    }

    #[test]
    fn percentiles_of_a_spread() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let [p50, p99] = h.percentiles([50.0, 99.0]);
        let p50 = p50.unwrap().as_secs_f64() * 1000.0;
        let p99 = p99.unwrap().as_secs_f64() * 1000.0;
        assert!((45.0..=56.0).contains(&p50), "{p50}");
        assert!((90.0..=112.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().percentiles([50.0]), [None]);
    }
}
