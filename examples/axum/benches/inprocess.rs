//! What the audit pipeline costs one request when everything runs on one thread: the example's
//! router called in a loop with `oneshot` on a current-thread runtime (no network, no load
//! generator, no second core), with the audit layer and an emitter delivering to a
//! `DiscardSink` on that same thread, against the same router without audit. Prints JSON lines
//! for `cargo xtask bench`:
//! `cargo bench -p example-axum --bench inprocess [-- --quick]`.
//!
//! Next to the request-path throughput measurement (two processes sharing two cores), it tells
//! the pipeline's own cost apart from what moving an event between cores adds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use audit_core::OrganizationId;
use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::{DiscardSink, Emitter};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

/// The example app's allocator (see its `main.rs`), so that the figures are the app's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The request of the throughput measurement: an audited route, a signed-in user.
fn request() -> Request<Body> {
    let mut request = Request::get("/invoices/inv_1")
        .header("authorization", "Bearer user_1")
        .header("user-agent", "request-path-bench/1")
        .body(Body::empty())
        .expect("a request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    request
}

/// ns per request over `n` requests, the emitter flushed at the end (its work is counted).
async fn timed(app: &axum::Router, emitter: &Emitter, n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let response = app.clone().oneshot(request()).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
    emitter
        .flush(Duration::from_secs(30))
        .await
        .expect("every event delivered");
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, n) = if quick { (3, 10_000) } else { (9, 50_000) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("org");
        let emitter = Emitter::builder(DiscardSink::new())
            .senders(2)
            .no_rate_limit()
            .start();
        let with = example_axum::router(
            example_axum::AppState::new(org.clone()),
            Some(example_axum::audit_layer(
                emitter.clone(),
                ClientIpConfig::default(),
            )),
        );
        let without = example_axum::router(example_axum::AppState::new(org), None);
        timed(&with, &emitter, n / 10).await;
        timed(&without, &emitter, n / 10).await;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            off.push(timed(&without, &emitter, n).await);
            on.push(timed(&with, &emitter, n).await);
        }
        let (on, off) = (median(on), median(off));
        println!(
            "{}",
            json!({"name": "request_path.inprocess", "value": on.round(), "unit": "ns/request",
                   "baseline": off.round(), "ratio": (on / off * 1000.0).round() / 1000.0,
                   "audit_cost_ns": (on - off).round(), "median_of": rounds, "requests": n,
                   "route": "GET /invoices/{id}", "sink": "DiscardSink, same thread"})
        );
        emitter.shutdown(Duration::from_secs(10)).await;
    });
}
