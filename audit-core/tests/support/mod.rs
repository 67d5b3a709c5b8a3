//! Set-up shared by audit-core's integration tests: audit-testkit on loopback, its organization,
//! a fixed organization for in-memory sinks, and waiting helpers.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use audit_core::emitter::EmitterBuilder;
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
use audit_testkit::TestKit;

/// The path events are created at.
pub const EVENTS: &str = "/audit_logs/events";

/// audit-testkit started on loopback with its defaults.
pub async fn kit() -> TestKit {
    TestKit::builder().start().await.expect("testkit starts")
}

/// The testkit's organization.
pub fn org(kit: &TestKit) -> OrganizationId {
    OrganizationId::new(kit.organization_id()).unwrap()
}

/// A client of `kit` whose requests give up after `timeout`.
pub fn client(kit: &TestKit, timeout: Duration) -> Client {
    Client::builder()
        .api_key("sk_test_support")
        .base_url(kit.url())
        .timeout(timeout)
        .build()
        .expect("client")
}

/// The `n`th of a run of `user.signed_in` events, one actor each.
pub fn signed_in(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
}

/// Four senders, no rate limit, retries 20 ms to 200 ms apart for up to a minute: the emitter
/// settings of the delivery tests, quick to recover from a scripted fault.
pub fn fast_retries(builder: EmitterBuilder) -> EmitterBuilder {
    builder
        .senders(4)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .retry_window(Duration::from_secs(60))
}

/// A fixed organization, for tests that deliver to an in-memory or scripted sink.
pub fn fixed_org() -> OrganizationId {
    OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap()
}

/// Lets spawned tasks run until they wait on something.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Waits until `done` holds (checked after every short pause), for at most 20 s.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
