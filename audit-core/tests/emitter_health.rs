//! `Emitter::health`, the answer of a readiness probe: senders alive, not held for a refused
//! key, fewer events waiting than the threshold.

mod support;

use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink, Sink, SinkFuture};
use audit_core::{Action, Actor, ApiError, Context, CreateEvent, Error, Event};
use support::{fixed_org, settle};

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
}

/// A destination that never answers: every event stays waiting.
struct Silent;

impl Sink for Silent {
    fn send<'a>(&'a self, _body: &'a CreateEvent, _key: &'a str) -> SinkFuture<'a> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn ready_while_running_and_not_after_shutdown() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    let health = emitter.health(100);
    assert!(health.is_ready(), "{health:?}");
    assert!(health.problem().is_none());
    assert_eq!((health.waiting, health.max_waiting), (0, 100));

    emitter.shutdown(Duration::from_secs(1)).await;
    let health = emitter.health(100);
    assert!(!health.senders_alive && !health.is_ready(), "{health:?}");
    assert!(health.problem().unwrap().contains("not running"));
}

#[tokio::test(start_paused = true)]
async fn not_ready_when_too_many_events_wait() {
    let emitter = Emitter::builder(Silent)
        .senders(1)
        .max_senders(1)
        .no_rate_limit()
        .start();
    for n in 0..20 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    settle().await;
    let stats = emitter.stats();
    // One event is in flight (never answered), the rest wait.
    assert_eq!(stats.in_flight, 1, "{stats:?}");
    let health = emitter.health(19);
    assert_eq!(health.waiting, 19);
    assert!(health.senders_alive && !health.held);
    assert!(!health.is_ready());
    assert!(
        health
            .problem()
            .unwrap()
            .contains("19 audit events are waiting (threshold 19)")
    );
    assert!(emitter.health(20).is_ready());
}

#[tokio::test(start_paused = true)]
async fn not_ready_while_delivery_is_held_for_a_refused_key() {
    let sink = MemorySink::new();
    sink.push_failure(Error::Api(Box::new(ApiError::from_response(
        401,
        Some("req_1".to_owned()),
        None,
        br#"{"message":"Unauthorized"}"#,
    ))));
    let emitter = Emitter::builder(sink.clone()).senders(1).no_rate_limit().start();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    settle().await;
    let health = emitter.health(100);
    assert!(health.held && health.senders_alive, "{health:?}");
    assert!(!health.is_ready());
    assert!(health.problem().unwrap().contains("refused the API key"));
}
