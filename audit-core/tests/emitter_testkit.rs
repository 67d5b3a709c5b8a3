//! The emitter delivering through the real WorkOS client to audit-testkit over loopback, with
//! scripted faults. In every case each accepted event is stored exactly once and none is lost.
//!
//! Short client timeouts and backoffs keep each test to a few seconds.

mod support;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use audit_core::emitter::{DeadLetterReason, EmitReceipt, Emitter, EmitterBuilder, MemoryDeadLetters};
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
use audit_testkit::{FaultRule, RecordedRequest, TestKit};
use serde_json::json;
use support::{EVENTS, fast_retries, kit, org, until};
use time::OffsetDateTime;

fn client(kit: &TestKit, timeout: Duration) -> Client {
    Client::builder()
        .api_key("sk_test_emitter")
        .base_url(kit.url())
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(200))
        .build()
        .expect("client")
}

fn builder(kit: &TestKit) -> EmitterBuilder {
    fast_retries(Emitter::builder(client(kit, Duration::from_millis(400))))
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user").name("Test User"),
        Context::new("203.0.113.7").user_agent("emitter-test"),
    )
    .meta("n", n)
}

fn emit_many(emitter: &Emitter, org: &OrganizationId, range: std::ops::Range<usize>) -> Vec<EmitReceipt> {
    range
        .map(|n| emitter.try_emit(org.clone(), event(n)).expect("accepted"))
        .collect()
}

/// Every receipt's key is stored exactly once, and nothing else is stored.
fn assert_exactly_once(kit: &TestKit, org: &OrganizationId, receipts: &[EmitReceipt]) {
    let stored = kit.events(org.as_str());
    let keys: Vec<String> = stored
        .iter()
        .map(|e| e.idempotency_key.clone().expect("key sent"))
        .collect();
    let unique: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), keys.len(), "duplicates stored");
    let expected: HashSet<&str> = receipts.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert_eq!(unique, expected, "stored keys differ from accepted ones");
}

fn event_posts(kit: &TestKit) -> Vec<RecordedRequest> {
    kit.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == EVENTS)
        .collect()
}

/// Waits until the testkit has answered a create-event request with `status`.
async fn wait_for_status(kit: &TestKit, status: u16) -> RecordedRequest {
    kit.wait_for_request(Duration::from_secs(5), |r| {
        r.method == "POST" && r.path == EVENTS && r.status == status
    })
    .await
    .unwrap_or_else(|| panic!("no request answered {status}"))
}

#[tokio::test]
async fn a_burst_of_500s_is_retried_and_stored_once() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").times(40).respond(500));
    let org = org(&kit);
    let emitter = builder(&kit).start();
    let receipts = emit_many(&emitter, &org, 0..60);
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    assert_exactly_once(&kit, &org, &receipts);
    let stats = emitter.stats();
    assert_eq!((stats.delivered, stats.dead_lettered), (60, 0));
    assert!(stats.retried >= 40, "{stats:?}");
    assert_eq!(event_posts(&kit).iter().filter(|r| r.status == 500).count(), 40);
}

/// After a 429 arrives, no request reaches the server before `not_before`.
fn assert_paused_after(kit: &TestKit, limited: &RecordedRequest, not_before: OffsetDateTime) {
    let later: Vec<RecordedRequest> = event_posts(kit)
        .into_iter()
        .filter(|r| r.seq > limited.seq)
        .collect();
    assert!(later.len() >= 21, "{} later requests", later.len());
    for r in &later {
        assert!(
            r.received_at >= not_before,
            "request {} arrived at {} before {}",
            r.seq,
            r.received_at,
            not_before
        );
    }
}

/// Waits until the emitter has read the 429 (the server records it before the client sees it).
async fn wait_until_paused(emitter: &Emitter) {
    for _ in 0..500 {
        if emitter.stats().paused {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the emitter never paused");
}

#[tokio::test]
async fn retry_after_in_seconds_pauses_every_sender() {
    let kit = kit().await;
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(1)
            .respond(429)
            .retry_after("1"),
    );
    let org = org(&kit);
    let emitter = builder(&kit).senders(8).start();
    let mut receipts = emit_many(&emitter, &org, 0..1);
    let limited = wait_for_status(&kit, 429).await;
    wait_until_paused(&emitter).await;
    // Seven idle senders would send these at once if only one sender paused.
    receipts.extend(emit_many(&emitter, &org, 1..21));
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    assert_paused_after(&kit, &limited, limited.received_at + Duration::from_secs(1));
    assert_exactly_once(&kit, &org, &receipts);
}

#[tokio::test]
async fn retry_after_as_an_http_date_pauses_every_sender() {
    let kit = kit().await;
    let until = SystemTime::now() + Duration::from_secs(2);
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(1)
            .respond(429)
            .retry_after(httpdate::fmt_http_date(until)),
    );
    // The header has whole seconds: the pause ends at the truncated instant.
    let until = httpdate::parse_http_date(&httpdate::fmt_http_date(until)).unwrap();
    let org = org(&kit);
    let emitter = builder(&kit).senders(8).start();
    let mut receipts = emit_many(&emitter, &org, 0..1);
    let limited = wait_for_status(&kit, 429).await;
    wait_until_paused(&emitter).await;
    receipts.extend(emit_many(&emitter, &org, 1..21));
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    assert_paused_after(&kit, &limited, OffsetDateTime::from(until));
    assert_exactly_once(&kit, &org, &receipts);
}

#[tokio::test]
async fn responses_slower_than_the_timeout_are_retried_without_duplicates() {
    let kit = kit().await;
    // The server stores these events after 700 ms; the client gives up after 250 ms and retries
    // with the same key, possibly before the first request was processed.
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(8)
            .latency(Duration::from_millis(700)),
    );
    let org = org(&kit);
    let emitter = Emitter::builder(client(&kit, Duration::from_millis(250)))
        .senders(4)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start();
    let receipts = emit_many(&emitter, &org, 0..30);
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    // The slow requests end on the server side (stored, or dropped with their connection)
    // before anything is counted.
    assert!(
        kit.wait_idle(Duration::from_secs(10)).await,
        "the server is still handling requests"
    );
    assert_exactly_once(&kit, &org, &receipts);
    let stats = emitter.stats();
    assert!(
        stats.last_error.is_some_and(|e| e.contains("within")),
        "a timeout was seen"
    );
    assert_eq!(stats.delivered, 30);
}

#[tokio::test]
async fn dropped_connections_before_and_after_storing_are_retried_once() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").times(5).drop_connection());
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .times(5)
            .drop_connection()
            .after_storage(),
    );
    let org = org(&kit);
    let emitter = builder(&kit).start();
    let receipts = emit_many(&emitter, &org, 0..40);
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    assert_exactly_once(&kit, &org, &receipts);
    assert_eq!(emitter.stats().delivered, 40);
    assert!(emitter.stats().retried >= 10);
}

#[tokio::test]
async fn a_server_stopped_and_restarted_on_the_same_port_gets_everything_once() {
    let kit = kit().await;
    let org = org(&kit);
    let emitter = builder(&kit).start();
    let mut receipts = emit_many(&emitter, &org, 0..10);
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    kit.stop();
    receipts.extend(emit_many(&emitter, &org, 10..40));
    until("a failed attempt", || emitter.stats().retried > 0).await;
    let stats = emitter.stats();
    assert_eq!(stats.delivered, 10, "nothing delivered while stopped");
    assert!(stats.retried > 0);
    assert_eq!(stats.dead_lettered, 0);
    kit.restart().expect("restart");
    emitter
        .flush(Duration::from_secs(20))
        .await
        .expect("flushed after restart");
    assert_exactly_once(&kit, &org, &receipts);
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (report.delivered, report.dead_lettered, report.pending_at_deadline),
        (40, 0, 0)
    );
}

#[tokio::test]
async fn rejected_events_go_to_the_dead_letter_with_the_reason() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").times(1).respond_json(
        400,
        json!({"message": "Invalid Audit Log event.", "code": "invalid_audit_log_event",
               "errors": [{"instancePath": "/metadata/n"}]}),
    ));
    kit.fault(FaultRule::new(EVENTS).method("POST").times(1).respond_json(
        422,
        json!({"message": "Validation failed.", "errors": [{"code": "required", "field": "event.action"}]}),
    ));
    let org = org(&kit);
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit).senders(1).dead_letters(dead.clone()).start();
    let rejected = emit_many(&emitter, &org, 0..2);
    let ok = emit_many(&emitter, &org, 2..3);
    // An organization the server does not know: a real 404.
    let unknown = OrganizationId::new("org_01UNKNOWNUNKNOWNUNKNOWN000").unwrap();
    let missing = emitter.try_emit(unknown.clone(), event(9)).unwrap();
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    assert_exactly_once(&kit, &org, &ok);
    let letters = dead.letters();
    assert_eq!(letters.len(), 3);
    let by_status = |s: u16| {
        letters
            .iter()
            .find(|l| l.error.as_ref().and_then(|e| e.status) == Some(s))
            .unwrap_or_else(|| panic!("no dead letter with {s}"))
    };
    let bad = by_status(400);
    assert_eq!(bad.reason, DeadLetterReason::Rejected);
    assert_eq!(bad.attempts, 1);
    assert_eq!(bad.idempotency_key, rejected[0].idempotency_key);
    let e = bad.error.as_ref().unwrap();
    assert_eq!(e.code.as_deref(), Some("invalid_audit_log_event"));
    assert_eq!(e.field_errors, ["/metadata/n"]);
    assert!(e.request_id.is_some());
    let unprocessable = by_status(422);
    assert_eq!(unprocessable.idempotency_key, rejected[1].idempotency_key);
    assert_eq!(
        unprocessable.error.as_ref().unwrap().field_errors,
        ["event.action (required)"]
    );
    assert_eq!(unprocessable.event.actor.id, "user_1");
    let not_found = by_status(404);
    assert_eq!(not_found.organization_id, unknown);
    assert_eq!(not_found.idempotency_key, missing.idempotency_key);
    assert_eq!(emitter.stats().dead_lettered, 3);
}

#[tokio::test]
async fn unauthorized_holds_delivery_and_resumes_when_the_key_is_accepted() {
    let kit = kit().await;
    // Enough 401s for the four first attempts in flight and two probes.
    kit.fault(FaultRule::new(EVENTS).method("POST").times(6).respond(401));
    let org = org(&kit);
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit)
        .auth_probe_interval(Duration::from_millis(300), Duration::from_secs(1))
        .dead_letters(dead.clone())
        .start();
    let receipts = emit_many(&emitter, &org, 0..20);
    wait_for_status(&kit, 401).await;
    until("the hold", || emitter.stats().auth_failed).await;
    let held = emitter.stats();
    assert!(held.auth_failed, "{held:?}");
    assert_eq!(held.delivered, 0);
    assert_eq!(held.dead_lettered, 0);
    // At most the attempts already in flight when the first 401 came back were sent.
    assert!(event_posts(&kit).len() <= 4);
    emitter
        .flush(Duration::from_secs(20))
        .await
        .expect("resumed and flushed");
    assert_exactly_once(&kit, &org, &receipts);
    assert!(dead.is_empty());
    let stats = emitter.stats();
    assert!(!stats.auth_failed && stats.held_since.is_none());
}
