//! `MemorySink`'s helpers for an application's own tests: waiting for and asserting on the
//! events the application emitted.

use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Action, Actor, Context, Event, OrganizationId};

fn org() -> OrganizationId {
    OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap()
}

fn event(action: &str) -> Event {
    Event::new(
        Action::new(action).unwrap(),
        Actor::new("user_01", "user"),
        Context::new("203.0.113.7"),
    )
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_events_and_finds_them_by_action() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).senders(1).no_rate_limit().start();
    // Emitted from another task, as an adapter does once the response is finished.
    let background = emitter.clone();
    tokio::spawn(async move {
        for action in ["user.signed_in", "team.created", "team.deleted"] {
            tokio::time::sleep(Duration::from_millis(10)).await;
            background.try_emit(org(), event(action)).unwrap();
        }
    });
    let created = sink.expect_action("team.created", Duration::from_secs(5)).await;
    assert_eq!(created.organization_id, org());
    assert_eq!(created.event.actor.id, "user_01");
    let events = sink.wait_for_events(3, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 3);
    assert_eq!(sink.actions(), ["user.signed_in", "team.created", "team.deleted"]);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "expected 2 audit events within 1s; delivered: [\"user.signed_in\"]")]
async fn too_few_events_fail_the_test_naming_what_arrived() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    emitter.try_emit(org(), event("user.signed_in")).unwrap();
    sink.wait_for_events(2, Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(
    expected = "expected an audit event \"team.deleted\" within 1s; delivered: [\"team.created\"]"
)]
async fn a_missing_action_fails_the_test_naming_what_arrived() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    emitter.try_emit(org(), event("team.created")).unwrap();
    sink.expect_action("team.deleted", Duration::from_secs(1)).await;
}
