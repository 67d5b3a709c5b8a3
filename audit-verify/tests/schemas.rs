//! The registered-actions check against audit-testkit over loopback: the actions this test
//! binary declares (audit-core's link-time registry) compared with the schemas registered in
//! the testkit.

use audit_core::client::{Client, CreateSchema, SchemaTarget};
use audit_core::registry::__private::{ACTIONS, DeclaredAction, Origin, linkme};
use audit_core::registry::known_actions_in;
use audit_core::request::{AuditPolicy, CancelledRequests};
use audit_core::{Action, ActionSchema};
use audit_testkit::TestKit;
use audit_verify::schemas::{FindingKind, SchemaCheck, SchemaReport};
use serde_json::json;

const KEY: &str = "sk_test_registered_actions_check";

audit_core::declare_action!("verify.never_registered", targets("thing"));
audit_core::declare_action!("invoice.paid", targets("invoice"));
audit_core::declare_action!("team.created", targets("team"));
audit_core::declare_action!("doc.shared", targets("doc"));
audit_core::declare_schema! {
    fn report_exported() -> ActionSchema {
        ActionSchema::new(Action::from_static("report.exported"))
            .target("report")
            .metadata(json!({"type": "object", "properties": {"rows": {"type": "integer"}}}))
    }
}

/// What an `#[action("team.renamed", targets(team = "id"))]` handler registers (the adapters'
/// attribute expands to this entry).
#[linkme::distributed_slice(ACTIONS)]
#[linkme(crate = linkme)]
static TEAM_RENAMED: DeclaredAction = DeclaredAction::handler(
    "team.renamed",
    &["team"],
    Origin::new(module_path!(), file!(), line!()),
);

/// A testkit with the schemas: `invoice.paid` declaring `bill`, `report.exported` whose `rows` is
/// a string, `team.created` as the code sends it, and `doc.shared` in two versions.
async fn kit() -> (TestKit, Client) {
    let kit = TestKit::builder()
        .api_key(KEY)
        .require_schemas(true)
        .start()
        .await
        .expect("testkit starts");
    let client = Client::builder()
        .api_key(KEY)
        .base_url(kit.url())
        .build()
        .expect("client");
    let register = |action: &'static str, schema: CreateSchema| {
        let client = client.clone();
        async move {
            client
                .create_schema(&Action::from_static(action), &schema)
                .await
                .expect("schema registered")
                .version
        }
    };
    register("invoice.paid", CreateSchema::new([SchemaTarget::new("bill")])).await;
    register(
        "report.exported",
        CreateSchema::new([SchemaTarget::new("report")]).metadata(json!({
            "type": "object",
            "properties": {"rows": {"type": "string"}},
            "required": ["rows"]
        })),
    )
    .await;
    register("team.created", CreateSchema::new([SchemaTarget::new("team")])).await;
    // Closed metadata: the adapter's `outcome` of a cancelled request is refused.
    let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
    register(
        "team.renamed",
        CreateSchema::new([SchemaTarget::new("team")]).metadata(closed),
    )
    .await;
    assert_eq!(
        register("doc.shared", CreateSchema::new([SchemaTarget::new("doc")])).await,
        1
    );
    let v2 = CreateSchema::new([SchemaTarget::new("doc")]).metadata(json!({"type": "object"}));
    assert_eq!(register("doc.shared", v2).await, 2);
    (kit, client)
}

fn kinds(report: &SchemaReport, action: &str) -> Vec<FindingKind> {
    report.of(action).map(|f| f.kind).collect()
}

#[tokio::test]
async fn finds_unregistered_actions_target_type_and_metadata_mismatches() {
    let (_kit, client) = kit().await;
    let actions = known_actions_in(&["schemas"]);
    assert_eq!(actions.len(), 6, "{actions:?}");
    let report = SchemaCheck::new(actions).run(&client).await.expect("check runs");
    let text = report.to_string();
    assert!(!report.passed(), "{text}");

    assert_eq!(
        kinds(&report, "verify.never_registered"),
        [FindingKind::NotRegistered],
        "{text}"
    );
    let missing = report.of("verify.never_registered").next().unwrap();
    assert!(missing.fix.contains("`thing`"), "{text}");
    assert!(
        missing.origin.as_deref().unwrap().contains("tests/schemas.rs:"),
        "{text}"
    );

    assert_eq!(
        kinds(&report, "invoice.paid"),
        [FindingKind::TargetType],
        "{text}"
    );
    let mismatch = report.of("invoice.paid").next().unwrap();
    assert_eq!(
        mismatch.message,
        "schema version 1 declares target type `bill`, the code sends `invoice`: those events are rejected"
    );
    assert!(mismatch.fix.contains("add target type `invoice`"), "{text}");

    assert_eq!(
        kinds(&report, "report.exported"),
        [FindingKind::Metadata],
        "{text}"
    );
    let metadata = report.of("report.exported").next().unwrap();
    assert!(metadata.message.contains("/metadata/rows (type)"), "{text}");

    assert_eq!(kinds(&report, "doc.shared"), [FindingKind::Version], "{text}");
    assert!(kinds(&report, "team.created").is_empty(), "{text}");
    assert!(text.contains("PASS   team.created (schema version 1)"), "{text}");
    assert_eq!(kinds(&report, "team.renamed"), [FindingKind::Metadata], "{text}");
    let adapter = report.of("team.renamed").next().unwrap();
    assert!(adapter.message.contains("cancelled request"), "{text}");
    assert!(adapter.fix.contains("AuditPolicy"), "{text}");
    assert!(text.ends_with("6 actions checked, 5 findings"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["findings"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn the_adapter_metadata_follows_the_policy() {
    let (_kit, client) = kit().await;
    let check = |policy: AuditPolicy| {
        let client = client.clone();
        async move {
            SchemaCheck::new(known_actions_in(&["schemas"]))
                .policy(policy)
                .run(&client)
                .await
                .expect("check runs")
        }
    };
    let quiet = check(AuditPolicy::new().cancelled(CancelledRequests::Skip)).await;
    assert!(kinds(&quiet, "team.renamed").is_empty(), "{quiet}");
    let verbose = check(
        AuditPolicy::new()
            .cancelled(CancelledRequests::Skip)
            .request_metadata(true),
    )
    .await;
    let found: Vec<&str> = verbose.of("team.renamed").map(|f| f.message.as_str()).collect();
    assert_eq!(found.len(), 1, "{verbose}");
    assert!(
        found[0].contains("as the adapter adds it to a response"),
        "{verbose}"
    );
    // Events built by hand carry no adapter metadata.
    assert!(kinds(&verbose, "team.created").is_empty(), "{verbose}");
}

#[tokio::test]
async fn an_emitter_that_fills_versions_is_checked_against_the_latest() {
    let (_kit, client) = kit().await;
    let report = SchemaCheck::new(known_actions_in(&["schemas"]))
        .emitter_fills_version(true)
        .run(&client)
        .await
        .expect("check runs");
    assert!(kinds(&report, "doc.shared").is_empty(), "{report}");
    assert!(
        report.checked.contains(&("doc.shared".to_owned(), Some(2))),
        "{report}"
    );
}

#[tokio::test]
async fn passes_once_the_registered_schemas_match_the_code() {
    let (_kit, client) = kit().await;
    let fixed = [
        ("invoice.paid", CreateSchema::new([SchemaTarget::new("invoice")])),
        (
            "report.exported",
            CreateSchema::new([SchemaTarget::new("report")])
                .metadata(json!({"type": "object", "properties": {"rows": {"type": "integer"}}})),
        ),
        (
            "verify.never_registered",
            CreateSchema::new([SchemaTarget::new("thing")]),
        ),
        (
            "team.renamed",
            CreateSchema::new([SchemaTarget::new("team")]).metadata(json!({"type": "object"})),
        ),
    ];
    for (action, schema) in fixed {
        client
            .create_schema(&Action::from_static(action), &schema)
            .await
            .expect("registered");
    }
    let report = SchemaCheck::new(known_actions_in(&["schemas"]))
        .emitter_fills_version(true)
        .run(&client)
        .await
        .expect("check runs");
    assert!(report.passed(), "{report}");
}
