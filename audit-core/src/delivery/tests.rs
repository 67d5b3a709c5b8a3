//! The decision's table: every kind of error × attempt × age × deadline × whether other events
//! were accepted, against the rules written out once more below.

use std::time::Duration;

use super::*;
use crate::ApiError;

const WINDOW: Duration = Duration::from_secs(60);

/// 3 retries, 1 s doubling to at most 8 s, `Retry-After` honoured up to 20 s.
fn policy() -> RetryPolicy {
    RetryPolicy::standard()
        .with_max_retries(3)
        .with_initial_backoff(Duration::from_secs(1))
        .with_max_backoff(Duration::from_secs(8))
        .with_max_retry_after(Duration::from_secs(20))
}

fn api(status: u16, retry_after: Option<Duration>) -> Error {
    Error::Api(Box::new(ApiError::from_response(
        status,
        None,
        retry_after,
        b"{}",
    )))
}

const URL: &str = "http://127.0.0.1:9/audit_logs/events";

fn decode(status: u16) -> Error {
    Error::Decode {
        url: URL.into(),
        status,
        source: "not JSON".into(),
    }
}

/// What an error should lead to, before the event's facts are taken into account.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Delivered,
    /// Backoff (random 0.5 of the ceiling), `slow_down` as given.
    Backoff {
        slow_down: bool,
    },
    /// This fixed wait (a `Retry-After`), with `slow_down`.
    Wait(Duration),
    Hold,
    /// Hold, but dead-lettered as rejected when other events were accepted (a 403).
    HoldUnlessOthersAccepted,
    Dead(DeadLetterReason),
}

fn kinds() -> Vec<(&'static str, Option<Error>, Expect)> {
    use DeadLetterReason::*;
    use Expect::*;
    let mut kinds: Vec<(&'static str, Option<Error>, Expect)> = vec![
        ("ok", None, Delivered),
        ("401", Some(api(401, None)), Hold),
        ("403", Some(api(403, None)), HoldUnlessOthersAccepted),
        ("413", Some(api(413, None)), Dead(TooLarge)),
        ("429", Some(api(429, None)), Backoff { slow_down: true }),
        (
            "429 retry-after 7 s",
            Some(api(429, Some(Duration::from_secs(7)))),
            Wait(Duration::from_secs(7)),
        ),
        (
            "503 retry-after 1 h (capped)",
            Some(api(503, Some(Duration::from_secs(3600)))),
            Wait(Duration::from_secs(20)),
        ),
        ("501", Some(api(501, None)), Dead(Rejected)),
        (
            "transport",
            Some(Error::Transport {
                url: URL.into(),
                source: "connection reset".into(),
            }),
            Backoff { slow_down: false },
        ),
        (
            "timeout",
            Some(Error::Timeout {
                url: URL.into(),
                timeout: Duration::from_secs(1),
            }),
            Backoff { slow_down: false },
        ),
        ("decode 201", Some(decode(201)), Delivered),
        ("decode 502", Some(decode(502)), Backoff { slow_down: false }),
        ("decode 404", Some(decode(404)), Dead(Rejected)),
        (
            "not workos",
            Some(Error::NotWorkOs {
                url: URL.into(),
                status: 200,
                content_type: Some("text/html".into()),
                body_start: "<html>".into(),
            }),
            Dead(NotWorkOs),
        ),
        (
            "config",
            Some(Error::Config {
                setting: "WORKOS_API_KEY",
                message: "missing".into(),
            }),
            Dead(Refused),
        ),
        (
            "invalid parameter",
            Some(Error::InvalidParameter {
                field: "idempotency_key",
                message: "must not be empty".into(),
            }),
            Dead(Refused),
        ),
    ];
    for status in [400, 404, 409, 422] {
        kinds.push(("4xx", Some(api(status, None)), Dead(Rejected)));
    }
    for status in [408, 500, 502, 503, 504] {
        kinds.push((
            "retryable status",
            Some(api(status, None)),
            Backoff { slow_down: false },
        ));
    }
    kinds
}

/// The rules for a retryable failure: the policy's retries, then the window, then the deadline.
fn expected_retry(
    wait: Duration,
    slow_down: bool,
    attempts: u32,
    age: Duration,
    deadline: Option<Duration>,
) -> Verdict {
    if attempts > 3 || age + wait > WINDOW {
        Verdict::DeadLetter(DeadLetterReason::RetryWindowExhausted)
    } else if deadline.is_some_and(|d| wait > d) {
        Verdict::DeadLetter(DeadLetterReason::ShutdownDeadline)
    } else {
        Verdict::Retry {
            after: wait,
            slow_down,
        }
    }
}

#[test]
fn every_error_kind_attempt_age_and_deadline() {
    let policy = policy();
    let ages = [
        Duration::ZERO,
        Duration::from_secs(50),
        Duration::from_millis(59_600),
        WINDOW,
    ];
    let deadlines = [
        None,
        Some(Duration::from_secs(100)),
        Some(Duration::from_millis(750)),
        Some(Duration::ZERO),
    ];
    let mut rows = 0;
    for (name, error, expect) in kinds() {
        for attempts in 1..=5u32 {
            for age in ages {
                for deadline in deadlines {
                    for others_accepted in [false, true] {
                        let facts = Facts::new(attempts, age, WINDOW)
                            .with_deadline(deadline)
                            .with_others_accepted(others_accepted);
                        let result = match &error {
                            None => Ok(()),
                            Some(e) => Err(e),
                        };
                        let got = decide(result, &facts, &policy, || 0.5);
                        // Backoff ceilings 1 s, 2 s, 4 s, 8 s; half of it with random 0.5.
                        let backoff = Duration::from_secs(1 << (attempts - 1).min(3)) / 2;
                        let want = match expect {
                            Expect::Delivered => Verdict::Delivered,
                            Expect::Hold => Verdict::HoldForAuthorization,
                            Expect::HoldUnlessOthersAccepted if others_accepted => {
                                Verdict::DeadLetter(DeadLetterReason::Rejected)
                            }
                            Expect::HoldUnlessOthersAccepted => Verdict::HoldForAuthorization,
                            Expect::Dead(reason) => Verdict::DeadLetter(reason),
                            Expect::Backoff { slow_down } => {
                                expected_retry(backoff, slow_down, attempts, age, deadline)
                            }
                            Expect::Wait(wait) => expected_retry(wait, true, attempts, age, deadline),
                        };
                        assert_eq!(
                            got, want,
                            "{name} ({error:?}), attempt {attempts}, age {age:?}, deadline {deadline:?}, others accepted {others_accepted}"
                        );
                        rows += 1;
                    }
                }
            }
        }
    }
    assert_eq!(rows, kinds().len() * 5 * 4 * 4 * 2);
}

#[test]
fn a_few_rows_spelled_out() {
    let p = policy();
    let unavailable = api(503, None);
    let fresh = Facts::new(1, Duration::ZERO, WINDOW);
    assert_eq!(
        decide(Err(&unavailable), &fresh, &p, || 0.0),
        Verdict::Retry {
            after: Duration::ZERO,
            slow_down: false
        }
    );
    assert_eq!(
        decide(
            Err(&unavailable),
            &Facts::new(3, Duration::from_secs(10), WINDOW),
            &p,
            || 1.0
        ),
        Verdict::Retry {
            after: Duration::from_secs(4),
            slow_down: false
        }
    );
    // The next attempt would start at 61 s: beyond the window.
    assert_eq!(
        decide(
            Err(&unavailable),
            &Facts::new(2, Duration::from_secs(59), WINDOW),
            &p,
            || 1.0
        ),
        Verdict::DeadLetter(DeadLetterReason::RetryWindowExhausted)
    );
    // Exactly at the window's end is still within it.
    assert_eq!(
        decide(
            Err(&unavailable),
            &Facts::new(2, Duration::from_secs(58), WINDOW),
            &p,
            || 1.0
        ),
        Verdict::Retry {
            after: Duration::from_secs(2),
            slow_down: false
        }
    );
    let too_large = api(413, None);
    assert_eq!(
        decide(Err(&too_large), &fresh, &p, || 0.5),
        Verdict::DeadLetter(DeadLetterReason::TooLarge)
    );
    assert!(
        too_large.to_string().contains("the request body was too large"),
        "{too_large}"
    );
    assert_eq!(DeadLetterReason::TooLarge.as_str(), "too_large");
    assert_eq!(
        serde_json::to_string(&DeadLetterReason::TooLarge).unwrap(),
        "\"too_large\""
    );
}

#[test]
fn the_random_source_is_read_only_for_a_backoff() {
    let p = policy();
    let facts = Facts::new(1, Duration::ZERO, WINDOW);
    let never = || -> f64 { panic!("no backoff here") };
    assert_eq!(decide(Ok(()), &facts, &p, never), Verdict::Delivered);
    assert_eq!(
        decide(Err(&api(401, None)), &facts, &p, never),
        Verdict::HoldForAuthorization
    );
    assert_eq!(
        decide(Err(&api(422, None)), &facts, &p, never),
        Verdict::DeadLetter(DeadLetterReason::Rejected)
    );
}

#[test]
fn one_reading_of_an_error() {
    for (name, error, expect) in kinds() {
        let Some(error) = error else { continue };
        let retryable = matches!(expect, Expect::Backoff { .. } | Expect::Wait(_));
        assert_eq!(error.is_retryable(), retryable, "{name}");
        assert_eq!(
            matches!(error.failure(), Failure::Retryable(_)),
            retryable,
            "{name}"
        );
        let disposition = classify(&error);
        let want = match expect {
            Expect::Delivered => Disposition::Accepted,
            Expect::Hold | Expect::HoldUnlessOthersAccepted => Disposition::Unauthorized,
            Expect::Dead(reason) => Disposition::Permanent(reason),
            Expect::Backoff { .. } | Expect::Wait(_) => match error.failure() {
                Failure::Retryable(outcome) => Disposition::Retry(outcome),
                other => panic!("{name}: {other:?}"),
            },
        };
        assert_eq!(disposition, want, "{name}");
    }
}
