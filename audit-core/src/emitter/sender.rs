//! The sender loop: wait at the gate, take an event, respect the rate limit, attempt it, and
//! decide what a failure means (retry, hold for authorization, dead-letter).

use std::collections::VecDeque;
use std::future::pending;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;

use governor::clock::Clock;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::Instrument;

use super::dead_letter::DeadLetterReason;
use super::gate::Signal;
use super::queue::{Item, Taken};
use super::shared::{LetterKind, Shared, metric};
use crate::delivery::{self, Facts, Verdict};
use crate::retry::Failure;
use crate::{Error, OrganizationId};

/// An event held by a sender. Dropping it unresolved (the task dropped with its runtime)
/// dead-letters it.
struct Held<'a> {
    shared: &'a Arc<Shared>,
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
        let mut item = self.take();
        if let Some(ack) = item.ack.take() {
            let _ = ack.send(true);
        }
        shared.delivered(&item);
    }

    /// Dead-letters the event through the dead-letter writer: waits (holding the event) until
    /// the writer has room, then hands it over; the writer records it and the event leaves the
    /// store only once a destination recorded it (otherwise it waits in the store and the write
    /// is tried again).
    async fn dead_letter(self, reason: DeadLetterReason, error: Option<Error>) {
        let shared = self.shared;
        // The event stays held while this waits: an abort here gives it up through `Drop`.
        let permit = shared.writer.reserve().await;
        let item = self.take();
        let kind = if matches!(
            reason,
            DeadLetterReason::ShutdownDeadline | DeadLetterReason::Abandoned
        ) {
            match shared.store.give_back(item) {
                Some(item) => return shared.hand_over(permit, item, reason, error, LetterKind::Gone),
                None => return shared.resolved(),
            }
        } else {
            LetterKind::Taken
        };
        shared.hand_over(permit, item, reason, error, kind);
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

/// The first wait before a failed dead-letter write is tried again; it doubles up to
/// [`DEAD_LETTER_RETRY_MAX`].
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);
const DEAD_LETTER_RETRY_MAX: Duration = Duration::from_secs(60);

#[cold]
fn unreachable_item() -> ! {
    // `Held` is consumed by the methods that take its item, so this is never reached.
    unreachable!("audit emitter: held event used after it was resolved")
}

impl Drop for Held<'_> {
    /// The sender was aborted at shutdown's deadline (or dropped with its runtime) while it
    /// held this event, or it panicked (the event goes back first in line for the restarted
    /// sender).
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            if std::thread::panicking() && !self.shared.stop.is_set() {
                self.shared.store.unpark_front(item);
                self.shared.work.notify_one();
                return;
            }
            let reason = if self.shared.stop.is_set() {
                DeadLetterReason::ShutdownDeadline
            } else {
                DeadLetterReason::Abandoned
            };
            self.shared.give_up_now(item, reason);
        }
    }
}

/// Records the dead letter of an event a sender took (on the dead-letter writer): it leaves the
/// store once a destination recorded it; otherwise it is parked and the write tried again later.
pub(crate) fn record_taken(shared: &Shared, item: Item, reason: DeadLetterReason, error: Option<Error>) {
    let seq = item.seq;
    match shared.record_dead_letter(item, reason, error) {
        None => {
            shared.store.resolve(seq);
            shared.resolved();
        }
        Some(item) => {
            let tries = item.dead_letter.as_ref().map_or(1, |p| p.tries);
            let wait = DEAD_LETTER_RETRY.saturating_mul(1 << tries.min(6).saturating_sub(1));
            shared
                .store
                .park(item, Instant::now() + wait.min(DEAD_LETTER_RETRY_MAX));
            shared.work.notify_one();
        }
    }
}

/// One sender: wait at the gate, take an event, respect the rate limit, attempt it.
pub(crate) async fn run_sender(shared: Arc<Shared>, index: usize) {
    loop {
        if !shared
            .concurrency
            .admit(index, &shared.stop, || shared.is_closed())
            .await
        {
            return;
        }
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
        if let Some(pending) = held.item.as_ref().and_then(|i| i.dead_letter.as_ref()) {
            // Given up earlier, but no destination recorded its dead letter yet: try again.
            let reason = pending.reason;
            held.dead_letter(reason, None).await;
            continue;
        }
        if held.item.as_ref().is_some_and(|i| shared.store.is_stale(i)) {
            // Older than WorkOS's idempotency window, and the spool is set to dead-letter those.
            held.dead_letter(DeadLetterReason::Stale, None).await;
            continue;
        }
        if let Some(limiter) = &shared.limiter
            && !wait_for_rate(limiter, &shared.stop).await
        {
            held.dead_letter(DeadLetterReason::ShutdownDeadline, None).await;
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
async fn next_item(shared: &Arc<Shared>) -> Option<(Item, bool)> {
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

fn try_take(shared: &Arc<Shared>) -> Option<(Item, bool)> {
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

/// How one attempt ended: the verdict of [`delivery::decide`], read once, and the error it
/// failed with.
struct Attempted {
    verdict: Verdict,
    error: Option<Error>,
}

/// Sends the held event once and decides what it means; `None` when shutdown's deadline
/// interrupted it. `during_hold`: a probe of an authorization hold (see [`hold_for_auth`]).
async fn send_once(
    shared: &Arc<Shared>,
    held: &mut Held<'_>,
    wait: Wait,
    during_hold: bool,
) -> Option<Attempted> {
    let item = held.item();
    item.attempts += 1;
    let started = Instant::now();
    if item.first_attempt.is_none() {
        item.first_attempt = Some(started);
        item.delivered_before = shared.counters.delivered.load(Ordering::Relaxed);
    }
    item.last_attempt = Some(started);
    let span = tracing::debug_span!(
        target: super::ATTEMPT_TARGET,
        "audit_emitter.attempt",
        idempotency_key = %item.key,
        action = %item.body.event.action,
        organization_id = %item.body.organization_id,
        attempt = item.attempts,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    // Linked to the span in which the event was accepted (the request's), when one was captured.
    span.follows_from(item.cause.clone());
    let body = &item.body;
    let key = &item.key;
    let send = async move {
        // A panicking sink fails this attempt (retried like a transport failure), not the sender.
        match AssertUnwindSafe(async { shared.sink.send(body, key).await })
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(shared.panicked("the sink", &*panic)),
        }
    }
    .instrument(span.clone());
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
    if shared.concurrency.adapts() && result.is_some() {
        shared.concurrency.observe(started.elapsed());
    }
    let Some(result) = result else {
        span.record("outcome", "shutdown_deadline");
        return None;
    };
    let (verdict, error) = match result {
        Ok(()) => {
            span.record("outcome", "delivered");
            (Verdict::Delivered, None)
        }
        Err(e) => {
            // The error's one reading, for the span and the decision.
            let failure = e.failure();
            span.record(
                "outcome",
                match failure {
                    Failure::Retryable(_) => "retryable_error",
                    Failure::Unauthorized | Failure::Forbidden => "unauthorized",
                    Failure::AcceptedUnreadable => "delivered",
                    _ => "rejected",
                },
            );
            let facts = facts(shared, held.item(), during_hold);
            let jitter = shared.config.jitter;
            let random = || if jitter { rand::random::<f64>() } else { 1.0 };
            let verdict = delivery::decide_failure(Err(failure), &facts, &shared.config.retry, random);
            (verdict, Some(e))
        }
    };
    if let Some(status) = error.as_ref().and_then(Error::status) {
        span.record("status", status);
    }
    Some(Attempted { verdict, error })
}

/// The facts [`delivery::decide`] weighs for `item` after an attempt that just ended.
fn facts(shared: &Arc<Shared>, item: &Item, during_hold: bool) -> Facts {
    let now = Instant::now();
    let age = item
        .first_attempt
        .map_or(Duration::ZERO, |first| now.saturating_duration_since(first));
    // During a hold nothing is delivered: a refusal there is the hold's to weigh.
    let others_accepted = !during_hold
        && (shared.counters.delivered.load(Ordering::Relaxed) > item.delivered_before
            || shared.forbidden.contains(&item.body.organization_id));
    Facts::new(item.attempts, age, shared.config.retry_window)
        .with_deadline(shared.deadline().map(|at| at.saturating_duration_since(now)))
        .with_others_accepted(others_accepted)
}

async fn attempt(shared: &Arc<Shared>, mut held: Held<'_>, more: bool) {
    let Some(Attempted { verdict, error }) = send_once(shared, &mut held, Wait::Helped { more }, false).await
    else {
        return held.dead_letter(DeadLetterReason::ShutdownDeadline, None).await;
    };
    if let Some(e) = &error {
        shared.counters.set_last_error(e);
        if verdict != Verdict::Delivered
            && let Some(ack) = held.item().ack.take()
        {
            // `emit_durable` answers now: the event stays accepted and is retried.
            let _ = ack.send(false);
        }
    }
    match (verdict, error) {
        (Verdict::HoldForAuthorization, Some(e)) => hold_for_auth(shared, held, e).await,
        (verdict, error) => settle(shared, held, verdict, error).await,
    }
}

/// Where an attempted event leaves the sender, once per verdict (a hold for authorization is
/// [`hold_for_auth`]'s, which settles its probes here too).
async fn settle(shared: &Arc<Shared>, mut held: Held<'_>, verdict: Verdict, error: Option<Error>) {
    match verdict {
        Verdict::Delivered => {
            shared.recovered();
            held.delivered()
        }
        Verdict::Retry { after, slow_down } => {
            let due = Instant::now() + after;
            if slow_down {
                // WorkOS asked everyone to slow down: every sender waits, not only this one.
                shared.gate.pause_until(due);
            }
            let item = held.item();
            tracing::debug!(
                action = %item.body.event.action,
                organization = %item.body.organization_id,
                attempt = item.attempts,
                wait_ms = after.as_millis() as u64,
                error = error.as_ref().map(tracing::field::display),
                "audit event will be retried"
            );
            item.last_error = error.map(Box::new);
            shared.counters.retried.fetch_add(1, Ordering::Relaxed);
            shared.failing();
            metric("retried");
            held.park(due);
        }
        Verdict::DeadLetter(reason) => {
            match (reason, &error) {
                (DeadLetterReason::NotWorkOs, Some(e)) => {
                    shared.counters.not_workos.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = shared.destination_warning.ready() {
                        tracing::error!(
                            error = %e,
                            suppressed,
                            "the audit emitter's destination is not the WorkOS API: events are dead-lettered, not delivered"
                        );
                    }
                }
                (DeadLetterReason::Rejected, Some(e)) if e.status() == Some(403) => {
                    // The key works for other events: this refusal is about this event's
                    // organization.
                    shared.forbidden.insert(&held.item().body.organization_id);
                }
                _ => {}
            }
            held.dead_letter(reason, error).await
        }
        Verdict::HoldForAuthorization => {
            // Only a probe during a hold gets here (the hold is on): it waits first in line.
            held.item().last_error = error.map(Box::new);
            held.unpark_front()
        }
    }
}

/// WorkOS refused the request's authorization (401/403): hold every sender and probe, with a
/// rotating event, until one is accepted or fails otherwise (settled as its verdict says).
async fn hold_for_auth(shared: &Arc<Shared>, mut held: Held<'_>, e: Error) {
    if !shared.gate.begin_hold() {
        // Another sender is already probing; this event waits first in line.
        return settle(shared, held, Verdict::HoldForAuthorization, Some(e)).await;
    }
    shared.auth_warning.ready();
    tracing::error!(
        status = e.status(),
        error = %e,
        probe_in_s = shared.config.auth_probe_initial.as_secs_f64(),
        "WorkOS refused the API key: audit delivery is held (events stay queued) until a probe succeeds"
    );
    let started = Instant::now();
    let mut wait = shared.config.auth_probe_initial;
    // The held event's latest refusal.
    let mut e = Some(e);
    // Organizations whose events got a 403 during this hold.
    let mut refused: Vec<OrganizationId> = Vec::new();
    note_refusal(&mut refused, e.as_ref().and_then(Error::status), held.item());
    // Events already refused during this hold, oldest probe first: each probe takes the next
    // event in line, then these in turn, so a refusal tied to one event (its organization)
    // cannot keep the hold on forever. They stay held by this sender (counted in flight).
    let mut probed: VecDeque<Held<'_>> = VecDeque::new();
    loop {
        tokio::select! {
            () = sleep(wait) => {}
            () = shared.stop.wait() => {
                shared.gate.end_hold();
                release(probed, false).await;
                return held.dead_letter(DeadLetterReason::ShutdownDeadline, e).await;
            }
        }
        let next = match try_take(shared) {
            Some((next, _)) => Some(Held {
                shared,
                item: Some(next),
            }),
            None => probed.pop_front(),
        };
        if let Some(next) = next {
            let mut failed = std::mem::replace(&mut held, next);
            if let Some(e) = e.take() {
                failed.item().last_error = Some(Box::new(e));
            }
            probed.push_back(failed);
        }
        let Some(Attempted { verdict, error }) =
            send_once(shared, &mut held, Wait::Interruptible, true).await
        else {
            shared.gate.end_hold();
            release(probed, false).await;
            return held.dead_letter(DeadLetterReason::ShutdownDeadline, e).await;
        };
        if let Some(next) = &error {
            shared.counters.set_last_error(next);
        }
        let next = match (verdict, error) {
            (Verdict::HoldForAuthorization, Some(next)) => next,
            (verdict, error) => {
                if verdict == Verdict::Delivered {
                    // A 403 for other organizations while this one is accepted: their events
                    // are refused for themselves, not for the key.
                    let accepted = &held.item().body.organization_id;
                    for org in refused.iter().filter(|org| *org != accepted) {
                        shared.forbidden.insert(org);
                    }
                    tracing::warn!("WorkOS accepts the API key again: audit delivery resumed");
                }
                shared.gate.end_hold();
                release(probed, true).await;
                return settle(shared, held, verdict, error).await;
            }
        };
        note_refusal(&mut refused, next.status(), held.item());
        let held_for = started.elapsed();
        if let Some(suppressed) = shared.auth_warning.ready() {
            if held_for > shared.config.auth_hold_alert {
                tracing::error!(
                    status = next.status(),
                    error = %next,
                    suppressed,
                    held_for_s = held_for.as_secs(),
                    limit_s = shared.config.auth_hold_alert.as_secs(),
                    queued = shared.store.depth().outstanding(),
                    "AUDIT DELIVERY STOPPED: WorkOS has refused the API key for longer than the hold limit; events are kept but none is delivered: fix WORKOS_API_KEY"
                );
            } else {
                tracing::error!(
                    status = next.status(),
                    error = %next,
                    suppressed,
                    held_for_s = held_for.as_secs(),
                    queued = shared.store.depth().outstanding(),
                    "WorkOS still refuses the API key: audit delivery remains held"
                );
            }
        }
        e = Some(next);
        wait = (wait * 2).min(shared.config.auth_probe_max);
    }
}

/// Puts the events refused during a hold back first in line, oldest first (`resume`), or
/// gives them up at shutdown's deadline.
async fn release(probed: VecDeque<Held<'_>>, resume: bool) {
    for held in probed.into_iter().rev() {
        if resume {
            held.unpark_front();
        } else {
            held.dead_letter(DeadLetterReason::ShutdownDeadline, None).await;
        }
    }
}

/// Notes the organization of an event refused with a 403 during a hold.
fn note_refusal(refused: &mut Vec<OrganizationId>, status: Option<u16>, item: &Item) {
    if status == Some(403) && !refused.contains(&item.body.organization_id) {
        refused.push(item.body.organization_id.clone());
    }
}

pub(crate) fn spawn_senders(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle) {
    let mut tasks = crate::sync::lock(&shared.tasks);
    for index in 0..shared.concurrency.tasks() {
        tasks.push(runtime.spawn(supervise(Arc::clone(shared), index)));
    }
    runtime.spawn(pace(Arc::downgrade(shared)));
}

/// Samples the rates once a second (for `stats()` and the backlog warning) while the emitter
/// is open; holds no reference that would keep it alive.
async fn pace(shared: std::sync::Weak<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match shared.upgrade() {
            Some(shared) if !shared.is_closed() => shared.tick(),
            _ => return,
        }
    }
}

/// Runs a sender and restarts it when it panics (the panic is counted and logged; the event it
/// held goes back first in line), so that the emitter never silently loses its senders.
async fn supervise(shared: Arc<Shared>, index: usize) {
    while let Err(panic) = AssertUnwindSafe(run_sender(Arc::clone(&shared), index))
        .catch_unwind()
        .await
    {
        shared.panicked("an audit sender", &*panic);
    }
}
