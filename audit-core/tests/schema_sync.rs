//! Schemas declared in code, registered with audit-testkit (versioning by upsert), loaded from the
//! action list, and checked by the emit call with the same JSON pointers as the server's 400.
#![cfg(feature = "schema")]

use std::sync::Arc;
use std::time::Duration;

use audit_core::schema::{ActionSchema, SchemaRegistry};
use audit_core::{
    Action, Actor, Client, Context, EmitError, Emitter, Event, FieldErrorKind, OrganizationId, Target,
};
use audit_testkit::TestKit;
use serde_json::json;

async fn kit() -> TestKit {
    TestKit::builder()
        .require_schemas(true)
        .start()
        .await
        .expect("testkit starts")
}

fn client(kit: &TestKit) -> Client {
    Client::builder()
        .api_key("sk_test_schemas")
        .base_url(kit.url())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid configuration")
}

fn invoice_paid_v1() -> ActionSchema {
    ActionSchema::new(Action::new("invoice.paid").unwrap())
        .target_with_metadata(
            "invoice",
            json!({"type": "object", "properties": {"cost": {"type": "number"}}, "required": ["cost"]}),
        )
        .metadata(json!({"type": "object", "properties": {"currency": {"type": "string"}}}))
}

/// Version 2 adds a team target and constrains the actor.
fn invoice_paid_v2() -> ActionSchema {
    invoice_paid_v1()
        .target("team")
        .actor_metadata(json!({"type": "object", "properties": {"role": {"enum": ["admin", "member"]}}}))
}

fn paid(cost: impl Into<audit_core::MetadataValue>) -> Event {
    Event::new(
        Action::new("invoice.paid").unwrap(),
        Actor::new("user_1", "user"),
        Context::new("203.0.113.7"),
    )
    .target(Target::new("inv_1", "invoice").meta("cost", cost))
    .meta("currency", "EUR")
}

#[tokio::test]
async fn sync_registers_and_versions_follow_the_upsert() {
    let kit = kit().await;
    let c = client(&kit);
    let r1 = SchemaRegistry::sync(&c, &[invoice_paid_v1()])
        .await
        .expect("synced");
    let action = Action::new("invoice.paid").unwrap();
    assert_eq!(r1.version(&action), Some(1));
    // Unchanged: the same version.
    let again = SchemaRegistry::sync(&c, &[invoice_paid_v1()])
        .await
        .expect("synced");
    assert_eq!(again.version(&action), Some(1));
    // Changed: n + 1.
    let r2 = SchemaRegistry::sync(&c, &[invoice_paid_v2()])
        .await
        .expect("synced");
    assert_eq!(r2.version(&action), Some(2));

    // The action list (every page) gives the latest version of every action.
    let more: Vec<ActionSchema> = (0..12)
        .map(|i| ActionSchema::new(Action::new(format!("thing.done{i}")).unwrap()).target("thing"))
        .collect();
    SchemaRegistry::sync(&c, &more).await.expect("synced");
    let listed = SchemaRegistry::from_workos(&c).await.expect("listed");
    assert_eq!(listed.actions().count(), 13);
    assert_eq!(listed.version(&action), Some(2));

    // Every version of one action.
    let mut all = SchemaRegistry::new();
    all.load_versions(&c, &action).await.expect("listed");
    assert_eq!(all.version(&action), Some(2));
    assert!(
        all.check(&paid(1.0).version(1)).is_ok(),
        "version 1 has no team type or actor rule"
    );
    let old_with_team = paid(1.0).version(1).target(Target::new("t", "team"));
    assert_eq!(
        all.check(&old_with_team)
            .unwrap_err()
            .pointers()
            .collect::<Vec<_>>(),
        ["/targets/1/type"]
    );

    // A schema from a JSON file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schemas.json");
    std::fs::write(&path, serde_json::to_string(&vec![invoice_paid_v2()]).unwrap()).unwrap();
    let from_file = ActionSchema::from_file(&path).expect("read");
    assert_eq!(from_file, [invoice_paid_v2()]);
    let r = SchemaRegistry::sync(&c, &from_file).await.expect("synced");
    assert_eq!(r.version(&action), Some(2), "the same schema keeps its version");
}

#[tokio::test]
async fn the_emitter_fills_in_versions_and_refuses_what_the_server_would() {
    let kit = kit().await;
    let c = client(&kit);
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    SchemaRegistry::sync(&c, &[invoice_paid_v1()])
        .await
        .expect("synced");
    let registry = Arc::new(
        SchemaRegistry::sync(&c, &[invoice_paid_v2()])
            .await
            .expect("synced"),
    );
    let emitter = Emitter::builder(c.clone())
        .no_rate_limit()
        .schemas(registry.clone())
        .start();

    // Accepted, sent with the current version, stored by the require-schemas server.
    let good = paid(12.5).target(Target::new("team_1", "team"));
    emitter.try_emit(org.clone(), good).expect("valid");
    // An explicit version is kept (and checked against that version, if loaded).
    emitter
        .try_emit(org.clone(), paid(1).version(1))
        .expect("valid for version 1");
    emitter.flush(Duration::from_secs(10)).await.expect("delivered");
    let stored = kit.events(kit.organization_id());
    let mut versions: Vec<u64> = stored
        .iter()
        .filter_map(|s| s.event["version"].as_u64())
        .collect();
    versions.sort();
    assert_eq!(versions, [1, 2]);
    assert_eq!(emitter.stats().dead_lettered, 0);

    // Refused in the emit call, nothing queued; the pointers are the server's.
    let cases = [
        paid("twelve"),
        Event::new(
            Action::new("invoice.paid").unwrap(),
            Actor::new("user_1", "user").meta("role", "owner"),
            Context::new("203.0.113.7"),
        )
        .target(Target::new("inv_1", "invoice"))
        .target(Target::new("p_1", "project"))
        .meta("currency", 978),
    ];
    for bad in cases {
        let local = match emitter.try_emit(org.clone(), bad.clone()) {
            Err(EmitError::Invalid(e)) => e,
            other => panic!("expected a schema error, got {other:?}"),
        };
        assert!(
            local
                .errors()
                .iter()
                .all(|e| matches!(e.kind, FieldErrorKind::Schema { .. })),
            "{local}"
        );
        let mut sent = bad.clone();
        sent.version = registry.version(&sent.action);
        let remote = c
            .create_event(&org, &sent)
            .await
            .expect_err("the server refuses it too");
        let api = remote.api().expect("an API error");
        assert_eq!(api.status, 400);
        let mut remote_pointers: Vec<String> = api
            .errors
            .iter()
            .filter_map(|e| e.instance_path.clone())
            .collect();
        let mut local_pointers: Vec<String> = local.pointers().map(str::to_owned).collect();
        remote_pointers.sort();
        local_pointers.sort();
        assert_eq!(local_pointers, remote_pointers);
        let remote_keywords: Vec<Option<String>> = api.errors.iter().map(|e| e.keyword.clone()).collect();
        assert!(remote_keywords.iter().all(Option::is_some));
    }
    emitter
        .flush(Duration::from_secs(5))
        .await
        .expect("nothing pending");
    assert_eq!(
        kit.events(kit.organization_id()).len(),
        2,
        "nothing more was stored"
    );
    assert_eq!(emitter.stats().accepted, 2);
}

#[tokio::test]
async fn without_a_registry_the_emitter_sends_what_it_gets() {
    let kit = kit().await;
    let c = client(&kit);
    SchemaRegistry::sync(&c, &[invoice_paid_v1()])
        .await
        .expect("synced");
    let emitter = Emitter::builder(c).no_rate_limit().start();
    emitter
        .try_emit(
            OrganizationId::new(kit.organization_id()).unwrap(),
            paid("twelve"),
        )
        .expect("no local schema check");
    emitter.flush(Duration::from_secs(10)).await.expect("resolved");
    assert_eq!(
        emitter.stats().dead_lettered,
        1,
        "the server refused it in the background"
    );
}

#[tokio::test]
async fn check_locally_off_only_fills_versions() {
    let kit = kit().await;
    let c = client(&kit);
    let registry = SchemaRegistry::sync(&c, &[invoice_paid_v1()])
        .await
        .expect("synced")
        .check_locally(false);
    let mut e = paid("twelve");
    registry.apply(&mut e).expect("not checked");
    assert_eq!(e.version, Some(1));
}
