//! A load generator measuring the create-event throughput of an in-process testkit.
//!
//! `cargo xtask bench` calls [`create_event_throughput`]; the example
//! `cargo run --release -p audit-testkit --example throughput` prints the figure.

use crate::TestKit;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The testkit did not start.
    #[error(transparent)]
    Start(#[from] crate::Error),
    /// The client side failed.
    #[error("load generator: {0}")]
    Client(String),
    /// Some requests did not get a 200.
    #[error("{0} of the requests failed")]
    Failed(usize),
}

/// Sends `total` valid create-event requests from `concurrency` keep-alive connections to a
/// fresh in-process testkit and returns events per second; 0.0 if the run failed (the error is
/// printed to stderr). See [`try_create_event_throughput`] for the error.
pub fn create_event_throughput(concurrency: usize, total: usize) -> f64 {
    match try_create_event_throughput(concurrency, total) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("audit-testkit bench: {e}");
            0.0
        }
    }
}

/// Like [`create_event_throughput`], returning the error instead of 0.0.
///
/// Blocking; safe to call from inside an async runtime too (the load generator runs on its own
/// thread and runtime).
pub fn try_create_event_throughput(concurrency: usize, total: usize) -> Result<f64, BenchError> {
    std::thread::spawn(move || run(concurrency, total))
        .join()
        .unwrap_or_else(|_| Err(BenchError::Client("the load generator thread panicked".into())))
}

fn run(concurrency: usize, total: usize) -> Result<f64, BenchError> {
    let concurrency = concurrency.max(1);
    // Default settings, request recording included: what a test suite runs with.
    let kit = TestKit::builder().start_blocking()?;
    let url = format!("{}/audit_logs/events", kit.url());
    let org = kit.organization_id().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Client(e.to_string()))?;
    let result = rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .map_err(|e| BenchError::Client(e.to_string()))?;
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, url, org, next, failed) = (
                client.clone(),
                url.clone(),
                org.clone(),
                next.clone(),
                failed.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let body = format!(
                        r#"{{"organization_id":"{org}","event":{{"action":"user.signed_in","occurred_at":"2024-01-02T03:04:05.678Z","actor":{{"id":"user_{i}","type":"user","name":"Jon"}},"targets":[{{"id":"team_1","type":"team"}}],"context":{{"location":"203.0.113.7","user_agent":"bench"}},"metadata":{{"n":{i}}}}}}}"#
                    );
                    let ok = client
                        .post(&url)
                        .bearer_auth("sk_test_bench")
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("bench-{i}"))
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let secs = started.elapsed().as_secs_f64();
        match failed.load(Ordering::Relaxed) {
            0 => Ok(total as f64 / secs.max(f64::EPSILON)),
            n => Err(BenchError::Failed(n)),
        }
    });
    drop(kit);
    result
}
