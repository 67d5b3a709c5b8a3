//! Figures of the durable spool, printed as JSON lines for `cargo xtask bench`:
//!
//! - `spool.delivery.events_per_s`: events/s delivered to an in-process audit-testkit with the
//!   spool on, with `ratio` against memory mode measured in the same run (target ≥ 0.8);
//! - `spool.commit.events_per_s`: sustained commit rate of the spool writer alone (every event
//!   spilled to the file, no delivery), with `synchronous=NORMAL` (target ≥ 50,000/s) and, for
//!   information, `FULL`;
//! - `spool.emit.ns`: the cost of one `try_emit` with the spool on, with `ratio` against memory
//!   mode (target ≤ 2).
//!
//! `cargo run --release -p audit-core --features spool --example spool_bench [-- --quick]`

#[cfg(feature = "spool")]
fn main() {
    bench::main();
}

#[cfg(not(feature = "spool"))]
fn main() {
    eprintln!("spool_bench needs the `spool` feature: add --features spool");
    std::process::exit(2);
}

#[cfg(feature = "spool")]
#[path = "../benches/support/records.rs"]
mod records;

#[cfg(feature = "spool")]
mod bench {
    use super::records::{event, record};

    use std::time::{Duration, Instant};

    use audit_core::emitter::{
        Emitter, EmitterBuilder, MemorySink, Overflow, Sink, SinkFuture, SpoolConfig, SpoolSync,
    };
    use audit_core::{Client, CreateEvent, Event, OrganizationId};
    use audit_testkit::TestKit;
    use serde_json::json;

    const SENDERS: usize = 8;

    pub(super) fn main() {
        let quick = std::env::args().any(|a| a == "--quick");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            delivery(if quick { 3_000 } else { 20_000 }).await;
            commit_rate(if quick { 50_000 } else { 200_000 }).await;
            emit_cost(if quick { 20_000 } else { 100_000 }).await;
        });
    }

    fn round(v: f64) -> f64 {
        (v * 100.0).round() / 100.0
    }

    /// A destination that never answers: events stay where the emitter keeps them.
    struct Never;

    impl Sink for Never {
        fn send<'a>(&'a self, _: &'a CreateEvent, _: &'a str) -> SinkFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    async fn deliver(kit: &TestKit, org: &OrganizationId, builder: EmitterBuilder, n: usize) -> f64 {
        let emitter = builder.start();
        let start = Instant::now();
        for i in 0..n {
            emitter.try_emit(org.clone(), event(i)).expect("accepted");
        }
        emitter.flush(Duration::from_secs(300)).await.expect("delivered");
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let report = emitter.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.delivered as usize, n);
        kit.reset();
        rate
    }

    fn client(kit: &TestKit) -> Client {
        Client::builder()
            .api_key("sk_test_spool_bench")
            .base_url(kit.url())
            .build()
            .expect("client")
    }

    async fn delivery(n: usize) {
        let kit = TestKit::builder().start().await.expect("testkit");
        let org = OrganizationId::new(kit.organization_id()).expect("org");
        let dir = tempfile::tempdir().expect("tempdir");
        let memory_builder = || {
            Emitter::builder(client(&kit))
                .senders(SENDERS)
                .no_rate_limit()
                .capacity(n)
        };
        // Warm the connections and the server.
        deliver(&kit, &org, memory_builder(), 500).await;
        let mut memory = Vec::new();
        let mut spool = Vec::new();
        for round_no in 0..3 {
            memory.push(deliver(&kit, &org, memory_builder(), n).await);
            let file = SpoolConfig::new(dir.path().join(format!("delivery-{round_no}.db")))
                .open()
                .expect("spool");
            let builder = memory_builder().spool(file).overflow(Overflow::SpillToSpool);
            spool.push(deliver(&kit, &org, builder, n).await);
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let (memory, spool) = (best(&memory), best(&spool));
        let ratio = spool / memory;
        record(
            "spool.delivery.events_per_s",
            spool.round(),
            "events/s",
            json!({"baseline": memory.round(), "baseline_name": "memory mode, same run",
                   "ratio": round(ratio), "target": "ratio >= 0.8", "pass": ratio >= 0.8,
                   "events": n, "senders": SENDERS}),
        );
    }

    /// Every event spilled to the file (memory capacity 1, a destination that never answers):
    /// the time until the writer has committed them all.
    async fn commit_once(n: usize, sync: SpoolSync, path: &std::path::Path) -> (f64, Option<Duration>) {
        let file = SpoolConfig::new(path)
            .sync(sync)
            .max_backlog(n + 1)
            .max_events(n as u64 + 1)
            .open()
            .expect("spool");
        let emitter = Emitter::builder(Never)
            .senders(1)
            .capacity(1)
            .overflow(Overflow::SpillToSpool)
            .spool(file)
            .start();
        let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("org");
        let events: Vec<Event> = (0..n).map(event).collect();
        let start = Instant::now();
        for e in events {
            emitter.try_emit(org.clone(), e).expect("accepted");
        }
        loop {
            let stats = emitter.stats().spool.expect("spool stats");
            if stats.backlog == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let p99 = emitter.stats().spool.and_then(|s| s.commit_p99);
        emitter.shutdown(Duration::from_millis(10)).await;
        (rate, p99)
    }

    async fn commit_rate(n: usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (normal, p99) = commit_once(n, SpoolSync::Normal, &dir.path().join("normal.db")).await;
        record(
            "spool.commit.events_per_s",
            normal.round(),
            "events/s",
            json!({"target": ">= 50000", "pass": normal >= 50_000.0, "synchronous": "NORMAL",
                   "events": n, "commit_p99_ms": p99.map(|d| round(d.as_secs_f64() * 1000.0))}),
        );
        let (full, p99) = commit_once(n, SpoolSync::Full, &dir.path().join("full.db")).await;
        record(
            "spool.commit_full_sync.events_per_s",
            full.round(),
            "events/s",
            json!({"synchronous": "FULL", "events": n,
                   "commit_p99_ms": p99.map(|d| round(d.as_secs_f64() * 1000.0))}),
        );
    }

    /// Median ns per `try_emit` over batches, the events prepared beforehand.
    async fn emit_ns(builder: EmitterBuilder, n: usize) -> f64 {
        let emitter = builder.start();
        let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("org");
        let batch = 1_000;
        let mut per_call = Vec::new();
        let mut i = 0;
        while i + batch <= n {
            let events: Vec<Event> = (i..i + batch).map(event).collect();
            let start = Instant::now();
            for e in events {
                let _ = std::hint::black_box(emitter.try_emit(org.clone(), e));
            }
            per_call.push(start.elapsed().as_nanos() as f64 / batch as f64);
            i += batch;
            // Let the writer keep up between batches, as it would at a sustained rate.
            tokio::task::yield_now().await;
        }
        emitter.shutdown(Duration::from_millis(10)).await;
        per_call.sort_by(f64::total_cmp);
        per_call[per_call.len() / 2]
    }

    async fn emit_cost(n: usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = || Emitter::builder(Never).senders(1).capacity(n + 1);
        // Warm-up of both paths.
        emit_ns(base(), 5_000).await;
        let memory = emit_ns(base(), n).await;
        let file = SpoolConfig::new(dir.path().join("emit.db"))
            .max_backlog(n + 1)
            .open()
            .expect("spool");
        let spool = emit_ns(base().spool(file), n).await;
        let ratio = spool / memory;
        record(
            "spool.emit.ns",
            round(spool),
            "ns",
            json!({"baseline": round(memory), "baseline_name": "memory mode try_emit",
                   "ratio": round(ratio), "target": "ratio <= 2", "pass": ratio <= 2.0}),
        );
        let _ = MemorySink::new();
    }
}
