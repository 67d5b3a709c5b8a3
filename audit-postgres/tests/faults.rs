//! The outbox under real conditions on a real PostgreSQL (`DATABASE_URL`), delivering to
//! audit-testkit over loopback: retried transactions, values the database refuses, a request
//! that never answers, a refused API key, a panicking sink, 429s, unreadable dead letters and
//! wake-ups without NOTIFY.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use audit_core::adapter::{Decision, RequestAudit, RequestInfo, ResponseInfo};
use audit_core::emitter::SinkFuture;
use audit_core::request::{AuditHandle, AuditPolicy};
use audit_core::{Action, Actor, Client, CreateEvent, Error, Sink};
use audit_postgres::{Outbox, OutboxAudit, OutboxError};
use audit_testkit::{FaultRule, TestKit};
use common::*;

const EVENTS: &str = "/audit_logs/events";

fn post_fault() -> FaultRule {
    FaultRule::new(EVENTS).method("POST")
}

/// POSTs of events per idempotency key.
fn posts_by_key(kit: &TestKit) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in kit.requests() {
        if r.method == "POST" && r.path == EVENTS {
            let key = r.header("idempotency-key").unwrap_or_default().to_owned();
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

fn event_posts(kit: &TestKit) -> usize {
    posts_by_key(kit).values().sum()
}

async fn depth(outbox: &Outbox) -> u64 {
    outbox.stats().await.unwrap().depth
}

fn request_record() -> RequestAudit {
    let record = RequestAudit::captured(
        RequestInfo::new("203.0.113.9").user_agent("retry-test"),
        Some(Actor::new("user_01", "user")),
        Some(audit_core::OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap()),
    );
    record.set_action(Action::new("invoice.paid").unwrap());
    record
}

#[tokio::test]
async fn a_retried_transaction_writes_the_requests_event_again() {
    let Some(outbox) = outbox("write_in_retry").await else {
        return;
    };
    let record = request_record();
    let audit = AuditHandle::new(Some(record.clone()));

    // First attempt: written, a second call in the same transaction is refused, then the
    // transaction fails (as after a serialization failure) and is rolled back.
    let mut tx = outbox.pool().begin().await.unwrap();
    let first = audit.write_in(&outbox, &mut tx).await.unwrap();
    let again = audit.write_in(&outbox, &mut tx).await.unwrap_err();
    assert!(matches!(again, OutboxError::AlreadyWritten), "{again}");
    tx.rollback().await.unwrap();
    assert_eq!(depth(&outbox).await, 0);

    // The retry writes the same event again, under the same key, and commits.
    let mut tx = outbox.pool().begin().await.unwrap();
    let second = audit.write_in(&outbox, &mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first, second);
    let keys: Vec<String> =
        sqlx::query_scalar(r#"SELECT idempotency_key FROM "t_write_in_retry".audit_outbox"#)
            .fetch_all(outbox.pool())
            .await
            .unwrap();
    assert_eq!(keys, vec![first]);
    // The layer emits nothing more for the request.
    assert!(matches!(
        record.finish(&AuditPolicy::default(), &ResponseInfo::new(200)),
        Decision::Skip(_)
    ));
}

#[tokio::test]
async fn write_in_says_why_nothing_was_written_and_a_failed_write_leaves_the_event_to_the_layer() {
    let Some(outbox) = outbox("write_in_errors").await else {
        return;
    };
    let mut conn = outbox.pool().acquire().await.unwrap();
    let off = AuditHandle::new(None)
        .write_in(&outbox, &mut conn)
        .await
        .unwrap_err();
    assert!(matches!(off, OutboxError::AuditOff), "{off}");
    let unannotated = RequestAudit::captured(
        RequestInfo::new("203.0.113.9"),
        Some(Actor::new("u", "user")),
        None,
    );
    let err = AuditHandle::new(Some(unannotated))
        .write_in(&outbox, &mut conn)
        .await
        .unwrap_err();
    assert!(matches!(err, OutboxError::NotAnnotated), "{err}");
    drop(conn);

    // A write that fails (the transaction is already aborted): the record is not used up, so
    // the layer emits the event after the response.
    let record = request_record();
    let audit = AuditHandle::new(Some(record.clone()));
    let mut tx = outbox.pool().begin().await.unwrap();
    assert!(sqlx::query("SELECT 1/0").execute(&mut *tx).await.is_err());
    let err = audit.write_in(&outbox, &mut tx).await.unwrap_err();
    assert!(matches!(err, OutboxError::Database(_)), "{err}");
    tx.rollback().await.unwrap();
    match record.finish(&AuditPolicy::default(), &ResponseInfo::new(200)) {
        Decision::Emit { event, .. } => assert_eq!(event.action.as_str(), "invoice.paid"),
        other => panic!("the layer should emit the event: {other:?}"),
    }
    assert_eq!(depth(&outbox).await, 0);
}

fn with_nul(n: usize) -> audit_core::Event {
    event(n).meta("note", "before\u{0}after")
}

#[tokio::test]
async fn a_value_postgresql_refuses_fails_alone_and_names_its_field() {
    let Some(outbox) = outbox("refused_row").await else {
        return;
    };
    let org = audit_core::OrganizationId::new("org_1").unwrap();
    // Through Outbox::write: an error naming the field, whichever check catches it first.
    let mut conn = outbox.pool().acquire().await.unwrap();
    let err = outbox.write(&mut conn, &org, &with_nul(0)).await.unwrap_err();
    match &err {
        OutboxError::Refused { field, code, .. } => {
            assert_eq!(field, "/metadata/note", "{err}");
            assert_eq!(code, "22P05", "{err}");
        }
        OutboxError::Invalid(errors) => {
            assert!(errors.pointers().any(|p| p == "/metadata/note"), "{err}");
        }
        other => panic!("expected an error naming the field: {other}"),
    }
    drop(conn);

    // Through the emitter's sink, grouped with neighbours: only the refused event fails, for
    // good (not a transport error retried for an hour), and the others are committed.
    let sink = outbox.sink();
    let bodies: Vec<CreateEvent> = (0..5)
        .map(|n| CreateEvent::new(org.clone(), if n == 2 { with_nul(n) } else { event(n) }))
        .collect();
    let keys: Vec<String> = (0..5).map(|n| format!("key-{n}")).collect();
    let results =
        futures_util::future::join_all(bodies.iter().zip(&keys).map(|(b, k)| sink.send(b, k))).await;
    for (n, result) in results.iter().enumerate() {
        if n == 2 {
            match result {
                Err(Error::InvalidParameter { field, message }) => {
                    assert_eq!(*field, "event");
                    assert!(message.contains("/metadata/note"), "{message}");
                }
                other => panic!("event 2: {other:?}"),
            }
        } else {
            assert!(result.is_ok(), "event {n}: {result:?}");
        }
    }
    assert!(matches!(
        audit_core::retry::classify(results[2].as_ref().unwrap_err()),
        audit_core::retry::Disposition::Permanent(_)
    ));
    assert_eq!(depth(&outbox).await, 4);
}

#[tokio::test]
async fn a_request_that_never_answers_does_not_get_its_batch_sent_twice() {
    let Some((outbox, kit, org)) = delivery("hung_request").await else {
        return;
    };
    let keys = write_many(&outbox, &org, 0..64).await;
    // The first request hangs beyond the client's timeout; the lease (300 ms) is far shorter
    // than that timeout (10 s), so only lease extension keeps other relays off the batch.
    kit.fault(post_fault().times(1).latency(Duration::from_secs(60)));
    let slow_client = Client::builder()
        .api_key("sk_test_outbox")
        .base_url(kit.url())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let first = outbox
        .relay(slow_client)
        .no_rate_limit()
        .tasks(1)
        .batch_size(64)
        .max_in_flight(64)
        .lease(Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .instance_id("first")
        .start()
        .unwrap();
    wait_until(Duration::from_secs(10), "64 requests", || async {
        event_posts(&kit) >= 64
    })
    .await;
    // The 63 answered rows are deleted as they return, while the hung one is still in flight.
    wait_until(Duration::from_secs(8), "63 rows deleted", || async {
        depth(&outbox).await == 1
    })
    .await;
    let second = relay(&outbox, &kit).instance_id("second").start().unwrap();
    wait_drained(&outbox, Duration::from_secs(40)).await;
    assert_exactly_once(&kit, &org, &keys);
    let posts = posts_by_key(&kit);
    let resent: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    // Only the hung request's row is sent again (after its timeout), never an answered one.
    assert_eq!(resent.len(), 1, "{resent:?}");
    first.shutdown(Duration::from_secs(5)).await;
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_refused_key_holds_the_fleet_with_one_probe_at_a_time() {
    let Some((outbox, kit, org)) = delivery("auth_hold").await else {
        return;
    };
    kit.fault(post_fault().respond(401));
    let keys = write_many(&outbox, &org, 0..40).await;
    let relays: Vec<_> = (0..3)
        .map(|i| {
            relay(&outbox, &kit)
                .auth_probe_interval(Duration::from_millis(300), Duration::from_millis(300))
                .retry_window(Duration::from_millis(500))
                .instance_id(format!("hold_{i}"))
                .start()
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Three relays with 2 tasks and batches of 8 would send hundreds of requests in 3 s; held,
    // the fleet sends at most the batches already in flight when the first 401 came back (each
    // task's first claim: 3 × 2 × 8) and then one probe per 300 ms (10 in 3 s, with slack for a
    // loaded machine).
    let refused = event_posts(&kit);
    assert!(
        refused <= 3 * 2 * 8 + 10 + 6,
        "{refused} requests during the hold"
    );
    assert!(refused >= 2, "the hold probes ({refused})");
    // Nothing dead-lettered although the retry window (500 ms) went by: refusals do not count.
    let stats = outbox.stats().await.unwrap();
    assert_eq!((stats.depth, stats.dead_letters), (40, 0));
    let started: i64 = sqlx::query_scalar(
        r#"SELECT count(*) FROM "t_auth_hold".audit_outbox WHERE first_attempt_at IS NOT NULL"#,
    )
    .fetch_one(outbox.pool())
    .await
    .unwrap();
    assert_eq!(
        started, 0,
        "refused or unsent rows have not started their retry window"
    );
    // The key works again: the next probe ends the hold and everything is delivered.
    kit.clear_faults();
    wait_drained(&outbox, Duration::from_secs(15)).await;
    assert_exactly_once(&kit, &org, &keys);
    let mut unauthorized = 0;
    for r in relays {
        unauthorized += r.shutdown(Duration::from_secs(5)).await.stats.unauthorized;
    }
    let answered_401 = kit.requests().iter().filter(|r| r.status == 401).count();
    // Each 401 the relays read was counted (one read as a client timeout on a loaded machine is
    // not).
    assert!(
        unauthorized >= 1 && unauthorized as usize <= answered_401,
        "{unauthorized} counted, {answered_401} answered"
    );
    assert_eq!(outbox.stats().await.unwrap().dead_letters, 0);
}

/// A sink that panics on its first call, then delivers through a client.
struct PanicsOnce {
    client: Client,
    panicked: AtomicBool,
}

impl Sink for PanicsOnce {
    fn send<'a>(&'a self, body: &'a CreateEvent, key: &'a str) -> SinkFuture<'a> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("the sink broke");
        }
        self.client.send(body, key)
    }
}

#[tokio::test]
async fn a_panicking_sink_is_counted_and_delivery_goes_on() {
    let Some((outbox, kit, org)) = delivery("sink_panic").await else {
        return;
    };
    let keys = write_many(&outbox, &org, 0..10).await;
    let sink = PanicsOnce {
        client: client(&kit),
        panicked: AtomicBool::new(false),
    };
    let relay = outbox
        .relay(sink)
        .no_rate_limit()
        .tasks(2)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start()
        .unwrap();
    wait_drained(&outbox, Duration::from_secs(15)).await;
    assert_exactly_once(&kit, &org, &keys);
    let stats = relay.stats();
    assert_eq!(stats.sink_panics, 1);
    assert_eq!(stats.live_tasks, 2);
    let report = relay.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(report.stats.live_tasks, 0);
    assert_eq!(report.stats.delivered, 10);
}

#[tokio::test]
async fn a_429_without_retry_after_pauses_the_fleet_and_stops_the_batch() {
    let Some((outbox, kit, org)) = delivery("bare_429").await else {
        return;
    };
    kit.fault(post_fault().times(1).respond(429));
    let keys = write_many(&outbox, &org, 0..16).await;
    // Two tasks of one instance, one request at a time between them: when the 429 arrives,
    // nothing else is in flight, and the other task's batch must stop too.
    let relays = vec![relay(&outbox, &kit).tasks(2).max_in_flight(1).start().unwrap()];
    let limited = kit
        .wait_for_request(Duration::from_secs(10), |r| r.status == 429)
        .await
        .expect("the 429 is answered");
    wait_drained(&outbox, Duration::from_secs(20)).await;
    assert_exactly_once(&kit, &org, &keys);
    // Nothing was sent in the second that followed, by either relay.
    let resume = limited.received_at + time::Duration::milliseconds(900);
    for r in kit
        .requests()
        .iter()
        .filter(|r| r.path == EVENTS && r.seq > limited.seq)
    {
        assert!(r.received_at >= resume, "request {} sent during the pause", r.seq);
    }
    let mut rate_limited = 0;
    for r in relays {
        rate_limited += r.shutdown(Duration::from_secs(5)).await.stats.rate_limited;
    }
    assert_eq!(rate_limited, 1);
}

#[tokio::test]
async fn an_unreadable_dead_letter_does_not_fail_the_listing() {
    let Some((outbox, kit, org)) = delivery("bad_dead_letter").await else {
        return;
    };
    kit.fault(post_fault().times(1).respond(422));
    write_many(&outbox, &org, 0..1).await;
    let relay = relay(&outbox, &kit).start().unwrap();
    wait_drained(&outbox, Duration::from_secs(10)).await;
    relay.shutdown(Duration::from_secs(5)).await;
    sqlx::query(
        r#"INSERT INTO "t_bad_dead_letter".audit_outbox_dead_letters
           (organization_id, idempotency_key, event, reason, attempts, created_at)
           VALUES ('org_1', 'k-bad', '{"not":"an event"}', 'rejected', 1, now())"#,
    )
    .execute(outbox.pool())
    .await
    .unwrap();
    let letters = outbox.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let bad = outbox.undecodable_dead_letters(10).await.unwrap();
    assert_eq!(bad.len(), 1);
    assert!(bad[0].row.contains("k-bad"), "{:?}", bad[0]);
    assert_ne!(bad[0].id, letters[0].id);
}

#[tokio::test]
async fn a_commit_in_this_process_wakes_its_relays_at_once_without_notify() {
    let Some((outbox, kit, org)) = delivery("local_wake").await else {
        return;
    };
    // A long idle poll: only the in-process wake-up can deliver quickly.
    let relay = relay(&outbox, &kit)
        .poll_interval(Duration::from_secs(30))
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 't_local_wake' AND NOT t.tgisinternal",
    )
    .fetch_one(outbox.pool())
    .await
    .unwrap();
    assert_eq!(triggers, 0, "business commits take no NOTIFY lock");
    for n in 0..5 {
        let mut tx = outbox.pool().begin().await.unwrap();
        outbox.write(&mut tx, &org, &event(n)).await.unwrap();
        // The handler's work after the write: the row is not visible yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.commit().await.unwrap();
        let committed = Instant::now();
        wait_until(Duration::from_secs(5), "the row to be delivered", || async {
            kit.events(org.as_str()).len() == n + 1
        })
        .await;
        assert!(
            committed.elapsed() < Duration::from_millis(500),
            "delivered {:?} after the commit",
            committed.elapsed()
        );
    }
    relay.shutdown(Duration::from_secs(5)).await;
}
