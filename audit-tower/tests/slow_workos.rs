//! A slow or failing WorkOS (audit-testkit with scripted latency and 500s) changes neither the
//! status nor the latency of the app's responses: the layer only hands events off.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use audit_core::client::Client;
use audit_core::emitter::Emitter;
use audit_core::{Actor, OrganizationId};
use audit_testkit::{FaultRule, TestKit};
use audit_tower::{AuditLayer, action};
use axum::routing::post;
use axum::{Extension, Router};

#[action("team.created")]
async fn create_team() -> (axum::http::StatusCode, &'static str) {
    (axum::http::StatusCode::CREATED, "created")
}

struct Served {
    url: String,
    emitter: Emitter,
    kit: TestKit,
}

async fn serve() -> Served {
    let kit = TestKit::start().await.unwrap();
    let client = Client::builder()
        .api_key("sk_test_slow")
        .base_url(kit.url())
        .build()
        .unwrap();
    let emitter = Emitter::builder(client)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .start();
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let app = Router::new()
        .route("/teams", post(create_team))
        .layer(AuditLayer::new(emitter.clone()))
        .layer(Extension(Actor::new("user_1", "user")))
        .layer(Extension(org));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    Served {
        url: format!("http://{addr}/teams"),
        emitter,
        kit,
    }
}

/// Sends `n` requests one after the other; returns the slowest response time.
async fn slowest_of(url: &str, n: usize) -> Duration {
    let http = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let response = http.post(url).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.text().await.unwrap(), "created");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_workos_does_not_slow_responses() {
    let s = serve().await;
    s.kit
        .fault(FaultRule::new("/audit_logs/events").latency(Duration::from_millis(300)));
    let slowest = slowest_of(&s.url, 20).await;
    assert!(
        slowest < Duration::from_millis(100),
        "slowest response {slowest:?} with WorkOS at 300 ms"
    );
    s.emitter.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        s.kit.events(s.kit.organization_id()).len(),
        20,
        "every event still arrives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_workos_does_not_change_responses() {
    let s = serve().await;
    s.kit.fault(FaultRule::new("/audit_logs/events").respond(500));
    let slowest = slowest_of(&s.url, 20).await;
    assert!(
        slowest < Duration::from_millis(100),
        "slowest response {slowest:?} with WorkOS failing"
    );
    // The events wait for retries (the senders start a moment after the first event: wait for
    // an attempt that got the 500); once WorkOS recovers they are delivered.
    s.kit
        .wait_for_request(Duration::from_secs(10), |r| r.status == 500)
        .await
        .expect("no attempt failed while WorkOS answered 500");
    s.kit.clear_faults();
    s.emitter.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(s.kit.events(s.kit.organization_id()).len(), 20);
    assert!(s.emitter.stats().retried > 0);
}
