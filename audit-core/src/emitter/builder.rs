//! [`EmitterBuilder`]: every setting of the emitter, with its default and the reason for it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::dead_letter::{CallbackDeadLetters, DeadLetter, DeadLetterSink};
use super::sink::Sink;
use super::{Emitter, Overflow};
use crate::RetryPolicy;

/// A request rate limit: at most `requests` per `per`, with bursts of at most
/// [`burst`](RateLimit::burst) requests (by default one second's worth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub(crate) requests: NonZeroU32,
    pub(crate) per: Duration,
    pub(crate) burst: NonZeroU32,
}

impl RateLimit {
    /// At most `requests` per `per`. `None` when `requests` is 0 or `per` is zero.
    pub fn new(requests: u32, per: Duration) -> Option<Self> {
        let requests = NonZeroU32::new(requests)?;
        if per.is_zero() {
            return None;
        }
        let per_second = (f64::from(requests.get()) / per.as_secs_f64()).floor() as u32;
        let burst = NonZeroU32::new(per_second.clamp(1, requests.get())).unwrap_or(NonZeroU32::MIN);
        Some(Self { requests, per, burst })
    }

    /// WorkOS's limit: 6,000 requests per 60 seconds per API key (about 100 per second), bursts of
    /// 100.
    pub fn workos() -> Self {
        Self {
            requests: NonZeroU32::new(6_000).unwrap_or(NonZeroU32::MIN),
            per: Duration::from_secs(60),
            burst: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// Sets the largest burst (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        self
    }

    /// How many requests each [`per`](Self::per) allows (never 0).
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// The period over which [`requests`](Self::requests) are allowed (never zero).
    pub fn per(&self) -> Duration {
        self.per
    }

    /// The largest burst (at least 1), as set by [`burst`](Self::burst) or one second's worth of
    /// requests.
    pub fn max_burst(&self) -> u32 {
        self.burst.get()
    }

    /// The sustained rate, in requests per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests.get()) / self.per.as_secs_f64()
    }

    pub(crate) fn limiter(&self) -> Option<governor::DefaultDirectRateLimiter> {
        let period = self.per / self.requests.get();
        let quota =
            governor::Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(self.burst);
        Some(governor::RateLimiter::direct(quota))
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::workos()
    }
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) capacity: usize,
    pub(crate) senders: usize,
    /// The most senders, when set; else `senders` when that was set, else the default maximum.
    pub(crate) max_senders: Option<usize>,
    pub(crate) senders_set: bool,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) retry: RetryPolicy,
    pub(crate) retry_window: Duration,
    pub(crate) jitter: bool,
    pub(crate) overflow: Overflow,
    pub(crate) auth_probe_initial: Duration,
    pub(crate) auth_probe_max: Duration,
    pub(crate) auth_hold_alert: Duration,
    pub(crate) warn_interval: Duration,
    pub(crate) linger: Duration,
    /// Schema registry: fills in `version` and checks metadata in the emit call (crate::schema).
    pub(crate) schemas: Option<Arc<crate::schema::SchemaRegistry>>,
    /// The largest create-event request accepted by the emit call, in bytes.
    pub(crate) max_request_bytes: usize,
}

impl Config {
    /// The fewest and the most senders (see [`EmitterBuilder::max_senders`]).
    pub(crate) fn sender_range(&self) -> (usize, usize) {
        let max = match (self.max_senders, self.senders_set) {
            (Some(max), _) => max,
            (None, true) => self.senders,
            (None, false) => EmitterBuilder::DEFAULT_MAX_SENDERS,
        };
        (self.senders, max.max(self.senders))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: EmitterBuilder::DEFAULT_CAPACITY,
            senders: EmitterBuilder::DEFAULT_SENDERS,
            max_senders: None,
            senders_set: false,
            rate_limit: Some(RateLimit::workos()),
            retry: RetryPolicy::standard()
                .with_max_retries(u32::MAX)
                .with_max_retry_after(Duration::from_secs(600)),
            retry_window: EmitterBuilder::DEFAULT_RETRY_WINDOW,
            jitter: true,
            overflow: Overflow::DropNewest,
            auth_probe_initial: Duration::from_secs(30),
            auth_probe_max: Duration::from_secs(300),
            auth_hold_alert: EmitterBuilder::DEFAULT_AUTH_HOLD_ALERT,
            warn_interval: Duration::from_secs(10),
            linger: EmitterBuilder::DEFAULT_LINGER,
            schemas: None,
            max_request_bytes: crate::validate::DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Configures and starts an [`Emitter`]. Made by [`Emitter::builder`].
///
/// Every setting has a default suited to WorkOS in production; see each setter.
pub struct EmitterBuilder {
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) config: Config,
    pub(crate) dead_letters: Vec<Arc<dyn DeadLetterSink>>,
    #[cfg(feature = "spool")]
    pub(crate) spool: Option<super::Spool>,
}

impl std::fmt::Debug for EmitterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitterBuilder")
            .field("capacity", &self.config.capacity)
            .field("senders", &self.config.senders)
            .field("rate_limit", &self.config.rate_limit)
            .field("retry", &self.config.retry)
            .field("retry_window", &self.config.retry_window)
            .field("overflow", &self.config.overflow)
            .field("linger", &self.config.linger)
            .field("dead_letter_destinations", &self.dead_letters.len())
            .finish_non_exhaustive()
    }
}

impl EmitterBuilder {
    /// Default queue capacity: 10,000 events (a few MiB), about 100 s of WorkOS's rate limit.
    pub const DEFAULT_CAPACITY: usize = 10_000;
    /// Default number of senders at start (and the fewest while a rate limit applies).
    pub const DEFAULT_SENDERS: usize = 8;
    /// Default largest number of senders: 64, enough to reach WorkOS's 100 requests per second
    /// with 400 ms of latency.
    pub const DEFAULT_MAX_SENDERS: usize = 64;
    /// Default retry window per event: one hour.
    ///
    /// WorkOS remembers an idempotency key for 24 hours. Retrying for at most an hour keeps
    /// every attempt of an event (the last one starts before the window ends and is bounded by
    /// the client's timeout) far inside that life, so a late attempt cannot create a duplicate of
    /// an earlier one that WorkOS stored without the answer reaching us. It also leaves almost a
    /// day to replay the dead letter with the same key and still be deduplicated. An hour rides
    /// out typical incidents; longer outages are what the dead letters (and the durable spool)
    /// are for.
    pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(3600);
    /// Default [`auth_hold_alert`](Self::auth_hold_alert): 15 minutes.
    pub const DEFAULT_AUTH_HOLD_ALERT: Duration = Duration::from_secs(15 * 60);
    /// Default linger: 2 ms. See [`linger`](Self::linger).
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(2);

    pub(crate) fn new(sink: impl Sink) -> Self {
        Self {
            sink: Arc::new(sink),
            config: Config::default(),
            dead_letters: Vec::new(),
            #[cfg(feature = "spool")]
            spool: None,
        }
    }

    /// How many events may wait at once: queued, waiting to retry, or in flight (default
    /// [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY); at least 1). What happens beyond it is the
    /// [`overflow`](Self::overflow) policy.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity.max(1);
        self
    }

    /// How many requests may be in flight at once (at least 1): exactly `senders`, unless
    /// [`max_senders`](Self::max_senders) is also set. They share the one pooled client.
    ///
    /// By default (neither set) the emitter starts with
    /// [`DEFAULT_SENDERS`](Self::DEFAULT_SENDERS) and, under a rate limit, adds senders up to
    /// [`DEFAULT_MAX_SENDERS`](Self::DEFAULT_MAX_SENDERS) as WorkOS's latency requires to reach
    /// the limit (100/s needs 3 requests in flight at 30 ms, 30 at 300 ms).
    pub fn senders(mut self, senders: usize) -> Self {
        self.config.senders = senders.max(1);
        self.config.senders_set = true;
        self
    }

    /// The most requests in flight (at least [`senders`](Self::senders)): under a rate limit the
    /// number of senders follows the moving average of WorkOS's latency, `rate · latency · 1.5 +
    /// 1`, between `senders` and this. Without a rate limit (no target rate), all of them work.
    /// Default [`DEFAULT_MAX_SENDERS`](Self::DEFAULT_MAX_SENDERS), or `senders` when only that
    /// is set. [`Stats::concurrency`](super::Stats::concurrency) shows the current number.
    pub fn max_senders(mut self, max: usize) -> Self {
        self.config.max_senders = Some(max.max(1));
        self
    }

    /// The request rate limit shared by all senders (default [`RateLimit::workos`]).
    ///
    /// Several processes behind one API key share WorkOS's limit; give each a share of it.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.config.rate_limit = Some(limit);
        self
    }

    /// No client-side rate limit (for a local server or tests). A 429 from the server still
    /// pauses every sender.
    pub fn no_rate_limit(mut self) -> Self {
        self.config.rate_limit = None;
        self
    }

    /// Exponential backoff between attempts of one event: the `n`-th retry waits up to
    /// `initial · 2ⁿ`, at most `max` (defaults 500 ms and 30 s), with full jitter unless
    /// [`jitter(false)`](Self::jitter).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry = self
            .config
            .retry
            .with_initial_backoff(initial)
            .with_max_backoff(max.max(initial));
        self
    }

    /// The longest `Retry-After` honoured (default 10 minutes); a longer one is cut to this.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config.retry = self.config.retry.with_max_retry_after(max);
        self
    }

    /// Full jitter on backoff waits (default `true`). With `false` every wait is its ceiling,
    /// which makes the schedule predictable (tests) at the price of synchronized retries.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// How long one event is retried, from its first attempt (default
    /// [`DEFAULT_RETRY_WINDOW`](Self::DEFAULT_RETRY_WINDOW), whose documentation explains the
    /// choice). No attempt starts after the window; the event is then dead-lettered with
    /// [`DeadLetterReason::RetryWindowExhausted`](super::DeadLetterReason::RetryWindowExhausted).
    /// Keep it well under 24 hours, the life of an idempotency key.
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.config.retry_window = window;
        self
    }

    /// What a full in-memory queue does with a new event (default [`Overflow::DropNewest`]; with
    /// a spool, every policy spills to the file).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.config.overflow = overflow;
        self
    }

    /// While WorkOS refuses the API key (401/403), one held event is sent again after `initial`,
    /// then after doubling waits up to `max` (defaults 30 s and 5 minutes) until it is accepted;
    /// then delivery resumes. See [`Emitter`]'s "Authorization failures".
    pub fn auth_probe_interval(mut self, initial: Duration, max: Duration) -> Self {
        self.config.auth_probe_initial = initial;
        self.config.auth_probe_max = max.max(initial);
        self
    }

    /// How long an authorization hold may last before it is reported as an outage (default
    /// [`DEFAULT_AUTH_HOLD_ALERT`](Self::DEFAULT_AUTH_HOLD_ALERT)): after it, every failed probe
    /// logs `AUDIT DELIVERY STOPPED` with `tracing::error!` (at most every
    /// [`warn_interval`](Self::warn_interval)). The hold itself goes on (events are kept);
    /// [`Stats::held_since`](super::Stats::held_since) tells since when.
    pub fn auth_hold_alert(mut self, limit: Duration) -> Self {
        self.config.auth_hold_alert = limit;
        self
    }

    /// How long an idle emitter lets a newly queued event wait before a sender takes it (default
    /// [`DEFAULT_LINGER`](Self::DEFAULT_LINGER); `Duration::ZERO` takes it at once).
    ///
    /// Waking a sender task is the most expensive part of handing an event off: on a busy
    /// server it costs more CPU than the emit call itself. With a linger, the first event after
    /// a quiet moment wakes one sender, which waits this long and then finds every event queued
    /// meanwhile, so one wake-up serves a whole burst instead of one event each. Senders that are
    /// already busy never wait. The price is at most this much extra delivery latency, which is
    /// small next to a request to WorkOS.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self
    }

    /// The shortest time between two repeated warnings (drops, authorization hold); default 10 s.
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.config.warn_interval = interval;
        self
    }

    /// Adds a dead-letter destination (several may be added; each gets every dead letter).
    /// Without any, dead letters are logged with `tracing::error!`.
    pub fn dead_letters(mut self, sink: impl DeadLetterSink) -> Self {
        self.dead_letters.push(Arc::new(sink));
        self
    }

    /// Gives the emit call a schema registry (default none): each event gets its action's current
    /// `version` unless it sets one, and is checked against that version's JSON Schemas before it
    /// is queued; a violation is [`EmitError::Invalid`](super::EmitError::Invalid) with the JSON
    /// pointers WorkOS would answer. See [`crate::schema`].
    pub fn schemas(mut self, registry: Arc<crate::schema::SchemaRegistry>) -> Self {
        self.config.schemas = Some(registry);
        self
    }

    /// The largest create-event request the emit call accepts, as JSON bytes (default
    /// [`DEFAULT_MAX_REQUEST_BYTES`](crate::validate::DEFAULT_MAX_REQUEST_BYTES), 100 KiB:
    /// WorkOS answers larger requests with 413 but publishes no limit). A larger event is
    /// refused by the emit call with [`EmitError::Invalid`](super::EmitError::Invalid), its
    /// largest part named ([`FieldErrorKind::RequestTooLarge`](crate::FieldErrorKind::RequestTooLarge)),
    /// instead of being sent and dead-lettered.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config.max_request_bytes = bytes;
        self
    }

    /// Adds a callback as a dead-letter destination.
    pub fn on_dead_letter(self, f: impl Fn(DeadLetter) + Send + Sync + 'static) -> Self {
        self.dead_letters(CallbackDeadLetters::new(f))
    }

    /// Keeps every accepted event in a durable spool file until it is delivered or dead-lettered
    /// (feature `spool`; see [`SpoolConfig`](super::SpoolConfig) for what it guarantees). A peak
    /// beyond the memory [`capacity`](Self::capacity) waits in the file instead of being dropped,
    /// whatever the [`overflow`](Self::overflow) policy; only a full spool refuses events.
    #[cfg(feature = "spool")]
    pub fn spool(mut self, spool: super::Spool) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Starts the background senders on the current tokio runtime and returns the handle.
    ///
    /// Works on current-thread and multi-thread runtimes and inside actix-web's (actix-rt)
    /// runtime. The senders live as long as the runtime, or until every [`Emitter`] handle is
    /// dropped and the queue is empty, or until [`Emitter::shutdown`].
    ///
    /// # Panics
    /// When called outside a tokio runtime, like `tokio::spawn`. Use
    /// [`try_start`](Self::try_start) or [`start_on`](Self::start_on) to avoid that.
    pub fn start(self) -> Emitter {
        match self.try_start() {
            Ok(emitter) => emitter,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`start`](Self::start), or an error when there is no current tokio runtime.
    pub fn try_start(self) -> Result<Emitter, StartError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| StartError { _private: () })?;
        Ok(self.start_on(&handle))
    }

    /// Starts the background senders on the given runtime (for example a dedicated one, when
    /// the application's runtime is not a good home for them).
    pub fn start_on(self, runtime: &tokio::runtime::Handle) -> Emitter {
        Emitter::spawn(self, runtime)
    }
}

/// [`EmitterBuilder::try_start`] was called outside a tokio runtime.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the audit emitter must be started inside a tokio runtime (call start() from async code, or use start_on)"
)]
pub struct StartError {
    _private: (),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_shows_what_it_was_built_with() {
        let limit = RateLimit::new(6_000, Duration::from_secs(60)).unwrap();
        assert_eq!((limit.requests(), limit.per()), (6_000, Duration::from_secs(60)));
        assert_eq!((limit.per_second(), limit.max_burst()), (100.0, 100));
        assert_eq!(limit, RateLimit::workos());
        // One second's worth of burst, never more than the whole quota, never less than 1.
        assert_eq!(
            RateLimit::new(5, Duration::from_millis(100)).unwrap().max_burst(),
            5
        );
        assert_eq!(RateLimit::new(1, Duration::from_secs(10)).unwrap().max_burst(), 1);
        assert_eq!(RateLimit::workos().burst(0).max_burst(), 1);
        assert_eq!(RateLimit::workos().burst(7).max_burst(), 7);
        assert!(RateLimit::new(0, Duration::from_secs(1)).is_none());
        assert!(RateLimit::new(1, Duration::ZERO).is_none());
    }
}
