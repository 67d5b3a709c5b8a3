//! The example app against an in-process audit-testkit: every route, then the stored events.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::OrganizationId;
use audit_core::client::Client;
use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::Emitter;
use audit_testkit::TestKit;
use example_axum::{AppState, audit_layer, router};

#[path = "../../routes_scenario.rs"]
mod routes_scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_against_the_testkit() {
    let kit = TestKit::start().await.unwrap();
    let client = Client::builder()
        .api_key("sk_test_example")
        .base_url(kit.url())
        .build()
        .unwrap();
    let emitter = Emitter::builder(client).no_rate_limit().start();
    let layer = audit_layer(emitter.clone(), ClientIpConfig::socket_peer());
    let counters = layer.skip_counters();
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let app = router(AppState::new(org), Some(layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });

    let team_id = routes_scenario::send_requests(&base).await;
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    routes_scenario::check_events(&kit, &team_id);
    assert_eq!(
        counters.get(audit_tower::SkipReason::Outcome),
        routes_scenario::REFUSED_BY_OUTCOME
    );
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, routes_scenario::EVENTS);
}

#[tokio::test]
async fn without_audit_the_routes_still_work() {
    use tower::ServiceExt;
    let app = router(AppState::new(OrganizationId::new("org_1").unwrap()), None);
    let response = app
        .oneshot(
            axum::http::Request::get("/invoices/inv_1")
                .header("authorization", "Bearer user_1")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
