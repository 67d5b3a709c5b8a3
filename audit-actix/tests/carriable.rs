//! A request always leaves a record: a path id holding `%00` and a user agent with control
//! characters still produce exactly one stored event (made carriable and marked), and a handler
//! adding more than 20 targets produces several events with nothing lost. Real HTTP over
//! loopback: the app in an actix-web `HttpServer`, its events delivered by the in-memory emitter
//! to audit-testkit.

use std::time::Duration;

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, get, post};
use audit_actix::{AuditCtx, AuditMiddleware, action};
use audit_core::adapter::SANITIZED_METADATA_KEY;
use audit_core::client::Client;
use audit_core::emitter::Emitter;
use audit_core::{Actor, OrganizationId, Target};
use audit_test_cases::split::assert_split_parts;
use audit_testkit::TestKit;

#[action("team.viewed", targets(team = "id"))]
#[get("/teams/{id}")]
async fn view_team() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[action("team.members_invited")]
#[post("/invites")]
async fn invite(audit: AuditCtx) -> HttpResponse {
    for i in 0..45 {
        audit.target(Target::new(format!("user_{i}"), "user"));
    }
    HttpResponse::Ok().body("invited")
}

struct Served {
    base: String,
    emitter: Emitter,
    audit: AuditMiddleware,
    kit: TestKit,
    server: actix_web::dev::ServerHandle,
}

async fn serve() -> Served {
    let kit = TestKit::start().await.unwrap();
    let client = Client::builder()
        .api_key("sk_test_carriable")
        .base_url(kit.url())
        .build()
        .unwrap();
    let emitter = Emitter::builder(client).no_rate_limit().start();
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let audit = AuditMiddleware::new(emitter.clone());
    let middleware = audit.clone();
    let server = HttpServer::new(move || {
        let org = org.clone();
        App::new()
            .wrap(middleware.clone())
            .wrap_fn(move |req, srv| {
                req.extensions_mut().insert(Actor::new("user_1", "user"));
                req.extensions_mut().insert(org.clone());
                srv.call(req)
            })
            .service(view_team)
            .service(invite)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Served {
        base: format!("http://{addr}"),
        emitter,
        audit,
        kit,
        server: handle,
    }
}

#[actix_rt::test]
async fn a_path_id_with_nul_leaves_exactly_one_stored_event() {
    let s = serve().await;
    let response = reqwest::Client::new()
        .get(format!("{}/teams/team%00x", s.base))
        .header("user-agent", "agent\t1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "audit trouble never changes a response");
    s.emitter.flush(Duration::from_secs(20)).await.unwrap();
    let events = s
        .kit
        .events(s.kit.organization_id())
        .into_iter()
        .map(|e| e.event)
        .collect::<Vec<_>>();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["targets"][0]["id"], "team\u{fffd}x");
    assert_eq!(event["context"]["user_agent"], "agent\u{fffd}1");
    assert_eq!(
        event["metadata"][SANITIZED_METADATA_KEY],
        "/targets/id,/context/user_agent"
    );
    assert_eq!(s.audit.skip_counters().sanitized(), 1);
    assert_eq!(s.audit.skip_counters().invalid_events(), 0);
    s.server.stop(true).await;
}

#[actix_rt::test]
async fn more_than_twenty_targets_become_several_events_with_nothing_lost() {
    let s = serve().await;
    let response = reqwest::Client::new()
        .post(format!("{}/invites", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    s.emitter.flush(Duration::from_secs(20)).await.unwrap();
    let events = s
        .kit
        .events(s.kit.organization_id())
        .into_iter()
        .map(|e| e.event)
        .collect::<Vec<_>>();
    let expected: Vec<String> = (0..45).map(|i| format!("user_{i}")).collect();
    assert_split_parts(events, 3, &expected);
    assert_eq!(s.audit.skip_counters().target_overflows(), 1);
    s.server.stop(true).await;
}
