//! The loss matrix: one test per fault that could make an accepted event disappear, each
//! asserting where every accepted event ended up: delivered once, dead-lettered with its whole
//! body and key, or still held and counted. Nothing may end "nowhere".
//!
//! Everything talks HTTP over loopback: to audit-testkit, or (for a wrong base URL) to a small
//! web app that is not WorkOS.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use audit_core::emitter::{
    DeadLetter, DeadLetterReason, EmitReceipt, Emitter, EmitterBuilder, MemoryDeadLetters,
};
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
use audit_testkit::{FaultRule, TestKit};
use serde_json::json;

const EVENTS: &str = "/audit_logs/events";

async fn kit() -> TestKit {
    TestKit::builder().start().await.expect("testkit starts")
}

fn org(kit: &TestKit) -> OrganizationId {
    OrganizationId::new(kit.organization_id()).unwrap()
}

fn client(base_url: &str) -> Client {
    Client::builder()
        .api_key("sk_test_loss_matrix")
        .base_url(base_url)
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("client")
}

fn builder(base_url: &str) -> EmitterBuilder {
    Emitter::builder(client(base_url))
        .senders(4)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .retry_window(Duration::from_secs(60))
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user").name("Test User"),
        Context::new("203.0.113.7").user_agent("loss-matrix"),
    )
    .meta("n", n)
}

fn emit_many(
    emitter: &Emitter,
    org: &OrganizationId,
    range: std::ops::Range<usize>,
) -> Vec<(EmitReceipt, Event)> {
    range
        .map(|n| {
            let e = event(n);
            (emitter.try_emit(org.clone(), e.clone()).expect("accepted"), e)
        })
        .collect()
}

/// Where each accepted event ended up.
#[derive(Debug, Default)]
struct Fate {
    /// Keys stored by the testkit (each at most once).
    delivered: HashSet<String>,
    /// Dead letters by key.
    dead: HashMap<String, DeadLetter>,
}

impl Fate {
    fn of(kit: Option<&TestKit>, dead: &[DeadLetter]) -> Self {
        let mut fate = Fate::default();
        if let Some(kit) = kit {
            for stored in kit.all_events() {
                let key = stored.idempotency_key.clone().expect("key sent");
                assert!(fate.delivered.insert(key.clone()), "{key} stored twice");
            }
        }
        for letter in dead {
            let old = fate.dead.insert(letter.idempotency_key.clone(), letter.clone());
            assert!(old.is_none(), "{} dead-lettered twice", letter.idempotency_key);
        }
        fate
    }

    /// Every accepted event is delivered once or dead-lettered whole (never both, never neither).
    fn assert_accounted(&self, org: &OrganizationId, accepted: &[(EmitReceipt, Event)]) {
        for (receipt, event) in accepted {
            let key = receipt.idempotency_key.as_str();
            let delivered = self.delivered.contains(key);
            match self.dead.get(key) {
                Some(letter) => {
                    assert!(!delivered, "{key} delivered and dead-lettered");
                    assert_eq!(
                        &letter.event, event,
                        "{key}: the dead letter keeps the whole event"
                    );
                    assert_eq!(&letter.organization_id, org);
                }
                None => assert!(delivered, "{key} ended nowhere"),
            }
        }
    }

    fn reasons(&self) -> Vec<DeadLetterReason> {
        self.dead.values().map(|l| l.reason).collect()
    }
}

/// A web app that is not WorkOS, answering every request with `status`, `content_type` and
/// `body`; returns its base URL.
async fn not_workos(status: u16, content_type: Option<&'static str>, body: &'static str) -> String {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || async move {
        let status = StatusCode::from_u16(status).unwrap();
        match content_type {
            Some(ct) => (status, [(header::CONTENT_TYPE, ct)], body).into_response(),
            None => status.into_response(),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn assert_not_workos_dead_letters(base_url: &str, status: u16, quoted: &str) {
    let dead = MemoryDeadLetters::new();
    let emitter = builder(base_url).dead_letters(dead.clone()).start();
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let accepted = emit_many(&emitter, &org, 0..6);
    emitter.flush(Duration::from_secs(10)).await.expect("flushed");
    let stats = emitter.stats();
    assert_eq!(
        (stats.delivered, stats.dead_lettered, stats.not_workos),
        (0, 6, 6),
        "{stats:?}"
    );
    assert_eq!(stats.retried, 0, "not retried forever");
    let last = stats.last_error.expect("shown in stats");
    assert!(last.contains("check WORKOS_BASE_URL"), "{last}");
    let fate = Fate::of(None, &dead.letters());
    fate.assert_accounted(&org, &accepted);
    assert!(fate.reasons().iter().all(|r| *r == DeadLetterReason::NotWorkOs));
    let letter = fate.dead.values().next().unwrap();
    assert_eq!(letter.attempts, 1);
    let error = letter.error.as_ref().unwrap();
    assert_eq!(error.status, Some(status));
    assert!(
        error
            .message
            .contains("this is not the WorkOS API: check WORKOS_BASE_URL")
            && error.message.contains(quoted),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_wrong_base_url_answering_200_html_dead_letters_every_event() {
    let url = not_workos(
        200,
        Some("text/html; charset=utf-8"),
        "<!doctype html><html><body>Welcome</body></html>",
    )
    .await;
    assert_not_workos_dead_letters(&url, 200, "<!doctype html>").await;
}

#[tokio::test]
async fn a_wrong_base_url_answering_204_dead_letters_every_event() {
    let url = not_workos(204, None, "").await;
    assert_not_workos_dead_letters(&url, 204, "no content type").await;
}

#[tokio::test]
async fn a_200_with_other_json_is_not_a_delivery() {
    let kit = kit().await;
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .respond_json(200, json!({"ok": true})),
    );
    assert_not_workos_dead_letters(&kit.url(), 200, "application/json").await;
    assert!(kit.all_events().is_empty());
}

#[tokio::test]
async fn the_client_refuses_a_success_that_is_not_workos() {
    let url = not_workos(200, Some("text/html"), "<html>login</html>").await;
    let anywhere = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let e = client(&url).create_event(&anywhere, &event(1)).await.unwrap_err();
    assert!(e.is_not_workos(), "{e}");
    assert_eq!(e.status(), Some(200));
    let text = e.to_string();
    assert!(
        text.contains("text/html") && text.contains("<html>login"),
        "{text}"
    );
    // WorkOS's own answer still counts.
    let kit = kit().await;
    client(&kit.url())
        .create_event(&org(&kit), &event(2))
        .await
        .expect("delivered");
}
