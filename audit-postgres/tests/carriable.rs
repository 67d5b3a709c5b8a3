//! A request whose path id holds `%00` leaves exactly one stored event on the outbox path too:
//! `jsonb` cannot hold `\u0000`, so the middleware makes the value carriable at capture, the
//! event is written to the outbox, and the relay delivers it to audit-testkit. Both adapters.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::adapter::SANITIZED_METADATA_KEY;
use audit_core::{Actor, OrganizationId};
use common::*;

const PEER: &str = "203.0.113.9:4711";

/// Waits for the relay to deliver, then checks the one stored event.
async fn assert_one_carried_event(
    outbox: &audit_postgres::Outbox,
    kit: &audit_testkit::TestKit,
    org: &OrganizationId,
) {
    let relay = relay(outbox, kit).start().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the event to reach the testkit",
        || async { !kit.events(org.as_str()).is_empty() },
    )
    .await;
    wait_drained(outbox, Duration::from_secs(20)).await;
    relay.shutdown(Duration::from_secs(5)).await;
    let stored = kit.events(org.as_str());
    assert_eq!(stored.len(), 1, "{stored:?}");
    let event = &stored[0].event;
    assert_eq!(event["targets"][0]["id"], "inv\u{fffd}1");
    assert_eq!(event["metadata"][SANITIZED_METADATA_KEY], "/targets/id");
    assert_eq!(
        outbox.dead_letters(10).await.unwrap().len(),
        0,
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_a_path_id_with_nul_reaches_workos_through_the_outbox() {
    use audit_tower::{AuditLayer, action};
    use axum::Router;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    #[action("invoice.viewed", targets(invoice = "id"))]
    async fn view_invoice() -> StatusCode {
        StatusCode::OK
    }

    let Some((outbox, kit, org)) = delivery("carriable_axum").await else {
        return;
    };
    let emitter = outbox.emitter_builder().start();
    let tenant = org.clone();
    let app = Router::new()
        .route("/invoices/{id}", get(view_invoice))
        .layer(
            AuditLayer::builder(emitter.clone())
                .actor_resolver(|_| Some(Actor::new("user_01", "user")))
                .organization_resolver(move |_| Some(tenant.clone()))
                .build(),
        )
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let response = app
        .oneshot(Request::get("/invoices/inv%001").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    assert_one_carried_event(&outbox, &kit, &org).await;
}

#[actix_web::test]
async fn actix_a_path_id_with_nul_reaches_workos_through_the_outbox() {
    use actix_web::{App, HttpResponse, get, test};
    use audit_actix::AuditMiddleware;

    #[audit_actix::action("invoice.viewed", targets(invoice = "id"))]
    #[get("/invoices/{id}")]
    async fn view_invoice() -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    let Some((outbox, kit, org)) = delivery("carriable_actix").await else {
        return;
    };
    let emitter = outbox.emitter_builder().start();
    let tenant = org.clone();
    let app = test::init_service(
        App::new()
            .wrap(
                AuditMiddleware::builder(emitter.clone())
                    .actor_resolver(|_| Some(Actor::new("user_01", "user")))
                    .organization_resolver(move |_| Some(tenant.clone()))
                    .build(),
            )
            .service(view_invoice),
    )
    .await;
    let req = test::TestRequest::get()
        .uri("/invoices/inv%001")
        .peer_addr(PEER.parse().unwrap())
        .to_request();
    let response = test::call_service(&app, req).await;
    assert!(response.status().is_success(), "{:?}", response.status());
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    assert_one_carried_event(&outbox, &kit, &org).await;
}
