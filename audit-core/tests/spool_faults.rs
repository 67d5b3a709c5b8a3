//! The spool against faults: a restart during a WorkOS outage, corrupt and truncated files, a
//! corrupt row, a read-only directory, a second emitter on the same file, a full spool, a full disk
//! at run time, spilling beyond memory, stale events. Every test runs against audit-testkit over loopback.
#![cfg(feature = "spool")]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use audit_core::emitter::{
    DeadLetterReason, EmitError, EmitReceipt, Emitter, EmitterBuilder, MemoryDeadLetters, Overflow, Sink,
    SinkFuture, Spool, SpoolConfig, SpoolErrorKind, StaleEvents,
};
use audit_core::{Action, Actor, ApiError, Client, Context, CreateEvent, Event};
use audit_testkit::TestKit;
use support::{kit, org};

fn builder(kit: &TestKit) -> EmitterBuilder {
    let client = Client::builder()
        .api_key("sk_test_spool")
        .base_url(kit.url())
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    Emitter::builder(client)
        .senders(4)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .retry_window(Duration::from_secs(600))
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
    .meta("n", n)
}

fn stored_keys(kit: &TestKit) -> Vec<String> {
    kit.events(kit.organization_id())
        .into_iter()
        .map(|e| e.idempotency_key.expect("key sent"))
        .collect()
}

/// Every receipt's key is stored exactly once, and nothing else is stored.
fn assert_exactly_once(kit: &TestKit, receipts: &[EmitReceipt]) {
    let keys = stored_keys(kit);
    let unique: HashSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), keys.len(), "duplicates stored");
    let expected: HashSet<&str> = receipts.iter().map(|r| r.idempotency_key.as_str()).collect();
    assert_eq!(unique, expected, "stored keys differ from accepted ones");
}

/// Emits `n` events while the server is down, shuts the emitter down (they stay in the spool).
async fn spool_with_pending(kit: &TestKit, path: &Path, n: usize) -> Vec<EmitReceipt> {
    kit.stop();
    let emitter = builder(kit).spool(Spool::open(path).unwrap()).start();
    let mut receipts = Vec::new();
    for i in 0..n {
        receipts.push(emitter.emit_durable(org(kit), event(i)).await.expect("durable"));
    }
    let report = emitter.shutdown(Duration::from_millis(300)).await;
    assert_eq!(report.delivered, 0);
    assert_eq!(
        report.dead_lettered, 0,
        "pending events stay in the spool, not in the dead letter"
    );
    let spool = emitter.stats().spool.expect("spool stats");
    assert_eq!(spool.depth, n as u64);
    receipts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_during_an_outage_are_delivered_after_a_restart() {
    let kit = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");

    let mut receipts = spool_with_pending(&kit, &path, 40).await;

    kit.restart().unwrap();
    let spool = Spool::open(&path).expect("reopens after shutdown");
    assert_eq!(spool.recovered(), 40);
    let dead = MemoryDeadLetters::new();
    let emitter = builder(&kit).spool(spool).dead_letters(dead.clone()).start();
    receipts.push(emitter.try_emit(org(&kit), event(40)).unwrap());
    emitter.flush(Duration::from_secs(20)).await.expect("delivered");
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 41);
    assert_eq!(emitter.stats().spool.map(|s| s.depth), Some(0));
    assert!(dead.is_empty());
    assert_exactly_once(&kit, &receipts);

    // Nothing is delivered twice by a third start.
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.recovered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_emitter_on_the_same_file_is_refused_with_a_clear_error() {
    let kit = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let emitter = builder(&kit).spool(Spool::open(&path).unwrap()).start();
    emitter.emit_durable(org(&kit), event(1)).await.unwrap();

    let err = Spool::open(&path).expect_err("the file is locked");
    assert_eq!(err.kind, SpoolErrorKind::Locked);
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("locked by another emitter"), "{text}");

    // Released at shutdown.
    emitter.shutdown(Duration::from_secs(5)).await;
    Spool::open(&path).expect("free again after shutdown");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = Spool::open(&path).expect_err("not a database");
    assert_eq!(err.kind, SpoolErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    // The file is left alone for inspection.
    assert_eq!(std::fs::read(&path).unwrap().len(), 8192);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_a_clear_error() {
    let kit = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    // Enough rows for several pages.
    let big = |n: usize| event(n).meta("padding", "p".repeat(400));
    kit.stop();
    let emitter = builder(&kit).spool(Spool::open(&path).unwrap()).start();
    for i in 0..200 {
        emitter.emit_durable(org(&kit), big(i)).await.unwrap();
    }
    emitter.shutdown(Duration::from_millis(100)).await;
    drop(emitter);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 16 * 1024, "{len}");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);

    let err = Spool::open(&path).expect_err("truncated");
    assert_eq!(err.kind, SpoolErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_fails_its_checksum_is_moved_aside_counted_and_the_rest_delivered() {
    let kit = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let receipts = spool_with_pending(&kit, &path, 3).await;

    // Flip the content of the second row behind the spool's back.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let changed = conn
            .execute(
                "UPDATE events SET event = replace(event, 'user_1', 'user_X') WHERE idempotency_key = ?1",
                [receipts[1].idempotency_key.as_str()],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    kit.restart().unwrap();
    let emitter = builder(&kit).spool(Spool::open(&path).unwrap()).start();
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 2);
    let spool = emitter.stats().spool.unwrap();
    assert_eq!(spool.corrupt, 1);
    assert_eq!(spool.depth, 0);
    assert_exactly_once(&kit, &[receipts[0].clone(), receipts[2].clone()]);

    // Kept, not dropped: the row is in dead_rows with the reason.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (key, reason): (String, String) = conn
        .query_row("SELECT idempotency_key, reason FROM dead_rows", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(key, receipts[1].idempotency_key);
    assert_eq!(reason, "checksum mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_new_events_and_counts_them() {
    let kit = kit().await;
    kit.stop();
    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolConfig::new(dir.path().join("spool.db"))
        .max_events(5)
        .open()
        .unwrap();
    let emitter = builder(&kit).spool(spool).start();
    for i in 0..5 {
        emitter.try_emit(org(&kit), event(i)).expect("room");
    }
    assert!(matches!(
        emitter.try_emit(org(&kit), event(5)),
        Err(EmitError::Full)
    ));
    let stats = emitter.stats();
    assert_eq!(stats.dropped.newest, 1);
    assert_eq!(stats.spool.unwrap().refused, 1);
    emitter.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_to_spool_absorbs_a_peak_beyond_memory() {
    let kit = kit().await;
    kit.stop();
    let dir = tempfile::tempdir().unwrap();
    let emitter = builder(&kit)
        .capacity(10)
        .overflow(Overflow::SpillToSpool)
        .spool(Spool::open(dir.path().join("spool.db")).unwrap())
        .start();
    let receipts: Vec<EmitReceipt> = (0..300)
        .map(|i| {
            emitter
                .try_emit(org(&kit), event(i))
                .expect("spilled, not dropped")
        })
        .collect();
    let stats = emitter.stats();
    assert_eq!(stats.dropped.total(), 0);
    let spool = stats.spool.unwrap();
    assert_eq!(spool.depth, 300);
    assert!(spool.spilled >= 290, "{spool:?}");
    // Memory stays bounded by the capacity.
    assert!(stats.in_flight + stats.retrying + stats.queued - spool.spilled as usize <= 10);

    kit.restart().unwrap();
    emitter.flush(Duration::from_secs(30)).await.expect("delivered");
    emitter.shutdown(Duration::from_secs(5)).await;
    assert_exactly_once(&kit, &receipts);
}

async fn stale_run(policy: StaleEvents) -> (TestKit, Vec<EmitReceipt>, MemoryDeadLetters) {
    let kit = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let receipts = spool_with_pending(&kit, &path, 2).await;
    // The first event was first attempted 25 hours ago (attempts are not in the checksum).
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let day_ago = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 25 * 3600 * 1000;
        conn.execute(
            "UPDATE events SET attempts = 1, first_attempt_at = ?1, last_attempt_at = ?1
             WHERE idempotency_key = ?2",
            rusqlite::params![day_ago, receipts[0].idempotency_key.as_str()],
        )
        .unwrap();
    }
    kit.restart().unwrap();
    let dead = MemoryDeadLetters::new();
    let spool = SpoolConfig::new(&path).stale_events(policy).open().unwrap();
    let emitter = builder(&kit).spool(spool).dead_letters(dead.clone()).start();
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    emitter.shutdown(Duration::from_secs(5)).await;
    let left = Spool::open(&path).unwrap().recovered();
    assert_eq!(left, 0, "every row resolved");
    (kit, receipts, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_events_are_dead_lettered_when_configured() {
    let (kit, receipts, dead) = stale_run(StaleEvents::DeadLetter).await;
    let letters = dead.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Stale);
    assert_eq!(letters[0].idempotency_key, receipts[0].idempotency_key);
    assert_exactly_once(&kit, &receipts[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_events_are_sent_anyway_by_default() {
    let (kit, receipts, dead) = stale_run(StaleEvents::default()).await;
    assert!(dead.is_empty());
    assert_exactly_once(&kit, &receipts);
}

#[tokio::test]
async fn emit_durable_without_a_spool_accepts_nothing() {
    let kit = kit().await;
    let emitter = builder(&kit).start();
    assert!(matches!(
        emitter.emit_durable(org(&kit), event(1)).await,
        Err(EmitError::NoSpool)
    ));
    assert_eq!(emitter.stats().accepted, 0);
    assert!(emitter.stats().spool.is_none());
}

/// Opens a spool in a read-only directory and prints the outcome (run as an unprivileged user
/// by `a_read_only_directory_is_a_clear_error`, since root ignores permission bits).
#[test]
fn read_only_child() {
    let Ok(path) = std::env::var("SPOOL_RO_PATH") else {
        return;
    };
    match Spool::open(&path) {
        Ok(_) => println!("@spool opened"),
        Err(e) => println!("@spool error {:?} {e}", e.kind),
    }
}

#[test]
fn a_read_only_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let path = ro.join("spool.db");
    let privileged = std::fs::write(ro.join("probe"), b"").is_ok();
    if !privileged {
        let err = Spool::open(&path).expect_err("read-only directory");
        assert_eq!(err.kind, SpoolErrorKind::NotWritable, "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        return;
    }
    // Root writes anywhere: run the check as `nobody` in a child process.
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["read_only_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("SPOOL_RO_PATH", &path)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.split("@spool ").nth(1).unwrap_or_else(|| {
        panic!(
            "no outcome from the child: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(line.starts_with("error NotWritable"), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A full disk at run time, made real with a size limit that SQLite enforces exactly like a full
/// disk (`SQLITE_FULL`): the degradation is counted and visible, the emit call says the event is
/// not durable, nothing is lost, and the spool recovers once deliveries free room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_run_time_is_counted_and_loses_nothing() {
    let kit = kit().await;
    kit.stop();
    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolConfig::new(dir.path().join("spool.db"))
        .max_bytes(64 * 1024)
        .open()
        .unwrap();
    let emitter = builder(&kit).capacity(10_000).spool(spool).start();
    let padding = "x".repeat(400);
    let big = |n: usize| event(n).meta("padding", padding.as_str());

    let mut keys = Vec::new();
    let mut durable = 0;
    let mut not_durable = 0;
    for i in 0..2_000 {
        match emitter.emit_durable(org(&kit), big(i)).await {
            Ok(receipt) => {
                durable += 1;
                keys.push(receipt.idempotency_key.into());
            }
            Err(EmitError::NotDurable { idempotency_key }) => {
                not_durable += 1;
                keys.push(idempotency_key.into());
                if not_durable == 20 {
                    break;
                }
            }
            Err(other) => panic!("event {i}: {other}"),
        }
    }
    assert!(durable > 10, "some events fit before the limit: {durable}");
    assert_eq!(not_durable, 20, "the full file was reported to the emit call");
    let spool = emitter.stats().spool.unwrap();
    assert!(spool.write_errors > 0, "{spool:?}");
    let failing = spool.failing.expect("the failure is shown");
    assert!(failing.contains("full"), "{failing}");

    // WorkOS comes back: every event, durable or not, is delivered exactly once, and the rows
    // of delivered events are deleted, which frees the file.
    kit.restart().unwrap();
    emitter.flush(Duration::from_secs(60)).await.expect("delivered");
    let stored: HashSet<String> = stored_keys(&kit).into_iter().collect();
    assert_eq!(stored.len(), keys.len(), "no duplicate, nothing lost");
    assert_eq!(stored, keys.iter().cloned().collect::<HashSet<_>>());
    let report = emitter.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.dead_lettered, 0);
    let spool = emitter.stats().spool.unwrap();
    assert_eq!(spool.depth, 0, "{spool:?}");
    drop(emitter);
    // The file holds no row: the deletions were committed despite the full disk.
    let reopened = Spool::open(dir.path().join("spool.db")).unwrap();
    assert_eq!(reopened.recovered(), 0);
}

/// Lets events through to the testkit only once their group is opened; until then each attempt
/// fails with a retryable 503.
struct Gated {
    client: Client,
    old_open: Arc<AtomicBool>,
    new_open: Arc<AtomicBool>,
}

impl Sink for Gated {
    fn send<'a>(&'a self, body: &'a CreateEvent, key: &'a str) -> SinkFuture<'a> {
        let gate = if body.event.actor.id.starts_with("new_") {
            &self.new_open
        } else {
            &self.old_open
        };
        if gate.load(Ordering::SeqCst) {
            self.client.send(body, key)
        } else {
            let closed = ApiError::from_response(503, None, None, b"{\"message\":\"closed\"}");
            Box::pin(std::future::ready(Err(audit_core::Error::Api(Box::new(closed)))))
        }
    }
}

/// A full file recovers as soon as delivered events free room, even while newer events still
/// wait: their rows are deleted before the newer ones are inserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_recovers_as_deliveries_free_room() {
    let kit = kit().await;
    let dir = tempfile::tempdir().unwrap();
    let spool = SpoolConfig::new(dir.path().join("spool.db"))
        .max_bytes(64 * 1024)
        .open()
        .unwrap();
    let client = Client::builder()
        .api_key("sk_test_spool")
        .base_url(kit.url())
        .build()
        .unwrap();
    let (old_open, new_open) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let sink = Gated {
        client,
        old_open: Arc::clone(&old_open),
        new_open: Arc::clone(&new_open),
    };
    let emitter = Emitter::builder(sink)
        .senders(4)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .spool(spool)
        .start();
    let padding = "x".repeat(400);
    let mut keys = Vec::new();
    for i in 0..2_000 {
        match emitter
            .emit_durable(org(&kit), event(i).meta("padding", padding.as_str()))
            .await
        {
            Ok(receipt) => keys.push(receipt.idempotency_key.into()),
            Err(EmitError::NotDurable { idempotency_key }) => {
                keys.push(idempotency_key.into());
                break;
            }
            Err(other) => panic!("event {i}: {other}"),
        }
    }
    assert!(
        emitter.stats().spool.unwrap().failing.is_some(),
        "the file is full"
    );
    let newer: Vec<String> = (0..20)
        .map(|i| {
            let e = Event::new(
                Action::new("user.signed_in").unwrap(),
                Actor::new(format!("new_{i}"), "user"),
                Context::new("203.0.113.7"),
            );
            emitter.try_emit(org(&kit), e).unwrap().idempotency_key.into()
        })
        .collect();

    // The older events are delivered; the newer ones keep failing.
    old_open.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while emitter.stats().spool.unwrap().failing.is_some() {
        assert!(std::time::Instant::now() < deadline, "the spool never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored: HashSet<String> = stored_keys(&kit).into_iter().collect();
    assert!(
        newer.iter().all(|k| !stored.contains(k)),
        "newer events still wait"
    );
    // Committed again: a newer event is durable now.
    let e = Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new("new_durable", "user"),
        Context::new("203.0.113.7"),
    );
    let last = emitter.emit_durable(org(&kit), e).await.expect("durable again");

    new_open.store(true, Ordering::SeqCst);
    emitter.flush(Duration::from_secs(30)).await.expect("delivered");
    emitter.shutdown(Duration::from_secs(5)).await;
    keys.extend(newer);
    keys.push(last.idempotency_key.into());
    let stored = stored_keys(&kit);
    assert_eq!(stored.len(), keys.len(), "no duplicate, nothing lost");
    assert_eq!(
        stored.into_iter().collect::<HashSet<_>>(),
        keys.into_iter().collect::<HashSet<_>>()
    );
}
