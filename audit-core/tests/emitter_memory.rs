//! The emitter against in-memory and scripted sinks: backoff and retry-window arithmetic on
//! tokio's paused clock, overflow, flush, shutdown on both runtime flavours, the authorization
//! hold, dead letters and their replay.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_core::emitter::{
    DeadLetterReason, EmitError, EmitOptions, Emitter, JsonlDeadLetters, MemoryDeadLetters, MemorySink,
    Overflow, Sink, SinkFuture,
};
use audit_core::sync::lock;
use audit_core::{Action, Actor, ApiError, Context, CreateEvent, Error, Event};
use support::{fixed_org, settle};
use tokio::time::Instant;

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
    .meta("n", n)
}

fn api(status: u16, retry_after: Option<Duration>) -> Error {
    Error::Api(Box::new(ApiError::from_response(
        status,
        Some(format!("req_{status}")),
        retry_after,
        br#"{"message":"scripted","code":"scripted_failure"}"#,
    )))
}

/// A sink answering from a script (then success), recording each attempt's key and time.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Error>>>,
    attempts: Arc<Mutex<Vec<(String, Instant)>>>,
    /// When set, every attempt fails with this status (after the script).
    always: Arc<Mutex<Option<u16>>>,
}

impl Scripted {
    fn fail(&self, e: Error) {
        lock(&self.script).push_back(e);
    }
    fn attempts(&self) -> Vec<(String, Instant)> {
        lock(&self.attempts).clone()
    }
}

impl Sink for Scripted {
    fn send<'a>(&'a self, _body: &'a CreateEvent, key: &'a str) -> SinkFuture<'a> {
        lock(&self.attempts).push((key.to_owned(), Instant::now()));
        let scripted = lock(&self.script).pop_front();
        let always = *lock(&self.always);
        Box::pin(async move {
            match (scripted, always) {
                (Some(e), _) => Err(e),
                (None, Some(status)) => Err(api(status, None)),
                (None, None) => Ok(()),
            }
        })
    }
}

/// A sink that never answers.
struct Stuck;

impl Sink for Stuck {
    fn send<'a>(&'a self, _: &'a CreateEvent, _: &'a str) -> SinkFuture<'a> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_to_its_cap_and_reuses_the_key() {
    let sink = Scripted::default();
    for _ in 0..4 {
        sink.fail(api(503, None));
    }
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .jitter(false)
        .retry_backoff(Duration::from_secs(1), Duration::from_secs(4))
        .start();
    let start = Instant::now();
    let receipt = emitter.try_emit(fixed_org(), event(1)).unwrap();
    emitter.flush(Duration::from_secs(60)).await.unwrap();
    let attempts = sink.attempts();
    let offsets: Vec<u64> = attempts
        .iter()
        .map(|(_, at)| (*at - start).as_millis() as u64)
        .collect();
    // Waits of 1, 2, 4 and 4 s (capped) between five attempts.
    assert_eq!(offsets, [0, 1000, 3000, 7000, 11000]);
    assert!(attempts.iter().all(|(k, _)| *k == receipt.idempotency_key));
    let stats = emitter.stats();
    assert_eq!((stats.delivered, stats.retried, stats.dead_lettered), (1, 4, 0));
    assert!(stats.last_error.unwrap().contains("503"));
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_under_the_ceiling() {
    let sink = Scripted::default();
    for _ in 0..6 {
        sink.fail(Error::Timeout {
            url: "http://x".into(),
            timeout: Duration::from_secs(1),
        });
    }
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .retry_backoff(Duration::from_secs(1), Duration::from_secs(8))
        .start();
    emitter.try_emit(fixed_org(), event(1)).unwrap();
    emitter.flush(Duration::from_secs(120)).await.unwrap();
    let at: Vec<Instant> = sink.attempts().into_iter().map(|(_, at)| at).collect();
    assert_eq!(at.len(), 7);
    for (i, pair) in at.windows(2).enumerate() {
        let ceiling = Duration::from_secs(1 << i.min(3));
        assert!(
            pair[1] - pair[0] <= ceiling,
            "wait {i}: {:?} > {ceiling:?}",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_window_ends_in_a_dead_letter_with_the_last_error() {
    let sink = Scripted::default();
    *lock(&sink.always) = Some(500);
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .jitter(false)
        .retry_backoff(Duration::from_secs(1), Duration::from_secs(4))
        .retry_window(Duration::from_secs(10))
        .dead_letters(dead.clone())
        .start();
    let start = Instant::now();
    let receipt = emitter.try_emit(fixed_org(), event(7)).unwrap();
    emitter.flush(Duration::from_secs(60)).await.unwrap();
    // Attempts at 0, 1, 3, 7 s; the next would start at 11 s, after the 10 s window.
    let offsets: Vec<u64> = sink
        .attempts()
        .iter()
        .map(|(_, at)| (*at - start).as_secs())
        .collect();
    assert_eq!(offsets, [0, 1, 3, 7]);
    let letters = dead.letters();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason, DeadLetterReason::RetryWindowExhausted);
    assert_eq!(letter.attempts, 4);
    assert_eq!(letter.idempotency_key, receipt.idempotency_key);
    assert_eq!(letter.error.as_ref().unwrap().status, Some(500));
    assert_eq!(letter.event, event(7).occurred_at(letter.event.occurred_at));
    assert!(letter.first_attempt_at.is_some() && letter.last_attempt_at.is_some());
    assert_eq!(emitter.stats().dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_pauses_every_sender() {
    let sink = Scripted::default();
    sink.fail(api(429, Some(Duration::from_secs(5))));
    let emitter = Emitter::builder(sink.clone()).senders(4).no_rate_limit().start();
    let start = Instant::now();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    settle().await;
    assert_eq!(sink.attempts().len(), 1);
    assert!(emitter.stats().paused);
    for n in 1..=10 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    emitter.flush(Duration::from_secs(60)).await.unwrap();
    let attempts = sink.attempts();
    assert_eq!(attempts.len(), 12);
    for (_, at) in &attempts[1..] {
        assert!(
            *at - start >= Duration::from_secs(5),
            "an attempt {:?} after start",
            *at - start
        );
    }
    assert_eq!(emitter.stats().delivered, 11);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_dead_lettered_at_once() {
    let sink = Scripted::default();
    for status in [400, 404, 409, 422] {
        sink.fail(api(status, None));
    }
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .dead_letters(dead.clone())
        .start();
    for n in 0..5 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    emitter.flush(Duration::from_secs(1)).await.unwrap();
    let letters = dead.letters();
    let statuses: Vec<_> = letters
        .iter()
        .map(|l| l.error.as_ref().unwrap().status.unwrap())
        .collect();
    assert_eq!(statuses, [400, 404, 409, 422]);
    for l in &letters {
        assert_eq!(l.reason, DeadLetterReason::Rejected);
        assert_eq!(l.attempts, 1);
        let e = l.error.as_ref().unwrap();
        assert_eq!(e.code.as_deref(), Some("scripted_failure"));
        assert!(e.request_id.as_deref().unwrap().starts_with("req_"));
    }
    assert_eq!(emitter.stats().delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn unauthorized_holds_delivery_and_probes_until_accepted() {
    let sink = Scripted::default();
    for _ in 0..3 {
        sink.fail(api(401, None));
    }
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .auth_probe_interval(Duration::from_secs(30), Duration::from_secs(300))
        .dead_letters(dead.clone())
        .start();
    let start = Instant::now();
    for n in 0..5 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    settle().await;
    let stats = emitter.stats();
    assert!(stats.auth_failed && stats.held_since.is_some());
    assert_eq!(stats.delivered, 0);
    assert_eq!(sink.attempts().len(), 1, "nothing else is sent while held");
    emitter.flush(Duration::from_secs(600)).await.unwrap();
    let offsets: Vec<u64> = sink
        .attempts()
        .iter()
        .map(|(_, at)| (*at - start).as_secs())
        .collect();
    // The first attempt, probes after 30, 60 and 120 s more (the fourth answer accepted), then the rest.
    assert_eq!(offsets[..4], [0, 30, 90, 210]);
    assert_eq!(offsets.len(), 4 + 4);
    assert!(dead.is_empty());
    let stats = emitter.stats();
    assert!(!stats.auth_failed);
    assert_eq!(stats.delivered, 5);
}

#[tokio::test(start_paused = true)]
async fn overflow_drop_newest_counts_and_refuses() {
    let emitter = Emitter::builder(Stuck)
        .senders(1)
        .capacity(3)
        .no_rate_limit()
        .start();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    settle().await;
    assert_eq!(emitter.stats().in_flight, 1);
    emitter.try_emit(fixed_org(), event(1)).unwrap();
    emitter.try_emit(fixed_org(), event(2)).unwrap();
    for n in 3..6 {
        assert!(matches!(
            emitter.try_emit(fixed_org(), event(n)),
            Err(EmitError::Full)
        ));
    }
    let stats = emitter.stats();
    assert_eq!(
        (
            stats.queued,
            stats.in_flight,
            stats.dropped.newest,
            stats.dropped.oldest
        ),
        (2, 1, 3, 0)
    );
    let report = emitter.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.dropped.newest, 3);
    assert_eq!(report.pending_at_deadline, 3);
}

#[tokio::test(start_paused = true)]
async fn overflow_drop_oldest_evicts_waiting_events() {
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(Stuck)
        .senders(1)
        .capacity(3)
        .no_rate_limit()
        .overflow(Overflow::DropOldest)
        .dead_letters(dead.clone())
        .start();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    settle().await;
    for n in 1..6 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    let stats = emitter.stats();
    assert_eq!(
        (stats.queued, stats.dropped.oldest, stats.dropped.newest),
        (2, 3, 0)
    );
    // The evicted ones are dead-lettered whole, with the reason (written off the emitting thread).
    while dead.len() < 3 {
        tokio::task::yield_now().await;
    }
    // Each eviction's dead letter is written on the blocking pool, so they may land in any order.
    let mut evicted: Vec<(String, DeadLetterReason)> = dead
        .letters()
        .iter()
        .map(|l| (l.event.actor.id.clone(), l.reason))
        .collect();
    evicted.sort_by(|a, b| a.0.cmp(&b.0));
    let overflow = DeadLetterReason::Overflow;
    assert_eq!(
        evicted,
        [
            ("user_1".into(), overflow),
            ("user_2".into(), overflow),
            ("user_3".into(), overflow)
        ]
    );
    let report = emitter.shutdown(Duration::from_secs(1)).await;
    // The one in flight and the two newest remain, dead-lettered at the deadline.
    let mut kept: Vec<String> = dead
        .letters()
        .iter()
        .filter(|l| l.reason == DeadLetterReason::ShutdownDeadline)
        .map(|l| l.event.actor.id.clone())
        .collect();
    kept.sort();
    assert_eq!(kept, ["user_0", "user_4", "user_5"]);
    assert_eq!(report.dropped.oldest, 3);
    assert_eq!(report.dead_lettered, 6);
    assert_eq!(report.pending_at_deadline, 3);
}

#[tokio::test(start_paused = true)]
async fn emit_waits_for_room() {
    let sink = Scripted::default();
    sink.fail(api(503, None));
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .capacity(1)
        .no_rate_limit()
        .jitter(false)
        .retry_backoff(Duration::from_secs(2), Duration::from_secs(2))
        .start();
    let start = Instant::now();
    emitter.emit(fixed_org(), event(0)).await.unwrap();
    settle().await;
    // The first event waits 2 s to be retried and takes the only place.
    emitter.emit(fixed_org(), event(1)).await.unwrap();
    assert!(Instant::now() - start >= Duration::from_secs(2));
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(emitter.stats().dropped.total(), 0);
    assert_eq!(emitter.stats().delivered, 2);
}

#[tokio::test(start_paused = true)]
async fn invalid_events_and_keys_are_refused_with_the_field() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).start();
    let bad = event(1).meta("way too long a key for workos metadata, over forty", 1);
    match emitter.try_emit(fixed_org(), bad) {
        Err(EmitError::Invalid(errors)) => {
            assert!(errors.pointers().any(|p| p.starts_with("/metadata")), "{errors}")
        }
        other => panic!("{other:?}"),
    }
    let refused = emitter.try_emit_with(
        fixed_org(),
        event(1),
        EmitOptions::new().idempotency_key("bad key"),
    );
    assert!(matches!(refused, Err(EmitError::InvalidIdempotencyKey(_))));
    let mine = emitter
        .try_emit_with(
            fixed_org(),
            event(2),
            EmitOptions::new().idempotency_key("order-42-created"),
        )
        .unwrap();
    assert_eq!(mine.idempotency_key, "order-42-created");
    let report = emitter.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.delivered, 1);
    assert_eq!(sink.events()[0].1, "order-42-created");
    assert!(matches!(
        emitter.try_emit(fixed_org(), event(3)),
        Err(EmitError::Closed)
    ));
    assert_eq!(emitter.stats().accepted, 1);
}

#[tokio::test(start_paused = true)]
async fn generated_keys_are_uuid_v4_and_unique() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let keys: Vec<String> = (0..100)
        .map(|n| {
            emitter
                .try_emit(fixed_org(), event(n))
                .unwrap()
                .idempotency_key
                .into()
        })
        .collect();
    emitter.flush(Duration::from_secs(1)).await.unwrap();
    let unique: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), 100);
    for k in &keys {
        let u = uuid::Uuid::parse_str(k).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }
    assert_eq!(sink.events().len(), 100);
}

async fn flush_and_shutdown_report() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    for n in 0..200 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(sink.events().len(), 200);
    let stats = emitter.stats();
    assert_eq!((stats.queued, stats.in_flight, stats.delivered), (0, 0, 200));
    assert!(stats.latency_p50.is_some() && stats.latency_p99 >= stats.latency_p50);
    for n in 200..300 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    let clone = emitter.clone();
    let report = clone.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 300);
    assert_eq!(
        (
            report.dead_lettered,
            report.pending_at_deadline,
            report.dropped.total()
        ),
        (0, 0, 0)
    );
    assert!(emitter.is_closed());
}

#[tokio::test(flavor = "current_thread")]
async fn flush_and_shutdown_on_a_current_thread_runtime() {
    flush_and_shutdown_report().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_shutdown_on_a_multi_thread_runtime() {
    flush_and_shutdown_report().await;
}

async fn shutdown_deadline_dead_letters_what_is_pending() {
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(Stuck)
        .senders(2)
        .no_rate_limit()
        .dead_letters(dead.clone())
        .start();
    for n in 0..10 {
        emitter.try_emit(fixed_org(), event(n)).unwrap();
    }
    let timed_out = emitter.flush(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(timed_out.pending, 10);
    let report = emitter.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.pending_at_deadline, 10);
    assert_eq!(report.dead_lettered, 10);
    assert_eq!(report.delivered, 0);
    let letters = dead.letters();
    assert_eq!(letters.len(), 10);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::ShutdownDeadline)
    );
    assert_eq!(
        letters.iter().filter(|l| l.attempts == 1).count(),
        2,
        "two were in flight"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_deadline_on_a_current_thread_runtime() {
    shutdown_deadline_dead_letters_what_is_pending().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_on_a_multi_thread_runtime() {
    shutdown_deadline_dead_letters_what_is_pending().await;
}

#[test]
fn dropping_the_handle_without_shutdown_does_not_hang() {
    let dead = MemoryDeadLetters::new();
    let sink = MemorySink::new();
    for flavor in ["current", "multi"] {
        let rt = match flavor {
            "current" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            _ => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .unwrap();
        // Delivered in the background after the handle is gone.
        let delivered = sink.events().len() + 10;
        rt.block_on(async {
            let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
            for n in 0..10 {
                emitter.try_emit(fixed_org(), event(n)).unwrap();
            }
            drop(emitter);
            // Wait for the deliveries themselves, not for a guessed duration.
            while sink.events().len() < delivered {
                tokio::task::yield_now().await;
            }
        });
        // Stuck: the runtime ends with events pending; they become dead letters.
        rt.block_on(async {
            let emitter = Emitter::builder(Stuck).dead_letters(dead.clone()).start();
            emitter.try_emit(fixed_org(), event(99)).unwrap();
            tokio::task::yield_now().await;
            drop(emitter);
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    assert_eq!(sink.events().len(), 20);
    let letters = dead.letters();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.reason == DeadLetterReason::Abandoned));
}

#[test]
fn try_emit_works_from_a_plain_thread_and_start_needs_a_runtime() {
    assert!(Emitter::builder(MemorySink::new()).try_start().is_err());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone())
        .no_rate_limit()
        .start_on(rt.handle());
    let e2 = emitter.clone();
    std::thread::spawn(move || {
        for n in 0..10 {
            e2.try_emit(fixed_org(), event(n)).unwrap();
        }
    })
    .join()
    .unwrap();
    let report = rt.block_on(emitter.shutdown(Duration::from_secs(5)));
    assert_eq!(report.delivered, 10);
    assert_eq!(sink.events().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_replay_with_their_original_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    let sink = Scripted::default();
    sink.fail(api(422, None));
    sink.fail(api(400, None));
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .dead_letters(JsonlDeadLetters::new(&path).unwrap())
        .start();
    let a = emitter.try_emit(fixed_org(), event(1)).unwrap();
    let b = emitter.try_emit(fixed_org(), event(2)).unwrap();
    emitter.shutdown(Duration::from_secs(1)).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["reason"], "rejected");
    assert_eq!(first["error"]["status"], 422);
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["organization_id"], fixed_org().as_str());
    assert_eq!(first["event"]["actor"]["id"], "user_1");
    assert_eq!(first["idempotency_key"], a.idempotency_key.as_str());

    let again = MemorySink::new();
    let replayer = Emitter::builder(again.clone()).no_rate_limit().start();
    let report = replayer.replay_dead_letters(&path).await.unwrap();
    assert_eq!(report.replayed, 2);
    assert!(report.unreadable.is_empty() && report.refused.is_empty());
    replayer.flush(Duration::from_secs(1)).await.unwrap();
    let keys: Vec<String> = again.events().into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys, [a.idempotency_key, b.idempotency_key]);
}

#[tokio::test(start_paused = true)]
async fn a_callback_receives_dead_letters() {
    let sink = Scripted::default();
    sink.fail(api(404, None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let emitter = Emitter::builder(sink)
        .no_rate_limit()
        .on_dead_letter(move |l| lock(&seen2).push(l.reason))
        .start();
    emitter.try_emit(fixed_org(), event(1)).unwrap();
    emitter.flush(Duration::from_secs(1)).await.unwrap();
    assert_eq!(*lock(&seen), [DeadLetterReason::Rejected]);
}

/// A sink that stores events on the application's side (like a transactional outbox).
#[derive(Clone, Default)]
struct DurableSink(MemorySink);

impl Sink for DurableSink {
    fn send<'a>(&'a self, body: &'a CreateEvent, key: &'a str) -> SinkFuture<'a> {
        self.0.send(body, key)
    }

    fn is_durable(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn emit_durable_with_a_durable_sink_waits_for_its_acknowledgement() {
    let sink = DurableSink::default();
    let emitter = Emitter::builder(sink.clone()).jitter(false).start();
    let receipt = emitter.emit_durable(fixed_org(), event(1)).await.unwrap();
    // Stored by the sink when `emit_durable` returned, not merely queued.
    let stored = sink.0.events();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, receipt.idempotency_key.as_str());

    // A failed store answers `NotDurable` at once; the event stays and the retry stores it
    // with the same key.
    sink.0.push_failure(Error::Transport {
        url: "outbox".into(),
        source: "connection refused".into(),
    });
    let Err(EmitError::NotDurable { idempotency_key }) = emitter.emit_durable(fixed_org(), event(2)).await
    else {
        panic!("expected NotDurable");
    };
    emitter.flush(Duration::from_secs(60)).await.unwrap();
    let stored = sink.0.events();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].1, idempotency_key.as_str());
    assert_eq!(emitter.stats().dead_lettered, 0);
}

/// A durable sink whose stores never finish.
struct StuckSink;

impl Sink for StuckSink {
    fn send<'a>(&'a self, _: &'a CreateEvent, _: &'a str) -> SinkFuture<'a> {
        Box::pin(std::future::pending())
    }

    fn is_durable(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn emit_durable_reports_an_event_evicted_before_it_was_stored() {
    // The one sender holds event 0; the durable event 1 waits behind it and event 2 evicts it.
    let emitter = Emitter::builder(StuckSink)
        .capacity(2)
        .senders(1)
        .overflow(Overflow::DropOldest)
        .start();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    settle().await;
    let durable = emitter.emit_durable(fixed_org(), event(1));
    let evict = async {
        settle().await;
        emitter.try_emit(fixed_org(), event(2)).unwrap();
    };
    let (result, ()) = tokio::join!(durable, evict);
    assert!(matches!(result, Err(EmitError::NotDurable { .. })), "{result:?}");
    assert_eq!(emitter.stats().dropped.oldest, 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_events_are_released_at_once_when_delivery_works_again() {
    let sink = Scripted::default();
    *lock(&sink.always) = Some(503);
    let emitter = Emitter::builder(sink.clone())
        .senders(4)
        .no_rate_limit()
        .jitter(false)
        .retry_backoff(Duration::from_secs(1), Duration::from_secs(30))
        .start();
    let n = 50;
    for i in 0..n {
        emitter.try_emit(fixed_org(), event(i)).unwrap();
    }
    // An outage long enough for every event to back off to the 30 s cap.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(emitter.stats().retrying, n);
    let failed = sink.attempts().len();
    // WorkOS answers again: every waiting event goes at once, not at the end of its backoff.
    *lock(&sink.always) = None;
    let back = Instant::now();
    emitter.flush(Duration::from_secs(60)).await.unwrap();
    let drained_in = back.elapsed();
    let stats = emitter.stats();
    assert_eq!((stats.delivered, stats.dead_lettered), (n as u64, 0));
    assert!(
        drained_in < Duration::from_secs(31),
        "the backlog drained {drained_in:?} after recovery"
    );
    // After the first success (at the end of one event's backoff) the rest follow at once.
    let after: Vec<Instant> = sink.attempts()[failed..].iter().map(|(_, at)| *at).collect();
    assert_eq!(after.len(), n, "one attempt each after the recovery");
    let first = after[0];
    assert!(
        after.iter().all(|at| *at - first < Duration::from_millis(10)),
        "events waited out their own backoff after the recovery"
    );
    // Each event once: the keys of the delivered events are distinct.
    let keys: std::collections::HashSet<String> =
        sink.attempts()[failed..].iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys.len(), n);
}

/// A sink that refuses one actor's events with a 500 and accepts the others.
#[derive(Clone, Default)]
struct FailsOne {
    attempts: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Sink for FailsOne {
    fn send<'a>(&'a self, body: &'a CreateEvent, _key: &'a str) -> SinkFuture<'a> {
        let actor = body.event.actor.id.clone();
        lock(&self.attempts).push((actor.clone(), Instant::now()));
        Box::pin(async move {
            if actor == "user_0" {
                Err(api(500, None))
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_failing_alone_waits_out_its_backoff_after_one_early_retry() {
    let sink = FailsOne::default();
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(sink.clone())
        .senders(1)
        .no_rate_limit()
        .jitter(false)
        .retry_backoff(Duration::from_secs(10), Duration::from_secs(10))
        .retry_window(Duration::from_secs(25))
        .linger(Duration::ZERO)
        .dead_letters(dead.clone())
        .start();
    let start = Instant::now();
    emitter.try_emit(fixed_org(), event(0)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Other events are delivered while it fails.
    for i in 1..=3 {
        emitter.try_emit(fixed_org(), event(i)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emitter.flush(Duration::from_secs(60)).await.unwrap();
    let offsets: Vec<u64> = lock(&sink.attempts)
        .iter()
        .filter(|(actor, _)| actor == "user_0")
        .map(|(_, at)| (*at - start).as_millis() as u64)
        .collect();
    // Released once by the next success (at 1 s), then its own 10 s backoffs until the window
    // ends: no retry at every other event's success.
    assert_eq!(offsets, [0, 1000, 11000, 21000]);
    let stats = emitter.stats();
    assert_eq!((stats.delivered, stats.dead_lettered), (3, 1));
    assert_eq!(dead.letters()[0].reason, DeadLetterReason::RetryWindowExhausted);
}
