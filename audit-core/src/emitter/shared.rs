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
    /// The one thread that writes every dead letter (see [`Writer`]).
    pub(crate) writer: Writer,
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

    /// Warns (at a bounded rate) that an event was dropped under `policy`: `drop_newest`,
    /// `drop_oldest`, or `drop_oldest_refused` (the dead-letter writer was behind, so the new
    /// event was refused instead of evicting one).
    pub(crate) fn warn_dropped(&self, policy: &'static str) {
        if let Some(suppressed) = self.drop_warning.ready() {
            tracing::warn!(
                policy,
                capacity = self.config.capacity,
                suppressed,
                dropped_newest = self.counters.dropped_newest.load(Ordering::Relaxed),
                dropped_oldest = self.counters.dropped_oldest.load(Ordering::Relaxed),
                "audit emitter queue full: an event was dropped"
            );
        }
    }
}

/// How many dead letters may wait for the dead-letter writer. When they are this many, senders
/// wait (holding their event) for room, and an [`Overflow::DropOldest`](super::Overflow::DropOldest)
/// eviction is not made: the new event is refused instead ([`EmitError::Full`](super::EmitError::Full),
/// counted in `dropped_newest`) so that no event is lost and memory stays bounded.
pub(crate) const DEAD_LETTER_QUEUE: usize = 256;

/// What the dead-letter writer is handed.
pub(crate) enum Job {
    /// A dead letter to record.
    Letter(Box<LetterJob>),
    /// Answered once every job sent before it is done.
    Drained(tokio::sync::oneshot::Sender<()>),
}

/// The dead-letter writer: one writer fed by a bounded channel, through which every dead letter
/// goes (senders', `DropOldest` evictions, shutdown's). Destinations may do blocking I/O (an
/// fsync), so jobs run on one blocking task at a time, started when the queue gets work and
/// ending when it is empty (a blocking task also keeps a paused test clock from jumping ahead
/// while a write is in progress). When the runtime is gone, the jobs run where the drainer is
/// dropped (see [`LetterJob`]).
pub(crate) struct Writer {
    tx: tokio::sync::mpsc::Sender<Job>,
    state: Arc<WriterState>,
}

struct WriterState {
    rx: Mutex<tokio::sync::mpsc::Receiver<Job>>,
    /// A drainer is started (or running).
    running: AtomicBool,
    runtime: tokio::runtime::Handle,
    /// Logs (the dead letters themselves, without a destination) go where the emitter's starter
    /// logs, also when that is a thread's own subscriber.
    dispatch: tracing::Dispatch,
}

/// Runs the writer's jobs, in order, until its queue is empty: on a blocking thread, or inline
/// when dropped unrun (the runtime ended).
struct Drainer(Arc<WriterState>);

impl Drop for Drainer {
    fn drop(&mut self) {
        let state = &*self.0;
        let _logs = tracing::dispatcher::set_default(&state.dispatch);
        let mut rx = crate::sync::lock(&state.rx);
        loop {
            while let Ok(job) = rx.try_recv() {
                run(job);
            }
            state.running.store(false, Ordering::SeqCst);
            // A job sent after the last look found `running` still set: look once more.
            match rx.try_recv() {
                Ok(job) => {
                    state.running.store(true, Ordering::SeqCst);
                    run(job);
                }
                Err(_) => return,
            }
        }
    }
}

fn run(job: Job) {
    match job {
        // Panics of destinations are caught inside; this keeps the drainer going whatever else
        // happens.
        Job::Letter(letter) => {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(letter)));
        }
        Job::Drained(done) => {
            let _ = done.send(());
        }
    }
}

impl Writer {
    /// A writer whose jobs run on `runtime`'s blocking threads.
    pub(crate) fn start(runtime: tokio::runtime::Handle) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(DEAD_LETTER_QUEUE);
        let state = Arc::new(WriterState {
            rx: Mutex::new(rx),
            running: AtomicBool::new(false),
            runtime,
            dispatch: tracing::dispatcher::get_default(Clone::clone),
        });
        Self { tx, state }
    }

    /// Starts a drainer unless one is running (after a job was sent).
    fn wake(&self) {
        if !self.state.running.swap(true, Ordering::SeqCst) {
            let drainer = Drainer(Arc::clone(&self.state));
            // On a runtime that has ended the closure is dropped unrun: the drainer runs here.
            drop(self.state.runtime.spawn_blocking(move || drop(drainer)));
        }
    }

    /// Waits for room in the writer's queue; `None` when the writer is gone.
    pub(crate) async fn reserve(&self) -> Option<tokio::sync::mpsc::Permit<'_, Job>> {
        self.tx.reserve().await.ok()
    }

    /// Room in the writer's queue now, without waiting.
    pub(crate) fn try_reserve(&self) -> Option<tokio::sync::mpsc::Permit<'_, Job>> {
        self.tx.try_reserve().ok()
    }

    /// Waits until every job handed over so far is done, or `until`; `false` on timeout.
    pub(crate) async fn drained(&self, until: tokio::time::Instant) -> bool {
        let (done, finished) = tokio::sync::oneshot::channel();
        let sent = async {
            match self.tx.send(Job::Drained(done)).await {
                Ok(()) => {
                    self.wake();
                    finished.await.is_ok()
                }
                // The writer is gone: everything was run where it was dropped.
                Err(_) => true,
            }
        };
        tokio::time::timeout_at(until, sent).await.unwrap_or(false)
    }
}

/// What happens once a dead letter is recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LetterKind {
    /// A sender's event, still counted in the store: resolved once recorded, parked and tried
    /// again otherwise.
    Taken,
    /// Out of the store (drained, given up): the log is the last resort.
    Gone,
    /// Evicted by [`Overflow::DropOldest`](super::Overflow::DropOldest): like `Gone`, and flush
    /// and shutdown wait for it.
    Evicted,
}

/// A dead letter handed to the [`Writer`]. The work is done when it is dropped: on the writer
/// thread normally, or wherever it is dropped unrun (the writer gone), so it is never lost.
pub(crate) struct LetterJob {
    shared: Arc<Shared>,
    item: Option<Item>,
    reason: DeadLetterReason,
    error: Option<Error>,
    kind: LetterKind,
}

impl LetterJob {
    pub(crate) fn new(
        shared: Arc<Shared>,
        item: Item,
        reason: DeadLetterReason,
        error: Option<Error>,
        kind: LetterKind,
    ) -> Self {
        if matches!(kind, LetterKind::Evicted) {
            shared.evicting.fetch_add(1, Ordering::SeqCst);
        }
        Self {
            shared,
            item: Some(item),
            reason,
            error,
            kind,
        }
    }

    /// Takes the event back out (the job then does nothing).
    fn into_item(mut self) -> Option<Item> {
        if matches!(self.kind, LetterKind::Evicted) {
            self.shared.evicting.fetch_sub(1, Ordering::SeqCst);
        }
        self.item.take()
    }
}

impl Drop for LetterJob {
    fn drop(&mut self) {
        let Some(item) = self.item.take() else {
            return;
        };
        let shared = &*self.shared;
        let error = self.error.take();
        match self.kind {
            LetterKind::Taken => super::sender::record_taken(shared, item, self.reason, error),
            LetterKind::Gone => shared.dead_letter(item, self.reason, error),
            LetterKind::Evicted => {
                shared.dead_letter(item, self.reason, error);
                shared.evicting.fetch_sub(1, Ordering::SeqCst);
                // Flush and shutdown wait for evicted events too.
                shared.resolved();
            }
        }
    }
}

impl Shared {
    /// Hands a dead letter to the writer with a reserved slot (`None`: the writer is gone, and
    /// the job runs here).
    pub(crate) fn hand_over(
        self: &Arc<Self>,
        permit: Option<tokio::sync::mpsc::Permit<'_, Job>>,
        item: Item,
        reason: DeadLetterReason,
        error: Option<Error>,
        kind: LetterKind,
    ) {
        let job = LetterJob::new(Arc::clone(self), item, reason, error, kind);
        match permit {
            Some(permit) => {
                permit.send(Job::Letter(Box::new(job)));
                self.writer.wake();
            }
            None => drop(job),
        }
    }

    /// Gives up a taken event where nothing can wait (a sender dropped mid-attempt): a durable
    /// store keeps it; otherwise its dead letter goes to the writer when it has room. When it
    /// has none at shutdown, the event goes back in the store, where shutdown's final drain
    /// (which waits for the writer) finds it; when the runtime is gone, it is written here.
    pub(crate) fn give_up_now(self: &Arc<Self>, item: Item, reason: DeadLetterReason) {
        let Some(item) = self.store.give_back(item) else {
            return self.resolved();
        };
        let job = LetterJob::new(Arc::clone(self), item, reason, None, LetterKind::Gone);
        match self.writer.tx.try_send(Job::Letter(Box::new(job))) {
            Ok(()) => self.writer.wake(),
            Err(tokio::sync::mpsc::error::TrySendError::Full(Job::Letter(job))) if self.stop.is_set() => {
                if let Some(item) = (*job).into_item() {
                    self.store.unpark_front(item);
                }
            }
            // The writer is gone or the runtime ends: written here.
            Err(e) => drop(e.into_inner()),
        }
    }

    /// Shutdown's final dead letters: each waits for room in the writer until `until`; past it,
    /// the last resort is the whole event in the log (see [`DeadLetter::log`]).
    pub(crate) async fn dead_letter_by(
        self: &Arc<Self>,
        until: tokio::time::Instant,
        item: Item,
        reason: DeadLetterReason,
    ) {
        match tokio::time::timeout_at(until, self.writer.reserve()).await {
            Ok(permit) => self.hand_over(permit, item, reason, None, LetterKind::Gone),
            Err(_) => {
                let mut item = item;
                let pending = item.dead_letter.take().map(|p| *p).unwrap_or(PendingDeadLetter {
                    reason,
                    error: item.last_error.take().map(|e| (&*e).into()),
                    tries: 0,
                });
                let letter = letter(&item, &pending);
                letter.log("the audit dead-letter writer did not keep up before shutdown's deadline: this event is kept whole in this log");
                self.count_dead_letter(&letter);
                self.resolved();
            }
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
