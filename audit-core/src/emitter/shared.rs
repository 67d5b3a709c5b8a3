//! [`Shared`]: everything the [`Emitter`](super::Emitter) handle and the senders share, and the
//! ways an event leaves the emitter (delivered, dead-lettered, given up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::builder::Config;
use super::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterSink, system_time};
use super::gate::{Gate, Signal, Watchers};
use super::queue::{Item, Store, wall_clock};
use super::sink::Sink;
use super::stats::{Counters, Throttle};
use crate::Error;

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
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.store.close();
        self.work.notify_waiters();
        self.progress.notify_all();
    }

    pub(crate) fn resolved(&self) {
        self.progress.notify(|| self.store.oldest_outstanding());
        if self.is_closed() {
            self.work.notify_waiters();
        }
    }

    pub(crate) fn delivered(&self, item: &Item) {
        self.store.resolve(item.seq);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.counters.latency.record(item.accepted.elapsed());
        metric("delivered");
        self.resolved();
    }

    /// Dead-letters an event no longer in the store (taken, drained or evicted).
    pub(crate) fn dead_letter(&self, mut item: Item, reason: DeadLetterReason, error: Option<Error>) {
        let error = error.or_else(|| item.last_error.take().map(|e| *e));
        let body = Arc::unwrap_or_clone(item.body);
        let letter = DeadLetter {
            organization_id: body.organization_id,
            event: body.event,
            idempotency_key: item.key.into(),
            reason,
            error: error.as_ref().map(Into::into),
            attempts: item.attempts,
            first_attempt_at: item.first_attempt.map(|at| system_time(wall_clock(at))),
            last_attempt_at: item.last_attempt.map(|at| system_time(wall_clock(at))),
        };
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if reason == DeadLetterReason::ShutdownDeadline {
            self.counters
                .dead_lettered_at_deadline
                .fetch_add(1, Ordering::Relaxed);
        }
        metric("dead_lettered");
        tracing::warn!(
            organization = %letter.organization_id,
            action = %letter.event.action,
            reason = %reason,
            attempts = letter.attempts,
            "audit event dead-lettered"
        );
        if self.dead_letters.is_empty() {
            super::dead_letter::LogDeadLetters.dead_letter(&letter);
        }
        for sink in &self.dead_letters {
            sink.dead_letter(&letter);
        }
        self.resolved();
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

#[allow(unused_variables)]
pub(crate) fn metric(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("workos_audit_emitter_events_total", "outcome" => outcome).increment(1);
}
