//! How fast the emitter goes: the concurrency that adapts to WorkOS's latency, and the accept
//! and delivery rates behind [`Stats`](super::Stats) and the backlog warning.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How many senders may work at once.
///
/// Delivering `r` events per second to a server `t` seconds away needs `r · t` requests in
/// flight: 3 at 100/s and 30 ms, 30 at 100/s and 300 ms. Fixed senders either cannot reach the
/// rate limit when WorkOS is far, or keep idle tasks around when it is near. The limit follows a
/// moving average of the attempts' latency: `rate · latency · 1.5 + 1`, between the configured
/// minimum and maximum (without a rate limit, the maximum).
#[derive(Debug)]
pub(crate) struct Concurrency {
    min: usize,
    max: usize,
    /// Requests per second of the rate limit (`None`: no limit).
    rate: Option<f64>,
    limit: AtomicUsize,
    /// Moving average of an attempt's latency, in microseconds (0 before the first).
    latency_us: AtomicU64,
    changed: Notify,
}

impl Concurrency {
    pub(crate) fn new(min: usize, max: usize, rate: Option<f64>) -> Self {
        let max = max.max(min).max(1);
        let min = min.clamp(1, max);
        Self {
            min,
            max,
            rate,
            limit: AtomicUsize::new(if rate.is_some() { min } else { max }),
            latency_us: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    /// The number of sender tasks to start (the maximum).
    pub(crate) fn tasks(&self) -> usize {
        self.max
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Records an attempt's latency and moves the limit.
    pub(crate) fn observe(&self, latency: Duration) {
        let Some(rate) = self.rate.filter(|_| self.adapts()) else {
            return;
        };
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let old = self.latency_us.load(Relaxed);
        // An average over about 8 attempts (the first one sets it).
        let average = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.latency_us.store(average, Relaxed);
        let wanted = (rate * (average as f64 / 1e6) * 1.5).ceil() as usize + 1;
        let limit = wanted.clamp(self.min, self.max);
        if self.limit.swap(limit, Relaxed) < limit {
            self.changed.notify_waiters();
        }
    }

    /// Whether the limit moves with latency (worth measuring it).
    pub(crate) fn adapts(&self) -> bool {
        self.rate.is_some() && self.min < self.max
    }

    /// Wakes every waiting sender (the emitter closes).
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until sender number `index` (from 0) is within the limit or `closed()`; `false`
    /// when `stop` fired first.
    pub(crate) async fn admit(
        &self,
        index: usize,
        stop: &super::gate::Signal,
        closed: impl Fn() -> bool,
    ) -> bool {
        if index < self.limit() {
            return true;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if index < self.limit() || closed() {
                return true;
            }
            tokio::select! {
                () = changed => {}
                () = stop.wait() => return false,
            }
        }
    }
}

/// Accepted and delivered counts sampled about once a second over the last five seconds, for
/// the rates in [`Stats`](super::Stats) and the backlog warning.
#[derive(Debug)]
pub(crate) struct Rates {
    start: Instant,
    /// When the latest sample was taken (milliseconds since `start`).
    last_ms: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

/// The rates over the window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pace {
    pub(crate) accepted_per_s: f64,
    pub(crate) delivered_per_s: f64,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const SAMPLES: usize = 6;

impl Default for Rates {
    fn default() -> Self {
        let start = Instant::now();
        Self {
            start,
            last_ms: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::from([(start, 0, 0)])),
        }
    }
}

impl Rates {
    /// Takes a sample when a second has passed since the last; `true` when it did.
    pub(crate) fn tick(&self, accepted: u64, resolved: u64) -> bool {
        let now = Instant::now();
        let ms = u64::try_from(now.duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Relaxed);
        if ms < last + SAMPLE_EVERY.as_millis() as u64
            || self.last_ms.compare_exchange(last, ms, Relaxed, Relaxed).is_err()
        {
            return false;
        }
        let mut samples = crate::sync::lock(&self.samples);
        samples.push_back((now, accepted, resolved));
        while samples.len() > SAMPLES {
            samples.pop_front();
        }
        true
    }

    /// The rates from the oldest sample to now.
    pub(crate) fn pace(&self, accepted: u64, resolved: u64) -> Pace {
        let samples = crate::sync::lock(&self.samples);
        let Some(&(at, a, r)) = samples.front() else {
            return Pace::default();
        };
        let secs = at.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return Pace::default();
        }
        Pace {
            accepted_per_s: accepted.saturating_sub(a) as f64 / secs,
            delivered_per_s: resolved.saturating_sub(r) as f64 / secs,
        }
    }
}

impl Pace {
    /// How long the backlog of `outstanding` events takes to drain at these rates: `None` while
    /// it does not shrink.
    pub(crate) fn time_to_drain(self, outstanding: usize) -> Option<Duration> {
        if outstanding == 0 {
            return Some(Duration::ZERO);
        }
        let shrinking = self.delivered_per_s - self.accepted_per_s;
        (shrinking > 0.0).then(|| Duration::from_secs_f64(outstanding as f64 / shrinking))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_follows_latency_between_its_bounds() {
        let c = Concurrency::new(8, 64, Some(100.0));
        assert_eq!(c.limit(), 8);
        for _ in 0..50 {
            c.observe(Duration::from_millis(300));
        }
        // 100/s · 0.3 s · 1.5 + 1
        assert_eq!(c.limit(), 46);
        for _ in 0..80 {
            c.observe(Duration::from_millis(30));
        }
        assert_eq!(c.limit(), 8);
        for _ in 0..50 {
            c.observe(Duration::from_secs(5));
        }
        assert_eq!(c.limit(), 64);
        let fixed = Concurrency::new(4, 4, Some(100.0));
        fixed.observe(Duration::from_secs(5));
        assert_eq!(fixed.limit(), 4);
        assert_eq!(Concurrency::new(8, 64, None).limit(), 64);
    }

    #[test]
    fn drain_time_needs_a_shrinking_backlog() {
        let pace = Pace {
            accepted_per_s: 50.0,
            delivered_per_s: 100.0,
        };
        assert_eq!(pace.time_to_drain(500), Some(Duration::from_secs(10)));
        let growing = Pace {
            accepted_per_s: 200.0,
            delivered_per_s: 100.0,
        };
        assert_eq!(growing.time_to_drain(500), None);
        assert_eq!(growing.time_to_drain(0), Some(Duration::ZERO));
    }
}
