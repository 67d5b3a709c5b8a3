//! When to retry a request, and how long to wait first.
//!
//! The decision is a pure function, [`RetryPolicy::decide`], of the attempt's outcome, the
//! attempt number and a random number in `[0, 1)`, so it is tested without a clock or a server.
//! Retried: 408, 429, 500, 502, 503, 504, connect failures and timeouts. The wait is exponential
//! with full jitter, capped; a `Retry-After` from WorkOS (seconds or HTTP date) is honoured, capped
//! at [`RetryPolicy::max_retry_after`].

use std::time::{Duration, SystemTime};

// Kept at this path for delivery loops written against it; see `crate::delivery`.
#[doc(no_inline)]
pub use crate::delivery::{Disposition, classify};

/// Statuses after which the same request may succeed.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// How a client retries a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// The wait before the first retry, before jitter.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, before jitter.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::standard()
    }
}

impl RetryPolicy {
    /// 3 retries, 500 ms doubling to at most 30 s with full jitter, `Retry-After` up to 60 s.
    /// These are close to what WorkOS's official SDKs (Node, Python, Go) do for a create-event POST.
    pub fn standard() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// No retries at all.
    pub fn disabled() -> Self {
        Self {
            max_retries: 0,
            ..Self::standard()
        }
    }

    /// Sets [`RetryPolicy::max_retries`].
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets [`RetryPolicy::initial_backoff`].
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Sets [`RetryPolicy::max_backoff`].
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets [`RetryPolicy::max_retry_after`].
    pub fn with_max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// The exponential backoff ceiling for retry number `retry` (0 for the first retry):
    /// `initial_backoff · 2^retry`, capped at `max_backoff`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// Full jitter: a wait uniformly in `[0, ceiling]`, from `random` in `[0, 1)`.
    pub fn jittered_backoff(&self, retry: u32, random: f64) -> Duration {
        self.backoff_ceiling(retry).mul_f64(random.clamp(0.0, 1.0))
    }

    /// What to do after attempt number `attempt` (1 for the first) ended in `outcome`.
    pub fn decide(&self, outcome: Outcome, attempt: u32, random: f64) -> Decision {
        let retryable = match outcome {
            Outcome::Status { status, .. } => is_retryable_status(status),
            Outcome::Transport | Outcome::Timeout => true,
        };
        if !retryable {
            return Decision::GiveUp(GiveUp::Permanent);
        }
        if attempt > self.max_retries {
            return Decision::GiveUp(GiveUp::Exhausted);
        }
        let wait = match outcome {
            Outcome::Status {
                retry_after: Some(after),
                ..
            } => after.min(self.max_retry_after),
            _ => self.jittered_backoff(attempt - 1, random),
        };
        Decision::Retry { after: wait }
    }
}

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// WorkOS answered with a non-success status.
    Status {
        /// The status.
        status: u16,
        /// The `Retry-After` it gave.
        retry_after: Option<Duration>,
    },
    /// Connecting or exchanging data failed.
    Transport,
    /// No answer in time.
    Timeout,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Send the same request again (with the same idempotency key) after this wait.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Stop.
    GiveUp(GiveUp),
}

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUp {
    /// The failure cannot be cured by retrying (400, 401, 403, 404, 409, 422, …).
    Permanent,
    /// Every allowed retry was used.
    Exhausted,
}

/// What kind of failure an [`Error`](crate::Error) is, as far as sending the same request again goes: the one
/// reading of an error that [`Error::is_retryable`](crate::Error::is_retryable), the [`Client`](crate::Client)'s own retries
/// and the delivery decision ([`delivery::decide`](crate::delivery::decide)) share. See
/// [`Error::failure`](crate::Error::failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The same request (with the same idempotency key) may succeed later: 408, 429, 500, 502,
    /// 503, 504 (also a 5xx whose body could not be decoded), transport failures and timeouts.
    /// Feed the outcome to [`RetryPolicy::decide`].
    Retryable(Outcome),
    /// 401: the API key is missing, wrong, revoked or for the other environment.
    Unauthorized,
    /// 403: the API key lacks permission, for every organization or for the request's.
    Forbidden,
    /// 413: the request body was too large; the same request fails the same way.
    TooLarge,
    /// Any other status: WorkOS refused the request itself (400, 404, 409, 422, …).
    Rejected,
    /// A 2xx that is not the WorkOS API's answer ([`Error::NotWorkOs`](crate::Error::NotWorkOs)).
    NotWorkOs,
    /// A 2xx whose body could not be decoded: the request was accepted.
    AcceptedUnreadable,
    /// Refused locally, before anything was sent (invalid event or parameter, configuration).
    Local,
}

impl Failure {
    /// The reading of an answer with this status that is not a success (and not decodable
    /// further): the one place statuses are sorted.
    pub fn of_status(status: u16, retry_after: Option<Duration>) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            413 => Self::TooLarge,
            200..=299 => Self::AcceptedUnreadable,
            s if is_retryable_status(s) => Self::Retryable(Outcome::Status { status, retry_after }),
            _ => Self::Rejected,
        }
    }
}

/// Reads a `Retry-After` header value: delay-seconds (`120`, also fractional `1.5`) or an HTTP
/// date (`Wed, 21 Oct 2015 07:28:00 GMT`), measured from `now`. A date in the past means no wait.
/// Anything else is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = value.parse().ok()?;
        return (0.0..1e9).contains(&secs).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Outcome {
        Outcome::Status {
            status: s,
            retry_after: None,
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 413, 422, 501, 505] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn never_retries_permanent_failures() {
        let p = RetryPolicy::standard();
        for s in [400, 401, 403, 404, 409, 422] {
            assert_eq!(
                p.decide(status(s), 1, 0.5),
                Decision::GiveUp(GiveUp::Permanent),
                "{s}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_a_cap() {
        let p = RetryPolicy::standard();
        assert_eq!(p.backoff_ceiling(0), Duration::from_millis(500));
        assert_eq!(p.backoff_ceiling(1), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(2), Duration::from_secs(2));
        assert_eq!(p.backoff_ceiling(10), Duration::from_secs(30));
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(30));
        assert_eq!(
            p.decide(status(503), 1, 0.0),
            Decision::Retry {
                after: Duration::ZERO
            }
        );
        assert_eq!(
            p.decide(status(503), 2, 0.5),
            Decision::Retry {
                after: Duration::from_millis(500)
            }
        );
        assert_eq!(
            p.decide(Outcome::Timeout, 3, 0.999),
            Decision::Retry {
                after: Duration::from_secs(2).mul_f64(0.999)
            }
        );
        assert_eq!(
            p.decide(Outcome::Transport, 4, 0.5),
            Decision::GiveUp(GiveUp::Exhausted)
        );
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = RetryPolicy::standard();
        let with = |secs| Outcome::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(with(7), 1, 0.1),
            Decision::Retry {
                after: Duration::from_secs(7)
            }
        );
        assert_eq!(
            p.decide(with(3600), 1, 0.1),
            Decision::Retry {
                after: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn disabled_gives_up_at_once() {
        assert_eq!(
            RetryPolicy::disabled().decide(status(500), 1, 0.3),
            Decision::GiveUp(GiveUp::Exhausted)
        );
    }

    #[test]
    fn parses_retry_after_in_both_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "soon", "-1", "1e3", "NaN"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
    }
}
