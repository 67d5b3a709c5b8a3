//! Benchmarks of reading events back and of local schema checks, as JSON lines on stdout
//! (collected by `cargo xtask bench`).
//!
//! ```text
//! cargo bench -p xtask --bench reader -- read [--quick]     # rows/s from a loopback export, peak RSS
//! cargo bench -p xtask --bench reader -- schema [--quick]   # ns per event of the local schema check
//! ```
//!
//! `read` serves a generated CSV export (200,000 rows, about 64 MB; 50,000 with `--quick`) from a
//! small HTTP server in this process, produced lazily chunk by chunk, and reads it through
//! `EventReader` over loopback. Peak memory is the process's `VmHWM` (this process holds the
//! server too, so it is an upper bound for the reader).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_core::client::{AuditLogSchema, CreateExport};
use audit_core::export::EventReader;
use audit_core::schema::SchemaRegistry;
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId, Target};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let what = args.iter().find(|a| !a.starts_with('-')).map(String::as_str);
    match what {
        Some("read") => read(quick),
        Some("schema") => schema(quick),
        // `cargo bench` without arguments (as `cargo test --benches` may call it): both.
        _ => {
            read(true);
            schema(true);
        }
    }
}

fn record(name: &str, value: f64, unit: &str, target: Option<(&str, bool)>) {
    let mut v = json!({"name": name, "value": (value * 10.0).round() / 10.0, "unit": unit});
    if let Some((t, pass)) = target {
        v["target"] = t.into();
        v["pass"] = pass.into();
    }
    println!("{v}");
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

const HEADER: &str = "action,occurred_at,actor_id,actor_type,actor_name,actor_metadata,context_location,context_user_agent,metadata,target_id_1,target_type_1,target_name_1,target_metadata_1\n";

fn row(i: u64) -> String {
    format!(
        "user.signed_in,2026-01-01T00:00:00.000Z,user_{i:010},user,Name {i},\"{{\"\"role\"\":\"\"admin\"\"}}\",203.0.113.7,Mozilla/5.0 (X11; Linux x86_64),\"{{\"\"request_id\"\":\"\"req_{i:016}\"\",\"\"n\"\":{i},\"\"ok\"\":true,\"\"pad\"\":\"\"{}\"\"}}\",team_{i},team,Team {i},\"{{\"\"seats\"\":12}}\"\n",
        "p".repeat(60)
    )
}

fn read(quick: bool) {
    let rows: u64 = if quick { 50_000 } else { 200_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let addr = serve(rows).await;
        let client = Client::builder()
            .api_key("sk_test_bench")
            .base_url(format!("http://{addr}"))
            .build()
            .expect("client");
        let now = time::OffsetDateTime::now_utc();
        let q = CreateExport::new(
            OrganizationId::new("org_bench").expect("id"),
            now - time::Duration::hours(1),
            now,
        );
        let before = vm_hwm_kib().unwrap_or(0);
        let start = Instant::now();
        let stream = EventReader::new(client).read(q);
        let progress = stream.progress();
        let n = stream
            .try_fold(0u64, |n, e| async move {
                black_box(&e);
                Ok(n + 1)
            })
            .await
            .expect("read");
        let took = start.elapsed().as_secs_f64();
        assert_eq!(n, rows);
        let mib = progress.bytes() as f64 / (1024.0 * 1024.0);
        record("export.read.rows_per_s", n as f64 / took, "rows/s", None);
        record("export.read.mib_per_s", mib / took, "MiB/s", None);
        record("export.read.size", mib, "MiB", None);
        if let Some(peak) = vm_hwm_kib() {
            let peak_mib = peak as f64 / 1024.0;
            record(
                "export.read.peak_rss",
                peak_mib,
                "MiB",
                Some(("< 64 MiB (export much larger)", peak_mib < 64.0)),
            );
            record("export.read.peak_rss_before", before as f64 / 1024.0, "MiB", None);
        }
    });
}

/// An HTTP server answering the export endpoints (always ready) and `/file.csv` with `rows`
/// generated rows, produced chunk by chunk as the client reads.
async fn serve(rows: u64) -> std::net::SocketAddr {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let export = move || {
        axum::Json(json!({
            "object": "audit_log_export", "id": "audit_log_export_bench", "state": "ready",
            "url": format!("http://{addr}/file.csv"),
            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
        }))
    };
    const PER_CHUNK: u64 = 200;
    let app = axum::Router::new()
        .route(
            "/audit_logs/exports",
            post(move || async move { (axum::http::StatusCode::CREATED, export()) }),
        )
        .route("/audit_logs/exports/{id}", get(move || async move { export() }))
        .route(
            "/file.csv",
            get(move || async move {
                let chunks = futures_util::stream::iter(0..=rows.div_ceil(PER_CHUNK)).map(move |c| {
                    let text = if c == 0 {
                        HEADER.to_owned()
                    } else {
                        ((c - 1) * PER_CHUNK..(c * PER_CHUNK).min(rows))
                            .map(row)
                            .collect()
                    };
                    Ok::<_, std::io::Error>(Bytes::from(text))
                });
                axum::body::Body::from_stream(chunks)
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn schema(quick: bool) {
    let iterations: u32 = if quick { 20_000 } else { 200_000 };
    let mut registry = SchemaRegistry::new();
    let registered: AuditLogSchema = serde_json::from_value(json!({
        "object": "audit_log_schema", "version": 3,
        "targets": [{"type": "invoice", "metadata": {"type": "object",
            "properties": {"cost": {"type": "number"}, "currency": {"type": "string"}}, "required": ["cost"]}}],
        "actor": {"metadata": {"type": "object", "properties": {"role": {"enum": ["admin", "member"]}}}},
        "metadata": {"type": "object", "properties": {
            "request_id": {"type": "string"}, "amount": {"type": "number"},
            "refund": {"type": "boolean"}, "note": {"type": "string", "maxLength": 200}}},
        "created_at": "2026-01-01T00:00:00.000Z"
    }))
    .expect("schema");
    let action = Action::new("invoice.paid").expect("action");
    registry.insert(&action, &registered).expect("compiles");
    let registry = Arc::new(registry);
    let event = Event::new(
        action,
        Actor::new("user_01", "user").meta("role", "admin"),
        Context::new("203.0.113.7"),
    )
    .version(3)
    .target(
        Target::new("inv_01", "invoice")
            .meta("cost", 129.5)
            .meta("currency", "EUR"),
    )
    .meta("request_id", "req_0123456789")
    .meta("amount", 129.5)
    .meta("refund", false)
    .meta("note", "paid by card");
    assert!(registry.check(&event).is_ok());
    let time = |f: &dyn Fn()| {
        for _ in 0..iterations / 10 {
            f();
        }
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(iterations)
    };
    let check = time(&|| {
        black_box(registry.check(black_box(&event)).is_ok());
    });
    let validate = time(&|| {
        black_box(black_box(&event).validate().is_ok());
    });
    let mut bad = event.clone();
    bad.metadata = Some(audit_core::Metadata::new().with("amount", "lots"));
    let failing = time(&|| {
        black_box(registry.check(black_box(&bad)).is_err());
    });
    record(
        "schema.check.ns_per_event",
        check,
        "ns",
        Some(("< 20000 ns", check < 20_000.0)),
    );
    record("schema.check_failing.ns_per_event", failing, "ns", None);
    record("event.validate.ns_per_event", validate, "ns", None);
    let _ = Duration::ZERO;
}
