//! The shared capture cases (audit-test-cases, the same table audit-tower runs) through the
//! middleware: user agent and its bound, request id, method and route, and the precedence of the
//! actor's and organization's sources.

use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::test as at;
use actix_web::{App, HttpMessage, HttpResponse, web};
use audit_actix::{Actor, AuditCtx, AuditMiddleware, Emitter, OrganizationId, action};
use audit_core::emitter::MemorySink;
use audit_test_cases::capture::{CASES, Case, PATH, Parties, ROUTE};

fn actor(parties: Parties) -> Option<Actor> {
    parties.actor.map(|id| Actor::new(id, "user"))
}

fn organization(parties: Parties) -> Option<OrganizationId> {
    parties
        .organization
        .map(|id| OrganizationId::new(id).expect("a valid organization id"))
}

fn insert(req: &actix_web::dev::ServiceRequest, parties: Parties) {
    if let Some(actor) = actor(parties) {
        req.extensions_mut().insert(actor);
    }
    if let Some(organization) = organization(parties) {
        req.extensions_mut().insert(organization);
    }
}

#[action("team.created")]
async fn create_team(case: web::Data<Case>, audit: AuditCtx) -> HttpResponse {
    if let Some(actor) = actor(case.handler) {
        audit.actor(actor);
    }
    if let Some(organization) = organization(case.handler) {
        audit.organization(organization);
    }
    HttpResponse::Created().finish()
}

fn middleware(case: &Case, emitter: Emitter) -> AuditMiddleware {
    let mut middleware = AuditMiddleware::builder(emitter).request_metadata(case.request_metadata);
    if let Some(len) = case.max_user_agent_len {
        middleware = middleware.max_user_agent_len(len);
    }
    let resolved = case.resolved;
    middleware
        .actor_resolver(move |_| actor(resolved))
        .organization_resolver(move |_| organization(resolved))
        .build()
}

#[actix_rt::test]
async fn the_shared_capture_cases_through_the_middleware() {
    for case in CASES {
        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let (inner, outer) = (case.inner, case.outer);
        let app = at::init_service(
            App::new()
                .app_data(web::Data::new(*case))
                .wrap_fn(move |req, srv| {
                    insert(&req, inner);
                    srv.call(req)
                })
                .wrap(middleware(case, emitter.clone()))
                .wrap_fn(move |req, srv| {
                    insert(&req, outer);
                    srv.call(req)
                })
                .route(ROUTE, web::post().to(create_team)),
        )
        .await;
        let mut request = at::TestRequest::post()
            .uri(PATH)
            .peer_addr("203.0.113.9:51000".parse().unwrap());
        for (name, value) in case.headers {
            request = request.append_header((*name, *value));
        }
        let response = at::call_service(&app, request.to_request()).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{}", case.name);
        drop(response);
        emitter.flush(Duration::from_secs(5)).await.unwrap();
        let events = sink.events();
        assert!(events.len() <= 1, "{}: {events:?}", case.name);
        if let Err(difference) = case.check(events.first().map(|(event, _)| event)) {
            panic!("{difference}");
        }
    }
}
