//! [`Shared`]: everything the [`Emitter`](super::Emitter) handle and the senders share, and the
//! ways an event leaves the emitter (delivered, dead-lettered, given up).

use std::any::Any;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::builder::Config;
use super::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterSink, system_time};
use super::gate::{Gate, Signal, Watchers};
use super::pace::{Concurrency, Pace, Rates};
use super::queue::{Item, PendingDeadLetter, Store, wall_clock};
use super::sink::Sink;
use super::stats::{Counters, Throttle};
use crate::{Error, OrganizationId};

/// Everything the handle and the senders share.
pub(crate) struct Shared {
    pub(crate) store: Box<dyn Store>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) config: Config,
    pub(crate) limiter: Option<governor::DefaultDirectRateLimiter>,
    pub(crate) dead_letters: Vec<Arc<dyn DeadLetterSink>>,
    pub(crate) gate: Gate,
    /// New work: an accepted event, a parked event, a close.
    pub(crate) work: Notify,
    /// Something was resolved (room in the queue, flush progress).
    pub(crate) progress: Watchers,
    pub(crate) closed: AtomicBool,
    /// Shutdown's deadline passed: senders give up what they hold.
    pub(crate) stop: Signal,
    pub(crate) counters: Counters,
    pub(crate) drop_warning: Throttle,
    pub(crate) auth_warning: Throttle,
    /// Answers that were not WorkOS's (see [`Error::NotWorkOs`]).
    pub(crate) destination_warning: Throttle,
    /// Failed dead-letter writes.
    pub(crate) dead_letter_warning: Throttle,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Organizations WorkOS answers 403 for while it accepts others' events.
    pub(crate) forbidden: Forbidden,
    /// The runtime the senders run on (dead letters of evicted events are written on its
    /// blocking threads).
    pub(crate) runtime: tokio::runtime::Handle,
    /// Evicted events whose dead letter is being written.
    pub(crate) evicting: std::sync::atomic::AtomicUsize,
    /// How many senders may work at once.
    pub(crate) concurrency: Concurrency,
    /// Accept and delivery rates.
    pub(crate) rates: Rates,
    pub(crate) backlog_warning: Throttle,
    /// Shutdown's deadline, once shutdown began: no attempt starts after it.
    pub(crate) deadline: Mutex<Option<tokio::time::Instant>>,
    /// An attempt failed with a retryable error since the last success (see [`Shared::recovered`]).
    pub(crate) failing: AtomicBool,
}

/// Organizations whose events WorkOS refuses with 403 while it accepts other organizations':
/// their next 403 dead-letters the event at once instead of holding every sender. Bounded; an
/// organization leaves the set when one of its events is delivered.
#[derive(Debug, Default)]
pub(crate) struct Forbidden {
    any: AtomicBool,
    orgs: Mutex<HashSet<OrganizationId>>,
}

impl Forbidden {
    /// At most this many organizations are remembered (the set is cleared beyond it).
    const MAX: usize = 10_000;

    pub(crate) fn contains(&self, org: &OrganizationId) -> bool {
        self.any.load(Ordering::Relaxed) && crate::sync::lock(&self.orgs).contains(org)
    }

    pub(crate) fn insert(&self, org: &OrganizationId) {
        let mut orgs = crate::sync::lock(&self.orgs);
        if orgs.len() >= Self::MAX {
            orgs.clear();
        }
        if orgs.insert(org.clone()) {
            tracing::error!(
                organization = %org,
                "WorkOS refuses this organization's audit events (403) while it accepts others': they are dead-lettered instead of holding delivery"
            );
        }
        self.any.store(true, Ordering::Relaxed);
    }

    /// One of `org`'s events was delivered: it is no longer refused.
    pub(crate) fn accepted(&self, org: &OrganizationId) {
        if self.any.load(Ordering::Relaxed) {
            let mut orgs = crate::sync::lock(&self.orgs);
            orgs.remove(org);
            self.any.store(!orgs.is_empty(), Ordering::Relaxed);
        }
    }
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.store.close();
        self.work.notify_waiters();
        self.concurrency.wake();
        self.progress.notify_all();
    }

    pub(crate) fn resolved(&self) {
        self.progress.notify(|| self.store.oldest_outstanding());
        if self.is_closed() {
            self.work.notify_waiters();
        }
    }

    /// Shutdown's deadline, once shutdown began.
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        *crate::sync::lock(&self.deadline)
    }

    /// An attempt failed and will be retried.
    pub(crate) fn failing(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            self.failing.store(true, Ordering::Relaxed);
        }
    }

    /// An attempt succeeded: when attempts were failing before it, WorkOS answers again, and the
    /// events waiting out their backoff are released to the rate limiter at once (each event at
    /// most once), so that a backlog drains at the rate limit instead of at the pace of the
    /// backoffs. Costs one atomic load otherwise.
    pub(crate) fn recovered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::AcqRel) {
            let released = self.store.release_parked(tokio::time::Instant::now());
            if released > 0 {
                tracing::debug!(
                    released,
                    "audit delivery works again: waiting events released to the rate limit"
                );
                self.work.notify_waiters();
                self.work.notify_one();
            }
        }
    }

    pub(crate) fn delivered(&self, item: &Item) {
        self.store.resolve(item.seq);
        self.forbidden.accepted(&item.body.organization_id);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        let latency = item.accepted.elapsed();
        self.counters.latency.record(latency);
        #[cfg(feature = "metrics")]
        super::telemetry::delivered(latency);
        metric("delivered");
        self.resolved();
    }

    /// Records the dead letter of `item` (taken by a sender, or out of the store) with the
    /// destinations. Hands the event back, with its pending dead letter, when no destination
    /// recorded it: the caller keeps it and tries again.
    pub(crate) fn record_dead_letter(
        &self,
        mut item: Item,
        reason: DeadLetterReason,
        error: Option<Error>,
    ) -> Option<Item> {
        let mut pending = match item.dead_letter.take() {
            Some(pending) => *pending,
            None => PendingDeadLetter {
                reason,
                error: error
                    .or_else(|| item.last_error.take().map(|e| *e))
                    .as_ref()
                    .map(Into::into),
                tries: 0,
            },
        };
        let letter = letter(&item, &pending);
        if self.write_letter(&letter) {
            self.count_dead_letter(&letter);
            return None;
        }
        pending.tries += 1;
        item.dead_letter = Some(Box::new(pending));
        Some(item)
    }

    /// Dead-letters an event that is no longer in the store (drained, evicted, given up): when
    /// no destination records it, the last resort is the whole event and key in the log.
    pub(crate) fn dead_letter(&self, item: Item, reason: DeadLetterReason, error: Option<Error>) {
        if let Some(item) = self.record_dead_letter(item, reason, error)
            && let Some(pending) = &item.dead_letter
        {
            let letter = letter(&item, pending);
            letter.log(
                "no dead-letter destination could record this audit event: it is kept whole in this log",
            );
            self.count_dead_letter(&letter);
        }
        self.resolved();
    }

    /// Hands `letter` to every destination (to the log when there is none); `true` when at
    /// least one recorded it. Failures and panics are counted and logged (without the event).
    fn write_letter(&self, letter: &DeadLetter) -> bool {
        if self.dead_letters.is_empty() {
            letter.log("audit event dead-lettered (no dead-letter destination configured)");
            return true;
        }
        let mut recorded = false;
        for sink in &self.dead_letters {
            let problem = match catch_unwind(AssertUnwindSafe(|| sink.dead_letter(letter))) {
                Ok(Ok(())) => {
                    recorded = true;
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(panic) => self.panicked("a dead-letter destination", &*panic).to_string(),
            };
            self.counters.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.dead_letter_warning.ready() {
                tracing::error!(
                    organization = %letter.organization_id,
                    action = %letter.event.action,
                    reason = %letter.reason,
                    error = %problem,
                    suppressed,
                    failures = self.counters.dead_letter_failures.load(Ordering::Relaxed),
                    "could not record an audit dead letter; the event stays in the emitter and the write is tried again"
                );
            }
        }
        recorded
    }

    /// The accept and delivery rates over the last seconds.
    pub(crate) fn pace(&self) -> Pace {
        let c = &self.counters;
        self.rates.pace(
            c.accepted.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
        )
    }

    /// Samples the rates (about once a second) and warns, at a bounded rate, when the backlog
    /// grows: more events accepted than delivered with more waiting than the senders take at once.
    pub(crate) fn tick(&self) {
        let c = &self.counters;
        if !self.rates.tick(
            c.accepted.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
        ) {
            return;
        }
        let pace = self.pace();
        let outstanding = self.store.depth().outstanding();
        if pace.accepted_per_s > pace.delivered_per_s * 1.05
            && outstanding > self.concurrency.limit()
            && let Some(suppressed) = self.backlog_warning.ready()
        {
            let filling = pace.accepted_per_s - pace.delivered_per_s;
            let room = self.config.capacity.saturating_sub(outstanding) as f64;
            tracing::warn!(
                accepted_per_s = pace.accepted_per_s.round(),
                delivered_per_s = pace.delivered_per_s.round(),
                waiting = outstanding,
                capacity = self.config.capacity,
                senders = self.concurrency.limit(),
                full_in_s = (room / filling).round(),
                suppressed,
                "audit backlog growing: events are accepted faster than WorkOS takes them"
            );
        }
    }

    /// Counts and logs a caught panic of `what`; the error an attempt failed with.
    pub(crate) fn panicked(&self, what: &'static str, panic: &(dyn Any + Send)) -> Error {
        self.counters.panics.fetch_add(1, Ordering::Relaxed);
        let error = Error::Panicked {
            what,
            message: panic_message(panic),
        };
        tracing::error!(error = %error, "caught a panic in the audit emitter; the event is kept and the sender goes on");
        error
    }

    fn count_dead_letter(&self, letter: &DeadLetter) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.counters
            .rejections
            .record(letter, self.config.schemas.as_deref());
        if letter.reason == DeadLetterReason::ShutdownDeadline {
            self.counters
                .dead_lettered_at_deadline
                .fetch_add(1, Ordering::Relaxed);
        }
        metric("dead_lettered");
        tracing::warn!(
            organization = %letter.organization_id,
            action = %letter.event.action,
            reason = %letter.reason,
            attempts = letter.attempts,
            "audit event dead-lettered"
        );
    }

    /// A taken event given up at shutdown's deadline or abandoned: a durable store (the spool)
    /// keeps it for the next start; otherwise it is dead-lettered.
    pub(crate) fn give_up(&self, item: Item, reason: DeadLetterReason, error: Option<Error>) {
        match self.store.give_back(item) {
            Some(item) => self.dead_letter(item, reason, error),
            None => self.resolved(),
        }
    }

    pub(crate) fn warn_dropped(&self, newest: bool) {
        if let Some(suppressed) = self.drop_warning.ready() {
            tracing::warn!(
                policy = if newest { "drop_newest" } else { "drop_oldest" },
                capacity = self.config.capacity,
                suppressed,
                dropped_newest = self.counters.dropped_newest.load(Ordering::Relaxed),
                dropped_oldest = self.counters.dropped_oldest.load(Ordering::Relaxed),
                "audit emitter queue full: an event was dropped"
            );
        }
    }
}

impl Drop for Shared {
    /// The last owner is gone (every handle dropped and every sender ended, or the runtime
    /// dropped the senders): anything still waiting is dead-lettered, never silently lost.
    fn drop(&mut self) {
        let left = self.store.drain();
        if !left.is_empty() {
            tracing::error!(
                events = left.len(),
                "the audit emitter stopped with events undelivered (its runtime ended before Emitter::shutdown); dead-lettering them"
            );
        }
        for item in left {
            self.dead_letter(item, DeadLetterReason::Abandoned, None);
        }
    }
}

/// The dead letter of an event.
fn letter(item: &Item, pending: &PendingDeadLetter) -> DeadLetter {
    DeadLetter {
        organization_id: item.body.organization_id.clone(),
        event: item.body.event.clone(),
        idempotency_key: item.key.to_string(),
        reason: pending.reason,
        error: pending.error.clone(),
        attempts: item.attempts,
        first_attempt_at: item.first_attempt.map(|at| system_time(wall_clock(at))),
        last_attempt_at: item.last_attempt.map(|at| system_time(wall_clock(at))),
    }
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[allow(unused_variables)]
pub(crate) fn metric(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("workos_audit_emitter_events_total", "outcome" => outcome).increment(1);
}
