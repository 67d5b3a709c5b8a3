//! The shared capture cases (audit-test-cases, the same table audit-actix runs) through the
//! layer: user agent and its bound, request id, method and route, and the precedence of the
//! actor's and organization's sources.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::emitter::MemorySink;
use audit_test_cases::capture::{CASES, Case, PATH, Parties, ROUTE};
use audit_tower::{Actor, AuditCtx, AuditLayer, Emitter, OrganizationId, action};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use tower::ServiceExt;

fn actor(parties: Parties) -> Option<Actor> {
    parties.actor.map(|id| Actor::new(id, "user"))
}

fn organization(parties: Parties) -> Option<OrganizationId> {
    parties
        .organization
        .map(|id| OrganizationId::new(id).expect("a valid organization id"))
}

#[action("team.created")]
async fn create_team(Extension(case): Extension<Case>, audit: AuditCtx) -> StatusCode {
    if let Some(actor) = actor(case.handler) {
        audit.actor(actor);
    }
    if let Some(organization) = organization(case.handler) {
        audit.organization(organization);
    }
    StatusCode::CREATED
}

/// An auth layer putting `parties` into the request extensions.
async fn auth(State(parties): State<Parties>, mut req: Request, next: Next) -> Response {
    if let Some(actor) = actor(parties) {
        req.extensions_mut().insert(actor);
    }
    if let Some(organization) = organization(parties) {
        req.extensions_mut().insert(organization);
    }
    next.run(req).await
}

fn layer(case: &Case, emitter: Emitter) -> AuditLayer {
    let mut layer = AuditLayer::builder(emitter).request_metadata(case.request_metadata);
    if let Some(len) = case.max_user_agent_len {
        layer = layer.max_user_agent_len(len);
    }
    let resolved = case.resolved;
    layer
        .actor_resolver(move |_| actor(resolved))
        .organization_resolver(move |_| organization(resolved))
        .build()
}

#[tokio::test]
async fn the_shared_capture_cases_through_the_layer() {
    let peer: SocketAddr = "203.0.113.9:51000".parse().unwrap();
    for case in CASES {
        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let app = Router::new()
            .route(ROUTE, post(create_team))
            .layer(middleware::from_fn_with_state(case.inner, auth))
            .layer(layer(case, emitter.clone()))
            .layer(middleware::from_fn_with_state(case.outer, auth))
            .layer(Extension(*case))
            .layer(MockConnectInfo(peer));
        let mut request = Request::post(PATH);
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{}", case.name);
        emitter.flush(Duration::from_secs(5)).await.unwrap();
        let events = sink.events();
        assert!(events.len() <= 1, "{}: {events:?}", case.name);
        if let Err(difference) = case.check(events.first().map(|(event, _)| event)) {
            panic!("{difference}");
        }
    }
}
