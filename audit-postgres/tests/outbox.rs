//! The outbox on a real PostgreSQL (`DATABASE_URL`) delivering to audit-testkit over loopback.
//! Each test works in its own schema, so they run in parallel.

mod common;

use std::time::Duration;

use audit_core::emitter::{DeadLetterReason, EmitOptions};
use audit_postgres::{FleetRateLimit, Outbox, OutboxError, Relay, RelayStats};
use audit_testkit::{FaultRule, FaultWhen};
use common::*;

const EVENTS: &str = "/audit_logs/events";

/// A fault on the event POSTs the relays send.
fn post_fault() -> FaultRule {
    FaultRule::new(EVENTS).method("POST")
}

/// Shuts each relay down (5 s each) and returns their final counters.
async fn shut_down(relays: Vec<Relay>) -> Vec<RelayStats> {
    let mut stats = Vec::with_capacity(relays.len());
    for r in relays {
        stats.push(r.shutdown(Duration::from_secs(5)).await.stats);
    }
    stats
}

#[tokio::test]
async fn migrations_applied_twice_are_a_no_op() {
    let Some(outbox) = outbox("migrations_twice").await else {
        return;
    };
    // `outbox()` applied them once already.
    assert_eq!(outbox.migrate().await.unwrap(), Vec::<i64>::new());
    assert_eq!(outbox.migrate().await.unwrap(), Vec::<i64>::new());
    let versions: Vec<i64> =
        sqlx::query_scalar(r#"SELECT version FROM "t_migrations_twice".audit_outbox_migrations"#)
            .fetch_all(outbox.pool())
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 2]);
    // The application's sqlx migration table is left alone.
    let sqlx_table: Option<String> =
        sqlx::query_scalar(r#"SELECT to_regclass('"t_migrations_twice"._sqlx_migrations')::text"#)
            .fetch_one(outbox.pool())
            .await
            .unwrap();
    assert_eq!(sqlx_table, None);
    // A fresh schema gets every shipped migration, concurrently started or not.
    let other = Outbox::with_schema(outbox.pool().clone(), "t_migrations_twice_b").unwrap();
    sqlx::query(r#"DROP SCHEMA IF EXISTS "t_migrations_twice_b" CASCADE"#)
        .execute(outbox.pool())
        .await
        .unwrap();
    // Each migration runs in a transaction of its own under an advisory lock, so two migrators
    // started together may share the work: every migration is applied exactly once, by one of them.
    let (a, b) = tokio::join!(other.migrate(), other.migrate());
    let mut applied = [a.unwrap(), b.unwrap()].concat();
    applied.sort();
    assert_eq!(applied, vec![1, 2]);
    assert_eq!(other.stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_written() {
    assert!(matches!(
        Outbox::with_schema(
            sqlx::PgPool::connect_lazy("postgres://x@127.0.0.1/x").unwrap(),
            "Bad-Name"
        ),
        Err(OutboxError::InvalidSchema { .. })
    ));
    let Some(outbox) = outbox("bad_input").await else {
        return;
    };
    let org = audit_core::OrganizationId::new("org_1").unwrap();
    let mut conn = outbox.pool().acquire().await.unwrap();
    let invalid = audit_core::Event::new(
        audit_core::Action::new("invoice.paid").unwrap(),
        audit_core::Actor::new("", "user"),
        audit_core::Context::new(" "),
    );
    let err = outbox.write(&mut conn, &org, &invalid).await.unwrap_err();
    let OutboxError::Invalid(errors) = &err else {
        panic!("{err}")
    };
    let fields: Vec<&str> = errors.pointers().collect();
    assert_eq!(fields, ["/actor/id", "/context/location"], "{err}");
    let err = outbox
        .write_with(
            &mut conn,
            &org,
            &event(2),
            &EmitOptions::new().idempotency_key("has space"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, OutboxError::InvalidIdempotencyKey(_)), "{err}");
    assert_eq!(outbox.stats().await.unwrap().depth, 0);
}

#[tokio::test]
async fn an_event_exists_if_and_only_if_its_transaction_commits() {
    let Some((outbox, kit, org)) = delivery("atomicity").await else {
        return;
    };
    sqlx::query(r#"CREATE TABLE "t_atomicity".invoices (id bigint PRIMARY KEY, paid boolean NOT NULL)"#)
        .execute(outbox.pool())
        .await
        .unwrap();
    let relay = relay(&outbox, &kit).start().unwrap();

    let mut tx = outbox.pool().begin().await.unwrap();
    sqlx::query(r#"INSERT INTO "t_atomicity".invoices VALUES (1, true)"#)
        .execute(&mut *tx)
        .await
        .unwrap();
    let rolled_back = outbox.write(&mut tx, &org, &event(1)).await.unwrap();
    tx.rollback().await.unwrap();

    let mut tx = outbox.pool().begin().await.unwrap();
    sqlx::query(r#"INSERT INTO "t_atomicity".invoices VALUES (2, true)"#)
        .execute(&mut *tx)
        .await
        .unwrap();
    let committed = outbox.write(&mut tx, &org, &event(2)).await.unwrap();
    // Not visible (so not delivered) before the commit.
    assert_eq!(outbox.stats().await.unwrap().depth, 0);
    tx.commit().await.unwrap();

    kit.wait_for_request(Duration::from_secs(10), |r| r.path == EVENTS)
        .await
        .expect("the committed event is delivered");
    wait_drained(&outbox, Duration::from_secs(10)).await;
    assert_exactly_once(&kit, &org, std::slice::from_ref(&committed));
    assert_ne!(rolled_back, committed);
    let report = relay.shutdown(Duration::from_secs(5)).await;
    assert!(report.clean);
    assert_eq!(report.stats.delivered, 1);
    let paid: i64 = sqlx::query_scalar(r#"SELECT COUNT(*) FROM "t_atomicity".invoices"#)
        .fetch_one(outbox.pool())
        .await
        .unwrap();
    assert_eq!(paid, 1);
}

/// `relays` instances on one table, the testkit failing a seeded 30 % of requests with 500.
async fn relays_share_one_table_through_500s(test: &str, relays: usize) {
    let Some((outbox, kit, org)) = delivery(test).await else {
        return;
    };
    kit.fault(post_fault().share(0.3, 7).respond(500));
    let keys = write_many(&outbox, &org, 0..90).await;
    let running: Vec<_> = (0..relays)
        .map(|i| {
            relay(&outbox, &kit)
                .instance_id(format!("relay-{i}"))
                .start()
                .unwrap()
        })
        .collect();
    wait_drained(&outbox, Duration::from_secs(60)).await;
    assert_exactly_once(&kit, &org, &keys);
    let delivered: u64 = shut_down(running).await.iter().map(|s| s.delivered).sum();
    assert_eq!(delivered, 90);
    assert_eq!(outbox.stats().await.unwrap().dead_letters, 0);
}

#[tokio::test]
async fn two_relays_share_one_table_through_500s() {
    relays_share_one_table_through_500s("two_relays_500", 2).await;
}

#[tokio::test]
async fn three_relays_share_one_table_through_500s() {
    relays_share_one_table_through_500s("three_relays_500", 3).await;
}

#[tokio::test]
async fn ambiguous_502s_after_storing_and_connection_resets_store_each_event_once() {
    let Some((outbox, kit, org)) = delivery("ambiguous").await else {
        return;
    };
    // Stored, then answered 502: the relay cannot know, and retries with the same key.
    kit.fault(post_fault().share(0.25, 11).respond(502).when(FaultWhen::After));
    // Stored, then the connection closed without an answer.
    kit.fault(
        post_fault()
            .share(0.15, 12)
            .drop_connection()
            .when(FaultWhen::After),
    );
    // Reset before anything is stored.
    kit.fault(post_fault().share(0.15, 13).drop_connection());
    let keys = write_many(&outbox, &org, 0..60).await;
    let relays: Vec<_> = (0..3).map(|_| relay(&outbox, &kit).start().unwrap()).collect();
    wait_drained(&outbox, Duration::from_secs(60)).await;
    assert_exactly_once(&kit, &org, &keys);
    let retried: u64 = shut_down(relays).await.iter().map(|s| s.retried).sum();
    assert!(retried > 0, "the faults caused retries");
}

#[tokio::test]
async fn a_killed_relays_leases_are_taken_over_without_loss_or_duplicates() {
    let Some((outbox, kit, org)) = delivery("killed_relay").await else {
        return;
    };
    let keys = write_many(&outbox, &org, 0..20).await;
    // Every request of the doomed instance is stored, then its answer is held back.
    kit.fault(
        post_fault()
            .times(20)
            .latency(Duration::from_secs(30))
            .when(FaultWhen::After),
    );
    // The doomed instance runs on a runtime of its own, which is then shut down mid-delivery:
    // its tasks vanish as if the process had been killed.
    let doomed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let doomed = {
        let _guard = doomed_runtime.enter();
        // Its own pool, as another process would have, living on its runtime.
        let options = (*outbox.pool().connect_options()).clone();
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(options);
        let own = Outbox::with_schema(own, outbox.schema()).unwrap();
        relay(&own, &kit)
            .tasks(1)
            .batch_size(20)
            .max_in_flight(20)
            .lease(Duration::from_millis(1500))
            .instance_id("doomed")
            .start()
            .unwrap()
    };
    wait_until(
        Duration::from_secs(10),
        "the doomed relay's requests to be stored",
        || async { kit.events(org.as_str()).len() == 20 },
    )
    .await;
    let held = outbox.stats().await.unwrap();
    assert_eq!(held.leases_held, 20, "{held:?}");
    std::mem::forget(doomed);
    doomed_runtime.shutdown_background();

    let survivor = relay(&outbox, &kit).instance_id("survivor").start().unwrap();
    wait_drained(&outbox, Duration::from_secs(20)).await;
    assert_exactly_once(&kit, &org, &keys);
    assert_eq!(
        survivor.shutdown(Duration::from_secs(5)).await.stats.delivered,
        20
    );
    kit.clear_faults();
}

#[tokio::test]
async fn rows_waiting_for_a_request_slot_are_given_back_before_their_lease_ends() {
    let Some((outbox, kit, org)) = delivery("slot_wait").await else {
        return;
    };
    let keys = write_many(&outbox, &org, 0..24).await;
    // Each request takes 300 ms and each relay sends one at a time: a batch of 8 would need
    // 2.4 s, beyond the 2 s lease. Rows not sent within half the lease go back to the table.
    kit.fault(post_fault().latency(Duration::from_millis(300)));
    let relays: Vec<Relay> = (0..2)
        .map(|i| {
            relay(&outbox, &kit)
                .tasks(1)
                .batch_size(8)
                .max_in_flight(1)
                .lease(Duration::from_secs(2))
                .instance_id(format!("slot_{i}"))
                .start()
                .unwrap()
        })
        .collect();
    wait_drained(&outbox, Duration::from_secs(30)).await;
    assert_exactly_once(&kit, &org, &keys);
    let stats = shut_down(relays).await;
    // No lease ran out under a row: each event was sent once, plus once per retried attempt (a
    // client timeout on a loaded machine), never by a second relay.
    let retried: u64 = stats.iter().map(|s| s.retried).sum();
    let posts = kit
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == EVENTS)
        .count();
    assert_eq!(posts as u64, 24 + retried);
    let claimed: u64 = stats.iter().map(|s| s.claimed).sum();
    let released: u64 = stats.iter().map(|s| s.released).sum();
    assert!(released > 0, "rows were given back");
    assert_eq!(
        claimed,
        24 + released + retried,
        "each given-back or retried row was claimed once more"
    );
    assert_eq!(stats.iter().map(|s| s.delivered).sum::<u64>(), 24);
}

#[tokio::test]
async fn three_relays_together_stay_within_the_fleet_rate_limit() {
    let Some((outbox, kit, org)) = delivery("fleet_rate").await else {
        return;
    };
    let (rate, burst, n) = (20.0, 5usize, 70usize);
    let keys = write_many(&outbox, &org, 0..n).await;
    let limit = FleetRateLimit::per_second(20).unwrap().burst(burst as u32);
    let relays: Vec<_> = (0..3)
        .map(|_| relay(&outbox, &kit).rate_limit(limit).start().unwrap())
        .collect();
    wait_drained(&outbox, Duration::from_secs(30)).await;
    assert_exactly_once(&kit, &org, &keys);
    let mut at: Vec<f64> = kit
        .requests()
        .iter()
        .filter(|r| r.path == EVENTS)
        .map(|r| (r.received_at.unix_timestamp_nanos() as f64) / 1e9)
        .collect();
    at.sort_by(f64::total_cmp);
    // A token bucket allows at most `burst + rate · t` requests in any window of length t, as
    // granted; arrival times bunch by the time between a grant and its request's arrival (the
    // claim, a new connection's set-up, a busy machine), allowed for with 250 ms. Three relays
    // each limiting themselves alone would send three times the rate, far beyond this.
    for (i, start) in at.iter().enumerate() {
        for (j, end) in at.iter().enumerate().skip(i) {
            let allowed = burst as f64 + rate * (end - start + 0.25) + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} requests in {:.3}s exceed the fleet limit ({allowed:.1})",
                j - i + 1,
                end - start
            );
        }
    }
    let span = at[at.len() - 1] - at[0];
    assert!(
        span >= (n - burst) as f64 / rate * 0.9,
        "{n} requests took only {span:.3}s"
    );
    // Every instance took part.
    for stats in shut_down(relays).await {
        assert!(stats.delivered > 0, "{stats:?}");
    }
}

#[tokio::test]
async fn a_retry_after_pauses_every_relay() {
    let Some((outbox, kit, org)) = delivery("retry_after").await else {
        return;
    };
    kit.fault(post_fault().times(1).respond(429).retry_after("2"));
    let relays: Vec<_> = (0..3).map(|_| relay(&outbox, &kit).start().unwrap()).collect();
    let mut keys = write_many(&outbox, &org, 0..1).await;
    let limited = kit
        .wait_for_request(Duration::from_secs(10), |r| r.status == 429)
        .await
        .expect("the 429 is answered");
    // Wait until the pause is recorded (the relay writes it right after the answer).
    wait_until(Duration::from_secs(5), "the pause to be recorded", || async {
        relays.iter().map(|r| r.stats().rate_limited).sum::<u64>() == 1
    })
    .await;
    keys.extend(write_many(&outbox, &org, 1..30).await);
    wait_drained(&outbox, Duration::from_secs(20)).await;
    assert_exactly_once(&kit, &org, &keys);
    let resume = limited.received_at + time::Duration::seconds(2) - time::Duration::milliseconds(50);
    for r in kit
        .requests()
        .iter()
        .filter(|r| r.path == EVENTS && r.seq != limited.seq)
    {
        assert!(r.received_at >= resume, "request {} sent during the pause", r.seq);
    }
    let delivered: u64 = shut_down(relays).await.iter().map(|s| s.delivered).sum();
    assert_eq!(delivered, 30);
}

#[tokio::test]
async fn rejected_events_are_dead_lettered_and_replayed_with_their_keys() {
    let Some((outbox, kit, org)) = delivery("dead_letters").await else {
        return;
    };
    kit.fault(post_fault().times(2).respond_json(
        422,
        serde_json::json!({"message": "Validation failed.", "code": "invalid_audit_log"}),
    ));
    let keys = write_many(&outbox, &org, 0..2).await;
    let relay = relay(&outbox, &kit).tasks(1).start().unwrap();
    wait_drained(&outbox, Duration::from_secs(10)).await;
    let stats = outbox.stats().await.unwrap();
    assert_eq!(stats.dead_letters, 2);
    assert!(kit.events(org.as_str()).is_empty());
    let letters = outbox.dead_letters(10).await.unwrap();
    let mut letter_keys: Vec<_> = letters.iter().map(|l| l.letter.idempotency_key.clone()).collect();
    letter_keys.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(letter_keys, expected);
    for l in &letters {
        assert_eq!(l.letter.reason, DeadLetterReason::Rejected);
        assert_eq!(l.letter.error.as_ref().and_then(|e| e.status), Some(422));
        assert_eq!(l.letter.attempts, 1);
        assert_eq!(l.letter.organization_id, org);
        assert!(l.letter.first_attempt_at.is_some());
    }
    wait_until(Duration::from_secs(5), "2 dead letters counted", || async {
        relay.stats().dead_lettered == 2
    })
    .await;

    assert_eq!(outbox.replay_dead_letters().await.unwrap(), 2);
    wait_drained(&outbox, Duration::from_secs(10)).await;
    assert_exactly_once(&kit, &org, &keys);
    assert_eq!(outbox.stats().await.unwrap().dead_letters, 0);
}

#[tokio::test]
async fn try_emit_lands_in_the_outbox_and_is_delivered_once() {
    let Some((outbox, kit, org)) = delivery("emitter_path").await else {
        return;
    };
    let emitter = outbox.emitter_builder().start();
    let receipts: Vec<String> = (0..200)
        .map(|n| {
            emitter
                .try_emit(org.clone(), event(n))
                .unwrap()
                .idempotency_key
                .to_string()
        })
        .collect();
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    // Flushed means committed to the table.
    let stats = outbox.stats().await.unwrap();
    assert_eq!(stats.depth, 200);
    assert!(stats.oldest_pending_age.is_some());
    assert_eq!(emitter.stats().delivered, 200);
    let relay = relay(&outbox, &kit).start().unwrap();
    wait_drained(&outbox, Duration::from_secs(20)).await;
    assert_exactly_once(&kit, &org, &receipts);
    assert_eq!(relay.shutdown(Duration::from_secs(5)).await.stats.delivered, 200);
}

#[tokio::test]
async fn emit_durable_returns_once_the_row_is_committed() {
    let Some((outbox, kit, org)) = delivery("emit_durable").await else {
        return;
    };
    let emitter = outbox.emitter_builder().start();
    let mut keys = Vec::new();
    for n in 0..20 {
        let receipt = emitter.emit_durable(org.clone(), event(n)).await.unwrap();
        let key = receipt.idempotency_key.to_string();
        // Committed before `emit_durable` returned: a new connection sees the row at once.
        let rows: i64 = sqlx::query_scalar(
            r#"SELECT count(*) FROM "t_emit_durable".audit_outbox WHERE idempotency_key = $1"#,
        )
        .bind(&key)
        .fetch_one(outbox.pool())
        .await
        .unwrap();
        assert_eq!(rows, 1, "row of event {n}");
        keys.push(key);
    }
    let relay = relay(&outbox, &kit).start().unwrap();
    wait_drained(&outbox, Duration::from_secs(20)).await;
    assert_exactly_once(&kit, &org, &keys);
    relay.shutdown(Duration::from_secs(5)).await;
}

/// Needs no server: the database is a closed port.
#[tokio::test]
async fn emit_durable_reports_an_unreachable_database_and_keeps_the_event() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy("postgres://audit:audit@127.0.0.1:1/audit")
        .unwrap();
    let emitter = Outbox::new(pool).emitter_builder().start();
    let org = audit_core::OrganizationId::new("org_1").unwrap();
    match emitter.emit_durable(org, event(1)).await {
        Err(audit_core::emitter::EmitError::NotDurable { idempotency_key }) => {
            assert!(!idempotency_key.as_str().is_empty());
        }
        other => panic!("expected NotDurable, got {other:?}"),
    }
    // Not lost: still accepted and queued for the next insert.
    let stats = emitter.stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.delivered, 0);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.queued + stats.retrying + stats.in_flight, 1);
    assert!(stats.last_error.is_some());
}
