//! WorkOS's limits as local rules, checked against audit-testkit over loopback: each limit is
//! refused by the emit call with its JSON pointer, and the same event, sent as it is (no local
//! check, `Client::send_event_once`), is rejected by audit-testkit the way WorkOS rejects it.
//! Also the states audit-testkit can produce for tests: a disabled configuration and a failed
//! export.

mod support;

use std::time::Duration;

use audit_core::client::{ConfigurationState, CreateExport, ExportState};
use audit_core::emitter::{EmitError, Emitter};
use audit_core::{
    Action, Actor, Client, Context, CreateEvent, Event, FieldErrorKind, Metadata, OrganizationId, Target,
};
use audit_testkit::TestKit;
use support::org;
use time::OffsetDateTime;

fn client(kit: &TestKit) -> Client {
    Client::builder()
        .api_key("sk_test_limits")
        .base_url(kit.url())
        .retry_policy(audit_core::RetryPolicy::disabled())
        .build()
        .expect("client")
}

fn event() -> Event {
    Event::new(
        Action::from_static("team.members_invited"),
        Actor::new("user_1", "user").name("Jon Smith"),
        Context::new("203.0.113.7"),
    )
}

/// The emit call refuses `event` with exactly the pointers `expected`.
fn refused_locally(emitter: &Emitter, org: &OrganizationId, event: Event, expected: &[&str]) -> String {
    match emitter.try_emit(org.clone(), event) {
        Err(EmitError::Invalid(errors)) => {
            assert_eq!(errors.pointers().collect::<Vec<_>>(), expected, "{errors}");
            errors.to_string()
        }
        other => panic!("expected a local refusal at {expected:?}, got {other:?}"),
    }
}

/// audit-testkit answers the unchecked `event` with `status`; the API error is returned.
async fn rejected_by_testkit(
    client: &Client,
    org: &OrganizationId,
    event: Event,
    status: u16,
) -> audit_core::ApiError {
    let err = client
        .send_event_once(&CreateEvent::new(org.clone(), event), "limits-test-key")
        .await
        .expect_err("audit-testkit must reject it");
    let api = err
        .api()
        .unwrap_or_else(|| panic!("not an API error: {err}"))
        .clone();
    assert_eq!(api.status, status, "{}", api.body);
    api
}

fn paths(api: &audit_core::ApiError) -> Vec<String> {
    api.errors
        .iter()
        .filter_map(|e| e.instance_path.clone())
        .collect()
}

#[tokio::test]
async fn more_than_twenty_targets() {
    let kit = support::kit().await;
    let org = org(&kit);
    let emitter = Emitter::builder(client(&kit)).no_rate_limit().start();
    let mut twenty = event();
    for i in 0..Event::MAX_TARGETS {
        twenty = twenty.target(Target::new(format!("user_{i}"), "user"));
    }
    emitter
        .try_emit(org.clone(), twenty.clone())
        .expect("20 targets are fine");
    let twenty_one = twenty.target(Target::new("user_20", "user"));
    let message = refused_locally(&emitter, &org, twenty_one.clone(), &["/targets"]);
    assert!(message.contains("21 targets"), "{message}");
    let api = rejected_by_testkit(&client(&kit), &org, twenty_one, 400).await;
    assert_eq!(api.code.as_deref(), Some("invalid_audit_log_event"));
    assert_eq!(paths(&api), ["/targets"]);
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        kit.events(org.as_str()).len(),
        1,
        "only the event with 20 targets"
    );
}

#[tokio::test]
async fn nul_in_a_string() {
    let kit = support::kit().await;
    let org = org(&kit);
    let emitter = Emitter::builder(client(&kit)).no_rate_limit().start();
    let mut with_nul = event().meta("foo", "a\0b").target(Target::new("team\0", "team"));
    with_nul.actor.name = Some("Jon\0".into());
    let expected = ["/actor/name", "/targets/0/id", "/metadata/foo"];
    let message = refused_locally(&emitter, &org, with_nul.clone(), &expected);
    assert!(message.contains("U+0000"), "{message}");
    let api = rejected_by_testkit(&client(&kit), &org, with_nul, 400).await;
    let mut answered = paths(&api);
    answered.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(answered, expected);
    assert!(kit.events(org.as_str()).is_empty());
}

/// An event of about 480 KB: 20 targets with 50 metadata strings of 480 characters each.
fn huge() -> Event {
    let mut e = event();
    for i in 0..Event::MAX_TARGETS {
        let metadata: Metadata = (0..Metadata::MAX_KEYS)
            .map(|k| (format!("k{k}"), "x".repeat(480)))
            .collect();
        e = e.target(Target::new(format!("user_{i}"), "user").metadata(metadata));
    }
    e
}

#[tokio::test]
async fn a_request_over_the_default_budget() {
    let kit = support::kit().await;
    let org = org(&kit);
    let emitter = Emitter::builder(client(&kit)).no_rate_limit().start();
    let message = refused_locally(&emitter, &org, huge(), &["/targets"]);
    assert!(message.contains("over the budget of 102400 bytes"), "{message}");
    let api = rejected_by_testkit(&client(&kit), &org, huge(), 413).await;
    assert_eq!(api.message.as_deref(), Some("request entity too large"));
}

#[tokio::test]
async fn the_budget_is_configurable_on_both_sides() {
    let kit = TestKit::builder()
        .max_event_request_bytes(8_000)
        .start()
        .await
        .unwrap();
    let org = org(&kit);
    let metadata: Metadata = (0..20).map(|k| (format!("k{k}"), "y".repeat(450))).collect();
    let big = event().metadata(metadata);
    // Inside the default budget: the default emitter sends it, and this testkit refuses it.
    let emitter = Emitter::builder(client(&kit)).no_rate_limit().start();
    assert!(big.validate().is_ok());
    let emitter_small = Emitter::builder(client(&kit))
        .no_rate_limit()
        .max_request_bytes(8_000)
        .start();
    refused_locally(&emitter_small, &org, big.clone(), &["/metadata"]);
    rejected_by_testkit(&client(&kit), &org, big, 413).await;
    // A small event passes both.
    emitter_small.try_emit(org.clone(), event()).unwrap();
    emitter_small.flush(Duration::from_secs(10)).await.unwrap();
    drop(emitter);
    assert_eq!(kit.events(org.as_str()).len(), 1);
}

#[tokio::test]
async fn the_size_error_names_the_figures() {
    let errors = huge().validate().unwrap_err();
    match &errors.errors()[0].kind {
        FieldErrorKind::RequestTooLarge {
            bytes,
            budget,
            part_bytes,
        } => {
            assert_eq!(*budget, audit_core::validate::DEFAULT_MAX_REQUEST_BYTES);
            assert!(*bytes > *budget && *part_bytes < *bytes && *part_bytes > 400_000);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn testkit_can_report_a_disabled_configuration_and_a_failed_export() {
    let kit = TestKit::builder()
        .configuration_state("disabled")
        .failing_exports(true)
        .export_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let org = org(&kit);
    let client = client(&kit);
    let configuration = client.get_audit_log_configuration(&org).await.unwrap();
    assert_eq!(configuration.state, ConfigurationState::Disabled);
    client.create_event(&org, &event()).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let export = client
        .create_export(&CreateExport::new(
            org.clone(),
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        ))
        .await
        .unwrap();
    let polled = client.get_export(&export.id).await.unwrap();
    assert_eq!(polled.state, ExportState::Error);
    assert!(polled.url.is_none());
}
