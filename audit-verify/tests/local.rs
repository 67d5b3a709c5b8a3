//! The `local` feature: every check of the checklist against an in-process audit-testkit.

use audit_verify::local::{LOCAL_API_KEY, LOCAL_ORGANIZATION_ID, LocalError, LocalWorkos};
use audit_verify::{CheckId, DEFAULT_ACTION, Status, Verifier, VerifyOptions};

#[tokio::test]
async fn every_check_passes_against_the_local_testkit() {
    let local = LocalWorkos::start(LOCAL_ORGANIZATION_ID, DEFAULT_ACTION)
        .await
        .expect("audit-testkit starts");
    let options = VerifyOptions::new()
        .skip([CheckId::Dependency])
        .export(true)
        // The local settings win over whatever the caller set.
        .env_var("WORKOS_API_KEY", "sk_test_somebody_else");
    let report = Verifier::new(local.configure(options)).run().await;
    assert!(report.passed(), "{report}");
    for id in [
        CheckId::ApiKey,
        CheckId::ClientId,
        CheckId::Organization,
        CheckId::Event,
        CheckId::LogStream,
        CheckId::SchemaValidation,
        CheckId::Export,
    ] {
        assert_eq!(
            report.get(id).map(|c| c.status),
            Some(Status::Pass),
            "{id:?}: {report}"
        );
    }
    let events = local.testkit().events(LOCAL_ORGANIZATION_ID);
    assert!(
        events.iter().any(|e| e.event["action"] == DEFAULT_ACTION),
        "the test event is stored"
    );
    assert!(LOCAL_API_KEY.starts_with("sk_test_"));
}

#[tokio::test]
async fn a_malformed_organization_is_refused_by_name() {
    let err = LocalWorkos::start("not-an-org", DEFAULT_ACTION)
        .await
        .unwrap_err();
    assert!(matches!(err, LocalError::Organization(_)), "{err}");
    assert!(err.to_string().starts_with("organization id:"), "{err}");
}
