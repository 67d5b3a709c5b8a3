//! What happens to an event after one attempt to deliver it: the one decision that every
//! delivery loop applies.
//!
//! [`decide`] is a pure function: it reads no clock, does no I/O and takes its randomness (the
//! backoff's jitter) from the caller. It takes the attempt's result and the event's [`Facts`]
//! (attempts so far, age since the first attempt, the retry window, a deadline) and returns a
//! [`Verdict`]: delivered, retry after a wait, hold for authorization, or dead-letter with a
//! [`DeadLetterReason`]. The [`Emitter`](crate::Emitter)'s senders and a database outbox's relays
//! both apply it, so an error means the same thing wherever the event waits.
//!
//! The error itself is read once, by [`Error::failure`] (the reading the client's own retries
//! and [`Error::is_retryable`] share); the retry waits come from the [`RetryPolicy`].
//!
//! ```
//! use std::time::Duration;
//! use audit_core::delivery::{Facts, Verdict, decide};
//! use audit_core::{ApiError, Error, RetryPolicy};
//!
//! let policy = RetryPolicy::standard();
//! let facts = Facts::new(1, Duration::ZERO, Duration::from_secs(3600));
//! let unavailable = Error::Api(Box::new(ApiError::from_response(503, None, None, b"{}")));
//! // A 503 on the first attempt: retried after the first backoff (here its full ceiling).
//! assert_eq!(
//!     decide(Err(&unavailable), &facts, &policy, || 1.0),
//!     Verdict::Retry { after: Duration::from_millis(500), slow_down: false }
//! );
//! assert_eq!(decide(Ok(()), &facts, &policy, || 1.0), Verdict::Delivered);
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::retry::{Decision, Failure, Outcome, RetryPolicy};

/// Why an event was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// WorkOS refused the event itself (400, 404, 409, 422 or another status that retrying cannot
    /// cure); sending it again unchanged would fail the same way.
    Rejected,
    /// Every attempt within the retry window failed with a retryable error.
    RetryWindowExhausted,
    /// [`Emitter::shutdown`](crate::Emitter::shutdown) reached its deadline before the event was
    /// delivered. It may have reached WorkOS (an attempt was in flight): replay it with its key.
    ShutdownDeadline,
    /// The runtime running the emitter ended (or its tasks were dropped) before the event was
    /// delivered, without [`Emitter::shutdown`](crate::Emitter::shutdown).
    Abandoned,
    /// The destination refused the request locally before sending it (a configuration problem or
    /// a parameter the client would not send).
    Refused,
    /// The event waited longer than WorkOS's 24-hour idempotency window (a spool configured with
    /// `StaleEvents::DeadLetter`): sending it could store it twice. Replay it if it is not at WorkOS.
    Stale,
    /// The destination answered a success status but not WorkOS's `{"success":true}`: it is not
    /// the WorkOS API (check `WORKOS_BASE_URL`), and nothing says the event was stored. Replay it
    /// once the base URL is fixed.
    NotWorkOs,
    /// The queue was full under [`Overflow::DropOldest`](crate::emitter::Overflow::DropOldest):
    /// the event was evicted to make room for a newer one. It was never attempted; replay it.
    Overflow,
    /// WorkOS answered 413: the request body was too large. Sending the same event again fails
    /// the same way; shorten it (metadata, targets) before replaying it.
    TooLarge,
}

impl DeadLetterReason {
    /// The reason as written in the JSON-lines file (`rejected`, `retry_window_exhausted`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::RetryWindowExhausted => "retry_window_exhausted",
            Self::ShutdownDeadline => "shutdown_deadline",
            Self::Abandoned => "abandoned",
            Self::Refused => "refused",
            Self::Stale => "stale",
            Self::NotWorkOs => "not_workos",
            Self::Overflow => "overflow",
            Self::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a delivery loop knows about an event when one attempt ended.
///
/// Times are durations measured by the caller, so that [`decide`] reads no clock: the age of the
/// event's first attempt and, when one is set, how long until a deadline (shutdown's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Facts {
    /// Attempts made, the one that just ended included (1 after the first attempt).
    pub attempts: u32,
    /// How long ago the first attempt started (zero after the first attempt).
    pub age: Duration,
    /// The retry window: no attempt starts once the event is this old (counted from its first
    /// attempt).
    pub retry_window: Duration,
    /// How long until a deadline after which no attempt starts (shutdown's), when one is set.
    pub deadline: Option<Duration>,
    /// Other events were accepted since this event's first attempt, or this event's
    /// organization is known to be refused while others are accepted: a 403 is then about this
    /// event's organization, not the API key, and dead-letters the event instead of holding
    /// delivery.
    pub others_accepted: bool,
}

impl Facts {
    /// The facts of an event after attempt number `attempts`, `age` after its first attempt,
    /// with this retry window, no deadline, and no other event accepted since.
    pub fn new(attempts: u32, age: Duration, retry_window: Duration) -> Self {
        Self {
            attempts,
            age,
            retry_window,
            deadline: None,
            others_accepted: false,
        }
    }

    /// Sets [`Facts::deadline`].
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`Facts::others_accepted`].
    pub fn with_others_accepted(mut self, others_accepted: bool) -> Self {
        self.others_accepted = others_accepted;
        self
    }
}

/// What happens to the event (see [`decide`]).
///
/// Deliberately exhaustive: a delivery loop handles every verdict, so a new one is a breaking
/// change rather than a case silently caught by a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// WorkOS has the event: it leaves the loop. Also a 2xx whose body could not be read.
    Delivered,
    /// Send it again, with the same idempotency key, `after` this wait (from now).
    Retry {
        /// How long to wait before the next attempt.
        after: Duration,
        /// WorkOS asked to slow down (429, or any answer with `Retry-After`): every sender of
        /// the loop waits `after`, not only this event.
        slow_down: bool,
    },
    /// WorkOS refused the request's authorization (401, or 403 while no other event is
    /// accepted): the API key is at fault, not the event. The loop holds delivery, keeps the
    /// event, and probes with one event at a time until one is accepted.
    HoldForAuthorization,
    /// Give the event up: it becomes a dead letter with this reason.
    DeadLetter(DeadLetterReason),
}

/// What happens to an event after one attempt ended in `result`.
///
/// `random` gives a number in `[0, 1)` for the backoff's full jitter; it is called only when a
/// backoff is computed (give `|| 1.0` for no jitter, a fixed value in tests).
///
/// - `Ok(())`, or a 2xx whose body could not be decoded: [`Verdict::Delivered`].
/// - 401, and 403 unless [`Facts::others_accepted`]: [`Verdict::HoldForAuthorization`]; a 403
///   with `others_accepted`: dead letter [`DeadLetterReason::Rejected`].
/// - 413: [`DeadLetterReason::TooLarge`]; any other status retrying cannot cure:
///   [`DeadLetterReason::Rejected`]; an answer that is not the WorkOS API's:
///   [`DeadLetterReason::NotWorkOs`]; a request refused locally: [`DeadLetterReason::Refused`].
/// - 408, 429, 5xx, transport failures and timeouts: [`Verdict::Retry`] after the policy's wait
///   (`Retry-After` honoured up to [`RetryPolicy::max_retry_after`]), unless the policy's retries
///   are used up or the next attempt would start beyond the retry window
///   ([`DeadLetterReason::RetryWindowExhausted`]) or beyond the deadline
///   ([`DeadLetterReason::ShutdownDeadline`]).
pub fn decide(
    result: Result<(), &Error>,
    facts: &Facts,
    policy: &RetryPolicy,
    random: impl FnOnce() -> f64,
) -> Verdict {
    decide_failure(result.map_err(Error::failure), facts, policy, random)
}

/// [`decide`] for an error already read ([`Error::failure`]), for a loop that also uses the
/// reading itself (a trace's outcome) and reads each error once.
pub fn decide_failure(
    result: Result<(), Failure>,
    facts: &Facts,
    policy: &RetryPolicy,
    random: impl FnOnce() -> f64,
) -> Verdict {
    let failure = match result {
        Ok(()) => return Verdict::Delivered,
        Err(failure) => failure,
    };
    let outcome = match failure {
        Failure::Retryable(outcome) => outcome,
        Failure::AcceptedUnreadable => return Verdict::Delivered,
        Failure::Forbidden if facts.others_accepted => {
            return Verdict::DeadLetter(DeadLetterReason::Rejected);
        }
        Failure::Unauthorized | Failure::Forbidden => return Verdict::HoldForAuthorization,
        Failure::TooLarge => return Verdict::DeadLetter(DeadLetterReason::TooLarge),
        Failure::Rejected => return Verdict::DeadLetter(DeadLetterReason::Rejected),
        Failure::NotWorkOs => return Verdict::DeadLetter(DeadLetterReason::NotWorkOs),
        Failure::Local => return Verdict::DeadLetter(DeadLetterReason::Refused),
    };
    let after = match policy.decide(outcome, facts.attempts, random()) {
        Decision::Retry { after } => after,
        Decision::GiveUp(_) => return Verdict::DeadLetter(DeadLetterReason::RetryWindowExhausted),
    };
    if facts.age.saturating_add(after) > facts.retry_window {
        return Verdict::DeadLetter(DeadLetterReason::RetryWindowExhausted);
    }
    if facts.deadline.is_some_and(|left| after > left) {
        return Verdict::DeadLetter(DeadLetterReason::ShutdownDeadline);
    }
    let slow_down = matches!(
        outcome,
        Outcome::Status { status: 429, .. }
            | Outcome::Status {
                retry_after: Some(_),
                ..
            }
    );
    Verdict::Retry { after, slow_down }
}

/// How a delivery loop handles `error` (see [`classify`]): the coarse reading of an error that
/// [`decide`] refines with the event's facts. Kept for loops that apply
/// [`RetryPolicy::decide`] themselves; new code applies [`decide`].
///
/// Deliberately exhaustive: a delivery loop has to decide for every disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The same request (with the same idempotency key) may succeed later: feed the outcome to
    /// [`RetryPolicy::decide`].
    Retry(Outcome),
    /// WorkOS refused the request's authorization (401 or 403).
    Unauthorized,
    /// Retrying cannot help: the event becomes a dead letter with this reason.
    Permanent(DeadLetterReason),
    /// A 2xx whose body could not be read: WorkOS accepted the event.
    Accepted,
}

/// The [`Disposition`] of `error`, from [`Error::failure`].
pub fn classify(error: &Error) -> Disposition {
    match error.failure() {
        Failure::Retryable(outcome) => Disposition::Retry(outcome),
        Failure::Unauthorized | Failure::Forbidden => Disposition::Unauthorized,
        Failure::TooLarge => Disposition::Permanent(DeadLetterReason::TooLarge),
        Failure::Rejected => Disposition::Permanent(DeadLetterReason::Rejected),
        Failure::NotWorkOs => Disposition::Permanent(DeadLetterReason::NotWorkOs),
        Failure::Local => Disposition::Permanent(DeadLetterReason::Refused),
        Failure::AcceptedUnreadable => Disposition::Accepted,
    }
}

#[cfg(test)]
mod tests;
