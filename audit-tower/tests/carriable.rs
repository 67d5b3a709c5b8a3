//! A request always leaves a record: a path id holding `%00`, a user agent with control
//! characters or a very long one still produce exactly one stored event (made carriable and
//! marked), and a handler adding more than 20 targets produces several events with nothing lost.
//! Real HTTP over loopback: the app served by axum, its events delivered by the in-memory emitter
//! to audit-testkit.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::adapter::{SANITIZED_METADATA_KEY, TRUNCATION_MARKER};
use audit_core::client::Client;
use audit_core::emitter::Emitter;
use audit_core::{Actor, OrganizationId, Target};
use audit_test_cases::split::assert_split_parts;
use audit_testkit::TestKit;
use audit_tower::{AuditCtx, AuditLayer, action};
use axum::routing::{get, post};
use axum::{Extension, Router};

#[action("team.viewed", targets(team = "id"))]
async fn view_team() -> &'static str {
    "ok"
}

#[action("team.members_invited")]
async fn invite(audit: AuditCtx) -> &'static str {
    for i in 0..45 {
        audit.target(Target::new(format!("user_{i}"), "user"));
    }
    "invited"
}

struct Served {
    base: String,
    emitter: Emitter,
    layer: AuditLayer,
    kit: TestKit,
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
    let layer = AuditLayer::builder(emitter.clone())
        .request_metadata(true)
        .build();
    let app = Router::new()
        .route("/teams/{id}", get(view_team))
        .route("/invites", post(invite))
        .layer(layer.clone())
        .layer(Extension(Actor::new("user_1", "user")))
        .layer(Extension(org));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    Served {
        base: format!("http://{addr}"),
        emitter,
        layer,
        kit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_id_with_nul_leaves_exactly_one_stored_event() {
    let s = serve().await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/teams/team%00x", s.base))
        .header("user-agent", format!("agent\t{}", "a".repeat(2000)))
        .header("x-request-id", "req-1")
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
    let user_agent = event["context"]["user_agent"].as_str().unwrap();
    assert!(user_agent.starts_with("agent\u{fffd}aaa"), "{user_agent}");
    assert!(user_agent.contains(TRUNCATION_MARKER), "{user_agent}");
    assert_eq!(
        event["metadata"][SANITIZED_METADATA_KEY],
        "/targets/id,/context/user_agent"
    );
    let counters = s.layer.skip_counters();
    assert_eq!(counters.sanitized(), 1);
    assert_eq!(counters.invalid_events(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    let keys: std::collections::HashSet<_> = s
        .kit
        .events(s.kit.organization_id())
        .into_iter()
        .map(|e| e.idempotency_key.unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "each part has its own idempotency key");
    assert_eq!(s.layer.skip_counters().target_overflows(), 1);
}
