//! The loss matrix: one test per fault that could make an accepted event disappear, each
//! asserting where every accepted event ended up: delivered once, dead-lettered with its whole
//! body and key, or still held and counted. Nothing may end "nowhere".
//!
//! Everything talks HTTP over loopback: to audit-testkit, or (for a wrong base URL) to a small
//! web app that is not WorkOS.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audit_core::emitter::{
    DeadLetter, DeadLetterReason, DeadLetterSink, EmitReceipt, Emitter, EmitterBuilder, JsonlDeadLetters,
    MemoryDeadLetters, Overflow, Sink, SinkFuture,
};
use audit_core::{Action, Actor, Client, Context, CreateEvent, Event, OrganizationId};
use audit_test_cases::logs::Logs;
use audit_testkit::{FaultRule, TestKit};
use serde_json::json;
use support::{EVENTS, fast_retries, kit, org, until};

fn client(base_url: &str) -> Client {
    Client::builder()
        .api_key("sk_test_loss_matrix")
        .base_url(base_url)
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("client")
}

fn builder(base_url: &str) -> EmitterBuilder {
    fast_retries(Emitter::builder(client(base_url)))
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user").name("Test User"),
        Context::new("203.0.113.7").user_agent("loss-matrix"),
    )
    // Whole milliseconds, as WorkOS (and a dead letter) keep them.
    .occurred_at(time::OffsetDateTime::from_unix_timestamp(1_790_000_000 + n as i64).unwrap())
    .meta("n", n)
}

fn emit_many(
    emitter: &Emitter,
    org: &OrganizationId,
    range: std::ops::Range<usize>,
) -> Vec<(EmitReceipt, Event)> {
    range
        .map(|n| {
            let e = event(n);
            (emitter.try_emit(org.clone(), e.clone()).expect("accepted"), e)
        })
        .collect()
}

/// Where each accepted event ended up.
#[derive(Debug, Default)]
struct Fate {
    /// Keys stored by the testkit (each at most once).
    delivered: HashSet<String>,
    /// Dead letters by key.
    dead: HashMap<String, DeadLetter>,
}

impl Fate {
    fn of(kit: Option<&TestKit>, dead: &[DeadLetter]) -> Self {
        let mut fate = Fate::default();
        if let Some(kit) = kit {
            for stored in kit.all_events() {
                let key = stored.idempotency_key.clone().expect("key sent");
                assert!(fate.delivered.insert(key.clone()), "{key} stored twice");
            }
        }
        for letter in dead {
            let old = fate.dead.insert(letter.idempotency_key.clone(), letter.clone());
            assert!(old.is_none(), "{} dead-lettered twice", letter.idempotency_key);
        }
        fate
    }

    /// Every accepted event is delivered once or dead-lettered whole (never both, never neither).
    fn assert_accounted(&self, org: &OrganizationId, accepted: &[(EmitReceipt, Event)]) {
        for (receipt, event) in accepted {
            let key = receipt.idempotency_key.as_str();
            let delivered = self.delivered.contains(key);
            match self.dead.get(key) {
                Some(letter) => {
                    assert!(!delivered, "{key} delivered and dead-lettered");
                    assert_eq!(
                        &letter.event, event,
                        "{key}: the dead letter keeps the whole event"
                    );
                    assert_eq!(&letter.organization_id, org);
                }
                None => assert!(delivered, "{key} ended nowhere"),
            }
        }
    }

    fn reasons(&self) -> Vec<DeadLetterReason> {
        self.dead.values().map(|l| l.reason).collect()
    }
}

/// A web app that is not WorkOS, answering every request with `status`, `content_type` and
/// `body`; returns its base URL.
async fn not_workos(status: u16, content_type: Option<&'static str>, body: &'static str) -> String {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || async move {
        let status = StatusCode::from_u16(status).unwrap();
        match content_type {
            Some(ct) => (status, [(header::CONTENT_TYPE, ct)], body).into_response(),
            None => status.into_response(),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn assert_not_workos_dead_letters(base_url: &str, status: u16, quoted: &str) {
    let dead = MemoryDeadLetters::new();
    let emitter = builder(base_url).dead_letters(dead.clone()).start();
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let accepted = emit_many(&emitter, &org, 0..6);
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    let stats = emitter.stats();
    assert_eq!(
        (stats.delivered, stats.dead_lettered, stats.not_workos),
        (0, 6, 6),
        "{stats:?}"
    );
    assert_eq!(stats.retried, 0, "not retried forever");
    let last = stats.last_error.expect("shown in stats");
    assert!(last.contains("check WORKOS_BASE_URL"), "{last}");
    let fate = Fate::of(None, &dead.letters());
    fate.assert_accounted(&org, &accepted);
    assert!(fate.reasons().iter().all(|r| *r == DeadLetterReason::NotWorkOs));
    let letter = fate.dead.values().next().unwrap();
    assert_eq!(letter.attempts, 1);
    let error = letter.error.as_ref().unwrap();
    assert_eq!(error.status, Some(status));
    assert!(
        error
            .message
            .contains("this is not the WorkOS API: check WORKOS_BASE_URL")
            && error.message.contains(quoted),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_wrong_base_url_answering_200_html_dead_letters_every_event() {
    let url = not_workos(
        200,
        Some("text/html; charset=utf-8"),
        "<!doctype html><html><body>Welcome</body></html>",
    )
    .await;
    assert_not_workos_dead_letters(&url, 200, "<!doctype html>").await;
}

#[tokio::test]
async fn a_wrong_base_url_answering_204_dead_letters_every_event() {
    let url = not_workos(204, None, "").await;
    assert_not_workos_dead_letters(&url, 204, "no content type").await;
}

#[tokio::test]
async fn a_200_with_other_json_is_not_a_delivery() {
    let kit = kit().await;
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .respond_json(200, json!({"ok": true})),
    );
    assert_not_workos_dead_letters(&kit.url(), 200, "application/json").await;
    assert!(kit.all_events().is_empty());
}

#[tokio::test]
async fn the_client_refuses_a_success_that_is_not_workos() {
    let url = not_workos(200, Some("text/html"), "<html>login</html>").await;
    let anywhere = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let e = client(&url).create_event(&anywhere, &event(1)).await.unwrap_err();
    assert!(e.is_not_workos(), "{e}");
    assert_eq!(e.status(), Some(200));
    let text = e.to_string();
    assert!(
        text.contains("text/html") && text.contains("<html>login"),
        "{text}"
    );
    // WorkOS's own answer still counts.
    let kit = kit().await;
    client(&kit.url())
        .create_event(&org(&kit), &event(2))
        .await
        .expect("delivered");
}

// ---- shared helpers of the rows below ------------------------------------------------------

/// The captured log written to a file, as an operator would have it.
fn log_file(logs: &Logs, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("app.log");
    std::fs::write(&path, logs.text()).unwrap();
    path
}

fn letters_of(
    entries: Vec<Result<DeadLetter, audit_core::emitter::UnreadableDeadLetter>>,
) -> Vec<DeadLetter> {
    entries.into_iter().map(|e| e.expect("readable")).collect()
}

// ---- dead letters that cannot be written -------------------------------------------------

#[tokio::test]
async fn a_dead_letter_file_on_a_full_disk_keeps_the_event_then_logs_it_whole() {
    let (logs, _guard) = Logs::capture();
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").respond(400));
    let org = org(&kit);
    let full = JsonlDeadLetters::new("/dev/full").expect("opens for appending");
    let emitter = builder(&kit.url()).dead_letters(full).start();
    let accepted = emit_many(&emitter, &org, 0..3);
    until("three failed dead-letter writes", || {
        emitter.stats().dead_letter_failures >= 3
    })
    .await;
    // Still held and counted: not dead-lettered, not gone.
    let stats = emitter.stats();
    assert_eq!((stats.delivered, stats.dead_lettered), (0, 0), "{stats:?}");
    assert_eq!(stats.queued + stats.retrying + stats.in_flight, 3, "{stats:?}");
    let report = emitter.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.dead_lettered, 3);
    // The last resort: every event whole, with its key, in the log, in a form replay reads.
    let dir = tempfile::tempdir().unwrap();
    let log = log_file(&logs, &dir);
    let letters = letters_of(DeadLetter::read_log(&log).unwrap());
    let fate = Fate::of(Some(&kit), &letters);
    fate.assert_accounted(&org, &accepted);
    assert!(fate.reasons().iter().all(|r| *r == DeadLetterReason::Rejected));
    // And recoverable: replayed from the log once WorkOS accepts them.
    kit.clear_faults();
    let again = builder(&kit.url()).start();
    let replay = again.replay_log(&log).await.unwrap();
    assert_eq!((replay.replayed, replay.unreadable.len()), (3, 0));
    again.flush(Duration::from_secs(10)).await.expect("flushed");
    let fate = Fate::of(Some(&kit), &[]);
    fate.assert_accounted(&org, &accepted);
}

#[tokio::test]
async fn without_a_dead_letter_destination_the_log_keeps_whole_events_that_replay_reads() {
    let (logs, _guard) = Logs::capture();
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").times(3).respond(422));
    let org = org(&kit);
    let emitter = builder(&kit.url()).start();
    let accepted = emit_many(&emitter, &org, 0..3);
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    assert_eq!(emitter.stats().dead_lettered, 3);
    let dir = tempfile::tempdir().unwrap();
    let log = log_file(&logs, &dir);
    let letters = letters_of(DeadLetter::read_log(&log).unwrap());
    Fate::of(Some(&kit), &letters).assert_accounted(&org, &accepted);
    // The fault is spent: replaying the log stores each event once, with its original key.
    let replay = emitter.replay_log(&log).await.unwrap();
    assert_eq!(replay.replayed, 3);
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    Fate::of(Some(&kit), &[]).assert_accounted(&org, &accepted);
}

#[tokio::test]
async fn a_torn_jsonl_tail_is_skipped_and_the_next_records_are_whole() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").respond(400));
    let org = org(&kit);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    // A record cut short by a full disk: no closing brace, no newline.
    std::fs::write(
        &path,
        br#"{"organization_id":"org_1","event":{"action":"user.sig"#,
    )
    .unwrap();
    let emitter = builder(&kit.url())
        .dead_letters(JsonlDeadLetters::new(&path).unwrap())
        .start();
    let accepted = emit_many(&emitter, &org, 0..2);
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    let entries = DeadLetter::read_jsonl(&path).unwrap();
    assert_eq!(entries.len(), 3);
    let torn = entries[0].as_ref().unwrap_err();
    assert!(torn.torn && torn.line == 1, "{torn:?}");
    let letters: Vec<DeadLetter> = entries.into_iter().skip(1).map(Result::unwrap).collect();
    Fate::of(Some(&kit), &letters).assert_accounted(&org, &accepted);
    kit.clear_faults();
    let again = builder(&kit.url()).start();
    let replay = again.replay_dead_letters(&path).await.unwrap();
    assert_eq!(replay.replayed, 2);
    assert!(matches!(&replay.unreadable[..], [e] if e.torn));
    again.flush(Duration::from_secs(10)).await.expect("flushed");
    Fate::of(Some(&kit), &[]).assert_accounted(&org, &accepted);
}

// ---- overflow ---------------------------------------------------------------------------------

#[tokio::test]
async fn drop_oldest_dead_letters_what_it_evicts() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").hang());
    let org = org(&kit);
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit.url())
        .senders(1)
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .dead_letters(dead.clone())
        .start();
    let mut accepted = emit_many(&emitter, &org, 0..1);
    until("the first event in flight", || emitter.stats().in_flight == 1).await;
    accepted.extend(emit_many(&emitter, &org, 1..6));
    assert_eq!(emitter.stats().dropped.oldest, 3);
    until("the evicted events' dead letters", || {
        emitter.stats().dead_lettered == 3
    })
    .await;
    let report = emitter.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.dead_lettered, 6);
    let fate = Fate::of(Some(&kit), &dead.letters());
    fate.assert_accounted(&org, &accepted);
    let mut reasons = fate.reasons();
    reasons.sort_by_key(|r| r.as_str());
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == DeadLetterReason::Overflow)
            .count(),
        3,
        "{reasons:?}"
    );
}

#[cfg(feature = "spool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_with_the_spool_spills_and_loses_nothing() {
    use audit_core::emitter::Spool;
    let kit = kit().await;
    kit.stop();
    let org = org(&kit);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit.url())
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .spool(Spool::open(&path).unwrap())
        .dead_letters(dead.clone())
        .start();
    let mut accepted = emit_many(&emitter, &org, 0..10);
    let durable = event(10);
    let receipt = emitter
        .emit_durable(org.clone(), durable.clone())
        .await
        .expect("durable");
    accepted.push((receipt, durable));
    let stats = emitter.stats();
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    assert_eq!(stats.spool.as_ref().unwrap().depth, 11);
    emitter.shutdown(Duration::from_millis(100)).await;
    assert!(dead.is_empty(), "kept in the spool, not dead-lettered");
    kit.restart().expect("restart");
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.recovered(), 11);
    let next = builder(&kit.url()).spool(spool).start();
    next.flush(Duration::from_secs(20)).await.expect("flushed");
    Fate::of(Some(&kit), &[]).assert_accounted(&org, &accepted);
    next.shutdown(Duration::from_secs(5)).await;
}

// ---- authorization --------------------------------------------------------------------------

#[tokio::test]
async fn a_401_holds_then_recovers_probing_with_a_rotating_event() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").times(3).respond(401));
    let org = org(&kit);
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit.url())
        .senders(1)
        .auth_probe_interval(Duration::from_millis(50), Duration::from_millis(200))
        .dead_letters(dead.clone())
        .start();
    let accepted = emit_many(&emitter, &org, 0..10);
    until("the hold", || emitter.stats().held_since.is_some()).await;
    emitter
        .flush(Duration::from_secs(20))
        .await
        .expect("resumed and flushed");
    let stats = emitter.stats();
    assert!(stats.held_since.is_none() && !stats.auth_failed);
    assert!(dead.is_empty());
    Fate::of(Some(&kit), &[]).assert_accounted(&org, &accepted);
    // Every refused attempt carried a different event: the probe rotates.
    let refused: HashSet<String> = kit
        .requests()
        .into_iter()
        .filter(|r| r.path == EVENTS && r.status == 401)
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
}

#[tokio::test]
async fn a_403_for_one_organization_dead_letters_its_events_and_delivers_the_others() {
    // One WorkOS that refuses one organization (403) and accepts the other.
    let (bad, good) = (
        OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNA").unwrap(),
        OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNB").unwrap(),
    );
    let kit = TestKit::builder()
        .org(bad.as_str())
        .org(good.as_str())
        .start()
        .await
        .expect("testkit starts");
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .organization(bad.as_str())
            .respond(403),
    );
    let dead = MemoryDeadLetters::new();
    let emitter = Emitter::builder(client(&kit.url()))
        .senders(2)
        .no_rate_limit()
        .auth_probe_interval(Duration::from_millis(50), Duration::from_millis(200))
        .dead_letters(dead.clone())
        .start();
    let mut refused = Vec::new();
    let mut delivered = Vec::new();
    for n in 0..20 {
        if n % 2 == 0 {
            refused.extend(emit_many(&emitter, &bad, n..n + 1));
        } else {
            delivered.extend(emit_many(&emitter, &good, n..n + 1));
        }
    }
    emitter
        .flush(Duration::from_secs(20))
        .await
        .expect("nobody held forever");
    let stats = emitter.stats();
    assert!(stats.held_since.is_none(), "{stats:?}");
    let fate = Fate::of(Some(&kit), &dead.letters());
    fate.assert_accounted(&good, &delivered);
    fate.assert_accounted(&bad, &refused);
    assert!(kit.events(bad.as_str()).is_empty());
    assert_eq!(kit.events(good.as_str()).len(), delivered.len());
    assert_eq!(fate.dead.len(), refused.len());
    assert!(
        fate.dead
            .values()
            .all(|l| l.error.as_ref().and_then(|e| e.status) == Some(403))
    );
}

// ---- panics -------------------------------------------------------------------------------------

/// The WorkOS client, except that its first `panics` attempts panic.
struct Panicking {
    client: Client,
    panics: AtomicUsize,
}

impl Sink for Panicking {
    fn send<'a>(&'a self, body: &'a CreateEvent, key: &'a str) -> SinkFuture<'a> {
        if self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("sink bug");
        }
        self.client.send(body, key)
    }
}

#[tokio::test]
async fn a_panicking_sink_costs_a_retry_not_the_event_or_the_sender() {
    let kit = kit().await;
    let org = org(&kit);
    let emitter = Emitter::builder(Panicking {
        client: client(&kit.url()),
        panics: AtomicUsize::new(3),
    })
    .senders(1)
    .no_rate_limit()
    .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
    .start();
    let accepted = emit_many(&emitter, &org, 0..5);
    emitter
        .flush(Duration::from_secs(20))
        .await
        .expect("flushed by the one sender");
    let stats = emitter.stats();
    assert_eq!(
        (stats.delivered, stats.panics, stats.dead_lettered),
        (5, 3, 0),
        "{stats:?}"
    );
    Fate::of(Some(&kit), &[]).assert_accounted(&org, &accepted);
}

#[tokio::test]
async fn a_panicking_dead_letter_callback_keeps_the_event_until_it_is_recorded() {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").respond(422));
    let org = org(&kit);
    let recorded = MemoryDeadLetters::new();
    let panics = Arc::new(AtomicUsize::new(1));
    let (sink, left) = (recorded.clone(), Arc::clone(&panics));
    let emitter = builder(&kit.url())
        .senders(1)
        .on_dead_letter(move |letter| {
            if left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("callback bug");
            }
            sink.dead_letter(&letter).unwrap();
        })
        .start();
    let accepted = emit_many(&emitter, &org, 0..2);
    until("the panic and the next dead letter", || {
        emitter.stats().dead_lettered == 1
    })
    .await;
    // The event whose dead letter panicked is still held; the next one was recorded.
    let stats = emitter.stats();
    assert_eq!((stats.panics, stats.dead_letter_failures), (1, 1), "{stats:?}");
    assert_eq!(stats.retrying + stats.queued + stats.in_flight, 1, "{stats:?}");
    // Its write is tried again (after a second) and succeeds.
    emitter
        .flush(Duration::from_secs(10))
        .await
        .expect("recorded on the retry");
    assert_eq!(emitter.stats().dead_lettered, 2);
    Fate::of(Some(&kit), &recorded.letters()).assert_accounted(&org, &accepted);
}
