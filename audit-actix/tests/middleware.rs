//! The actix-web middleware driven with actix's test utilities; events observed through the
//! emitter's `MemorySink`.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::body::{BoxBody, to_bytes};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, delete, get, post, test, web};
use audit_actix::{
    AuditCtx, AuditDisabled, AuditMiddleware, MissingActor, MissingAuditMiddleware, Outcomes, SkipReason,
};
use audit_core::client_ip::UNKNOWN_LOCATION;
use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Actor, Event, MetadataValue, OrganizationId, Target};
use time::OffsetDateTime;

const PEER: &str = "203.0.113.9:51000";

fn org() -> OrganizationId {
    OrganizationId::new("org_01HZZZZZZZZZZZZZZZZZZZZZZZ").unwrap()
}

fn other_org() -> OrganizationId {
    OrganizationId::new("org_other").unwrap()
}

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

struct Harness {
    sink: MemorySink,
    emitter: Emitter,
}

impl Harness {
    fn new() -> Self {
        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).start();
        Self { sink, emitter }
    }

    fn middleware(&self) -> AuditMiddleware {
        AuditMiddleware::new(self.emitter.clone())
    }

    fn builder(&self) -> audit_actix::AuditMiddlewareBuilder {
        AuditMiddleware::builder(self.emitter.clone())
    }

    /// Every event delivered so far, with its organization.
    async fn events(&self) -> Vec<(OrganizationId, Event)> {
        self.emitter.flush(Duration::from_secs(10)).await.unwrap();
        self.sink
            .events()
            .into_iter()
            .map(|(body, _key)| (body.organization_id, body.event))
            .collect()
    }

    async fn one_event(&self) -> (OrganizationId, Event) {
        let mut events = self.events().await;
        assert_eq!(events.len(), 1, "{events:#?}");
        events.remove(0)
    }
}

/// The app's own auth middleware: a request with `authorization: user <id>` gets an `Actor` and
/// an `OrganizationId` in its extensions.
fn auth(req: &actix_web::dev::ServiceRequest) {
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("user "))
        .map(str::to_owned);
    if let Some(user) = user {
        req.extensions_mut().insert(Actor::new(user, "user"));
        req.extensions_mut().insert(org());
    }
}

#[audit_actix::action("team.created")]
#[post("/teams")]
async fn create_team() -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("x-app", "yes"))
        .body("created")
}

#[audit_actix::action("team.deleted", targets(team = "id"))]
#[delete("/teams/{id}")]
async fn delete_team(_id: web::Path<String>) -> HttpResponse {
    HttpResponse::NoContent().finish()
}

#[audit_actix::action(
    "member.removed",
    targets(team = "team_id", user = "user_id", ghost = "missing")
)]
#[delete("/teams/{team_id}/members/{user_id}")]
async fn remove_member() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[audit_actix::action("invoice.viewed", targets(invoice = "id"))]
#[get("/invoices/{id}")]
async fn view_invoice(audit: AuditCtx, id: web::Path<String>) -> HttpResponse {
    if id.as_str() == "forbidden" {
        return HttpResponse::Forbidden().finish();
    }
    if id.as_str() == "quiet" {
        audit.suppress();
    }
    audit.target(Target::new("acct_1", "account").name("Acme"));
    audit.meta("format", "pdf");
    HttpResponse::Ok().body(format!("invoice {id}"))
}

#[audit_actix::action("team.renamed")]
#[post("/teams/{id}/rename")]
async fn rename_team(audit: AuditCtx) -> HttpResponse {
    audit.actor(Actor::new("handler_user", "user"));
    audit.organization(other_org());
    HttpResponse::Ok().finish()
}

#[audit_actix::action("team.failed")]
#[post("/fail")]
async fn failing() -> actix_web::Result<HttpResponse> {
    Err(actix_web::error::ErrorConflict("taken"))
}

/// The app used by most tests, with the auth middleware outside the audit middleware.
macro_rules! app {
    ($audit:expr) => {
        test::init_service(
            App::new()
                .wrap($audit)
                .wrap_fn(|req, srv| {
                    auth(&req);
                    srv.call(req)
                })
                .service(create_team)
                .service(delete_team)
                .service(remove_member)
                .service(health)
                .service(view_invoice)
                .service(rename_team)
                .service(failing),
        )
        .await
    };
}

fn request(method: &str, uri: &str) -> test::TestRequest {
    let req = match method {
        "POST" => test::TestRequest::post(),
        "DELETE" => test::TestRequest::delete(),
        "PUT" => test::TestRequest::put(),
        _ => test::TestRequest::get(),
    };
    req.uri(uri)
        .peer_addr(peer())
        .insert_header(("authorization", "user user_1"))
}

#[actix_rt::test]
async fn annotated_route_emits_one_event_after_the_response() {
    let h = Harness::new();
    let app = app!(h.middleware());
    let before = OffsetDateTime::now_utc();
    let res = test::call_service(
        &app,
        request("POST", "/teams")
            .insert_header(("user-agent", "curl/8.5"))
            .to_request(),
    )
    .await;
    let after = OffsetDateTime::now_utc();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers().get("x-app").unwrap(), "yes");
    assert_eq!(test::read_body(res).await, "created");

    let (organization, event) = h.one_event().await;
    assert_eq!(organization, org());
    assert_eq!(event.action.as_str(), "team.created");
    assert_eq!(event.actor.id, "user_1");
    assert_eq!(event.actor.kind, "user");
    assert_eq!(event.context.location, "203.0.113.9");
    assert_eq!(event.context.user_agent.as_deref(), Some("curl/8.5"));
    assert!(event.targets.is_empty());
    assert!(event.metadata.is_none());
    // occurred_at is the arrival time, not the delivery time
    assert!(
        before <= event.occurred_at && event.occurred_at <= after,
        "{}",
        event.occurred_at
    );
}

#[actix_rt::test]
async fn unannotated_route_emits_nothing() {
    let h = Harness::new();
    let audit = h.middleware();
    let skips = audit.skip_counters();
    let app = app!(audit);
    let res = test::call_service(&app, request("GET", "/health").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(h.events().await.is_empty());
    assert_eq!(skips.get(SkipReason::NotAnnotated), 1);
}

#[actix_rt::test]
async fn the_response_is_the_same_with_and_without_the_middleware() {
    let h = Harness::new();
    let with = app!(h.middleware());
    let without = test::init_service(App::new().service(create_team).service(health)).await;
    // The route is annotated, so without the middleware the annotation answers 500; compare an
    // unannotated route without, and the annotated one with, against their handlers' output.
    let a = test::call_service(&with, request("GET", "/health").to_request()).await;
    let b = test::call_service(&without, request("GET", "/health").to_request()).await;
    assert_eq!(a.status(), b.status());
    assert_eq!(a.headers().len(), b.headers().len());
    assert_eq!(test::read_body(a).await, test::read_body(b).await);

    let created = test::call_service(&with, request("POST", "/teams").to_request()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let headers: Vec<_> = created
        .headers()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert_eq!(headers[0].0, "x-app");
}

#[actix_rt::test]
async fn actor_and_organization_from_an_outer_auth_middleware() {
    // covered by the default app: the auth wrap_fn is registered after `.wrap(audit)`, so it runs
    // first; here without any auth: the event is skipped and counted.
    let h = Harness::new();
    let audit = h.middleware();
    let skips = audit.skip_counters();
    let app = app!(audit);
    let req = test::TestRequest::post()
        .uri("/teams")
        .peer_addr(peer())
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(h.events().await.is_empty());
    assert_eq!(skips.get(SkipReason::MissingActor), 1);

    test::call_service(&app, request("POST", "/teams").to_request()).await;
    let (organization, event) = h.one_event().await;
    assert_eq!((organization, event.actor.id.as_str()), (org(), "user_1"));
}

#[actix_rt::test]
async fn actor_and_organization_from_an_inner_auth_middleware() {
    let h = Harness::new();
    let app = test::init_service(
        App::new()
            .wrap_fn(|req, srv| {
                auth(&req);
                srv.call(req)
            })
            .wrap(h.middleware())
            .service(create_team),
    )
    .await;
    test::call_service(&app, request("POST", "/teams").to_request()).await;
    let (organization, event) = h.one_event().await;
    assert_eq!(organization, org());
    assert_eq!(event.actor.id, "user_1");
}

#[actix_rt::test]
async fn actor_and_organization_from_resolvers() {
    let h = Harness::new();
    let audit = h
        .builder()
        .actor_resolver(|req: &HttpRequest| {
            let key = req.headers().get("x-api-key")?.to_str().ok()?;
            Some(Actor::new(key, "api_key"))
        })
        .organization_resolver(|req: &HttpRequest| {
            OrganizationId::new(req.headers().get("x-org")?.to_str().ok()?).ok()
        })
        .build();
    let app = test::init_service(App::new().wrap(audit).service(create_team)).await;
    let req = test::TestRequest::post()
        .uri("/teams")
        .peer_addr(peer())
        .insert_header(("x-api-key", "key_7"))
        .insert_header(("x-org", "org_resolved"))
        .to_request();
    test::call_service(&app, req).await;
    let (organization, event) = h.one_event().await;
    assert_eq!(organization.as_str(), "org_resolved");
    assert_eq!(
        (event.actor.id.as_str(), event.actor.kind.as_ref()),
        ("key_7", "api_key")
    );
}

#[actix_rt::test]
async fn extensions_win_over_resolvers_and_the_handler_wins_over_both() {
    let h = Harness::new();
    let audit = h
        .builder()
        .actor_resolver(|_: &HttpRequest| Some(Actor::new("resolved", "user")))
        .organization_resolver(|_: &HttpRequest| OrganizationId::new("org_resolved").ok())
        .build();
    let app = app!(audit);
    test::call_service(&app, request("POST", "/teams").to_request()).await;
    let (organization, event) = h.one_event().await;
    assert_eq!((organization, event.actor.id.as_str()), (org(), "user_1"));

    h.sink.events(); // keep the earlier event; the next one is the second
    test::call_service(&app, request("POST", "/teams/t1/rename").to_request()).await;
    let events = h.events().await;
    assert_eq!(events.len(), 2);
    let (organization, event) = &events[1];
    assert_eq!(organization, &other_org());
    assert_eq!(event.actor.id, "handler_user");
}

#[actix_rt::test]
async fn missing_actor_and_organization_policies() {
    let h = Harness::new();
    let audit = h
        .builder()
        .missing_actor(MissingActor::Use(Actor::new("anonymous", "anonymous")))
        .build();
    let skips = audit.skip_counters();
    let app = test::init_service(App::new().wrap(audit).service(create_team)).await;
    let req = || {
        test::TestRequest::post()
            .uri("/teams")
            .peer_addr(peer())
            .to_request()
    };
    test::call_service(&app, req()).await;
    assert!(h.events().await.is_empty());
    assert_eq!(skips.get(SkipReason::MissingOrganization), 1);

    let h = Harness::new();
    let audit = h
        .builder()
        .missing_actor(MissingActor::Use(Actor::new("anonymous", "anonymous")))
        .default_organization(org())
        .build();
    let app = test::init_service(App::new().wrap(audit).service(create_team)).await;
    test::call_service(&app, req()).await;
    let (organization, event) = h.one_event().await;
    assert_eq!((organization, event.actor.id.as_str()), (org(), "anonymous"));
}

#[actix_rt::test]
async fn targets_from_path_parameters() {
    let h = Harness::new();
    let app = app!(h.middleware());
    let res = test::call_service(&app, request("DELETE", "/teams/team_9").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (_, event) = h.one_event().await;
    assert_eq!(event.action.as_str(), "team.deleted");
    assert_eq!(event.targets.len(), 1);
    assert_eq!(
        (event.targets[0].id.as_str(), event.targets[0].kind.as_ref()),
        ("team_9", "team")
    );

    // Two parameters; a parameter the route does not have adds nothing and does not fail.
    let res = test::call_service(&app, request("DELETE", "/teams/t2/members/u3").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let events = h.events().await;
    let targets: Vec<_> = events[1]
        .1
        .targets
        .iter()
        .map(|t| (t.id.as_str(), t.kind.as_ref()))
        .collect();
    assert_eq!(targets, [("t2", "team"), ("u3", "user")]);
}

#[actix_rt::test]
async fn targets_and_metadata_from_the_extractor() {
    let h = Harness::new();
    let app = app!(h.middleware());
    let res = test::call_service(&app, request("GET", "/invoices/inv_5").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, event) = h.one_event().await;
    let targets: Vec<_> = event
        .targets
        .iter()
        .map(|t| (t.id.as_str(), t.kind.as_ref()))
        .collect();
    assert_eq!(targets, [("inv_5", "invoice"), ("acct_1", "account")]);
    assert_eq!(event.targets[1].name.as_deref(), Some("Acme"));
    assert_eq!(
        event.metadata.unwrap().get("format"),
        Some(&MetadataValue::from("pdf"))
    );
}

#[actix_rt::test]
async fn the_handler_can_suppress_the_event() {
    let h = Harness::new();
    let audit = h.middleware();
    let skips = audit.skip_counters();
    let app = app!(audit);
    let res = test::call_service(&app, request("GET", "/invoices/quiet").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(h.events().await.is_empty());
    assert_eq!(skips.get(SkipReason::Suppressed), 1);
}

#[actix_rt::test]
async fn outcome_policy_success_only_by_default() {
    let h = Harness::new();
    let audit = h.middleware();
    let skips = audit.skip_counters();
    let app = app!(audit);
    let res = test::call_service(&app, request("GET", "/invoices/forbidden").to_request()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = test::call_service(&app, request("POST", "/fail").to_request()).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(h.events().await.is_empty());
    assert_eq!(skips.get(SkipReason::Outcome), 2);
}

#[actix_rt::test]
async fn outcome_policy_all_marks_failures() {
    let h = Harness::new();
    let app = app!(h.builder().outcomes(Outcomes::All).build());
    let res = test::call_service(&app, request("GET", "/invoices/forbidden").to_request()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = test::call_service(&app, request("GET", "/invoices/ok").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = test::call_service(&app, request("POST", "/fail").to_request()).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let events = h.events().await;
    let outcomes: Vec<_> = events
        .iter()
        .map(|(_, e)| {
            let m = e.metadata.as_ref().unwrap();
            (
                e.action.as_str(),
                m.get("outcome").cloned(),
                m.get("http_status").cloned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                "invoice.viewed",
                Some("failure".into()),
                Some(MetadataValue::Integer(403))
            ),
            (
                "invoice.viewed",
                Some("success".into()),
                Some(MetadataValue::Integer(200))
            ),
            (
                "team.failed",
                Some("failure".into()),
                Some(MetadataValue::Integer(409))
            ),
        ]
    );
}

#[actix_rt::test]
async fn an_error_from_the_inner_service_is_passed_on_and_its_status_decides() {
    let h = Harness::new();
    let app = test::init_service(
        App::new()
            // registered first, so it runs inside the audit middleware
            .wrap_fn(|req, srv| {
                auth(&req);
                let response = srv.call(req);
                async move {
                    // the handler ran (and annotated the request), then an inner middleware fails
                    let _ = response.await?;
                    Err::<ServiceResponse<BoxBody>, _>(actix_web::error::ErrorServiceUnavailable("down"))
                }
            })
            .wrap(h.builder().outcomes(Outcomes::All).build())
            .service(create_team),
    )
    .await;
    let Err(err) = app.call(request("POST", "/teams").to_request()).await else {
        panic!("the inner error is passed on");
    };
    assert_eq!(
        err.as_response_error().status_code(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, event) = h.one_event().await;
    let m = event.metadata.unwrap();
    assert_eq!(m.get("outcome"), Some(&MetadataValue::from("failure")));
    assert_eq!(m.get("http_status"), Some(&MetadataValue::Integer(503)));
}

#[actix_rt::test]
async fn routing_404_and_405_never_emit() {
    let h = Harness::new();
    let audit = h.builder().outcomes(Outcomes::All).build();
    let skips = audit.skip_counters();
    let app = test::init_service(
        App::new()
            .wrap(audit)
            .wrap_fn(|req, srv| {
                auth(&req);
                srv.call(req)
            })
            .service(web::resource("/teams").route(web::post().to(create_team_plain)))
            .service(delete_team),
    )
    .await;
    let res = test::call_service(&app, request("GET", "/nowhere").to_request()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = test::call_service(&app, request("PUT", "/teams").to_request()).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let res = test::call_service(&app, request("GET", "/teams/t1").to_request()).await;
    assert!(matches!(res.status().as_u16(), 404 | 405), "{}", res.status());
    assert!(h.events().await.is_empty());
    assert_eq!(skips.get(SkipReason::NotAnnotated), 3);
}

#[audit_actix::action("team.created")]
async fn create_team_plain() -> HttpResponse {
    HttpResponse::Created().finish()
}

#[actix_rt::test]
async fn missing_middleware_is_a_500_naming_it() {
    let app = test::init_service(App::new().service(create_team).service(view_invoice).route(
        "/ctx",
        web::get().to(|audit: AuditCtx| async move {
            audit.meta("k", "v");
            HttpResponse::Ok().finish()
        }),
    ))
    .await;
    for (method, uri, kind) in [
        ("POST", "/teams", MissingAuditMiddleware::Action),
        ("GET", "/invoices/1", MissingAuditMiddleware::Action),
        ("GET", "/ctx", MissingAuditMiddleware::AuditCtx),
    ] {
        let res = test::call_service(&app, request(method, uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        let body = to_bytes(res.into_body()).await.unwrap();
        let body = std::str::from_utf8(&body).unwrap();
        assert_eq!(body, kind.body_text());
        assert!(
            body.contains("AuditMiddleware") && body.contains(".wrap("),
            "{body}"
        );
    }
}

#[actix_rt::test]
async fn audit_disabled_runs_annotated_handlers_without_recording() {
    let app = test::init_service(
        App::new()
            .app_data(AuditDisabled)
            .service(create_team)
            .service(view_invoice),
    )
    .await;
    let res = test::call_service(&app, request("POST", "/teams").to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = test::call_service(&app, request("GET", "/invoices/inv_1").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    // also as a request extension
    let app = test::init_service(
        App::new()
            .wrap_fn(|req, srv| {
                req.extensions_mut().insert(AuditDisabled);
                srv.call(req)
            })
            .service(create_team),
    )
    .await;
    let res = test::call_service(&app, request("POST", "/teams").to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[actix_rt::test]
async fn wraps_a_scope_a_resource_and_a_route() {
    let h = Harness::new();
    let app = test::init_service(
        App::new()
            .wrap_fn(|req, srv| {
                auth(&req);
                srv.call(req)
            })
            .service(web::scope("/scoped").wrap(h.middleware()).service(create_team))
            .service(
                web::resource("/resource/{id}")
                    .wrap(h.middleware())
                    .route(web::delete().to(delete_team_plain)),
            )
            .route("/route", web::post().to(create_team_plain).wrap(h.middleware()))
            .route("/bare", web::post().to(create_team_plain)),
    )
    .await;
    for (method, uri, status) in [
        ("POST", "/scoped/teams", 201),
        ("DELETE", "/resource/r1", 204),
        ("POST", "/route", 201),
    ] {
        let res = test::call_service(&app, request(method, uri).to_request()).await;
        assert_eq!(res.status().as_u16(), status, "{uri}");
    }
    let events = h.events().await;
    let actions: Vec<_> = events.iter().map(|(_, e)| e.action.as_str().to_owned()).collect();
    assert_eq!(actions, ["team.created", "team.deleted", "team.created"]);
    assert_eq!(events[1].1.targets[0].id, "r1");
    // outside the wrapped parts the annotation reports the missing middleware
    let res = test::call_service(&app, request("POST", "/bare").to_request()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[audit_actix::action("team.deleted", targets(team = "id"))]
async fn delete_team_plain() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

#[actix_rt::test]
async fn optional_request_metadata_uses_the_route_pattern() {
    let h = Harness::new();
    let app = app!(h.builder().request_metadata(true).build());
    let req = request("DELETE", "/teams/team_9")
        .insert_header(("x-request-id", "req-123"))
        .to_request();
    test::call_service(&app, req).await;
    let (_, event) = h.one_event().await;
    let m = event.metadata.unwrap();
    assert_eq!(m.get("request_id"), Some(&MetadataValue::from("req-123")));
    assert_eq!(m.get("http_method"), Some(&MetadataValue::from("DELETE")));
    assert_eq!(m.get("http_route"), Some(&MetadataValue::from("/teams/{id}")));
    assert_eq!(m.get("http_status"), Some(&MetadataValue::Integer(204)));
}

#[actix_rt::test]
async fn user_agent_is_bounded_and_lossy() {
    let h = Harness::new();
    let app = app!(
        h.builder()
            .policy(audit_core::request::AuditPolicy::new().max_user_agent_len(40))
            .build()
    );
    let mut raw = b"abc\xffdef".to_vec();
    raw.extend([b'x'; 50]);
    let ua = actix_web::http::header::HeaderValue::from_bytes(&raw).unwrap();
    let req = request("POST", "/teams")
        .insert_header(("user-agent", ua))
        .to_request();
    test::call_service(&app, req).await;
    let (_, event) = h.one_event().await;
    // Invalid UTF-8 replaced, then cut to 40 bytes and marked with the CRC-32 of the decoded value.
    assert_eq!(
        event.context.user_agent.as_deref(),
        Some("abc\u{fffd}defxx…[truncated crc32:cc193962]")
    );
}

#[actix_rt::test]
async fn no_socket_peer_gives_the_placeholder_location() {
    let h = Harness::new();
    let app = app!(h.builder().trusted_proxies(["0.0.0.0/0"]).unwrap().build());
    let req = test::TestRequest::post()
        .uri("/teams")
        .insert_header(("authorization", "user user_1"))
        .insert_header(("x-forwarded-for", "198.51.100.7"))
        .to_request();
    test::call_service(&app, req).await;
    let (_, event) = h.one_event().await;
    assert_eq!(event.context.location, UNKNOWN_LOCATION);
}

#[actix_rt::test]
async fn a_refused_event_is_counted_and_the_response_unchanged() {
    let h = Harness::new();
    let audit = h.middleware();
    let skips = audit.skip_counters();
    let app = app!(audit);
    h.emitter.shutdown(Duration::from_secs(1)).await;
    let res = test::call_service(&app, request("POST", "/teams").to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(test::read_body(res).await, "created");
    assert_eq!(skips.emit_failures(), 1);
}

#[actix_rt::test]
async fn an_invalid_event_is_counted_not_returned() {
    let h = Harness::new();
    let audit = h.middleware();
    let skips = audit.skip_counters();
    let app = test::init_service(
        App::new()
            .wrap(audit)
            .wrap_fn(|req, srv| {
                // an empty actor id breaks WorkOS's rules
                req.extensions_mut().insert(Actor::new("", "user"));
                req.extensions_mut().insert(org());
                srv.call(req)
            })
            .service(create_team),
    )
    .await;
    let res = test::call_service(&app, request("POST", "/teams").to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(h.events().await.is_empty());
    assert_eq!(skips.invalid_events(), 1);
}

#[actix_rt::test]
async fn trusted_proxies_rejects_bad_ranges_naming_them() {
    let h = Harness::new();
    let err = h.builder().trusted_proxies(["10.0.0/8"]).unwrap_err();
    assert_eq!(err.value(), "10.0.0/8");
    assert_eq!(err.setting(), "trusted_proxies");
}

#[actix_rt::test]
async fn nested_middlewares_emit_once() {
    let h = Harness::new();
    let outer = h.middleware();
    let outer_skips = outer.skip_counters();
    let app = test::init_service(
        App::new()
            .wrap(outer)
            .wrap_fn(|req, srv| {
                auth(&req);
                srv.call(req)
            })
            .service(web::scope("/v1").wrap(h.middleware()).service(create_team)),
    )
    .await;
    let res = test::call_service(&app, request("POST", "/v1/teams").to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let (_, event) = h.one_event().await;
    assert_eq!(event.action.as_str(), "team.created");
    // the outer record saw no annotation: the inner middleware's record took its place
    assert_eq!(outer_skips.get(SkipReason::NotAnnotated), 1);
}
