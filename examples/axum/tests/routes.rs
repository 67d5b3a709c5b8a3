//! The example app against an in-process audit-testkit: every route, then the stored events.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::OrganizationId;
use audit_core::client::Client;
use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::Emitter;
use audit_testkit::TestKit;
use example_axum::{AppState, audit_layer, router};
use serde_json::{Value, json};

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

    let http = reqwest::Client::builder()
        .user_agent("example-test/1")
        .build()
        .unwrap();
    let session: Value = http
        .post(format!("{base}/sessions"))
        .json(&json!({"email": "ada@example.com", "password": "demo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(token, "user_1");
    let bad = http
        .post(format!("{base}/sessions"))
        .json(&json!({"email": "ada@example.com", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let team: Value = http
        .post(format!("{base}/teams"))
        .bearer_auth(&token)
        .json(&json!({"name": "Platform"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_id = team["id"].as_str().unwrap().to_owned();
    let deleted = http
        .delete(format!("{base}/teams/{team_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let again = http
        .delete(format!("{base}/teams/{team_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let invoice = http
        .get(format!("{base}/invoices/inv_42"))
        .bearer_auth("user_2")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(invoice.status(), 200);
    let anonymous = http.get(format!("{base}/invoices/inv_42")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        http.get(format!("{base}/health")).send().await.unwrap().status(),
        200
    );

    emitter.flush(Duration::from_secs(10)).await.unwrap();
    let mut events: Vec<Value> = kit
        .events(kit.organization_id())
        .into_iter()
        .map(|e| e.event)
        .collect();
    // Delivery is concurrent, so the testkit may store the events in any order: put them in the
    // order of the requests (each action happens once here) before comparing.
    let request_order = ["user.signed_in", "team.created", "team.deleted", "invoice.viewed"];
    events.sort_by_key(|e| {
        request_order
            .iter()
            .position(|a| e["action"] == *a)
            .unwrap_or(usize::MAX)
    });
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["user.signed_in", "team.created", "team.deleted", "invoice.viewed"]
    );
    assert_eq!(
        events[0]["actor"],
        json!({"id": "user_1", "type": "user", "name": "Ada Lovelace"})
    );
    assert_eq!(
        events[1]["targets"],
        json!([{"id": team_id, "type": "team", "name": "Platform"}])
    );
    assert_eq!(events[2]["targets"], json!([{"id": team_id, "type": "team"}]));
    assert_eq!(events[3]["targets"], json!([{"id": "inv_42", "type": "invoice"}]));
    assert_eq!(events[3]["actor"]["id"], "user_2");
    for e in &events {
        assert_eq!(
            e["context"]["location"], "127.0.0.1",
            "the forged X-Forwarded-For is ignored"
        );
        assert_eq!(e["context"]["user_agent"], "example-test/1");
    }
    // The failed sign-in and the second delete were refused by the outcome policy.
    assert_eq!(counters.get(audit_tower::SkipReason::Outcome), 2);
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 4);
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
