//! One call on `AuditCtx` writes an annotated request's event in the handler's transaction, in
//! both adapters; the layer then emits nothing more for the request.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Actor, OrganizationId, Target};
use audit_postgres::{Outbox, OutboxAudit};
use common::*;
use serde_json::Value;

const PEER: &str = "203.0.113.9:4711";

fn org() -> OrganizationId {
    OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap()
}

async fn business_table(outbox: &Outbox) {
    sqlx::query(&format!(
        r#"CREATE TABLE "{}".invoices (id bigint PRIMARY KEY, paid boolean NOT NULL)"#,
        outbox.schema()
    ))
    .execute(outbox.pool())
    .await
    .unwrap();
}

/// The handler's transaction: the business row, then the request's event, then commit (or
/// rollback when `id` is 0).
async fn pay(outbox: &Outbox, audit: &audit_core::request::AuditHandle, id: i64) -> Result<String, String> {
    let mut tx = outbox.pool().begin().await.map_err(|e| e.to_string())?;
    sqlx::query(&format!(
        r#"INSERT INTO "{}".invoices VALUES ($1, true)"#,
        outbox.schema()
    ))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    audit.target(Target::new(format!("inv_{id}"), "invoice"));
    let key = audit.write_in(outbox, &mut tx).await.map_err(|e| e.to_string())?;
    if id == 0 {
        tx.rollback().await.map_err(|e| e.to_string())?;
    } else {
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(key)
}

/// The rows in the outbox: (organization, idempotency key, event).
async fn rows(outbox: &Outbox) -> Vec<(String, String, Value)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
        r#"SELECT organization_id, idempotency_key, event::text FROM "{}".audit_outbox ORDER BY id"#,
        outbox.schema()
    ))
    .fetch_all(outbox.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(o, k, e)| (o, k, serde_json::from_str(&e).unwrap()))
        .collect()
}

fn assert_request_event(event: &Value, id: i64) {
    assert_eq!(event["action"], "invoice.paid");
    assert_eq!(event["actor"]["id"], "user_01");
    assert_eq!(event["context"]["location"], "203.0.113.9");
    assert_eq!(event["context"]["user_agent"], "outbox-request-test");
    let targets = event["targets"].as_array().unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t["id"] == format!("inv_{id}") && t["type"] == "invoice"),
        "{targets:?}"
    );
}

mod axum_app {
    use super::*;
    use audit_tower::{AuditCtx, AuditLayer, action};
    use axum::Router;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::extract::{Path, State};
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use tower::ServiceExt;

    #[action("invoice.paid")]
    async fn pay_invoice(State(outbox): State<Outbox>, Path(id): Path<i64>, audit: AuditCtx) -> StatusCode {
        match pay(&outbox, &audit, id).await {
            Ok(_) => StatusCode::OK,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn axum_handler_writes_its_event_in_its_transaction() {
        let Some(outbox) = outbox("request_axum").await else {
            return;
        };
        business_table(&outbox).await;
        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).start();
        let layer = AuditLayer::builder(emitter.clone())
            .actor_resolver(|_| Some(Actor::new("user_01", "user")))
            .organization_resolver(|_| Some(org()))
            .build();
        let outbox = outbox.with_request_policy(layer.settings().policy.clone());
        let app = Router::new()
            .route("/invoices/{id}/pay", post(pay_invoice))
            .with_state(outbox.clone())
            .layer(layer)
            .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
        for id in [7, 0] {
            let response = app
                .clone()
                .oneshot(
                    Request::post(format!("/invoices/{id}/pay"))
                        .header("user-agent", "outbox-request-test")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let rows = rows(&outbox).await;
        assert_eq!(rows.len(), 1, "the rolled-back request left nothing: {rows:?}");
        assert_eq!(rows[0].0, org().as_str());
        assert_request_event(&rows[0].2, 7);
        // The layer emitted nothing more for either request.
        emitter.flush(Duration::from_secs(5)).await.unwrap();
        assert!(sink.events().is_empty(), "{:?}", sink.events());
    }
}

mod actix_app {
    use super::*;
    use actix_web::{App, HttpResponse, post, test, web};
    use audit_actix::{AuditCtx, AuditMiddleware};

    #[audit_actix::action("invoice.paid")]
    #[post("/invoices/{id}/pay")]
    async fn pay_invoice(outbox: web::Data<Outbox>, id: web::Path<i64>, audit: AuditCtx) -> HttpResponse {
        match pay(&outbox, &audit, *id).await {
            Ok(_) => HttpResponse::Ok().finish(),
            Err(e) => HttpResponse::InternalServerError().body(e),
        }
    }

    #[actix_web::test]
    async fn actix_handler_writes_its_event_in_its_transaction() {
        let Some(outbox) = outbox("request_actix").await else {
            return;
        };
        business_table(&outbox).await;
        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).start();
        let middleware = AuditMiddleware::builder(emitter.clone())
            .actor_resolver(|_| Some(Actor::new("user_01", "user")))
            .organization_resolver(|_| Some(org()))
            .build();
        let outbox = outbox.with_request_policy(middleware.settings().policy.clone());
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(outbox.clone()))
                .wrap(middleware)
                .service(pay_invoice),
        )
        .await;
        for id in [7, 0] {
            let req = test::TestRequest::post()
                .uri(&format!("/invoices/{id}/pay"))
                .peer_addr(PEER.parse().unwrap())
                .insert_header(("user-agent", "outbox-request-test"))
                .to_request();
            let response = test::call_service(&app, req).await;
            assert!(response.status().is_success(), "{:?}", response.status());
        }
        let rows = rows(&outbox).await;
        assert_eq!(rows.len(), 1, "the rolled-back request left nothing: {rows:?}");
        assert_request_event(&rows[0].2, 7);
        emitter.flush(Duration::from_secs(5)).await.unwrap();
        assert!(sink.events().is_empty(), "{:?}", sink.events());
    }
}
