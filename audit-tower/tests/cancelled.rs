//! Cancelled requests are never invisible: a response future dropped after the handler started
//! (a timeout layer around a slow handler, a client that disconnects) is counted, and emitted
//! marked `outcome: "cancelled"` unless the policy skips it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink};
use audit_core::request::{CancelledRequests, SkipCounters};
use audit_core::{Actor, MetadataValue, OrganizationId};
use audit_test_cases::cancelled::assert_one_cancelled_report;
use audit_tower::{AuditCtx, AuditLayer, MissingActor, action};
use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use axum::routing::post;
use tokio::sync::Notify;
use tower::{ServiceBuilder, ServiceExt};

fn layer(emitter: &Emitter, cancelled: CancelledRequests) -> AuditLayer {
    AuditLayer::builder(emitter.clone())
        .missing_actor(MissingActor::Use(Actor::new("user_1", "user")))
        .default_organization(OrganizationId::new("org_1").unwrap())
        .cancelled_requests(cancelled)
        .build()
}

#[action("report.generated")]
async fn slow(audit: AuditCtx, started: axum::Extension<Arc<Notify>>) -> &'static str {
    audit.meta("rows", 10);
    started.notify_one();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "done"
}

fn app(layer: AuditLayer, started: Arc<Notify>) -> Router {
    Router::new()
        .route("/reports", post(slow))
        .layer(layer)
        .layer(axum::Extension(started))
        .layer(MockConnectInfo(
            "203.0.113.9:51000".parse::<SocketAddr>().unwrap(),
        ))
}

async fn timed_out(cancelled: CancelledRequests) -> (Arc<SkipCounters>, MemorySink, Emitter) {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let layer = layer(&emitter, cancelled);
    let counters = layer.skip_counters();
    // The timeout layer is outside the audit layer: when it fires, it drops the audited future.
    let service = ServiceBuilder::new()
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(100)))
        .service(app(layer, Arc::new(Notify::new())));
    let request = Request::post("/reports").body(Body::empty()).unwrap();
    let result = service.oneshot(request).await;
    assert!(result.is_err(), "the timeout fired");
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    (counters, sink, emitter)
}

#[tokio::test(start_paused = true)]
async fn a_timeout_layer_cancelling_a_slow_handler_emits_the_attempt_marked_cancelled() {
    let (counters, sink, _emitter) = timed_out(CancelledRequests::Emit).await;
    assert_eq!(counters.cancelled(), 1);
    assert_one_cancelled_report(&sink);
}

#[tokio::test(start_paused = true)]
async fn cancelled_requests_can_be_skipped_and_are_still_counted() {
    let (counters, sink, _emitter) = timed_out(CancelledRequests::Skip).await;
    assert_eq!(counters.cancelled(), 1);
    assert!(sink.events().is_empty());
}

#[tokio::test]
async fn a_client_that_disconnects_is_counted_and_its_attempt_emitted() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let layer = layer(&emitter, CancelledRequests::Emit);
    let counters = layer.skip_counters();
    let started = Arc::new(Notify::new());
    let app = Router::new()
        .route("/reports", post(slow))
        .layer(layer)
        .layer(axum::Extension(Arc::clone(&started)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reports", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    let client = tokio::spawn(async move { reqwest::Client::new().post(url).send().await });
    started.notified().await;
    // The client goes away while the handler runs.
    client.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counters.cancelled() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the disconnect was never seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 1);
    let metadata = events[0].0.event.metadata.as_ref().unwrap();
    assert_eq!(metadata.get("outcome"), Some(&MetadataValue::from("cancelled")));
}
