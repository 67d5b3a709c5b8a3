//! The layer driven with `oneshot`: annotations, actor and organization sources, targets,
//! suppression, the outcome policy, routing 404/405 and a forgotten layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink};
use audit_core::request::SkipCounters;
use audit_core::{Actor, CreateEvent, MetadataValue, OrganizationId, Target};
use audit_tower::{AuditCtx, AuditLayer, AuditLayerBuilder, MissingActor, Outcomes, SkipReason, action};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use tower::ServiceExt;

const PEER: &str = "203.0.113.9:51000";

fn org(id: &str) -> OrganizationId {
    OrganizationId::new(id).unwrap()
}

#[action("team.created")]
async fn create_team(audit: AuditCtx) -> (StatusCode, &'static str) {
    audit.target(Target::new("team_new", "team").name("Platform"));
    audit.meta("plan", "pro");
    (StatusCode::CREATED, "created")
}

#[action("team.deleted", targets(team = "id"))]
async fn delete_team() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[action("member.removed", targets(team = "team_id", user = "user_id"))]
async fn remove_member() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[action("team.archived")]
async fn archive_team(audit: AuditCtx) -> &'static str {
    audit.suppress();
    "archived"
}

#[action("invoice.viewed", targets(invoice = "id"))]
async fn forbidden_invoice() -> StatusCode {
    StatusCode::FORBIDDEN
}

#[action("user.signed_in")]
async fn sign_in(audit: AuditCtx) -> &'static str {
    audit.actor(Actor::new("user_handler", "user"));
    audit.organization(org("org_handler"));
    "welcome"
}

async fn ctx_only(audit: AuditCtx) -> &'static str {
    audit.meta("k", "v");
    "ok"
}

async fn health() -> &'static str {
    "ok"
}

fn routes() -> Router {
    Router::new()
        .route("/teams", post(create_team))
        .route("/teams/{id}", delete(delete_team))
        .route("/teams/{team_id}/members/{user_id}", delete(remove_member))
        .route("/teams/{id}/archive", post(archive_team))
        .route("/invoices/{id}", get(forbidden_invoice))
        .route("/sessions", post(sign_in))
        .route("/ctx", get(ctx_only))
        .route("/health", get(health))
}

struct Harness {
    sink: MemorySink,
    emitter: Emitter,
    counters: Arc<SkipCounters>,
}

impl Harness {
    fn layer(configure: impl FnOnce(AuditLayerBuilder) -> AuditLayerBuilder) -> (AuditLayer, Self) {
        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let layer = configure(AuditLayer::builder(emitter.clone())).build();
        let counters = layer.skip_counters();
        (
            layer,
            Self {
                sink,
                emitter,
                counters,
            },
        )
    }

    async fn events(&self) -> Vec<CreateEvent> {
        self.emitter.flush(Duration::from_secs(5)).await.unwrap();
        self.sink.events().into_iter().map(|(e, _)| e).collect()
    }
}

/// The routes with the audit layer, an outer auth layer setting actor and organization, and a
/// mocked socket peer.
fn app_with_outer_auth(layer: AuditLayer) -> Router {
    routes()
        .layer(layer)
        .layer(Extension(Actor::new("user_outer", "user")))
        .layer(Extension(org("org_outer")))
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()))
}

fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("user-agent", "test-agent/1.0")
        .body(Body::empty())
        .unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn annotated_routes_emit_and_unannotated_do_not() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    assert_eq!(send(&app, req("POST", "/teams")).await.0, StatusCode::CREATED);
    assert_eq!(send(&app, req("GET", "/health")).await.0, StatusCode::OK);
    let events = h.events().await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.organization_id.as_str(), "org_outer");
    assert_eq!(e.event.action.as_str(), "team.created");
    assert_eq!(e.event.actor.id, "user_outer");
    assert_eq!(e.event.context.location, "203.0.113.9");
    assert_eq!(e.event.context.user_agent.as_deref(), Some("test-agent/1.0"));
    assert_eq!(
        e.event.targets,
        vec![Target::new("team_new", "team").name("Platform")]
    );
    assert_eq!(
        e.event.metadata.as_ref().unwrap().get("plan"),
        Some(&MetadataValue::from("pro"))
    );
    assert_eq!(h.counters.get(SkipReason::NotAnnotated), 1);
}

#[tokio::test]
async fn occurred_at_is_the_arrival_time() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    let before = time::OffsetDateTime::now_utc();
    send(&app, req("POST", "/teams")).await;
    let after = time::OffsetDateTime::now_utc();
    let e = &h.events().await[0];
    assert!(e.event.occurred_at >= before - Duration::from_millis(1) && e.event.occurred_at <= after);
}

#[tokio::test]
async fn targets_from_path_parameters() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    assert_eq!(
        send(&app, req("DELETE", "/teams/team_7")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&app, req("DELETE", "/teams/team_8/members/user%2042"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let events = h.events().await;
    assert_eq!(events[0].event.targets, vec![Target::new("team_7", "team")]);
    assert_eq!(
        events[1].event.targets,
        vec![Target::new("team_8", "team"), Target::new("user 42", "user")]
    );
}

#[tokio::test]
async fn the_handler_can_suppress_the_event() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    assert_eq!(
        send(&app, req("POST", "/teams/team_1/archive")).await.0,
        StatusCode::OK
    );
    assert!(h.events().await.is_empty());
    assert_eq!(h.counters.get(SkipReason::Suppressed), 1);
}

#[tokio::test]
async fn actor_and_organization_from_an_inner_extension_layer() {
    let (layer, h) = Harness::layer(|l| l);
    // Layers added before the audit layer run inside it, after the record was created.
    let app = routes()
        .layer(Extension(Actor::new("user_inner", "user")))
        .layer(Extension(org("org_inner")))
        .layer(layer)
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    send(&app, req("DELETE", "/teams/t1")).await;
    let e = &h.events().await[0];
    assert_eq!(e.event.actor.id, "user_inner");
    assert_eq!(e.organization_id.as_str(), "org_inner");
}

#[tokio::test]
async fn actor_and_organization_from_resolvers() {
    let (layer, h) = Harness::layer(|l| {
        l.actor_resolver(|parts| {
            let user = parts.headers.get("x-user")?.to_str().ok()?;
            Some(Actor::new(user, "user"))
        })
        .organization_resolver(|parts| OrganizationId::new(parts.headers.get("x-org")?.to_str().ok()?).ok())
    });
    let app = routes()
        .layer(layer)
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let request = Request::builder()
        .method("DELETE")
        .uri("/teams/t1")
        .header("x-user", "user_resolved")
        .header("x-org", "org_resolved")
        .body(Body::empty())
        .unwrap();
    send(&app, request).await;
    // Without the headers the resolvers find nothing: skipped and counted.
    send(&app, req("DELETE", "/teams/t2")).await;
    let events = h.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.actor.id, "user_resolved");
    assert_eq!(events[0].organization_id.as_str(), "org_resolved");
    assert_eq!(h.counters.get(SkipReason::MissingActor), 1);
}

#[tokio::test]
async fn an_outer_extension_wins_over_the_resolver() {
    let (layer, h) = Harness::layer(|l| l.actor_resolver(|_| Some(Actor::new("user_resolver", "user"))));
    let app = app_with_outer_auth(layer);
    send(&app, req("DELETE", "/teams/t1")).await;
    assert_eq!(h.events().await[0].event.actor.id, "user_outer");
}

#[tokio::test]
async fn actor_and_organization_from_the_handler_win() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    send(&app, req("POST", "/sessions")).await;
    let e = &h.events().await[0];
    assert_eq!(e.event.actor.id, "user_handler");
    assert_eq!(e.organization_id.as_str(), "org_handler");
}

#[tokio::test]
async fn missing_actor_and_organization_follow_the_policy() {
    let (layer, h) = Harness::layer(|l| l);
    let app = routes()
        .layer(layer)
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    assert_eq!(
        send(&app, req("DELETE", "/teams/t1")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(h.events().await.is_empty());
    assert_eq!(h.counters.get(SkipReason::MissingActor), 1);

    let (layer, h) = Harness::layer(|l| {
        l.missing_actor(MissingActor::Use(Actor::new("anonymous", "anonymous")))
            .default_organization(org("org_default"))
    });
    let app = routes()
        .layer(layer)
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    send(&app, req("DELETE", "/teams/t1")).await;
    let e = &h.events().await[0];
    assert_eq!(e.event.actor.id, "anonymous");
    assert_eq!(e.organization_id.as_str(), "org_default");

    let (layer, h) = Harness::layer(|l| l.missing_actor(MissingActor::Use(Actor::new("system", "system"))));
    let app = routes()
        .layer(layer)
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    send(&app, req("DELETE", "/teams/t1")).await;
    assert!(h.events().await.is_empty());
    assert_eq!(h.counters.get(SkipReason::MissingOrganization), 1);
}

#[tokio::test]
async fn outcome_policy_success_only_by_default() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    let (status, _) = send(&app, req("GET", "/invoices/inv_1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(h.events().await.is_empty());
    assert_eq!(h.counters.get(SkipReason::Outcome), 1);
}

#[tokio::test]
async fn outcome_policy_all_marks_failures() {
    let (layer, h) = Harness::layer(|l| l.outcomes(Outcomes::All));
    let app = app_with_outer_auth(layer);
    let (status, _) = send(&app, req("GET", "/invoices/inv_1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the response is not changed");
    send(&app, req("DELETE", "/teams/t1")).await;
    let events = h.events().await;
    let m = events[0].event.metadata.as_ref().unwrap();
    assert_eq!(m.get("outcome"), Some(&MetadataValue::from("failure")));
    assert_eq!(m.get("http_status"), Some(&MetadataValue::Integer(403)));
    assert_eq!(events[0].event.targets, vec![Target::new("inv_1", "invoice")]);
    let m = events[1].event.metadata.as_ref().unwrap();
    assert_eq!(m.get("outcome"), Some(&MetadataValue::from("success")));
}

#[tokio::test]
async fn routing_404_and_405_never_emit() {
    let (layer, h) = Harness::layer(|l| {
        l.outcomes(Outcomes::All)
            .missing_actor(MissingActor::Use(Actor::new("anonymous", "anonymous")))
            .default_organization(org("org_default"))
    });
    let app = app_with_outer_auth(layer);
    assert_eq!(send(&app, req("GET", "/nope")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        send(&app, req("GET", "/teams")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&app, req("PUT", "/teams/t1")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(h.events().await.is_empty());
    assert_eq!(h.counters.get(SkipReason::NotAnnotated), 3);
}

#[tokio::test]
async fn request_metadata_is_optional() {
    let (layer, h) = Harness::layer(|l| l.request_metadata(true));
    let app = app_with_outer_auth(layer);
    let request = Request::builder()
        .method("DELETE")
        .uri("/teams/t9")
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .unwrap();
    send(&app, request).await;
    let e = &h.events().await[0];
    let m = e.event.metadata.as_ref().unwrap();
    assert_eq!(m.get("request_id"), Some(&MetadataValue::from("req-123")));
    assert_eq!(m.get("http_method"), Some(&MetadataValue::from("DELETE")));
    assert_eq!(m.get("http_route"), Some(&MetadataValue::from("/teams/{id}")));
    assert_eq!(m.get("http_status"), Some(&MetadataValue::Integer(204)));
    assert_eq!(e.event.context.user_agent, None);
}

#[tokio::test]
async fn user_agent_is_bounded_and_lossy() {
    let (layer, h) = Harness::layer(|l| l.max_user_agent_len(40));
    let app = app_with_outer_auth(layer);
    let request = Request::builder()
        .method("DELETE")
        .uri("/teams/t1")
        .header(
            "user-agent",
            http::HeaderValue::from_bytes(&[&b"ab\xffcdef"[..], &[b'x'; 50]].concat()).unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    send(&app, request).await;
    assert_eq!(
        h.events().await[0].event.context.user_agent.as_deref(),
        Some("ab\u{fffd}cdefxx…[truncated crc32:6f25cd28]")
    );
}

#[tokio::test]
async fn no_peer_gives_the_placeholder_location() {
    let (layer, h) = Harness::layer(|l| l);
    let app = routes()
        .layer(layer)
        .layer(Extension(Actor::new("user_outer", "user")))
        .layer(Extension(org("org_outer")));
    send(&app, req("DELETE", "/teams/t1")).await;
    send(&app, req("DELETE", "/teams/t2")).await;
    let events = h.events().await;
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.event.context.location == audit_core::client_ip::UNKNOWN_LOCATION)
    );
}

#[tokio::test]
async fn a_forgotten_layer_is_a_500_naming_the_layer() {
    let app = routes()
        .layer(Extension(Actor::new("user_outer", "user")))
        .layer(Extension(org("org_outer")));
    let (status, body) = send(&app, req("DELETE", "/teams/t1")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.contains("#[action]") && body.contains("AuditLayer"),
        "{body}"
    );
    let (status, body) = send(&app, req("GET", "/ctx")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("AuditCtx") && body.contains("AuditLayer"), "{body}");
    // Unannotated routes are unaffected.
    assert_eq!(send(&app, req("GET", "/health")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn audit_disabled_runs_annotated_handlers_without_recording() {
    let app = routes().layer(Extension(audit_tower::AuditDisabled));
    assert_eq!(
        send(&app, req("DELETE", "/teams/t1")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(send(&app, req("POST", "/teams")).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_refused_emit_is_counted_and_the_response_kept() {
    let (layer, h) = Harness::layer(|l| l);
    let app = app_with_outer_auth(layer);
    h.emitter.shutdown(Duration::from_secs(1)).await;
    assert_eq!(send(&app, req("POST", "/teams")).await.0, StatusCode::CREATED);
    assert_eq!(h.counters.emit_failures(), 1);
}

#[tokio::test]
async fn an_invalid_event_is_counted_not_emitted() {
    #[action("team.created")]
    async fn too_much_metadata(audit: AuditCtx) -> &'static str {
        for i in 0..60 {
            audit.meta(format!("k{i}"), i);
        }
        "ok"
    }
    let (layer, h) = Harness::layer(|l| l);
    let app = Router::new()
        .route("/x", post(too_much_metadata))
        .layer(layer)
        .layer(Extension(Actor::new("u", "user")))
        .layer(Extension(org("org_1")));
    assert_eq!(send(&app, req("POST", "/x")).await.0, StatusCode::OK);
    assert!(h.events().await.is_empty());
    assert_eq!(h.counters.invalid_events(), 1);
}

#[tokio::test]
async fn works_in_a_plain_tower_stack() {
    use audit_tower::PeerAddr;
    use tower::{ServiceBuilder, service_fn};

    let (layer, h) = Harness::layer(|l| l);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|req: Request<Body>| async move {
            let audit = req
                .extensions()
                .get::<audit_core::adapter::RequestAudit>()
                .unwrap();
            audit.set_action(audit_core::Action::from_static("report.exported"));
            audit.set_actor(Actor::new("user_1", "user"));
            audit.set_organization(org("org_1"));
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        }));
    let mut request = req("GET", "/reports/1");
    request
        .extensions_mut()
        .insert(PeerAddr("198.51.100.1:4000".parse().unwrap()));
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let e = &h.events().await[0];
    assert_eq!(e.event.action.as_str(), "report.exported");
    assert_eq!(e.event.context.location, "198.51.100.1");
}
