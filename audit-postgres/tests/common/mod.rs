//! Shared set-up of the PostgreSQL tests: a database from `DATABASE_URL`, a schema per test,
//! audit-testkit on loopback and WorkOS clients pointed at it.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
use audit_postgres::{Outbox, RelayBuilder};
use audit_testkit::TestKit;
use sqlx::postgres::PgPoolOptions;

/// The outbox in a fresh schema named after the test, or `None` (with the reason printed) when
/// `DATABASE_URL` is unset outside CI. In CI (`CI=true`) a missing `DATABASE_URL` fails the test.
pub async fn outbox(test: &str) -> Option<Outbox> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "DATABASE_URL is not set, but CI=true: the PostgreSQL tests must run in CI \
                 (.ci/start-postgres starts a server and exports DATABASE_URL)"
            );
            eprintln!(
                "SKIPPED {test}: DATABASE_URL is not set. These tests need a PostgreSQL database, e.g. \
                 DATABASE_URL=postgres://audit:audit@127.0.0.1:5432/audit_test (see .ci/start-postgres)."
            );
            return None;
        }
    };
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL cannot be reached: {e}"));
    let schema = format!("t_{test}");
    sqlx::query(&format!(r#"DROP SCHEMA IF EXISTS "{schema}" CASCADE"#))
        .execute(&pool)
        .await
        .expect("drop the test's schema");
    let outbox = Outbox::with_schema(pool, &schema).expect("schema name");
    outbox.migrate().await.expect("migrations apply");
    Some(outbox)
}

/// The outbox of [`outbox`], a started testkit and the testkit's organization: the set-up of
/// every delivery test. `None` where [`outbox`] skips.
pub async fn delivery(test: &str) -> Option<(Outbox, TestKit, OrganizationId)> {
    let outbox = outbox(test).await?;
    let kit = kit().await;
    let org = org(&kit);
    Some((outbox, kit, org))
}

/// audit-testkit started on loopback with its defaults.
pub async fn kit() -> TestKit {
    TestKit::builder().start().await.expect("testkit starts")
}

/// The testkit's organization as an [`OrganizationId`].
pub fn org(kit: &TestKit) -> OrganizationId {
    OrganizationId::new(kit.organization_id()).unwrap()
}

pub fn client(kit: &TestKit) -> Client {
    Client::builder()
        .api_key("sk_test_outbox")
        .base_url(kit.url())
        .timeout(Duration::from_millis(800))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .expect("client")
}

/// Relays with short waits, delivering to the testkit.
pub fn relay(outbox: &Outbox, kit: &TestKit) -> RelayBuilder {
    outbox
        .relay(client(kit))
        .no_rate_limit()
        .tasks(2)
        .batch_size(8)
        .lease(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(100))
}

pub fn event(n: usize) -> Event {
    Event::new(
        Action::new("invoice.paid").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7").user_agent("outbox-test"),
    )
    .meta("n", n)
}

/// Writes `n` events, each in its own committed transaction; returns their keys.
pub async fn write_many(outbox: &Outbox, org: &OrganizationId, range: std::ops::Range<usize>) -> Vec<String> {
    let mut keys = Vec::new();
    for n in range {
        let mut tx = outbox.pool().begin().await.unwrap();
        keys.push(outbox.write(&mut tx, org, &event(n)).await.unwrap());
        tx.commit().await.unwrap();
    }
    keys
}

/// Waits until `done` holds, checking every 20 ms; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the outbox is empty (every row delivered or dead-lettered).
pub async fn wait_drained(outbox: &Outbox, limit: Duration) {
    wait_until(limit, "the outbox to drain", || async {
        outbox.stats().await.unwrap().depth == 0
    })
    .await;
}

/// Every key is stored at the testkit exactly once, and nothing else is.
pub fn assert_exactly_once(kit: &TestKit, org: &OrganizationId, keys: &[String]) {
    let stored = kit.events(org.as_str());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &stored {
        *counts
            .entry(e.idempotency_key.clone().expect("key sent"))
            .or_default() += 1;
    }
    let dup: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dup.is_empty(), "stored more than once: {dup:?}");
    let stored: HashSet<&str> = counts.keys().map(String::as_str).collect();
    let expected: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(
        stored.len(),
        expected.len(),
        "stored {} events, expected {}",
        stored.len(),
        expected.len()
    );
    assert_eq!(stored, expected, "stored keys differ from written ones");
}
