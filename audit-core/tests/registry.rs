//! The link-time registry: declarations in this crate are listed, merged per action.

use audit_core::registry::{declared_actions, known_actions, known_actions_in};
use audit_core::{Action, ActionSchema};

audit_core::declare_action!("registry.test.one", targets("alpha"));
audit_core::declare_action!("registry.test.one", targets("beta", "alpha"));
audit_core::declare_action!("registry.test.bare");
audit_core::declare_schema! {
    fn schema_two() -> ActionSchema {
        ActionSchema::new(Action::from_static("registry.test.two")).target("gamma")
    }
}
audit_core::declare_schema! {
    fn schema_one() -> ActionSchema {
        ActionSchema::new(Action::from_static("registry.test.one")).target("delta")
    }
}

#[test]
fn declarations_merge_per_action() {
    let known = known_actions();
    let names: Vec<&str> = known.iter().map(|k| k.action.as_str()).collect();
    assert_eq!(
        names,
        ["registry.test.bare", "registry.test.one", "registry.test.two"]
    );
    let one = &known[1];
    assert_eq!(
        one.targets.iter().map(String::as_str).collect::<Vec<_>>(),
        ["alpha", "beta", "delta"]
    );
    assert_eq!(one.origins.len(), 2);
    assert!(
        one.origins
            .iter()
            .all(|o| o.file.ends_with("registry.rs") && !o.to_string().is_empty())
    );
    assert_eq!(one.origins[0].crate_name(), "registry");
    assert_eq!(one.schema.as_ref().unwrap().schema.targets[0].kind, "delta");
    assert!(one.schema_origin.is_some());
    assert!(known[0].targets.is_empty() && known[0].schema.is_none());
    assert_eq!(known[2].origins, []);
    assert_eq!(known[2].origin(), known[2].schema_origin);
    assert_eq!(known_actions_in(&["registry"]).len(), 3);
    assert!(known_actions_in(&["another_crate"]).is_empty());
    assert_eq!(declared_actions().len(), 3);
}

#[tokio::test]
async fn declared_schemas_are_registered_once_each() {
    let kit = audit_testkit::TestKit::builder()
        .start()
        .await
        .expect("testkit starts");
    let client = audit_core::Client::builder()
        .api_key("sk_test_registry")
        .base_url(kit.url())
        .build()
        .expect("client");
    let registry = audit_core::SchemaRegistry::sync_declared(&client)
        .await
        .expect("registered");
    let one = Action::new("registry.test.one").unwrap();
    assert_eq!(registry.version(&one), Some(1));
    assert_eq!(
        registry.target_types(&one, 1).map(<[String]>::to_vec),
        Some(vec!["delta".to_owned()])
    );
    assert_eq!(
        registry.actions().collect::<Vec<_>>(),
        ["registry.test.one", "registry.test.two"]
    );
    // Again at the next start: unchanged schemas keep their versions.
    let again = audit_core::SchemaRegistry::sync_declared(&client)
        .await
        .expect("registered");
    assert_eq!(again.version(&one), Some(1));
}
