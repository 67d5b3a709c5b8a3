//! The background side: shared state, the gate every sender passes, and the sender loop.

use std::future::pending;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use governor::clock::Clock;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::Instrument;

use super::builder::Config;
use super::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterSink, system_time};
use super::queue::{Item, Store, Taken, wall_clock};
use super::sink::Sink;
use super::stats::{Counters, Throttle};
use crate::Error;
use crate::retry::{Decision, Outcome};

/// A one-shot flag that async code can wait for.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    set: AtomicBool,
    notify: Notify,
}

impl Signal {
    pub(crate) fn fire(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait(&self) {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// A [`Notify`] for waiters that come and go (an emit waiting for room; flush and shutdown
/// waiting for the events accepted before them), signalled by the senders after every resolved
/// event. The signal costs one atomic load while nobody waits; a waiter for a sequence number
/// is woken only once every event up to it is resolved, not at every event.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    notify: Notify,
    waiting: AtomicUsize,
    /// The sequence numbers waited for (empty entries: waiters for any progress).
    targets: Mutex<Vec<Option<u64>>>,
}

impl Watchers {
    /// Registers a waiter until the guard is dropped: for any progress (`None`), or until every
    /// event up to `target` is resolved. Register before checking the condition waited for: a
    /// change made after that check is then signalled.
    pub(crate) fn watch(&self, target: Option<u64>) -> WatchGuard<'_> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(target);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        WatchGuard {
            watchers: self,
            target,
        }
    }

    /// An event was resolved; `oldest` tells the smallest sequence number still outstanding.
    pub(crate) fn notify(&self, oldest: impl FnOnce() -> Option<u64>) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let first = {
            let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            // `None` (any progress) sorts first.
            targets.iter().min().copied()
        };
        let due = match first {
            None => false,
            Some(None) => true,
            Some(Some(target)) => oldest().is_none_or(|seq| seq > target),
        };
        if due {
            self.notify.notify_waiters();
        }
    }

    /// Wakes every waiter, registered or not.
    fn notify_all(&self) {
        self.notify.notify_waiters();
    }
}

/// A registered waiter of [`Watchers`].
pub(crate) struct WatchGuard<'a> {
    watchers: &'a Watchers,
    target: Option<u64>,
}

impl WatchGuard<'_> {
    /// A notification future; `enable` it before checking the condition.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.watchers.notify.notified()
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        let mut targets = self.watchers.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = targets.iter().position(|t| *t == self.target) {
            targets.swap_remove(i);
        }
        self.watchers.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every sender checks before taking an event: a `Retry-After` pause and the
/// authorization hold.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    /// Whether a pause or a hold may be on (set and cleared under `state`'s lock): while it is
    /// not, a sender passes the gate with one atomic load.
    engaged: AtomicBool,
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GateState {
    pub(crate) paused_until: Option<Instant>,
    pub(crate) held_since: Option<SystemTime>,
}

impl Gate {
    pub(crate) fn state(&self) -> GateState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.paused_until.is_none_or(|t| t < until) {
            s.paused_until = Some(until);
        }
        self.engaged.store(true, Ordering::SeqCst);
    }

    /// Starts a hold; `false` when one is already on (another sender probes).
    fn begin_hold(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.held_since.is_some() {
            return false;
        }
        s.held_since = Some(SystemTime::now());
        self.engaged.store(true, Ordering::SeqCst);
        true
    }

    fn end_hold(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).held_since = None;
        self.changed.notify_waiters();
    }

    fn is_open(&self) -> bool {
        if !self.engaged.load(Ordering::SeqCst) {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.paused_until.is_some_and(|t| t <= Instant::now()) {
            s.paused_until = None;
        }
        let open = s.held_since.is_none() && s.paused_until.is_none();
        if open {
            self.engaged.store(false, Ordering::SeqCst);
        }
        open
    }

    /// Waits until neither a pause nor a hold is on; `false` when `stop` fired first.
    async fn wait_open(&self, stop: &Signal) -> bool {
        if self.is_open() {
            return !stop.is_set();
        }
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if stop.is_set() {
                return false;
            }
            let s = self.state();
            if s.held_since.is_some() {
                tokio::select! {
                    () = changed => {}
                    () = stop.wait() => return false,
                }
                continue;
            }
            match s.paused_until {
                Some(until) if until > Instant::now() => {
                    tokio::select! {
                        () = sleep_until(until) => {}
                        () = changed => {}
                        () = stop.wait() => return false,
                    }
                }
                _ => return true,
            }
        }
    }
}

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

    fn resolved(&self) {
        self.progress.notify(|| self.store.oldest_outstanding());
        if self.is_closed() {
            self.work.notify_waiters();
        }
    }

    fn delivered(&self, item: &Item) {
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
    fn give_up(&self, item: Item, reason: DeadLetterReason, error: Option<Error>) {
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

/// An event held by a sender. Dropping it unresolved (the task dropped with its runtime)
/// dead-letters it.
struct Held<'a> {
    shared: &'a Shared,
    item: Option<Item>,
}

impl<'a> Held<'a> {
    fn item(&mut self) -> &mut Item {
        // Always `Some` until one of the consuming methods below.
        self.item.as_mut().unwrap_or_else(|| unreachable_item())
    }

    fn take(mut self) -> Item {
        match self.item.take() {
            Some(item) => item,
            None => unreachable_item(),
        }
    }

    fn delivered(self) {
        let shared = self.shared;
        let item = self.take();
        shared.delivered(&item);
    }

    fn dead_letter(self, reason: DeadLetterReason, error: Option<Error>) {
        let shared = self.shared;
        let item = self.take();
        if matches!(
            reason,
            DeadLetterReason::ShutdownDeadline | DeadLetterReason::Abandoned
        ) {
            return shared.give_up(item, reason, error);
        }
        shared.store.resolve(item.seq);
        shared.dead_letter(item, reason, error);
    }

    fn unpark_front(self) {
        let shared = self.shared;
        shared.store.unpark_front(self.take());
        shared.work.notify_one();
    }

    fn park(self, due: Instant) {
        let shared = self.shared;
        shared.store.park(self.take(), due);
        shared.work.notify_one();
    }
}

#[cold]
fn unreachable_item() -> ! {
    // `Held` is consumed by the methods that take its item, so this is never reached.
    unreachable!("audit emitter: held event used after it was resolved")
}

impl Drop for Held<'_> {
    /// The sender was aborted at shutdown's deadline (or dropped with its runtime) while it
    /// held this event.
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let reason = if self.shared.stop.is_set() {
                DeadLetterReason::ShutdownDeadline
            } else {
                DeadLetterReason::Abandoned
            };
            self.shared.give_up(item, reason, None);
        }
    }
}

/// One sender: wait at the gate, take an event, respect the rate limit, attempt it.
pub(crate) async fn run_sender(shared: Arc<Shared>) {
    loop {
        if !shared.gate.wait_open(&shared.stop).await {
            return;
        }
        let Some((item, more)) = next_item(&shared).await else {
            return;
        };
        let held = Held {
            shared: &shared,
            item: Some(item),
        };
        if held.item.as_ref().is_some_and(|i| shared.store.is_stale(i)) {
            // Older than WorkOS's idempotency window, and the spool is set to dead-letter those.
            held.dead_letter(DeadLetterReason::Stale, None);
            continue;
        }
        if let Some(limiter) = &shared.limiter
            && !wait_for_rate(limiter, &shared.stop).await
        {
            held.dead_letter(DeadLetterReason::ShutdownDeadline, None);
            return;
        }
        if !shared.gate.is_open() {
            // A pause or hold began while this sender waited: the event goes back first in line.
            held.unpark_front();
            continue;
        }
        attempt(&shared, held, more).await;
        // A sink that answers at once (in memory) never makes the sender wait: take part in
        // tokio's cooperative budget so that a long batch does not hold up the worker's other
        // tasks (the application's requests).
        tokio::task::consume_budget().await;
    }
}

/// The next event to attempt, and whether more were ready when it was taken (see [`Wait`]).
async fn next_item(shared: &Shared) -> Option<(Item, bool)> {
    // The common case first: an event is ready, no need to register for a wake-up.
    if let Some(item) = try_take(shared) {
        return Some(item);
    }
    loop {
        let mut notified = pin!(shared.work.notified());
        notified.as_mut().enable();
        if shared.stop.is_set() {
            return None;
        }
        let next_due = match shared.store.take(&Instant::now) {
            Taken::Item(item, more) => return Some((item, more)),
            Taken::Empty { next_due } => next_due,
        };
        if shared.is_closed() && shared.store.depth().outstanding() == 0 {
            return None;
        }
        let due = async {
            match next_due {
                Some(at) => sleep_until(at).await,
                None => pending().await,
            }
        };
        tokio::select! {
            () = notified => {}
            () = due => {}
            () = shared.stop.wait() => return None,
        }
        // Woken from idle: let a burst gather so that one wake-up serves it (see `linger`).
        if !shared.config.linger.is_zero()
            && !shared.is_closed()
            && let Some(since) = shared.store.ready_since()
        {
            let until = since + shared.config.linger;
            if until > Instant::now() {
                tokio::select! {
                    () = sleep_until(until) => {}
                    () = shared.stop.wait() => return None,
                }
            }
        }
    }
}

fn try_take(shared: &Shared) -> Option<(Item, bool)> {
    match shared.store.take(&Instant::now) {
        Taken::Item(item, more) => Some((item, more)),
        Taken::Empty { .. } => None,
    }
}

async fn wait_for_rate(limiter: &governor::DefaultDirectRateLimiter, stop: &Signal) -> bool {
    loop {
        match limiter.check() {
            Ok(()) => return true,
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                tokio::select! {
                    () = sleep(wait) => {}
                    () = stop.wait() => return false,
                }
            }
        }
    }
}

/// How a failed attempt is handled.
enum Class {
    Retry(Outcome),
    Auth,
    Permanent(DeadLetterReason),
    /// A 2xx whose body could not be read: WorkOS accepted the event.
    Accepted,
}

fn classify(e: &Error) -> Class {
    match e {
        Error::Api(api) if matches!(api.status, 401 | 403) => Class::Auth,
        Error::Api(api) if crate::retry::is_retryable_status(api.status) => Class::Retry(Outcome::Status {
            status: api.status,
            retry_after: api.retry_after,
        }),
        Error::Api(_) => Class::Permanent(DeadLetterReason::Rejected),
        Error::Timeout { .. } => Class::Retry(Outcome::Timeout),
        Error::Transport { .. } => Class::Retry(Outcome::Transport),
        Error::Decode { status, .. } if (200..300).contains(status) => Class::Accepted,
        Error::Decode { status, .. } if *status >= 500 => Class::Retry(Outcome::Status {
            status: *status,
            retry_after: None,
        }),
        Error::Decode { .. } => Class::Permanent(DeadLetterReason::Rejected),
        _ => Class::Permanent(DeadLetterReason::Refused),
    }
}

/// How [`send_once`] waits for its attempt.
#[derive(Clone, Copy)]
enum Wait {
    /// Racing the stop signal (the authorization probe, whose error must reach the dead letter).
    Interruptible,
    /// Not registered with the stop signal at all: at the deadline, shutdown aborts the senders,
    /// and an event dropped with its sender is dead-lettered by [`Held`]'s `Drop` with
    /// [`DeadLetterReason::ShutdownDeadline`]. When the attempt has to wait and `more` events
    /// were ready, another sender is woken to take the next one; an attempt that completes at
    /// once (a sink in memory) wakes nobody, and this sender takes the next event itself.
    Helped { more: bool },
}

/// Sends the held event once; `None` when shutdown's deadline interrupted it.
async fn send_once(shared: &Shared, held: &mut Held<'_>, wait: Wait) -> Option<Result<(), Error>> {
    let item = held.item();
    item.attempts += 1;
    let now = Instant::now();
    if item.first_attempt.is_none() {
        item.first_attempt = Some(now);
    }
    item.last_attempt = Some(now);
    let span = tracing::info_span!(
        "audit_emitter.attempt",
        action = %item.body.event.action,
        organization = %item.body.organization_id,
        attempt = item.attempts,
        outcome = tracing::field::Empty,
    );
    let send = shared.sink.send(&item.body, &item.key).instrument(span.clone());
    let result = match wait {
        Wait::Interruptible => tokio::select! {
            biased;
            r = send => Some(r),
            () = shared.stop.wait() => None,
        },
        Wait::Helped { more } => {
            let mut send = pin!(send);
            let mut helper = more;
            let result = std::future::poll_fn(|cx| {
                let poll = send.as_mut().poll(cx);
                if poll.is_pending() && std::mem::take(&mut helper) {
                    shared.work.notify_one();
                }
                poll
            })
            .await;
            Some(result)
        }
    };
    let outcome = match &result {
        None => "shutdown_deadline",
        Some(Ok(())) => "delivered",
        Some(Err(e)) => match classify(e) {
            Class::Retry(_) => "retryable_error",
            Class::Auth => "unauthorized",
            Class::Permanent(_) => "rejected",
            Class::Accepted => "delivered",
        },
    };
    span.record("outcome", outcome);
    result
}

async fn attempt(shared: &Shared, mut held: Held<'_>, more: bool) {
    match send_once(shared, &mut held, Wait::Helped { more }).await {
        None => held.dead_letter(DeadLetterReason::ShutdownDeadline, None),
        Some(Ok(())) => held.delivered(),
        Some(Err(e)) => {
            shared.counters.set_last_error(&e);
            if matches!(classify(&e), Class::Auth) {
                hold_for_auth(shared, held, e).await;
            } else {
                after_failure(shared, held, e);
            }
        }
    }
}

/// A failure other than 401/403: retry later, or dead-letter.
fn after_failure(shared: &Shared, mut held: Held<'_>, e: Error) {
    let outcome = match classify(&e) {
        Class::Retry(outcome) => outcome,
        Class::Accepted => return held.delivered(),
        Class::Permanent(reason) => return held.dead_letter(reason, Some(e)),
        Class::Auth => return held.dead_letter(DeadLetterReason::Rejected, Some(e)),
    };
    let item = held.item();
    let random = if shared.config.jitter {
        rand::random::<f64>()
    } else {
        1.0
    };
    let wait = match shared.config.retry.decide(outcome, item.attempts, random) {
        Decision::Retry { after } => after,
        _ => return held.dead_letter(DeadLetterReason::RetryWindowExhausted, Some(e)),
    };
    let now = Instant::now();
    let due = now + wait;
    if let Outcome::Status { status, retry_after } = outcome
        && (retry_after.is_some() || status == 429)
    {
        // WorkOS asked everyone to slow down: every sender waits, not only this one.
        shared.gate.pause_until(due);
    }
    let started = item.first_attempt.unwrap_or(now);
    if due.saturating_duration_since(started) > shared.config.retry_window {
        return held.dead_letter(DeadLetterReason::RetryWindowExhausted, Some(e));
    }
    tracing::debug!(
        action = %item.body.event.action,
        organization = %item.body.organization_id,
        attempt = item.attempts,
        wait_ms = wait.as_millis() as u64,
        error = %e,
        "audit event will be retried"
    );
    item.last_error = Some(Box::new(e));
    shared.counters.retried.fetch_add(1, Ordering::Relaxed);
    metric("retried");
    held.park(due);
}

/// WorkOS refused the API key: hold every sender and probe with this event until it is accepted.
async fn hold_for_auth(shared: &Shared, mut held: Held<'_>, mut e: Error) {
    if !shared.gate.begin_hold() {
        // Another sender is already probing; this event waits first in line.
        held.item().last_error = Some(Box::new(e));
        return held.unpark_front();
    }
    shared.auth_warning.ready();
    tracing::error!(
        status = e.status(),
        error = %e,
        probe_in_s = shared.config.auth_probe_initial.as_secs_f64(),
        "WorkOS refused the API key: audit delivery is held (events stay queued) until a probe succeeds"
    );
    let mut wait = shared.config.auth_probe_initial;
    loop {
        tokio::select! {
            () = sleep(wait) => {}
            () = shared.stop.wait() => {
                shared.gate.end_hold();
                return held.dead_letter(DeadLetterReason::ShutdownDeadline, Some(e));
            }
        }
        match send_once(shared, &mut held, Wait::Interruptible).await {
            None => {
                shared.gate.end_hold();
                return held.dead_letter(DeadLetterReason::ShutdownDeadline, Some(e));
            }
            Some(Ok(())) => {
                shared.gate.end_hold();
                tracing::warn!("WorkOS accepts the API key again: audit delivery resumed");
                return held.delivered();
            }
            Some(Err(next)) if matches!(classify(&next), Class::Auth) => {
                shared.counters.set_last_error(&next);
                if let Some(suppressed) = shared.auth_warning.ready() {
                    tracing::error!(
                        status = next.status(),
                        error = %next,
                        suppressed,
                        queued = shared.store.depth().outstanding(),
                        "WorkOS still refuses the API key: audit delivery remains held"
                    );
                }
                e = next;
                wait = (wait * 2).min(shared.config.auth_probe_max);
            }
            Some(Err(next)) => {
                shared.counters.set_last_error(&next);
                shared.gate.end_hold();
                return after_failure(shared, held, next);
            }
        }
    }
}

pub(crate) fn spawn_senders(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle) {
    let mut tasks = shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..shared.config.senders {
        tasks.push(runtime.spawn(run_sender(Arc::clone(shared))));
    }
}
