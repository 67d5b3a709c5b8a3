//! The JSON this crate sends is the JSON the official WorkOS SDKs send.
//!
//! The expected bodies are copies of requests the official Node 11 and Python 10.8 SDKs really
//! sent (`tests/fixtures/official-sdk-bodies.json`), compared as JSON values so that key order
//! does not matter (Node and Python order keys differently).

use audit_core::client::CreateExport;
use audit_core::{Action, Actor, Context, CreateEvent, Event, Metadata, OrganizationId, Target};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/official-sdk-bodies.json")).expect("fixture is JSON")
}

fn body(name: &str) -> Value {
    let f = fixtures();
    let b = f[name]["body"].clone();
    assert!(b.is_object(), "fixture {name} has a body");
    b
}

fn at(s: &str) -> OffsetDateTime {
    audit_core::event::rfc3339_millis::parse(s).expect("a valid timestamp")
}

fn org(id: &str) -> OrganizationId {
    OrganizationId::new(id).expect("a valid organization id")
}

fn action(name: &str) -> Action {
    Action::new(name).expect("a valid action")
}

/// The event the Node SDK sent: no names, no user agent, one target, event metadata.
fn node_event() -> CreateEvent {
    CreateEvent::new(
        org("org_1"),
        Event::new(
            action("user.signed_in"),
            Actor::new("u1", "user"),
            Context::new("1.1.1.1"),
        )
        .occurred_at(at("2024-01-02T03:04:05.678Z"))
        .target(Target::new("t1", "team"))
        .meta("k", 1),
    )
}

/// The event the Python SDK sent: actor name and metadata, user agent.
fn python_event() -> CreateEvent {
    CreateEvent::new(
        org("org_1"),
        Event::new(
            action("user.signed_in"),
            Actor::new("u1", "user").name("Jon").meta("role", "admin"),
            Context::new("1.1.1.1").user_agent("UA"),
        )
        .occurred_at(at("2024-01-02T03:04:05.678Z"))
        .target(Target::new("t1", "team"))
        .meta("k", 1),
    )
}

/// Every field set: the create-event example of WorkOS's API reference.
fn full_event() -> CreateEvent {
    CreateEvent::new(
        org("org_01EHWNCE74X7JSDV0X3SZ3KJNY"),
        Event::new(
            action("user.signed_in"),
            Actor::new("user_TF4C5938", "user")
                .name("Jon Smith")
                .meta("role", "admin"),
            Context::new("203.0.113.7").user_agent("Mozilla/5.0 ..."),
        )
        .occurred_at(at("2026-02-02T16:35:39.317Z"))
        .version(1)
        .target(
            Target::new("team_J8YASKA2", "team")
                .name("Engineering")
                .meta("owner", "user_01GB"),
        )
        .meta("request_id", "req_123"),
    )
}

#[test]
fn node_sdk_event_body_matches() {
    assert_eq!(
        serde_json::to_value(node_event()).unwrap(),
        body("node_create_event")
    );
}

#[test]
fn python_sdk_event_body_matches() {
    assert_eq!(
        serde_json::to_value(python_event()).unwrap(),
        body("python_create_event")
    );
}

#[test]
fn full_event_body_matches_the_reference() {
    assert_eq!(
        serde_json::to_value(full_event()).unwrap(),
        body("reference_create_event")
    );
}

#[test]
fn minimal_event_omits_every_optional_field() {
    let e = Event::new(action("login"), Actor::new("u1", "user"), Context::new("1.1.1.1"))
        .occurred_at(at("2024-01-02T03:04:05Z"));
    assert_eq!(
        serde_json::to_value(CreateEvent::new(org("org_1"), e)).unwrap(),
        json!({
            "organization_id": "org_1",
            "event": {
                "action": "login",
                "occurred_at": "2024-01-02T03:04:05.000Z",
                "actor": {"id": "u1", "type": "user"},
                "targets": [],
                "context": {"location": "1.1.1.1"}
            }
        })
    );
}

#[test]
fn empty_metadata_is_omitted_like_absent_metadata() {
    let e = Event::new(
        action("login"),
        Actor::new("u1", "user").metadata(Metadata::new()),
        Context::new("1.1.1.1"),
    )
    .metadata(Metadata::new())
    .occurred_at(at("2024-01-02T03:04:05.678Z"));
    let v = serde_json::to_value(&e).unwrap();
    assert!(v.get("metadata").is_none(), "{v}");
    assert!(v["actor"].get("metadata").is_none(), "{v}");
}

#[test]
fn occurred_at_is_utc_with_milliseconds() {
    let e = node_event()
        .event
        .occurred_at(at("2024-01-02T05:04:05.678912+02:00"));
    assert_eq!(
        serde_json::to_value(&e).unwrap()["occurred_at"],
        json!("2024-01-02T03:04:05.678Z")
    );
}

#[test]
fn sdk_bodies_read_back_and_serialize_identically() {
    for name in [
        "node_create_event",
        "python_create_event",
        "reference_create_event",
    ] {
        let sent = body(name);
        let read: CreateEvent = serde_json::from_value(sent.clone()).expect(name);
        assert_eq!(serde_json::to_value(&read).unwrap(), sent, "{name}");
    }
    let read: CreateEvent = serde_json::from_value(body("python_create_event")).unwrap();
    assert_eq!(read, python_event());
    let read: CreateEvent = serde_json::from_value(body("reference_create_event")).unwrap();
    assert_eq!(read, full_event());
}

#[test]
fn export_bodies_match() {
    let export = CreateExport::new(
        org("org_1"),
        at("2024-01-01T00:00:00.000Z"),
        at("2024-02-01T00:00:00.000Z"),
    );
    assert_eq!(serde_json::to_value(&export).unwrap(), body("node_create_export"));
    let export = export.actor_name("Jon");
    assert_eq!(
        serde_json::to_value(&export).unwrap(),
        body("python_create_export")
    );
    let read: CreateExport = serde_json::from_value(body("python_create_export")).unwrap();
    assert_eq!(read, export);
}

#[test]
fn export_filters_are_sent_when_set() {
    let export = CreateExport::new(
        org("org_1"),
        at("2024-01-01T00:00:00Z"),
        at("2024-02-01T00:00:00Z"),
    )
    .action(action("user.signed_in"))
    .actor_id("user_1")
    .target("team");
    assert_eq!(
        serde_json::to_value(&export).unwrap(),
        json!({
            "organization_id": "org_1",
            "range_start": "2024-01-01T00:00:00.000Z",
            "range_end": "2024-02-01T00:00:00.000Z",
            "actions": ["user.signed_in"],
            "actor_ids": ["user_1"],
            "targets": ["team"]
        })
    );
}
