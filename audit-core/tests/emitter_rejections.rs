//! Rejections are loud: events audit-testkit rejects (over loopback, schemas required) are
//! counted per action and reason in `stats()` and the shutdown report, with what the schema
//! version declares and the fix.

mod support;

use std::sync::Arc;
use std::time::Duration;

use audit_core::client::{CreateSchema, SchemaTarget};
use audit_core::emitter::{DeadLetterReason, Emitter, MemoryDeadLetters};
use audit_core::{Action, Actor, Client, Context, Event, SchemaRegistry, Target};
use audit_testkit::TestKit;
use support::{fast_retries, org};

#[tokio::test]
async fn rejected_events_are_counted_per_action_with_the_schema_and_the_fix() {
    let kit = TestKit::builder()
        .require_schemas(true)
        .start()
        .await
        .expect("testkit starts");
    let client = Client::builder()
        .api_key("sk_test_rejections")
        .base_url(kit.url())
        .build()
        .expect("client");
    let paid = Action::new("invoice.paid").unwrap();
    let schema = CreateSchema::new([SchemaTarget::new("bill")]);
    client.create_schema(&paid, &schema).await.expect("registered");
    // Versions filled in, no local check: the event reaches the testkit and is rejected there.
    let registry = SchemaRegistry::from_workos(&client)
        .await
        .expect("listed")
        .check_locally(false);
    let letters = MemoryDeadLetters::new();
    let emitter = fast_retries(Emitter::builder(client))
        .schemas(Arc::new(registry))
        .dead_letters(letters.clone())
        .start();
    let org = org(&kit);
    let event = |action: &Action, kind: &'static str| {
        Event::new(
            action.clone(),
            Actor::new("user_1", "user"),
            Context::new("203.0.113.7"),
        )
        .target(Target::new("inv_1", kind))
    };
    for _ in 0..3 {
        emitter
            .emit(org.clone(), event(&paid, "invoice"))
            .await
            .expect("accepted");
    }
    let never = Action::new("report.exported").unwrap();
    emitter
        .emit(org.clone(), event(&never, "report"))
        .await
        .expect("accepted");
    emitter
        .emit(org.clone(), event(&paid, "bill"))
        .await
        .expect("accepted");
    emitter.flush(Duration::from_secs(20)).await.expect("flushed");
    assert_eq!(letters.len(), 4);

    let stats = emitter.stats();
    assert_eq!(stats.rejections.len(), 2, "{:?}", stats.rejections);
    let top = &stats.rejections[0];
    assert_eq!(
        (top.action.as_str(), top.reason, top.total, top.last_hour),
        ("invoice.paid", DeadLetterReason::Rejected, 3, 3)
    );
    let line = top.to_string();
    assert!(
        line.starts_with(
            "invoice.paid: 3 rejected in the last hour (3 in all), schema version 1 declares target type `bill`, the event sends `invoice`"
        ),
        "{line}"
    );
    assert!(line.contains("/targets/0/type"), "{line}");
    assert!(top.fix.contains("register a new schema version"), "{}", top.fix);
    let other = &stats.rejections[1];
    assert_eq!((other.action.as_str(), other.total), ("report.exported", 1));
    assert!(
        other.detail.as_deref().unwrap_or("").contains("/action"),
        "{other}"
    );

    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 1);
    assert_eq!(report.rejections, stats.rejections);
}
