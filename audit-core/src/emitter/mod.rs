//! The background emitter: hand an event off in microseconds, deliver it in the background,
//! never lose it silently.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use audit_core::emitter::{Emitter, MemoryDeadLetters, MemorySink, Overflow};
//! use audit_core::{Action, Actor, Context, Event, OrganizationId};
//!
//! let sink = MemorySink::new(); // production: a `Client`
//! let dead = MemoryDeadLetters::new(); // production: `JsonlDeadLetters::new(path)?`
//! let emitter = Emitter::builder(sink.clone())
//!     .capacity(10_000)
//!     .senders(8)
//!     .overflow(Overflow::DropNewest)
//!     .dead_letters(dead.clone())
//!     .start();
//!
//! let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
//! let event = Event::new(
//!     Action::new("team.created").unwrap(),
//!     Actor::new("user_01", "user"),
//!     Context::new("203.0.113.7"),
//! );
//! let receipt = emitter.try_emit(org, event).unwrap(); // never awaits
//! let report = emitter.shutdown(Duration::from_secs(10)).await;
//! assert_eq!(report.delivered, 1);
//! assert_eq!(sink.events()[0].1, receipt.idempotency_key);
//! # });
//! ```
//!
//! # How an event flows
//!
//! [`Emitter::try_emit`] validates the event (an invalid one is refused with the fields named),
//! gives it an idempotency key (a random UUID v4, or the caller's through [`EmitOptions`]) and
//! pushes it into a bounded in-memory queue: one short mutex section, no I/O, no `.await`.
//! `N` sender tasks ([`EmitterBuilder::senders`]) take events from the queue (after a quiet
//! moment, the first event wakes one sender, which lingers 2 ms so that one wake-up serves the
//! whole burst: [`EmitterBuilder::linger`]), wait for the shared rate limiter ([`RateLimit`], WorkOS's 6,000 requests per minute by default) and make one
//! attempt each through the [`Sink`] (the WorkOS [`Client`](crate::client::Client)).
//!
//! - **Delivered** (WorkOS's `{"success":true}`): done; counted with its latency from acceptance.
//! - **Not WorkOS** (any other 2xx: a `204`, an HTML page from a gateway or a web app, that is a
//!   wrong `WORKOS_BASE_URL`): nothing says the event was stored, so it is dead-lettered at once
//!   with [`DeadLetterReason::NotWorkOs`] (never retried forever), counted in
//!   [`Stats::not_workos`] and logged with the fix at a bounded rate.
//! - **Retryable** (408, 429, 500, 502, 503, 504, transport failure, timeout, a panicking sink): the
//!   event waits for its retry time (exponential backoff with full jitter,
//!   [`EmitterBuilder::retry_backoff`]) and is sent again **with the same idempotency key**, so
//!   WorkOS stores it once however many attempts reach it. A waiting event does not occupy a
//!   sender. A `Retry-After` (seconds or HTTP date) or a 429 pauses **every** sender until that
//!   instant. No attempt starts after the event's retry window ([`EmitterBuilder::retry_window`],
//!   1 hour by default) has passed since its first attempt; the event is then dead-lettered.
//! - **Rejected** (400, 404, 409, 422 and other statuses retrying cannot cure): dead-lettered at
//!   once with the whole event, WorkOS's error and the attempt count.
//!
//! Every accepted event ends in one of three places: delivered once, dead-lettered whole with
//! its key and reason, or still held and counted in [`Stats`] (queued, retrying, in flight, or
//! in the spool file). A dead letter leaves the emitter only once a destination recorded it
//! ([`DeadLetterSink`] reports failure): when none could (a full disk, a panicking callback), the
//! event stays, counted in [`Stats::dead_letter_failures`], the write is tried again, and at
//! shutdown the last resort is the whole dead letter in the log ([`DeadLetter::log`]). Without a
//! destination the log is the record; [`Emitter::replay_log`] re-emits from it. A panic in the
//! sink, a dead-letter destination or a sender is caught and counted ([`Stats::panics`]); the
//! sender goes on.
//!
//! # Authorization failures
//!
//! A 401 (or a 403 for every event) means the API key is wrong, not that this event is bad. The
//! emitter does not burn the queue: it **holds** delivery (every sender stops), logs the failure
//! with `tracing::error!` (repeated at most every [`EmitterBuilder::warn_interval`]), keeps every
//! event queued, and probes after 30 s, then at doubling intervals up to 5 minutes
//! ([`EmitterBuilder::auth_probe_interval`]), each probe with the next event in line (the probe
//! rotates, so one event that WorkOS refuses for itself cannot keep the hold on). When a probe is
//! accepted, delivery resumes. [`Stats::auth_failed`] and [`Stats::held_since`] show the state; a
//! hold longer than [`EmitterBuilder::auth_hold_alert`] (15 minutes) logs `AUDIT DELIVERY STOPPED`
//! at a bounded rate. A 403 for one organization while others' events are accepted is about that
//! organization: its events are dead-lettered ([`DeadLetterReason::Rejected`], status 403) and
//! the others keep flowing. Shutdown dead-letters what is left, so nothing is lost silently.
//!
//! # A full queue, and overload
//!
//! The capacity ([`EmitterBuilder::capacity`]) counts every event not yet resolved: queued,
//! waiting to retry, and in flight. A server that fails every request therefore cannot make the
//! emitter's memory grow. When it is full, [`Overflow`] decides: refuse the new event (the
//! default, [`EmitError::Full`]) or evict the oldest waiting one, which is dead-lettered with
//! [`DeadLetterReason::Overflow`]. With a spool, every policy spills the new event to the file
//! instead, and only a full spool refuses. Every drop is counted ([`Stats::dropped`]) and warned
//! about at a bounded rate. [`Emitter::emit`] instead waits for room.
//!
//! Under a rate limit the number of working senders follows WorkOS's latency (`rate · latency ·
//! 1.5 + 1`, between [`EmitterBuilder::senders`] and [`EmitterBuilder::max_senders`]), so delivery
//! reaches the limit whether WorkOS is 30 ms or 300 ms away. [`Stats::accept_rate`],
//! [`Stats::delivery_rate`] and [`Stats::time_to_drain`] show whether the backlog shrinks, and a
//! growing backlog is warned about at a bounded rate.
//!
//! # Flush, shutdown, and dropping the handle
//!
//! [`Emitter::flush`] waits until every event accepted before the call is delivered or
//! dead-lettered. [`Emitter::shutdown`] stops accepting, drains, and at its deadline dead-letters
//! what is still pending ([`DeadLetterReason::ShutdownDeadline`]), then reports. Both are plain
//! `async` functions that never block a runtime thread (the spool's last commit runs on a blocking
//! thread, and a spool writer thread that died is noticed), so they work on current-thread and
//! multi-thread runtimes and inside actix-web's.
//!
//! Every dead letter (a sender's, a `DropOldest` eviction's, shutdown's final ones) is written by
//! one writer: a bounded queue drained on one blocking thread at a time, so a destination's I/O
//! (a [`JsonlDeadLetters`] fsync) never runs on a runtime thread. When the writer is behind,
//! senders wait for room holding their event, and `DropOldest` refuses instead of evicting.
//! Shutdown waits for the writer to finish, until its deadline or at least
//! [`SHUTDOWN_DEAD_LETTER_GRACE`] after the drain.
//!
//! Dropping the last [`Emitter`] handle without `shutdown` never blocks: the senders keep
//! delivering what is queued and end when it is empty. If the runtime ends first, what is left is
//! dead-lettered as [`DeadLetterReason::Abandoned`] when the senders are dropped.
//!
//! # Runtimes and non-`Send` contexts
//!
//! [`EmitterBuilder::start`] spawns the senders on the current tokio runtime (or use
//! [`EmitterBuilder::start_on`]). The handle is `Clone + Send + Sync` and
//! [`try_emit`](Emitter::try_emit) is a plain synchronous function, so it can be called from
//! anywhere: a handler, a `!Send` actix worker, a synchronous thread.
//!
//! # Observability
//!
//! [`Emitter::stats`] gives a snapshot. Each delivery attempt runs in a tracing span
//! `audit_emitter.attempt` at DEBUG level (target `audit_core::emitter`) with the fields
//! `idempotency_key`, `action`, `organization_id`, `attempt` (1 for the first), `outcome`
//! (`delivered`, `retryable_error`, `unauthorized`, `rejected`, `shutdown_deadline`) and
//! `status` (WorkOS's HTTP status, when a failed attempt got an answer); never the API key, the
//! event's metadata or its actor. The span `follows_from` the span that was current when
//! [`try_emit`](Emitter::try_emit) or [`emit`](Emitter::emit) accepted the event (the request's
//! span in a web app), so a trace shows which request produced each attempt, even a retry an
//! hour later. That span's id is captured only when a subscriber is interested in the attempt
//! spans, which keeps `try_emit` as fast without one; the link names the span by its id, so a
//! subscriber that has already closed and forgotten the span when the attempt starts cannot
//! follow it. With the `metrics` feature, the counter
//! `workos_audit_emitter_events_total` is incremented with an `outcome` label (`accepted`,
//! `delivered`, `retried`, `dead_lettered`, `dropped_newest`, `dropped_oldest`), every delivery
//! adds a sample to the histogram `workos_audit_emitter_delivery_latency_seconds`, and a task
//! sets gauges and totals for the rest of [`Emitter::stats`] once a second: the stable names are
//! in the table of the crate's README. [`Emitter::health`] answers a readiness probe.

use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

mod builder;
mod dead_letter;
mod gate;
mod key;
mod pace;
mod queue;
pub mod rejections;
mod sender;
mod shared;
mod sink;
#[cfg(feature = "spool")]
mod spool;
pub(crate) mod stats;
mod telemetry;

pub use builder::{EmitterBuilder, RateLimit, StartError};
pub use dead_letter::{
    CallbackDeadLetters, DEAD_LETTER_LOG_MARKER, DeadLetter, DeadLetterError, DeadLetterReason,
    DeadLetterSink, JsonlDeadLetters, MemoryDeadLetters, ReplayReport, UnreadableDeadLetter,
};
pub use key::IdempotencyKey;
pub use rejections::Rejection;
pub use sink::{DiscardSink, MemorySink, Sink, SinkFuture};
pub use stats::{Dropped, Stats};
pub use telemetry::Health;
// spool (feature `spool`)
#[cfg(feature = "spool")]
pub use spool::{Spool, SpoolConfig, SpoolError, SpoolErrorKind, SpoolStats, SpoolSync, StaleEvents};

use gate::{Gate, Signal};
use queue::{Item, MemoryStore, Pushed};
use shared::{Shared, metric};
use stats::{Counters, Throttle};

use crate::{CreateEvent, Event, OrganizationId, ValidationErrors};

/// The `tracing` target of the attempt spans (`audit_emitter.attempt`, at DEBUG): stable, so
/// that a filter such as `audit_core::emitter=debug` keeps selecting them.
const ATTEMPT_TARGET: &str = "audit_core::emitter";

/// What a full in-memory queue does with one more event.
///
/// With a spool ([`EmitterBuilder::spool`], feature `spool`) every policy spills: the new event
/// waits in the spool file until memory has room, and only a full spool
/// (`SpoolConfig::max_events`) refuses new events. Nothing the spool holds is ever evicted, so an
/// event whose durability was confirmed is never dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Refuse the new event ([`EmitError::Full`]); what is already queued keeps its place.
    #[default]
    DropNewest,
    /// Evict the oldest event still waiting (queued or waiting to retry, not one in flight) to make
    /// room; the new event is accepted. The evicted event is dead-lettered with
    /// [`DeadLetterReason::Overflow`] (never erased), by the emitter's one dead-letter writer.
    /// When that writer is behind (its bounded queue is full: a slow or stuck destination),
    /// nothing is evicted: the new event is refused with [`EmitError::Full`] and counted in
    /// `dropped.newest`, so no event is lost and memory stays bounded.
    DropOldest,
    /// With a spool: keep the new event only in the spool file and load it back when memory has
    /// room, so memory stays bounded while the spool absorbs the peak (up to its own limit,
    /// `SpoolConfig::max_events`); what every policy does with a spool. Without a spool, the
    /// same as [`DropNewest`](Self::DropNewest).
    SpillToSpool,
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The event breaks WorkOS's rules; the error names every field at fault.
    #[error(transparent)]
    Invalid(ValidationErrors),
    /// The idempotency key given in [`EmitOptions`] is unusable.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(&'static str),
    /// The queue is full and the policy is [`Overflow::DropNewest`]: the event was dropped (and
    /// counted in [`Stats::dropped`]).
    #[error("the audit emitter's queue is full; the event was dropped")]
    Full,
    /// The emitter was shut down.
    #[error("the audit emitter is shut down")]
    Closed,
    /// `emit_durable` was called on an emitter with neither a spool nor a durable sink (see
    /// [`Sink::is_durable`]); the event was not accepted.
    #[error("the audit emitter has neither a spool nor a durable sink; emit_durable needs one")]
    NoSpool,
    /// `emit_durable`: the event was accepted (it stays queued and is retried) but the spool or
    /// the durable sink could not store it (see `SpoolStats::failing`, or the sink's error in
    /// [`Stats`]).
    #[error("the audit event was accepted but could not be stored durably")]
    NotDurable {
        /// The accepted event's idempotency key.
        idempotency_key: IdempotencyKey,
    },
}

/// Options of one emit call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EmitOptions {
    /// The idempotency key to send (default: a new random UUID v4).
    pub idempotency_key: Option<String>,
}

impl EmitOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `key` as the idempotency key: 1 to 255 visible ASCII characters. Two events with the
    /// same key within 24 hours are stored once by WorkOS; use it to replay, or to make an event
    /// derived from a business operation idempotent across processes.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The proof that an event was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmitReceipt {
    /// The idempotency key sent with every attempt.
    pub idempotency_key: IdempotencyKey,
}

/// [`Emitter::flush`] timed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit emitter flush timed out with {pending} events still outstanding")]
#[non_exhaustive]
pub struct FlushTimeout {
    /// Events not yet resolved when the time was up.
    pub pending: usize,
}

/// What [`Emitter::shutdown`] reports. Counts are totals since the emitter started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events delivered.
    pub delivered: u64,
    /// Events dead-lettered (including `pending_at_deadline`).
    pub dead_lettered: u64,
    /// Events dropped by the overflow policy, by reason.
    pub dropped: Dropped,
    /// Events still pending when the deadline passed; they were dead-lettered with
    /// [`DeadLetterReason::ShutdownDeadline`].
    pub pending_at_deadline: u64,
    /// Dead letters per action and reason, with the fix (also logged, one warning each).
    pub rejections: Vec<Rejection>,
}

/// How long [`Emitter::shutdown`] waits at least, once its store is drained, for the dead-letter
/// writer to record the final dead letters when the deadline has already passed. Past it, an
/// event whose dead letter could not be handed over is written whole to the log
/// ([`DeadLetter::log`]).
pub const SHUTDOWN_DEAD_LETTER_GRACE: Duration = Duration::from_secs(5);

/// The emitter's handle: cheap to clone, `Send + Sync`. See the [module documentation](self).
#[derive(Clone)]
pub struct Emitter {
    handle: Arc<Handle>,
}

/// Closes the emitter when the last [`Emitter`] clone is dropped.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let depth = self.shared().store.depth();
        f.debug_struct("Emitter")
            .field("closed", &self.shared().is_closed())
            .field("queued", &depth.ready)
            .field("retrying", &depth.parked)
            .field("in_flight", &depth.taken)
            .finish_non_exhaustive()
    }
}

impl Emitter {
    /// Starts configuring an emitter that delivers to `sink`: a WorkOS
    /// [`Client`](crate::client::Client), a [`MemorySink`] or your own [`Sink`].
    pub fn builder(sink: impl Sink) -> EmitterBuilder {
        EmitterBuilder::new(sink)
    }

    fn spawn(builder: EmitterBuilder, runtime: &tokio::runtime::Handle) -> Self {
        let EmitterBuilder {
            sink,
            config,
            dead_letters,
            #[cfg(feature = "spool")]
            spool,
        } = builder;
        #[cfg(feature = "spool")]
        let store: Box<dyn queue::Store> = match spool {
            Some(spool) => Box::new(spool::SpoolStore::start(
                spool,
                config.capacity,
                config.warn_interval,
            )),
            None => Box::new(MemoryStore::new(config.capacity)),
        };
        #[cfg(not(feature = "spool"))]
        let store: Box<dyn queue::Store> = Box::new(MemoryStore::new(config.capacity));
        let shared = Arc::new(Shared {
            store,
            sink,
            limiter: config.rate_limit.and_then(|l| l.limiter()),
            dead_letters,
            gate: Gate::default(),
            work: Notify::new(),
            progress: Default::default(),
            closed: Default::default(),
            stop: Signal::default(),
            counters: Counters::default(),
            drop_warning: Throttle::new(config.warn_interval),
            auth_warning: Throttle::new(config.warn_interval),
            destination_warning: Throttle::new(config.warn_interval),
            dead_letter_warning: Throttle::new(config.warn_interval),
            tasks: Default::default(),
            forbidden: Default::default(),
            writer: shared::Writer::start(runtime.clone()),
            evicting: Default::default(),
            concurrency: {
                let (min, max) = config.sender_range();
                pace::Concurrency::new(min, max, config.rate_limit.map(|l| l.per_second()))
            },
            rates: Default::default(),
            backlog_warning: Throttle::new(config.warn_interval),
            deadline: Default::default(),
            failing: Default::default(),
            config,
        });
        sender::spawn_senders(&shared, runtime);
        #[cfg(feature = "metrics")]
        telemetry::spawn(&shared, runtime);
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Validates `event`, gives it a new idempotency key and queues it for delivery to `org`.
    ///
    /// Never awaits and performs no I/O: it returns in about a microsecond whatever WorkOS is
    /// doing. Errors: [`EmitError::Invalid`] (naming the fields), [`EmitError::Full`] (queue full
    /// under [`Overflow::DropNewest`]; counted), [`EmitError::Closed`] (after shutdown).
    pub fn try_emit(&self, org: OrganizationId, event: Event) -> Result<EmitReceipt, EmitError> {
        self.try_emit_with(org, event, EmitOptions::default())
    }

    /// [`try_emit`](Self::try_emit) with options (such as the caller's own idempotency key).
    pub fn try_emit_with(
        &self,
        org: OrganizationId,
        event: Event,
        options: EmitOptions,
    ) -> Result<EmitReceipt, EmitError> {
        let (item, key) = self.prepare(org, event, options)?;
        self.push(item, key)
    }

    /// Queues a prepared event under the overflow policy.
    #[inline]
    fn push(&self, item: Item, key: IdempotencyKey) -> Result<EmitReceipt, EmitError> {
        let shared = self.shared();
        // An eviction's dead letter needs a place in the dead-letter writer's queue, reserved
        // before the push: when the writer is behind, nothing is evicted and a full queue
        // refuses the new event instead (never blocking, never losing an event).
        let (overflow, permit) = match shared.config.overflow {
            Overflow::DropOldest => match shared.writer.try_reserve() {
                Some(permit) => (Overflow::DropOldest, Some(permit)),
                None => (Overflow::DropNewest, None),
            },
            overflow => (overflow, None),
        };
        match shared.store.push(item, overflow) {
            Pushed::Accepted { evicted, wake } => {
                self.accepted(wake);
                if let Some(old) = evicted {
                    shared.counters.dropped_oldest.fetch_add(1, Ordering::Relaxed);
                    metric("dropped_oldest");
                    shared.warn_dropped("drop_oldest");
                    // Evicted, not erased: its dead letter keeps it whole, written by the
                    // dead-letter writer (a destination may do I/O, the emit call never does).
                    self.handle.shared.hand_over(
                        permit,
                        old,
                        DeadLetterReason::Overflow,
                        None,
                        shared::LetterKind::Evicted,
                    );
                }
                Ok(EmitReceipt { idempotency_key: key })
            }
            Pushed::Full(_) => {
                shared.counters.dropped_newest.fetch_add(1, Ordering::Relaxed);
                metric("dropped_newest");
                shared.warn_dropped(if overflow == shared.config.overflow {
                    "drop_newest"
                } else {
                    "drop_oldest_refused"
                });
                Err(EmitError::Full)
            }
            Pushed::Closed => Err(EmitError::Closed),
        }
    }

    /// Like [`try_emit`](Self::try_emit), but when the queue is full it waits for room instead
    /// of dropping (backpressure), whatever the overflow policy.
    pub async fn emit(&self, org: OrganizationId, event: Event) -> Result<EmitReceipt, EmitError> {
        self.emit_with(org, event, EmitOptions::default()).await
    }

    /// [`emit`](Self::emit) with options.
    pub async fn emit_with(
        &self,
        org: OrganizationId,
        event: Event,
        options: EmitOptions,
    ) -> Result<EmitReceipt, EmitError> {
        let (mut item, key) = self.prepare(org, event, options)?;
        let shared = self.shared();
        let watch = shared.progress.watch(None);
        loop {
            let mut progress = pin!(watch.notified());
            progress.as_mut().enable();
            match shared.store.push(item, Overflow::DropNewest) {
                Pushed::Accepted { wake, .. } => {
                    self.accepted(wake);
                    return Ok(EmitReceipt { idempotency_key: key });
                }
                Pushed::Closed => return Err(EmitError::Closed),
                Pushed::Full(back) => item = back,
            }
            progress.await;
        }
    }

    fn prepare(
        &self,
        org: OrganizationId,
        event: Event,
        options: EmitOptions,
    ) -> Result<(Item, IdempotencyKey), EmitError> {
        if self.shared().is_closed() {
            return Err(EmitError::Closed);
        }
        event
            .validate_request(&org, self.shared().config.max_request_bytes)
            .map_err(EmitError::Invalid)?;
        let mut event = event;
        if let Some(schemas) = &self.shared().config.schemas {
            schemas.apply(&mut event).map_err(EmitError::Invalid)?;
        }
        let key = match options.idempotency_key {
            Some(key) => IdempotencyKey::parse(key)?,
            None => IdempotencyKey::generate(),
        };
        let mut item = Item::new(CreateEvent::new(org, event), key.clone());
        // A relaxed load when no subscriber wants the attempt spans: `try_emit` stays as fast.
        if tracing::enabled!(target: ATTEMPT_TARGET, tracing::Level::DEBUG) {
            item.cause = tracing::Span::current().id();
        }
        Ok((item, key))
    }

    /// Counts an accepted event and wakes a sender when the queue was empty. While it is not,
    /// the senders keep taking events and wake each other (waking a task on another thread is
    /// the most expensive part of an emit, so the emitting thread does it only when needed).
    fn accepted(&self, wake: bool) {
        let shared = self.shared();
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        metric("accepted");
        if wake {
            shared.work.notify_one();
        }
    }

    /// Accepts the event like [`try_emit`](Self::try_emit) (same checks, overflow policy and
    /// errors), then waits until it is stored durably: committed to the spool's file (feature
    /// `spool`), or, without a spool, acknowledged by a [durable sink](Sink::is_durable) such as
    /// a PostgreSQL outbox. Once this returns `Ok`, the event survives a crash of the process. It
    /// never waits for WorkOS.
    ///
    /// Errors besides `try_emit`'s: [`EmitError::NoSpool`] (neither a spool nor a durable sink;
    /// nothing was accepted) and [`EmitError::NotDurable`] (accepted, but the commit failed, for
    /// example on a full disk or an unreachable database; the emitter keeps retrying it).
    pub async fn emit_durable(&self, org: OrganizationId, event: Event) -> Result<EmitReceipt, EmitError> {
        let shared = self.shared();
        #[cfg(feature = "spool")]
        if let Some(durable) = shared.store.durable() {
            return self.emit_spooled(durable, org, event).await;
        }
        if !shared.sink.is_durable() {
            return Err(EmitError::NoSpool);
        }
        let (mut item, key) = self.prepare(org, event, EmitOptions::default())?;
        let (ack, acknowledged) = tokio::sync::oneshot::channel();
        item.ack = Some(ack);
        let receipt = self.push(item, key)?;
        match acknowledged.await {
            Ok(true) => Ok(receipt),
            // An attempt failed, or the event left the emitter unstored (evicted, dead-lettered).
            Ok(false) | Err(_) => Err(EmitError::NotDurable {
                idempotency_key: receipt.idempotency_key,
            }),
        }
    }

    /// `emit_durable` with a spool: waits for the writer's commit.
    #[cfg(feature = "spool")]
    async fn emit_spooled(
        &self,
        mut durable: tokio::sync::watch::Receiver<spool::Durable>,
        org: OrganizationId,
        event: Event,
    ) -> Result<EmitReceipt, EmitError> {
        let shared = self.shared();
        let receipt = self.try_emit(org, event)?;
        // At least this event's sequence number; a later one only makes the wait a commit longer.
        let target = shared.store.last_seq();
        loop {
            let state = *durable.borrow_and_update();
            if state.committed >= target {
                return Ok(receipt);
            }
            if state.failing || state.stopped || durable.changed().await.is_err() {
                let state = *durable.borrow();
                if state.committed >= target {
                    return Ok(receipt);
                }
                return Err(EmitError::NotDurable {
                    idempotency_key: receipt.idempotency_key,
                });
            }
        }
    }

    /// Waits until every event accepted before this call is delivered or dead-lettered, or
    /// `timeout` passes. Events accepted meanwhile are not waited for.
    pub async fn flush(&self, timeout: Duration) -> Result<(), FlushTimeout> {
        let shared = self.shared();
        let target = shared.store.last_seq();
        if self.wait_until(target, Instant::now() + timeout).await {
            Ok(())
        } else {
            Err(FlushTimeout {
                pending: shared.store.depth().outstanding(),
            })
        }
    }

    /// Waits until every event up to `target` is resolved, or `deadline`.
    async fn wait_until(&self, target: u64, deadline: Instant) -> bool {
        let shared = self.shared();
        let done = || {
            shared.store.oldest_outstanding().is_none_or(|seq| seq > target)
                && shared.evicting.load(Ordering::SeqCst) == 0
        };
        let watch = shared.progress.watch(Some(target));
        loop {
            let mut progress = pin!(watch.notified());
            progress.as_mut().enable();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return done();
            }
        }
    }

    /// Stops accepting events (later emits get [`EmitError::Closed`]), waits up to `timeout`
    /// for everything queued to be delivered or dead-lettered, then dead-letters whatever is
    /// still pending ([`DeadLetterReason::ShutdownDeadline`]; attempts in flight are abandoned,
    /// so such an event may in fact have reached WorkOS: replay it with its key) and reports.
    ///
    /// Calling it again (from any clone) reports again without waiting.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let shared = self.shared();
        let deadline = Instant::now() + timeout;
        crate::sync::lock(&shared.deadline).get_or_insert(deadline);
        shared.close();
        // Closed: nothing is accepted after `last_seq`, so this waits until nothing is outstanding.
        let drained = self.wait_until(shared.store.last_seq(), deadline).await;
        let tasks = std::mem::take(&mut *crate::sync::lock(&shared.tasks));
        if !drained {
            // Senders in the middle of an attempt are aborted: the event each one holds is
            // dead-lettered (or kept by the spool) as it is dropped.
            shared.stop.fire();
            for task in &tasks {
                task.abort();
            }
        }
        for task in tasks {
            // A sender ends promptly once the queue is empty or it was aborted; its panic (none
            // is expected) must not fail the shutdown.
            let _ = task.await;
        }
        // The spool's drain waits for its writer's last commit: never on a runtime thread.
        let owner = Arc::clone(&self.handle.shared);
        let left = match tokio::task::spawn_blocking(move || owner.store.drain()).await {
            Ok(left) => left,
            Err(e) => {
                tracing::error!(error = %e, "the audit emitter could not drain its store at shutdown");
                Vec::new()
            }
        };
        // The final dead letters go through the dead-letter writer too (never written on a
        // runtime thread); shutdown waits for it to finish them, until the deadline or at least
        // `SHUTDOWN_DEAD_LETTER_GRACE` after the drain.
        let until = deadline.max(Instant::now() + SHUTDOWN_DEAD_LETTER_GRACE);
        for item in left {
            self.handle
                .shared
                .dead_letter_by(until, item, DeadLetterReason::ShutdownDeadline)
                .await;
        }
        if !shared.writer.drained(until).await {
            tracing::error!(
                "the audit dead-letter writer had not finished by shutdown's deadline; it goes on writing in the background"
            );
        }
        let c = &shared.counters;
        ShutdownReport {
            delivered: c.delivered.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            dropped: c.dropped(),
            pending_at_deadline: c.dead_lettered_at_deadline.load(Ordering::Relaxed),
            rejections: c.rejections.report(),
        }
    }

    /// Whether the emitter no longer accepts events.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// A snapshot of counters, queue depths, the hold and pause state, and delivery latency.
    pub fn stats(&self) -> Stats {
        stats_of(self.shared())
    }

    /// Whether this emitter is ready, for a readiness probe: its senders are running (it was not
    /// shut down and no sender task ended), delivery is not held for a refused API key, and fewer
    /// than `max_waiting` events wait for delivery (queued or retrying). Cheap: one
    /// [`stats`](Self::stats) snapshot.
    ///
    /// ```
    /// # async fn probe(emitter: audit_core::Emitter) {
    /// let health = emitter.health(5_000);
    /// let status = if health.is_ready() { 200 } else { 503 };
    /// # let _ = status;
    /// # }
    /// ```
    pub fn health(&self, max_waiting: usize) -> Health {
        let shared = self.shared();
        let senders_alive = !shared.is_closed() && {
            let tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
            !tasks.is_empty() && tasks.iter().all(|t| !t.is_finished())
        };
        Health::new(&self.stats(), senders_alive, max_waiting)
    }
}

/// The [`Stats`] of an emitter's shared state (for [`Emitter::stats`] and the metrics task).
fn stats_of(shared: &Shared) -> Stats {
    let c = &shared.counters;
    let depth = shared.store.depth();
    let gate = shared.gate.state();
    let [p50, p90, p99] = c.latency.percentiles([50.0, 90.0, 99.0]);
    let pace = shared.pace();
    Stats {
        accepted: c.accepted.load(Ordering::Relaxed),
        queued: depth.ready,
        retrying: depth.parked,
        in_flight: depth.taken,
        delivered: c.delivered.load(Ordering::Relaxed),
        retried: c.retried.load(Ordering::Relaxed),
        dropped: c.dropped(),
        dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        not_workos: c.not_workos.load(Ordering::Relaxed),
        dead_letter_failures: c.dead_letter_failures.load(Ordering::Relaxed),
        panics: c.panics.load(Ordering::Relaxed),
        last_error: c.last_error(),
        auth_failed: gate.held_since.is_some(),
        held_since: gate.held_since,
        paused: gate.paused_until.is_some_and(|t| t > Instant::now()),
        accept_rate: pace.accepted_per_s,
        delivery_rate: pace.delivered_per_s,
        time_to_drain: pace.time_to_drain(depth.outstanding()),
        concurrency: shared.concurrency.limit(),
        latency_p50: p50,
        latency_p90: p90,
        latency_p99: p99,
        rejections: c.rejections.snapshot(),
        #[cfg(feature = "spool")]
        spool: shared.store.spool_stats(),
    }
}

impl Emitter {
    /// Re-emits every dead letter of a JSON-lines file (written by [`JsonlDeadLetters`]) with its
    /// original organization and **idempotency key**, waiting for room in the queue as needed.
    ///
    /// Within the 24 hours WorkOS remembers a key, an event that in fact reached WorkOS before
    /// it was dead-lettered is not stored twice. Rejected events (400/422) will be rejected again
    /// unless they were corrected in the file. A record torn by an interrupted write is skipped
    /// with a warning (and listed in [`ReplayReport::unreadable`]). Replay into a fresh file: do
    /// not point the emitter's own dead-letter destination at the file being read.
    pub async fn replay_dead_letters(&self, path: impl AsRef<Path>) -> std::io::Result<ReplayReport> {
        self.replay(DeadLetter::read_jsonl(path)?).await
    }

    /// Re-emits every dead letter found in a log ([`DeadLetter::read_log`]): those logged whole
    /// when no dead-letter destination was configured, or as the last resort when none could
    /// record them. Same guarantees as [`replay_dead_letters`](Self::replay_dead_letters).
    pub async fn replay_log(&self, path: impl AsRef<Path>) -> std::io::Result<ReplayReport> {
        self.replay(DeadLetter::read_log(path)?).await
    }

    async fn replay(
        &self,
        entries: Vec<Result<DeadLetter, UnreadableDeadLetter>>,
    ) -> std::io::Result<ReplayReport> {
        let mut report = ReplayReport::default();
        for (i, entry) in entries.into_iter().enumerate() {
            match entry {
                Err(e) => report.unreadable.push(e),
                Ok(letter) => {
                    let options = EmitOptions::new().idempotency_key(letter.idempotency_key);
                    match self
                        .emit_with(letter.organization_id, letter.event, options)
                        .await
                    {
                        Ok(_) => report.replayed += 1,
                        Err(e) => report.refused.push((i + 1, e)),
                    }
                }
            }
        }
        Ok(report)
    }
}
