//! audit-tower and audit-actix turn the same request into the same event: one capture, one
//! decision, one hand-off in audit-core, whatever the framework.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::dev::Service;
use audit_core::CreateEvent;
use audit_core::emitter::MemorySink;
use audit_test_cases::logs::Logs;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::connect_info::MockConnectInfo;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use tower::ServiceExt;

const ORG: &str = "org_01EHWNCE74X7JSDV0X3SZ3KJNY";
/// A request from a client behind a trusted proxy, with a user agent and a request id.
const HEADERS: &[(&str, &str)] = &[
    ("x-forwarded-for", "198.51.100.23, 10.0.0.9"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    ("x-request-id", "req-7f3a"),
];
const PEER: &str = "10.1.2.3:40000";

mod tower_app {
    use audit_tower::{AuditCtx, Target, action};

    #[action("member.removed", targets(team = "team_id", user = "user_id"))]
    pub(crate) async fn remove_member(audit: AuditCtx) -> &'static str {
        audit.target(Target::new("inv_1", "invoice").name("January"));
        audit.meta("reason", "left the company").meta("seats", 4);
        "removed"
    }
}

mod actix_app {
    use actix_web::{HttpResponse, post};
    use audit_actix::{AuditCtx, Target, action};

    #[action("member.removed", targets(team = "team_id", user = "user_id"))]
    #[post("/teams/{team_id}/members/{user_id}")]
    pub(crate) async fn remove_member(audit: AuditCtx) -> HttpResponse {
        audit.target(Target::new("inv_1", "invoice").name("January"));
        audit.meta("reason", "left the company").meta("seats", 4);
        HttpResponse::Ok().body("removed")
    }
}

async fn tower_auth(mut req: Request, next: Next) -> Response {
    req.extensions_mut()
        .insert(audit_tower::Actor::new("user_01", "user").name("Ada"));
    req.extensions_mut()
        .insert(audit_tower::OrganizationId::new(ORG).unwrap());
    next.run(req).await
}

async fn through_tower() -> CreateEvent {
    let sink = MemorySink::new();
    let emitter = audit_tower::Emitter::builder(sink.clone())
        .no_rate_limit()
        .start();
    let layer = audit_tower::AuditLayer::builder(emitter.clone())
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap()
        .request_metadata(true)
        .outcomes(audit_tower::Outcomes::All)
        .build();
    let app = axum::Router::new()
        .route(
            "/teams/{team_id}/members/{user_id}",
            post(tower_app::remove_member),
        )
        .layer(layer)
        .layer(middleware::from_fn(tower_auth))
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let mut request = Request::post("/teams/team_9/members/user_42");
    for (name, value) in HEADERS {
        request = request.header(*name, *value);
    }
    let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    let mut events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0).0
}

async fn through_actix() -> CreateEvent {
    let sink = MemorySink::new();
    let emitter = audit_actix::Emitter::builder(sink.clone())
        .no_rate_limit()
        .start();
    let audit = audit_actix::AuditMiddleware::builder(emitter.clone())
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap()
        .request_metadata(true)
        .outcomes(audit_actix::Outcomes::All)
        .build();
    let app = actix_web::test::init_service(
        actix_web::App::new()
            .wrap(audit)
            .wrap_fn(|req, srv| {
                req.extensions_mut()
                    .insert(audit_actix::Actor::new("user_01", "user").name("Ada"));
                req.extensions_mut()
                    .insert(audit_actix::OrganizationId::new(ORG).unwrap());
                srv.call(req)
            })
            .service(actix_app::remove_member),
    )
    .await;
    let mut request = actix_web::test::TestRequest::post()
        .uri("/teams/team_9/members/user_42")
        .peer_addr(PEER.parse().unwrap());
    for (name, value) in HEADERS {
        request = request.append_header((*name, *value));
    }
    let response = actix_web::test::call_service(&app, request.to_request()).await;
    assert_eq!(response.status(), 200);
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    let mut events = sink.events();
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0).0
}

#[actix_rt::test]
async fn the_same_request_makes_the_same_event_in_both_adapters() {
    let mut from_tower = through_tower().await;
    let from_actix = through_actix().await;
    // The arrival time is the only thing that may differ: the two requests are not simultaneous.
    assert!(from_tower.event.occurred_at <= from_actix.event.occurred_at);
    from_tower.event.occurred_at = from_actix.event.occurred_at;
    assert_eq!(from_tower, from_actix);
    // And it is the event this request should make.
    let event = serde_json::to_value(&from_actix.event).unwrap();
    assert_eq!(event["context"]["location"], "198.51.100.23");
    assert_eq!(event["actor"]["name"], "Ada");
    assert_eq!(
        event["metadata"]["http_route"],
        "/teams/{team_id}/members/{user_id}"
    );
    assert_eq!(event["metadata"]["request_id"], "req-7f3a");
    assert_eq!(event["metadata"]["outcome"], "success");
    assert_eq!(event["targets"].as_array().unwrap().len(), 3, "{event}");
}

#[actix_rt::test]
async fn both_adapters_warn_once_per_middleware_with_the_same_words_about_an_unknown_peer() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let sink = MemorySink::new();
    let emitter = audit_core::emitter::Emitter::builder(sink.clone())
        .no_rate_limit()
        .start();

    // Two requests without a socket peer through each adapter.
    let tower_app = axum::Router::new()
        .route(
            "/teams/{team_id}/members/{user_id}",
            post(tower_app::remove_member),
        )
        .layer(audit_tower::AuditLayer::new(emitter.clone()))
        .layer(middleware::from_fn(tower_auth));
    for _ in 0..2 {
        let request = Request::post("/teams/team_9/members/user_42").body(Body::empty());
        let response = tower_app.clone().oneshot(request.unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let tower_lines = logs.lines_with("no known socket peer");
    assert_eq!(tower_lines.len(), 1, "{tower_lines:?}");

    let actix_app = actix_web::test::init_service(
        actix_web::App::new()
            .wrap(audit_actix::AuditMiddleware::new(emitter.clone()))
            .wrap_fn(|req, srv| {
                req.extensions_mut()
                    .insert(audit_actix::Actor::new("user_01", "user"));
                req.extensions_mut()
                    .insert(audit_actix::OrganizationId::new(ORG).unwrap());
                srv.call(req)
            })
            .service(actix_app::remove_member),
    )
    .await;
    for _ in 0..2 {
        let request = actix_web::test::TestRequest::post().uri("/teams/team_9/members/user_42");
        let response = actix_web::test::call_service(&actix_app, request.to_request()).await;
        assert_eq!(response.status(), 200);
    }
    let lines = logs.lines_with("no known socket peer");
    assert_eq!(lines.len(), 2, "one line per middleware: {lines:?}");
    assert_eq!(lines[0], lines[1], "the same words from both adapters");

    emitter.flush(Duration::from_secs(5)).await.unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|(e, _)| e.event.context.location == "unknown"));
}
