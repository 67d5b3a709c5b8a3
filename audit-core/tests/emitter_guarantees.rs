//! Guarantees the README states, each proved here: the API key never reaches the log, drops and
//! refusals are warned about, the rate limiter binds, a 403 for every event holds delivery (and
//! resumes), and the spool commits `try_emit`'s events in groups within milliseconds.
//!
//! Loopback only: audit-testkit, or a closed local port for transport failures.

mod support;

use std::time::{Duration, Instant};

use audit_core::emitter::{EmitError, Emitter, EmitterBuilder, MemoryDeadLetters, RateLimit};
use audit_core::{Action, Actor, Client, Context, Event};
use audit_test_cases::logs::Logs;
use audit_testkit::FaultRule;
use serde_json::json;
use support::{EVENTS, kit, org, until};

const KEY: &str = "sk_test_guarantees_0123456789_secret";

fn client(base_url: &str) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(base_url)
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .expect("client")
}

fn builder(base_url: &str) -> EmitterBuilder {
    Emitter::builder(client(base_url))
        .senders(2)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .auth_probe_interval(Duration::from_millis(30), Duration::from_millis(100))
        .warn_interval(Duration::from_millis(1))
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
}

#[tokio::test]
async fn the_api_key_never_reaches_the_log() {
    let (logs, _guard) = Logs::capture();
    let kit = kit().await;
    let echo = json!({"message": format!("bad request from Bearer {KEY}"), "code": KEY});
    // 401s and 500s that echo the key, then a 400 that echoes it and is dead-lettered.
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(2)
            .respond_json(401, echo.clone()),
    );
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(2)
            .respond_json(500, echo.clone()),
    );
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(1)
            .respond_json(400, echo),
    );
    let org = org(&kit);
    // No dead-letter destination: the dead letter itself goes to the log.
    let emitter = builder(&kit.url()).start();
    for n in 0..4 {
        emitter.try_emit(org.clone(), event(n)).unwrap();
    }
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    assert_eq!(emitter.stats().dead_lettered, 1);
    // Transport failures (nothing listens there), given up at shutdown's deadline.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let unreachable = builder(&closed).start();
    unreachable.try_emit(org.clone(), event(9)).unwrap();
    until("a transport failure", || unreachable.stats().retried > 0).await;
    unreachable.shutdown(Duration::from_millis(100)).await;
    let text = logs.text();
    for expected in [
        "refused the API key",
        "retried",
        "dead-lettered",
        "could not reach WorkOS",
    ] {
        assert!(text.contains(expected), "the log shows {expected:?}:\n{text}");
    }
    // The echoes did reach the log, scrubbed.
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains(KEY), "the API key is in the log:\n{text}");
    assert!(
        !text.contains("0123456789_secret"),
        "part of the key is in the log"
    );
}

#[tokio::test]
async fn drops_and_refusals_are_warned_about() {
    let (logs, _guard) = Logs::capture();
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").hang());
    let org = org(&kit);
    let emitter = builder(&kit.url()).senders(1).capacity(1).start();
    emitter.try_emit(org.clone(), event(0)).unwrap();
    assert!(matches!(
        emitter.try_emit(org.clone(), event(1)),
        Err(EmitError::Full)
    ));
    assert!(
        logs.text().contains("queue full: an event was dropped"),
        "{}",
        logs.text()
    );
    assert_eq!(emitter.stats().dropped.newest, 1);
    emitter.shutdown(Duration::from_millis(50)).await;
}

#[cfg(feature = "spool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refusal_is_warned_about() {
    use audit_core::emitter::SpoolConfig;
    // The warning is logged on the emitting thread: the subscriber is this thread's default.
    let (logs, _guard) = Logs::capture();
    let kit = kit().await;
    kit.stop();
    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolConfig::new(dir.path().join("spool.db"))
        .max_events(2)
        .open()
        .unwrap();
    let emitter = builder(&kit.url()).spool(spool).start();
    let org = org(&kit);
    emitter.try_emit(org.clone(), event(0)).unwrap();
    emitter.try_emit(org.clone(), event(1)).unwrap();
    assert!(matches!(
        emitter.try_emit(org.clone(), event(2)),
        Err(EmitError::Full)
    ));
    assert!(logs.text().contains("audit spool full"), "{}", logs.text());
    emitter.shutdown(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_binds() {
    let kit = kit().await;
    let org = org(&kit);
    // 20 per second without a burst: 40 events take at least 1.95 s.
    let limit = RateLimit::new(20, Duration::from_secs(1)).unwrap().burst(1);
    let emitter = Emitter::builder(client(&kit.url())).rate_limit(limit).start();
    let started = Instant::now();
    for n in 0..40 {
        emitter.try_emit(org.clone(), event(n)).unwrap();
    }
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1_900), "{elapsed:?}");
    assert_eq!(kit.all_events().len(), 40);
    let mut arrivals: Vec<_> = kit.all_events().into_iter().map(|e| e.received_at).collect();
    arrivals.sort();
    // No two requests closer than the limit allows (with a little scheduling slack).
    let closest = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_seconds_f64())
        .fold(f64::MAX, f64::min);
    assert!(
        closest >= 0.035,
        "two events {closest:.3} s apart under a 20/s limit"
    );
}

#[tokio::test]
async fn a_403_for_every_event_holds_delivery_and_resumes() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").times(3).respond(403));
    let org = org(&kit);
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit.url()).senders(1).dead_letters(dead.clone()).start();
    for n in 0..5 {
        emitter.try_emit(org.clone(), event(n)).unwrap();
    }
    until("the hold", || emitter.stats().held_since.is_some()).await;
    assert_eq!(emitter.stats().delivered, 0);
    emitter.flush(Duration::from_secs(20)).await.expect("resumed");
    assert!(
        dead.is_empty(),
        "nothing dead-lettered: the refusal was for everyone"
    );
    assert_eq!(kit.all_events().len(), 5);
    assert!(emitter.stats().held_since.is_none());
}

#[cfg(feature = "spool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_emit_is_committed_to_the_spool_in_groups_within_milliseconds() {
    use audit_core::emitter::Spool;
    let kit = kit().await;
    kit.stop();
    let dir = tempfile::tempdir().unwrap();
    let emitter = builder(&kit.url())
        .spool(Spool::open(dir.path().join("spool.db")).unwrap())
        .start();
    let org = org(&kit);
    let started = Instant::now();
    for n in 0..200 {
        emitter.try_emit(org.clone(), event(n)).unwrap();
    }
    until("the commit", || {
        let spool = emitter.stats().spool.unwrap();
        spool.backlog == 0 && spool.commits > 0
    })
    .await;
    let elapsed = started.elapsed();
    let spool = emitter.stats().spool.unwrap();
    assert_eq!(spool.depth, 200);
    // A group commit per few milliseconds, not one per event.
    assert!(spool.commits <= 20, "{} commits for 200 events", spool.commits);
    assert!(
        elapsed < Duration::from_millis(500),
        "committed after {elapsed:?}"
    );
    emitter.shutdown(Duration::from_millis(50)).await;
}
