//! The cost of one `Emitter::try_emit` call (validation, key, hand-off), single-threaded and
//! with two threads emitting at once. Senders run on a tokio runtime and deliver to a sink that
//! answers at once, so the queue is drained concurrently as in an application.
//!
//! `cargo bench -p audit-core --bench emitter_emit`; `cargo xtask bench` reads the medians.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use audit_core::emitter::{Emitter, Sink, SinkFuture};
use audit_core::{Action, Actor, Context, CreateEvent, Event, OrganizationId, Target};
use criterion::{Criterion, criterion_group, criterion_main};

/// Accepts every event at once.
struct Accept;

impl Sink for Accept {
    fn send<'a>(&'a self, _: &'a CreateEvent, _: &'a str) -> SinkFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }
}

fn event() -> Event {
    Event::new(
        Action::from_static("team.member_added"),
        Actor::new("user_01HQ8Z3J6K4M2N7P9R1S5T0V3W", "user").name("Jon Smith"),
        Context::new("203.0.113.7").user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"),
    )
    .target(Target::new("team_01HQ8Z3J6K4M2N7P9R1S5T0V3X", "team").name("Engineering"))
    .meta("role", "admin")
    .meta("request_id", "req_5b2b0a1c")
}

fn setup() -> (tokio::runtime::Runtime, Emitter, OrganizationId) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let emitter = Emitter::builder(Accept)
        .no_rate_limit()
        .capacity(1 << 20)
        .start_on(rt.handle());
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("org");
    (rt, emitter, org)
}

/// Emits `iters` events on each of `threads` threads at once; returns the longest thread's time
/// spent inside `try_emit`.
fn run(emitter: &Emitter, org: &OrganizationId, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let emitter = emitter.clone();
            let org = org.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                // Events are built outside the timed part (the caller builds them anyway), in
                // chunks to bound memory.
                let mut took = Duration::ZERO;
                let mut left = iters;
                barrier.wait();
                while left > 0 {
                    let n = left.min(10_000);
                    left -= n;
                    let events: Vec<Event> = (0..n).map(|_| event()).collect();
                    let start = Instant::now();
                    for e in events {
                        let _ = black_box(emitter.try_emit(org.clone(), e));
                    }
                    took += start.elapsed();
                }
                took
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .max()
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let (rt, emitter, org) = setup();
    let mut group = c.benchmark_group("emitter_emit");
    for threads in [1usize, 2] {
        let id = if threads == 1 {
            "try_emit_single_thread"
        } else {
            "try_emit_two_threads"
        };
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let took = run(&emitter, &org, threads, iters);
                // Let the senders catch up outside the measurement so the queue never fills.
                let _ = rt.block_on(emitter.flush(Duration::from_secs(30)));
                took
            })
        });
    }
    group.finish();
    let stats = emitter.stats();
    assert_eq!(
        stats.dropped.total(),
        0,
        "the queue filled: the benchmark measured drops"
    );
    drop(rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
