//! Overload, survivable and visible: the emitter reaches the configured rate limit whatever
//! WorkOS's latency, shows its pace in `stats()`, and a steady overload loses nothing.
//!
//! The rate tests measure real time over a fixed number of events (a few seconds each): the
//! quantity under test is a rate against the server's real latency.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use audit_core::OrganizationId;
use audit_core::emitter::{EmitReceipt, Emitter, RateLimit};
use audit_testkit::{FaultRule, TestKit};
use support::{EVENTS, client, kit, org, signed_in};

fn assert_stored_once(kit: &TestKit, receipts: &[EmitReceipt]) {
    let stored: Vec<String> = kit
        .all_events()
        .into_iter()
        .map(|e| e.idempotency_key.expect("key"))
        .collect();
    let unique: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), stored.len(), "duplicates stored");
    let expected: HashSet<&str> = receipts.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert_eq!(unique, expected);
}

/// A started testkit whose answers to event POSTs come `latency` late, and its organization.
async fn kit_away(latency: Duration) -> (TestKit, OrganizationId) {
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").latency(latency));
    let org = org(&kit);
    (kit, org)
}

/// Delivers 400 events through a 100/s limit to a server `latency` away; returns the rate at
/// which they reached the server once the first 100 (the start and the limit's small burst) are
/// past, measured from the server's own arrival times.
async fn rate_at(latency: Duration) -> (f64, usize) {
    let (kit, org) = kit_away(latency).await;
    let limit = RateLimit::new(100, Duration::from_secs(1)).unwrap().burst(10);
    let emitter = Emitter::builder(client(&kit, Duration::from_secs(5)))
        .rate_limit(limit)
        .start();
    let receipts: Vec<EmitReceipt> = (0..400)
        .map(|n| emitter.try_emit(org.clone(), signed_in(n)).expect("accepted"))
        .collect();
    emitter.flush(Duration::from_secs(30)).await.expect("flushed");
    assert_stored_once(&kit, &receipts);
    let concurrency = emitter.stats().concurrency;
    let mut arrivals: Vec<_> = kit.all_events().into_iter().map(|e| e.received_at).collect();
    arrivals.sort();
    let steady = &arrivals[100..];
    let span = (steady[steady.len() - 1] - steady[0]).as_seconds_f64();
    let rate = (steady.len() - 1) as f64 / span;
    eprintln!("{latency:?} away: {rate:.1} events/s (limit 100/s), {concurrency} senders");
    (rate, concurrency)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_reached_30_ms_away() {
    let (rate, _) = rate_at(Duration::from_millis(30)).await;
    assert!(rate >= 90.0, "{rate:.1} events/s at 30 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_reached_300_ms_away() {
    let (rate, concurrency) = rate_at(Duration::from_millis(300)).await;
    // 100/s at 300 ms needs 30 requests in flight: more than the 8 senders of the start.
    assert!(concurrency >= 30, "{concurrency} senders");
    assert!(rate >= 90.0, "{rate:.1} events/s at 300 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_a_growing_backlog_and_its_drain() {
    let (kit, org) = kit_away(Duration::from_millis(30)).await;
    let limit = RateLimit::new(50, Duration::from_secs(1)).unwrap().burst(1);
    let emitter = Emitter::builder(client(&kit, Duration::from_secs(5)))
        .rate_limit(limit)
        .start();
    // 150 events/s for 2.5 s against a 50/s limit.
    let mut receipts = Vec::new();
    let mut every = tokio::time::interval(Duration::from_millis(20));
    for n in 0..375 {
        if n % 3 == 0 {
            every.tick().await;
        }
        receipts.push(emitter.try_emit(org.clone(), signed_in(n)).expect("accepted"));
    }
    let growing = emitter.stats();
    assert!(growing.accept_rate > growing.delivery_rate * 1.5, "{growing:?}");
    assert!(growing.delivery_rate > 30.0, "{growing:?}");
    assert_eq!(growing.time_to_drain, None, "not draining while it grows");
    // Accepting stopped: the backlog drains, and the stats say how soon.
    let deadline = Instant::now() + Duration::from_secs(15);
    let eta = loop {
        let stats = emitter.stats();
        if let Some(eta) = stats.time_to_drain {
            break eta;
        }
        assert!(Instant::now() < deadline, "never draining: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(eta < Duration::from_secs(60), "{eta:?}");
    emitter.flush(Duration::from_secs(30)).await.expect("flushed");
    assert_stored_once(&kit, &receipts);
}

#[cfg(feature = "spool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_overload_with_the_spool_loses_nothing() {
    use audit_core::emitter::Spool;
    let (kit, org) = kit_away(Duration::from_millis(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let limit = RateLimit::new(100, Duration::from_secs(1)).unwrap().burst(1);
    // A memory queue of 50 events against 2,000 accepted at once: the rest waits on disk.
    let emitter = Emitter::builder(client(&kit, Duration::from_secs(5)))
        .rate_limit(limit)
        .capacity(50)
        .spool(Spool::open(&path).unwrap())
        .start();
    let receipts: Vec<EmitReceipt> = (0..2_000)
        .map(|n| {
            emitter
                .try_emit(org.clone(), signed_in(n))
                .expect("spilled, never dropped")
        })
        .collect();
    let stats = emitter.stats();
    assert_eq!(stats.dropped.total(), 0);
    assert!(stats.spool.as_ref().unwrap().spilled > 1_000, "{stats:?}");
    // Stop after a second: what was not delivered stays in the spool for the next start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = emitter.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    let spool = Spool::open(&path).unwrap();
    let left = spool.recovered();
    assert_eq!(
        left + report.delivered,
        2_000,
        "delivered {} + kept {left}",
        report.delivered
    );
    let next = Emitter::builder(client(&kit, Duration::from_secs(5)))
        .no_rate_limit()
        .spool(spool)
        .start();
    next.flush(Duration::from_secs(60)).await.expect("flushed");
    next.shutdown(Duration::from_secs(5)).await;
    assert_stored_once(&kit, &receipts);
}
