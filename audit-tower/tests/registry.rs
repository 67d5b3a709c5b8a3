//! `#[action]` handlers register themselves in audit-core's link-time registry (in a crate that
//! forbids unsafe code, as this workspace does), and a target type without a path parameter
//! names a type without adding a target.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink};
use audit_core::registry::known_actions_in;
use audit_core::{Actor, OrganizationId, Target};
use audit_tower::{AuditCtx, AuditLayer, action};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Extension, Router};
use tower::ServiceExt;

#[action("member.invited", targets(team = "id", user))]
async fn invite(audit: AuditCtx) -> StatusCode {
    audit.target(Target::new("user_9", "user"));
    StatusCode::CREATED
}

#[action("team.created", targets("team"))]
async fn create_team() -> StatusCode {
    StatusCode::CREATED
}

#[action("team.created")]
async fn create_team_again() -> StatusCode {
    StatusCode::CREATED
}

#[test]
fn annotations_are_listed_with_their_target_types() {
    let known = known_actions_in(&["registry"]);
    let listed: Vec<(&str, Vec<&str>, usize, bool)> = known
        .iter()
        .map(|k| {
            (
                k.action.as_str(),
                k.targets.iter().map(String::as_str).collect(),
                k.origins.len(),
                k.handler,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("member.invited", vec!["team", "user"], 1, true),
            ("team.created", vec!["team"], 2, true),
        ]
    );
    assert!(known[0].origins[0].file.ends_with("tests/registry.rs"));
}

#[tokio::test]
async fn a_bare_target_type_adds_no_target() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let app = Router::new()
        .route("/teams/{id}/invitations", post(invite))
        .route("/teams", post(create_team).put(create_team_again))
        .layer(AuditLayer::new(emitter.clone()))
        .layer(Extension(Actor::new("user_1", "user")))
        .layer(Extension(OrganizationId::new("org_1").unwrap()))
        .layer(MockConnectInfo(
            "203.0.113.9:51000".parse::<SocketAddr>().unwrap(),
        ));
    let request = Request::post("/teams/team_7/invitations")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::CREATED);
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 1);
    let targets: Vec<(&str, &str)> = events[0]
        .0
        .event
        .targets
        .iter()
        .map(|t| (t.id.as_str(), t.kind.as_ref()))
        .collect();
    assert_eq!(targets, [("team_7", "team"), ("user_9", "user")]);
}
