//! Dead letters never block the runtime: every dead letter is written by one writer thread fed
//! by a bounded queue, so a destination that takes 100 ms per write (a slow disk's fsync) holds
//! up neither the application's tasks nor `try_emit`, and every dead letter is still written.
//!
//! The delays are measured in real time: the quantity under test is how long a runtime worker
//! is kept from its other tasks by a destination that really blocks its thread.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use audit_core::emitter::{
    DeadLetter, DeadLetterReason, DeadLetterSink, EmitReceipt, Emitter, JsonlDeadLetters, Overflow,
};
use audit_testkit::FaultRule;
use support::{EVENTS, client, kit, org, signed_in};

/// How long the destination takes per write.
const WRITE: Duration = Duration::from_millis(100);

/// A JSON-lines file whose every write takes [`WRITE`] (the thread sleeps, as a slow fsync does).
struct SlowFile(JsonlDeadLetters);

impl DeadLetterSink for SlowFile {
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()> {
        std::thread::sleep(WRITE);
        self.0.dead_letter(letter)
    }
}

/// A task ticking every 5 ms until `stop`; returns the longest time between two ticks.
fn ticker(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(5));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            interval.tick().await;
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
        }
        longest
    })
}

/// The idempotency keys of the dead letters in `path`, with their reasons.
fn written(path: &Path) -> Vec<(String, DeadLetterReason)> {
    DeadLetter::read_jsonl(path)
        .unwrap()
        .into_iter()
        .map(|l| {
            let l = l.expect("a whole record");
            (l.idempotency_key, l.reason)
        })
        .collect()
}

fn keys(receipts: &[EmitReceipt]) -> HashSet<String> {
    receipts.iter().map(|r| r.idempotency_key.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_dead_letter_writes_from_the_senders_delay_no_task() {
    const N: usize = 20;
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").respond(400));
    let org = org(&kit);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    let emitter = Emitter::builder(client(&kit, Duration::from_secs(30)))
        .senders(8)
        .no_rate_limit()
        .dead_letters(SlowFile(JsonlDeadLetters::new(&path).unwrap()))
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = ticker(Arc::clone(&stop));
    let mut receipts = Vec::new();
    for n in 0..N {
        receipts.push(emitter.try_emit(org.clone(), signed_in(n)).unwrap());
    }
    // Every refusal is dead-lettered, one 100 ms write after the other.
    let report = emitter.shutdown(Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let longest = ticks.await.unwrap();
    assert_eq!(report.dead_lettered, N as u64);
    assert_eq!(emitter.stats().dead_lettered, N as u64);
    let letters = written(&path);
    assert_eq!(letters.len(), N);
    assert!(
        letters.iter().all(|(_, r)| *r == DeadLetterReason::Rejected),
        "{letters:?}"
    );
    let found: HashSet<String> = letters.into_iter().map(|(k, _)| k).collect();
    assert_eq!(found, keys(&receipts));
    assert!(
        longest < WRITE / 2,
        "a ticker on the runtime was held up {longest:?} by dead-letter writes of {WRITE:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_dead_letter_writes_of_evictions_delay_neither_try_emit_nor_a_task() {
    const N: usize = 20;
    const CAPACITY: usize = 4;
    let kit = kit().await;
    // Nothing is ever answered: the one sender holds its event, the rest are evicted.
    kit.fault(FaultRule::new(EVENTS).method("POST").hang());
    let org = org(&kit);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    let emitter = Emitter::builder(client(&kit, Duration::from_secs(30)))
        .senders(1)
        .no_rate_limit()
        .capacity(CAPACITY)
        .overflow(Overflow::DropOldest)
        .dead_letters(SlowFile(JsonlDeadLetters::new(&path).unwrap()))
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = ticker(Arc::clone(&stop));
    let mut receipts = vec![emitter.try_emit(org.clone(), signed_in(0)).unwrap()];
    support::until("the first event in flight", || emitter.stats().in_flight == 1).await;
    let mut slowest = Duration::ZERO;
    for n in 1..N {
        let started = Instant::now();
        receipts.push(emitter.try_emit(org.clone(), signed_in(n)).unwrap());
        slowest = slowest.max(started.elapsed());
    }
    let evicted = (N - CAPACITY) as u64;
    assert_eq!(emitter.stats().dropped.oldest, evicted);
    assert!(
        slowest < Duration::from_millis(20),
        "try_emit took {slowest:?} with dead-letter writes of {WRITE:?}"
    );
    // Shutdown's deadline passes while evictions are still being written: it waits for the
    // writer, and the held event and those still queued are dead-lettered too.
    let report = emitter.shutdown(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let longest = ticks.await.unwrap();
    assert_eq!(report.dead_lettered, N as u64);
    let letters = written(&path);
    assert_eq!(letters.len(), N);
    let overflow = letters
        .iter()
        .filter(|(_, r)| *r == DeadLetterReason::Overflow)
        .count() as u64;
    assert_eq!(overflow, evicted);
    let found: HashSet<String> = letters.into_iter().map(|(k, _)| k).collect();
    assert_eq!(found, keys(&receipts));
    assert!(
        longest < WRITE / 2,
        "a ticker on the runtime was held up {longest:?} by dead-letter writes of {WRITE:?}"
    );
}

/// A JSON-lines file whose writes wait until the test opens the gate.
struct GatedFile {
    file: JsonlDeadLetters,
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl DeadLetterSink for GatedFile {
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let (open, opened) = &*self.open;
        let mut is_open = open.lock().unwrap();
        while !*is_open {
            is_open = opened.wait(is_open).unwrap();
        }
        drop(is_open);
        self.file.dead_letter(letter)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_dead_letter_destination_bounds_evictions_and_loses_nothing() {
    const N: usize = 600;
    const CAPACITY: usize = 4;
    let kit = kit().await;
    kit.fault(FaultRule::new(EVENTS).method("POST").hang());
    let org = org(&kit);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let emitter = Emitter::builder(client(&kit, Duration::from_secs(30)))
        .senders(1)
        .no_rate_limit()
        .capacity(CAPACITY)
        .overflow(Overflow::DropOldest)
        .dead_letters(GatedFile {
            file: JsonlDeadLetters::new(&path).unwrap(),
            open: Arc::clone(&gate),
        })
        .start();
    let mut accepted = vec![emitter.try_emit(org.clone(), signed_in(0)).unwrap()];
    support::until("the first event in flight", || emitter.stats().in_flight == 1).await;
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    for n in 1..N {
        let started = Instant::now();
        match emitter.try_emit(org.clone(), signed_in(n)) {
            Ok(receipt) => accepted.push(receipt),
            Err(audit_core::emitter::EmitError::Full) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
        slowest = slowest.max(started.elapsed());
    }
    let stats = emitter.stats();
    // The writer is stuck: once its bounded queue is full nothing more is evicted, the new
    // events are refused (counted), and no call waited for the destination.
    assert!(refused > 0, "every event was accepted while the writer was stuck");
    assert_eq!(stats.dropped.newest, refused as u64);
    assert_eq!(stats.dropped.oldest as usize + refused, N - CAPACITY);
    assert!(stats.dropped.oldest < N as u64 / 2, "{stats:?}");
    assert!(slowest < Duration::from_millis(20), "try_emit took {slowest:?}");
    {
        let (open, opened) = &*gate;
        *open.lock().unwrap() = true;
        opened.notify_all();
    }
    let report = emitter.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.dead_lettered, accepted.len() as u64);
    let found: HashSet<String> = written(&path).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        found,
        keys(&accepted),
        "every accepted event is in the dead-letter file"
    );
}
