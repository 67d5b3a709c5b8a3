//! The crash test: a child process emits events with the spool on while audit-testkit answers
//! slowly, is killed with SIGKILL in the middle of delivery, and is started again on the same
//! spool file. audit-testkit (in this process, outliving the child) must store every accepted
//! event exactly once.
//!
//! The child is this test binary itself, run again with `SPOOL_CHILD` set: the test `child` does
//! nothing unless that variable is present.
#![cfg(feature = "spool")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use audit_core::emitter::{Emitter, SpoolConfig};
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
use audit_testkit::{FaultRule, TestKit};

const EVENTS: usize = 300;

fn spawn_child(mode: &str, spool: &std::path::Path, kit: &TestKit) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env("SPOOL_CHILD", mode)
        .env("SPOOL_PATH", spool)
        .env("SPOOL_TESTKIT_URL", kit.url())
        .env("SPOOL_ORG", kit.organization_id())
        .env("SPOOL_EVENTS", EVENTS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts")
}

/// Forwards the child's stdout lines to a channel (read on a thread so the test can time out).
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test child ... " on the same line before the child's output.
            let Some((_, message)) = line.split_once("@spool ") else {
                continue;
            };
            if tx.send(message.to_owned()).is_err() {
                break;
            }
        }
    });
    rx
}

fn stored_keys(kit: &TestKit) -> Vec<String> {
    kit.events(kit.organization_id())
        .into_iter()
        .map(|e| e.idempotency_key.expect("key sent"))
        .collect()
}

#[test]
fn sigkill_during_delivery_then_restart_stores_every_event_exactly_once() {
    let kit = TestKit::builder().start_blocking().expect("testkit");
    // Slow answers: most events are still pending when the child is killed.
    kit.fault(FaultRule::new("/audit_logs/events").latency(Duration::from_millis(40)));
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.db");

    let mut child = spawn_child("emit", &spool, &kit);
    let rx = lines(&mut child);
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the child reports every accepted event");
        if let Some(key) = line.strip_prefix("accepted ") {
            accepted.push(key.to_owned());
        } else if line == "all-accepted" {
            break;
        }
    }
    assert_eq!(accepted.len(), EVENTS);
    // Kill it in the middle of delivery: some events stored, most still pending.
    while stored_keys(&kit).len() < 20 {
        assert!(Instant::now() < deadline, "delivery does not progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before = stored_keys(&kit).len();
    assert!(
        before < EVENTS,
        "every event was delivered before the kill ({before}); the test proves nothing"
    );

    // Start again on the same file, the server now fast.
    kit.clear_faults();
    let mut child = spawn_child("drain", &spool, &kit);
    let rx = lines(&mut child);
    let mut recovered = None;
    let mut flushed = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(n) = line.strip_prefix("recovered ") {
            recovered = n.parse::<u64>().ok();
        }
        if line == "flushed" {
            flushed = true;
        }
    }
    let status = child.wait().expect("child ends");
    assert!(status.success(), "restarted child failed: {status}");
    assert!(flushed, "restarted child did not deliver everything");
    let recovered = recovered.expect("recovered count");
    assert!(
        recovered >= (EVENTS - before) as u64,
        "recovered {recovered}, but {} were not stored before the kill",
        EVENTS - before
    );

    let stored = stored_keys(&kit);
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event was stored twice");
    let expected: HashSet<&String> = accepted.iter().collect();
    assert_eq!(unique, expected, "stored events differ from accepted ones");
}

#[test]
fn a_second_process_is_refused_by_the_spool_lock() {
    let kit = TestKit::builder().start_blocking().expect("testkit");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let held = SpoolConfig::new(&path)
        .open()
        .expect("this process holds the spool");
    let mut child = spawn_child("open", &path, &kit);
    let rx = lines(&mut child);
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child answers");
    assert!(line.starts_with("refused Locked"), "{line}");
    assert!(line.contains("spool.db"), "names the file: {line}");
    assert!(child.wait().unwrap().success());
    // Released with the holder: the next process gets it.
    drop(held);
    let mut child = spawn_child("open", &path, &kit);
    let rx = lines(&mut child);
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "opened");
    assert!(child.wait().unwrap().success());
}

/// The child process (only with `SPOOL_CHILD` set).
#[test]
fn child() {
    let Ok(mode) = std::env::var("SPOOL_CHILD") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let path = var("SPOOL_PATH");
    let url = var("SPOOL_TESTKIT_URL");
    let org = OrganizationId::new(var("SPOOL_ORG")).unwrap();
    let n: usize = var("SPOOL_EVENTS").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if mode == "open" {
        // Another process trying the file a live emitter holds.
        match SpoolConfig::new(&path).open() {
            Ok(_) => println!("@spool opened"),
            Err(e) => println!("@spool refused {:?}: {e}", e.kind),
        }
        return;
    }
    runtime.block_on(async move {
        let client = Client::builder()
            .api_key("sk_test_spool_crash")
            .base_url(url)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let spool = SpoolConfig::new(&path).open().expect("spool opens");
        let recovered = spool.recovered();
        let emitter = Emitter::builder(client)
            .senders(4)
            .no_rate_limit()
            .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .spool(spool)
            .start();
        match mode.as_str() {
            "emit" => {
                for i in 0..n {
                    let event = Event::new(
                        Action::new("document.updated").unwrap(),
                        Actor::new(format!("user_{i}"), "user"),
                        Context::new("203.0.113.9"),
                    )
                    .meta("n", i);
                    let receipt = emitter.emit_durable(org.clone(), event).await.expect("durable");
                    println!("@spool accepted {}", receipt.idempotency_key);
                }
                println!("@spool all-accepted");
                // Wait to be killed.
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            _ => {
                println!("@spool recovered {recovered}");
                emitter.flush(Duration::from_secs(60)).await.expect("flushed");
                println!("@spool flushed");
                let report = emitter.shutdown(Duration::from_secs(5)).await;
                assert_eq!(report.dead_lettered, 0);
            }
        }
    });
}
