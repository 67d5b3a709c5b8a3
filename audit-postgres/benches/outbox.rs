//! Figures of the PostgreSQL outbox (`DATABASE_URL`) against an in-process audit-testkit over
//! loopback, printed as JSON lines for `cargo xtask bench`:
//!
//! - `write`: the cost of writing the event in a transaction that inserts one business row, as a
//!   ratio against the same transaction without it (alternating rounds, each side's total
//!   transactions over its total time);
//! - `delivery`: events/s from one outbox to the testkit with one relay instance and with three,
//!   against the in-memory emitter delivering the same events in the same run;
//! - `concurrency`: the same transactions at 1, 16 and 64 concurrent connections, with and
//!   without the event, as a throughput ratio (alternating timed rounds);
//! - `latency`: the delay from a commit to the start of its delivery request (testkit arrival),
//!   at idle (one event at a time) and under load (16 connections writing meanwhile);
//! - `faults`: three relays under the emitter bench's fault mix (500 before storing to 20 %, 502
//!   after storing to 5 %, dropped connections after storing to 2 %): every event stored exactly
//!   once.
//!
//! With each delivery figure comes where its CPU time went (Linux, from `/proc`): this process
//! (the relays or the emitter, and the in-process testkit) and the PostgreSQL server's processes,
//! per delivered event, and how busy the machine's cores were. When the cores are saturated with
//! one relay, more relays cannot deliver faster on that machine: they only add contention.
//!
//! `cargo bench -p audit-postgres --bench outbox -- [write|concurrency|latency|delivery|faults] [--quick]`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use audit_core::emitter::Emitter;
use audit_core::{Client, OrganizationId};
use audit_postgres::{Outbox, Relay};
use audit_testkit::TestKit;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

#[path = "../../audit-core/benches/support/faults.rs"]
mod faults;
#[path = "../../audit-core/benches/support/records.rs"]
mod records;
use faults::add_fault_mix;
use records::{event, record};

const KEY: &str = "sk_test_outbox_bench";
const SCHEMA: &str = "bench_outbox";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    let quick = args.iter().any(|a| a == "--quick");
    let all = !args
        .iter()
        .any(|a| ["write", "concurrency", "latency", "delivery", "faults"].contains(&a.as_str()));
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("outbox bench: DATABASE_URL is not set; no PostgreSQL figures (see .ci/start-postgres)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(&url)
            .await
            .expect("DATABASE_URL reachable");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            .execute(&pool)
            .await
            .expect("drop the bench schema");
        let outbox = Outbox::with_schema(pool, SCHEMA).expect("schema");
        outbox.migrate().await.expect("migrations");
        if all || args.iter().any(|a| a == "write") {
            write_cost(&outbox, quick).await;
        }
        if all || args.iter().any(|a| a == "concurrency") {
            concurrency(&outbox, &url, quick).await;
        }
        if all || args.iter().any(|a| a == "latency") {
            latency(&outbox, quick).await;
        }
        if all || args.iter().any(|a| a == "delivery") {
            delivery(&outbox, quick).await;
            delivery_with_latency(&outbox, quick).await;
        }
        if all || args.iter().any(|a| a == "faults") {
            faults(&outbox, quick).await;
        }
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            .execute(outbox.pool())
            .await
            .expect("drop the bench schema");
    });
}

/// CPU seconds used so far, from `/proc` (Linux).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// This process: the relays or the emitter, and the in-process testkit.
    own: f64,
    /// Every process named `postgres` (the server, its backends and background workers).
    postgres: f64,
}

impl Cpu {
    fn now() -> Option<Self> {
        let tick = clock_ticks()?;
        let own = proc_ticks("/proc/self/stat")? / tick;
        let mut postgres = 0.0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let path = entry.path();
            let is_postgres =
                std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "postgres");
            if is_postgres && let Some(t) = proc_ticks(&path.join("stat").to_string_lossy()) {
                postgres += t / tick;
            }
        }
        Some(Self { own, postgres })
    }

    fn since(self, start: Self) -> Self {
        Self {
            own: self.own - start.own,
            postgres: self.postgres - start.postgres,
        }
    }

    fn add(&mut self, other: Self) {
        self.own += other.own;
        self.postgres += other.postgres;
    }
}

/// `utime + stime` of a `/proc/<pid>/stat` file, in clock ticks.
fn proc_ticks(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last one.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> Option<f64> {
    static TICK: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

/// One timed delivery run: seconds and the CPU used meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    secs: f64,
    cpu: Option<Cpu>,
}

impl Run {
    fn add(&mut self, other: Run) {
        self.secs += other.secs;
        self.cpu = match (self.cpu, other.cpu) {
            (Some(mut a), Some(b)) => {
                a.add(b);
                Some(a)
            }
            (None, b) => b,
            (a, None) => a,
        };
    }

    /// Where the CPU went, per delivered event, and the share of the machine's cores in use.
    fn cpu_json(&self, events: f64) -> serde_json::Value {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        match self.cpu {
            Some(cpu) => json!({
                "cpu_us_per_event_process": (cpu.own / events * 1e6).round(),
                "cpu_us_per_event_postgres": (cpu.postgres / events * 1e6).round(),
                "cores_busy": round3((cpu.own + cpu.postgres) / self.secs / cores),
                "cores": cores,
            }),
            None => json!({"cpu": "not measured (no /proc)"}),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What a measured transaction does besides inserting its business row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Extra {
    /// Nothing: the baseline.
    Nothing,
    /// Writes the audit event with `Outbox::write`.
    Event,
    /// Runs `SELECT 1`: what any extra statement costs (one more round trip), for comparison.
    Statement,
    /// Inserts a second business row: what any extra row costs, for comparison.
    Row,
}

/// Seconds for `n` transactions, each inserting one business row, plus `extra`.
async fn transactions(outbox: &Outbox, org: &OrganizationId, n: usize, first_id: i64, extra: Extra) -> f64 {
    let mut conn = outbox.pool().acquire().await.expect("connection");
    let insert = format!("INSERT INTO {SCHEMA}.invoices (id, customer, amount_cents) VALUES ($1, $2, $3)");
    let start = Instant::now();
    for i in 0..n {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        sqlx::query(&insert)
            .bind(first_id + i as i64)
            .bind("customer_01HQ8Z3J6K4M2N7P9R1S5T0V3X")
            .bind(4_200_i64)
            .execute(&mut *tx)
            .await
            .expect("business row");
        match extra {
            Extra::Nothing => {}
            Extra::Event => {
                outbox.write(&mut tx, org, &event(i)).await.expect("event row");
            }
            Extra::Statement => {
                sqlx::query("SELECT 1").execute(&mut *tx).await.expect("select");
            }
            Extra::Row => {
                sqlx::query(&insert)
                    .bind(-(first_id + i as i64) - 1)
                    .bind("customer_01HQ8Z3J6K4M2N7P9R1S5T0V3X")
                    .bind(4_200_i64)
                    .execute(&mut *tx)
                    .await
                    .expect("second business row");
            }
        }
        tx.commit().await.expect("commit");
    }
    start.elapsed().as_secs_f64()
}

async fn business_table(outbox: &Outbox) {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {SCHEMA}.invoices (id bigint PRIMARY KEY, customer text NOT NULL, amount_cents bigint NOT NULL, \
         created_at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(outbox.pool())
    .await
    .expect("business table");
}

async fn write_cost(outbox: &Outbox, quick: bool) {
    business_table(outbox).await;
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("org");
    let (n, rounds) = if quick { (500, 2) } else { (2_000, 6) };
    let (mut plain, mut with, mut statement, mut row) = (0.0, 0.0, 0.0, 0.0);
    let mut next_id = 0i64;
    let sides = [Extra::Nothing, Extra::Event, Extra::Statement, Extra::Row];
    for round in 0..rounds {
        // Rotate which side goes first, so that none always meets a warmer cache.
        for k in 0..sides.len() {
            let side = sides[(round + k) % sides.len()];
            let t = transactions(outbox, &org, n, next_id, side).await;
            next_id += n as i64;
            match side {
                Extra::Nothing => plain += t,
                Extra::Event => with += t,
                Extra::Statement => statement += t,
                Extra::Row => row += t,
            }
        }
        sqlx::query(&format!("TRUNCATE {SCHEMA}.audit_outbox, {SCHEMA}.invoices"))
            .execute(outbox.pool())
            .await
            .expect("truncate");
    }
    let total = (n * rounds) as f64;
    let ratio = with / plain;
    let us = |t: f64| (t / total * 1e6).round();
    record(
        "outbox.write.in_transaction",
        us(with),
        "us/txn",
        json!({"baseline": us(plain), "ratio": round3(ratio), "target": "ratio <= 1.3",
               "pass": ratio <= 1.3, "transactions": n * rounds, "rounds": rounds,
               "any_extra_statement_us": us(statement),
               "any_extra_statement_ratio": round3(statement / plain),
               "second_business_row_us": us(row),
               "second_business_row_ratio": round3(row / plain),
               "note": "BEGIN; INSERT business row; [outbox.write]; COMMIT on one connection. \
                        any_extra_statement: SELECT 1 instead of the event (one more round trip); \
                        second_business_row: another business row instead of the event"}),
    );
}

/// Transactions per second over `secs` seconds with `connections` concurrent connections, each
/// running `BEGIN; INSERT business row; [outbox.write]; COMMIT` in a loop. Ids are drawn from
/// `next`, so that no two transactions collide.
async fn concurrent_tps(
    outbox: &Outbox,
    pool: &sqlx::PgPool,
    connections: usize,
    secs: f64,
    with_event: bool,
    next: &std::sync::atomic::AtomicI64,
) -> f64 {
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("org");
    let insert = format!("INSERT INTO {SCHEMA}.invoices (id, customer, amount_cents) VALUES ($1, $2, $3)");
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(pool.acquire().await.expect("connection"));
    }
    let stop_at = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let counts = futures_util::future::join_all(conns.into_iter().map(|mut conn| {
        let (insert, org) = (&insert, &org);
        async move {
            let mut done = 0u64;
            while Instant::now() < stop_at {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
                sqlx::query(insert)
                    .bind(id)
                    .bind("customer_01HQ8Z3J6K4M2N7P9R1S5T0V3X")
                    .bind(4_200_i64)
                    .execute(&mut *tx)
                    .await
                    .expect("business row");
                if with_event {
                    outbox
                        .write(&mut tx, org, &event(id as usize))
                        .await
                        .expect("event row");
                }
                tx.commit().await.expect("commit");
                done += 1;
            }
            done
        }
    }))
    .await;
    counts.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64()
}

/// The write at 1, 16 and 64 concurrent connections, with and without the event, in alternating
/// rounds (no relay running: the figure is the writers' cost alone).
async fn concurrency(outbox: &Outbox, url: &str, quick: bool) {
    business_table(outbox).await;
    let pool = PgPoolOptions::new()
        .max_connections(64)
        .connect(url)
        .await
        .expect("DATABASE_URL reachable");
    let (secs, rounds) = if quick { (1.0, 1) } else { (3.0, 3) };
    let next = std::sync::atomic::AtomicI64::new(1_000_000_000);
    for connections in [1usize, 16, 64] {
        let (mut plain, mut with) = (0.0, 0.0);
        for round in 0..rounds {
            for side in [round % 2 == 1, round % 2 == 0] {
                let tps = concurrent_tps(outbox, &pool, connections, secs, side, &next).await;
                if side { with += tps } else { plain += tps }
            }
            sqlx::query(&format!("TRUNCATE {SCHEMA}.audit_outbox, {SCHEMA}.invoices"))
                .execute(outbox.pool())
                .await
                .expect("truncate");
        }
        let (plain, with) = (plain / rounds as f64, with / rounds as f64);
        let ratio = with / plain;
        let target = connections > 1;
        record(
            &format!("outbox.write.concurrent_{connections}"),
            with.round(),
            "txn/s",
            json!({"baseline": plain.round(), "ratio": round3(ratio),
                   "target": if target { "ratio >= 0.7" } else { "none (one connection: see outbox.write.in_transaction)" },
                   "pass": !target || ratio >= 0.7, "connections": connections, "rounds": rounds, "seconds_per_side": secs,
                   "note": "BEGIN; INSERT business row; [outbox.write]; COMMIT per transaction, each connection in a loop"}),
        );
    }
    pool.close().await;
}

/// p50 and p95 of `samples` (milliseconds).
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

/// Milliseconds from each key's commit to its request's arrival at the testkit.
fn delays(kit: &TestKit, committed: &std::collections::HashMap<String, time::OffsetDateTime>) -> Vec<f64> {
    kit.requests()
        .iter()
        .filter(|r| r.path == "/audit_logs/events" && r.method == "POST")
        .filter_map(|r| {
            let at = committed.get(r.header("idempotency-key")?)?;
            Some((r.received_at - *at).as_seconds_f64() * 1e3)
        })
        .collect()
}

/// The delay from commit to the start of delivery, with relays at their defaults (no rate
/// limit): at idle, and while 16 connections write continuously.
async fn latency(outbox: &Outbox, quick: bool) {
    business_table(outbox).await;
    let kit = TestKit::builder().start().await.expect("testkit");
    let org = OrganizationId::new(kit.organization_id()).expect("org");
    let relays = start_relays(outbox, &kit, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = if quick { 20 } else { 60 };
    let mut committed = std::collections::HashMap::new();
    for i in 0..samples {
        let mut tx = outbox.pool().begin().await.expect("begin");
        let key = outbox.write(&mut tx, &org, &event(i)).await.expect("write");
        tx.commit().await.expect("commit");
        committed.insert(key, time::OffsetDateTime::now_utc());
        // Idle in between: the relays go back to waiting.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle50, idle95) = percentiles(delays(&kit, &committed));
    record(
        "outbox.latency.commit_to_delivery_idle",
        round3(idle50),
        "ms p50",
        json!({"p95_ms": round3(idle95), "samples": samples, "target": "p50 < 50 ms", "pass": idle50 < 50.0,
               "note": "one event per transaction, 150 ms apart; commit to the request's arrival at audit-testkit"}),
    );
    kit.reset();
    // Under load: 16 writers for a few seconds, every commit timed.
    let secs = if quick { 2.0 } else { 5.0 };
    let stop_at = Instant::now() + Duration::from_secs_f64(secs);
    let next = std::sync::atomic::AtomicI64::new(2_000_000_000);
    let writers = futures_util::future::join_all((0..16).map(|_| {
        let (org, next) = (&org, &next);
        async move {
            let mut mine = Vec::new();
            while Instant::now() < stop_at {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut tx = outbox.pool().begin().await.expect("begin");
                sqlx::query(&format!(
                    "INSERT INTO {SCHEMA}.invoices (id, customer, amount_cents) VALUES ($1, 'c', 1)"
                ))
                .bind(id)
                .execute(&mut *tx)
                .await
                .expect("business row");
                let key = outbox
                    .write(&mut tx, org, &event(id as usize))
                    .await
                    .expect("write");
                tx.commit().await.expect("commit");
                mine.push((key, time::OffsetDateTime::now_utc()));
            }
            mine
        }
    }))
    .await;
    let committed: std::collections::HashMap<_, _> = writers.into_iter().flatten().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox.stats().await.expect("stats").depth > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (load50, load95) = percentiles(delays(&kit, &committed));
    record(
        "outbox.latency.commit_to_delivery_under_load",
        round3(load50),
        "ms p50",
        json!({"p95_ms": round3(load95), "events": committed.len(), "writers": 16, "seconds": secs,
               "target": "p50 < 50 ms", "pass": load50 < 50.0,
               "note": "16 connections writing one business row and the event per transaction while one relay instance delivers"}),
    );
    for r in relays {
        r.shutdown(Duration::from_secs(5)).await;
    }
    sqlx::query(&format!("TRUNCATE {SCHEMA}.audit_outbox, {SCHEMA}.invoices"))
        .execute(outbox.pool())
        .await
        .expect("truncate");
}

fn client(kit: &TestKit) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(kit.url())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Writes `n` events (untimed) in transactions of 500.
async fn fill(outbox: &Outbox, org: &OrganizationId, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut tx = outbox.pool().begin().await.expect("begin");
        for &i in chunk {
            outbox.write(&mut tx, org, &event(i)).await.expect("write");
        }
        tx.commit().await.expect("commit");
    }
}

fn start_relays(outbox: &Outbox, kit: &TestKit, instances: usize) -> Vec<Relay> {
    (0..instances)
        .map(|i| {
            outbox
                .relay(client(kit))
                .no_rate_limit()
                .instance_id(format!("bench-{i}"))
                .retry_backoff(Duration::from_millis(20), Duration::from_millis(500))
                .start()
                .expect("relay")
        })
        .collect()
}

/// The time until `instances` relays (started after the rows are written) drain `n` events.
async fn drain(outbox: &Outbox, kit: &TestKit, org: &OrganizationId, n: usize, instances: usize) -> Run {
    fill(outbox, org, n).await;
    let cpu = Cpu::now();
    let start = Instant::now();
    let relays = start_relays(outbox, kit, instances);
    // The relays' own counters (a row counts once it is acknowledged and deleted): polling the
    // table instead would add the polling queries to PostgreSQL's share.
    while relays.iter().map(|r| r.stats().delivered).sum::<u64>() < n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let run = Run {
        secs: start.elapsed().as_secs_f64(),
        cpu: Cpu::now().zip(cpu).map(|(end, start)| end.since(start)),
    };
    // Untimed: the last deletes are visible to other connections, then the final counters.
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox.stats().await.expect("stats").depth > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut delivered = 0;
    for r in relays {
        delivered += r.shutdown(Duration::from_secs(5)).await.stats.delivered;
    }
    let depth = outbox.stats().await.expect("stats").depth;
    // More deliveries than rows would mean a row claimed twice.
    assert_eq!((delivered, depth), (n as u64, 0), "(deliveries, rows left)");
    run
}

/// The time the in-memory emitter (8 senders, as in the emitter bench) takes to deliver `n` events.
async fn through_emitter(kit: &TestKit, org: &OrganizationId, n: usize) -> Run {
    let emitter = Emitter::builder(client(kit))
        .no_rate_limit()
        .capacity(n.max(10_000))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .start();
    let cpu = Cpu::now();
    let start = Instant::now();
    for i in 0..n {
        emitter.try_emit(org.clone(), event(i)).expect("accepted");
    }
    emitter.flush(Duration::from_secs(300)).await.expect("flushed");
    let run = Run {
        secs: start.elapsed().as_secs_f64(),
        cpu: Cpu::now().zip(cpu).map(|(end, start)| end.since(start)),
    };
    emitter.shutdown(Duration::from_secs(5)).await;
    run
}

/// (stored, distinct idempotency keys)
fn stored(kit: &TestKit) -> (usize, usize) {
    let events = kit.events(kit.organization_id());
    let keys: HashSet<String> = events.iter().filter_map(|e| e.idempotency_key.clone()).collect();
    (events.len(), keys.len())
}

async fn delivery(outbox: &Outbox, quick: bool) {
    let kit = TestKit::builder().start().await.expect("testkit");
    let org = OrganizationId::new(kit.organization_id()).expect("org");
    let (n, rounds) = if quick { (2_000, 1) } else { (5_000, 4) };
    let (mut memory, mut one, mut three) = (Run::default(), Run::default(), Run::default());
    for _ in 0..rounds {
        kit.reset();
        memory.add(through_emitter(&kit, &org, n).await);
        kit.reset();
        one.add(drain(outbox, &kit, &org, n, 1).await);
        assert_eq!(stored(&kit), (n, n), "one relay stored every event once");
        kit.reset();
        three.add(drain(outbox, &kit, &org, n, 3).await);
        assert_eq!(stored(&kit), (n, n), "three relays stored every event once");
    }
    let total = (n * rounds) as f64;
    let with = |mut a: serde_json::Value, run: &Run| {
        if let (Some(obj), serde_json::Value::Object(more)) = (a.as_object_mut(), run.cpu_json(total)) {
            obj.extend(more);
        }
        a
    };
    let (memory_rate, one_rate, three_rate) = (total / memory.secs, total / one.secs, total / three.secs);
    record(
        "outbox.delivery.one_relay",
        one_rate.round(),
        "events/s",
        with(
            json!({"baseline": memory_rate.round(), "ratio": round3(one_rate / memory_rate),
                   "target": "ratio >= 0.5 (vs in-memory emitter)", "pass": one_rate / memory_rate >= 0.5,
                   "events": n, "rounds": rounds}),
            &one,
        ),
    );
    record(
        "outbox.delivery.three_relays",
        three_rate.round(),
        "events/s",
        with(
            json!({"baseline": one_rate.round(), "ratio": round3(three_rate / one_rate),
                   "target": "ratio >= 1.0 (vs one relay)", "pass": three_rate >= one_rate,
                   "events": n, "rounds": rounds}),
            &three,
        ),
    );
    record(
        "outbox.delivery.memory_emitter",
        memory_rate.round(),
        "events/s",
        with(json!({"events": n, "rounds": rounds}), &memory),
    );
}

/// One and three relays when every request takes 20 ms, as over the internet to WorkOS: a relay is
/// then bound by its requests in flight (16 by default), not by the CPU, and the fleet's
/// throughput grows with its instances even on a small machine.
async fn delivery_with_latency(outbox: &Outbox, quick: bool) {
    let kit = TestKit::builder().start().await.expect("testkit");
    let org = OrganizationId::new(kit.organization_id()).expect("org");
    let n = if quick { 600 } else { 2_000 };
    let latency = || {
        audit_testkit::FaultRule::new("/audit_logs/events")
            .method("POST")
            .latency(Duration::from_millis(20))
    };
    kit.fault(latency());
    let one = drain(outbox, &kit, &org, n, 1).await.secs;
    assert_eq!(stored(&kit), (n, n), "one relay stored every event once");
    kit.reset();
    kit.clear_faults();
    kit.fault(latency());
    let three = drain(outbox, &kit, &org, n, 3).await.secs;
    assert_eq!(stored(&kit), (n, n), "three relays stored every event once");
    let (one, three) = (n as f64 / one, n as f64 / three);
    record(
        "outbox.delivery.three_relays_20ms_latency",
        three.round(),
        "events/s",
        json!({"baseline": one.round(), "ratio": round3(three / one), "target": "ratio >= 1.0 (vs one relay)",
               "pass": three >= one, "events": n, "latency_ms": 20,
               "note": "every request held 20 ms by audit-testkit; 16 requests in flight per relay"}),
    );
}

async fn faults(outbox: &Outbox, quick: bool) {
    let kit = TestKit::builder().start().await.expect("testkit");
    let org = OrganizationId::new(kit.organization_id()).expect("org");
    let n = if quick { 2_000 } else { 10_000 };
    // The emitter bench's mix.
    add_fault_mix(&kit);
    let elapsed = drain(outbox, &kit, &org, n, 3).await.secs;
    let (count, unique) = stored(&kit);
    let dead = outbox.stats().await.expect("stats").dead_letters;
    record(
        "outbox.delivery.faults.stored_exactly_once",
        unique as f64,
        "events",
        json!({"baseline": n, "ratio": round3(unique as f64 / n as f64), "target": "all, no duplicate",
               "pass": unique == n && count == unique && dead == 0, "duplicates": count - unique,
               "dead_letters": dead, "relays": 3,
               "faults": "500 before 20%, 502 after 5%, drop after 2%"}),
    );
    record(
        "outbox.delivery.faults.throughput",
        (n as f64 / elapsed).round(),
        "events/s",
        json!({"relays": 3, "events": n}),
    );
}
