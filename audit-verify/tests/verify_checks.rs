//! The verification checklist against audit-testkit, in the states that make each check PASS,
//! FAIL, WARN and SKIP. The environment is passed as a map: no test touches the process's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use audit_core::client::{Client, CreateSchema, SchemaTarget};
use audit_core::{Action, Error};
use audit_testkit::{FaultRule, TestKit};
use audit_verify::{CheckId, CheckResult, Report, Status, Verifier, VerifyOptions};
use axum::http::Method;
use serde_json::{Value, json};

const ORG: &str = "org_01EHWNCE74X7JSDV0X3SZ3KJNY";
const OTHER_ORG: &str = "org_01HZZZZZZZZZZZZZZZZZZZZZZZ";
const KEY: &str = "sk_test_verify_0123456789wxyz";
const ACTION: &str = "team.created";

fn workspace_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")
}

/// Options pointing at `kit`, with the key and organization in the (map) environment; the
/// `dependency` check is left out unless a test wants it.
fn options(kit: &TestKit) -> VerifyOptions {
    all_options(kit).skip([CheckId::Dependency])
}

/// Options pointing at `kit` with every check selected (the `dependency` check reads this
/// workspace).
fn all_options(kit: &TestKit) -> VerifyOptions {
    VerifyOptions::new()
        .env_var("WORKOS_API_KEY", KEY)
        .env_var("WORKOS_ORGANIZATION_ID", ORG)
        .base_url(kit.url())
        .action(ACTION)
        .manifest_path(workspace_manifest())
        .timeout(Duration::from_secs(5))
        .export_poll_interval(Duration::from_millis(20))
        .ci(false)
}

async fn kit(
    configure: impl FnOnce(audit_testkit::TestKitBuilder) -> audit_testkit::TestKitBuilder,
) -> TestKit {
    configure(TestKit::builder().org(ORG))
        .start()
        .await
        .expect("testkit starts")
}

async fn register_schema(kit: &TestKit) -> Result<(), Error> {
    let client = Client::builder().api_key(KEY).base_url(kit.url()).build()?;
    let schema = CreateSchema::new([SchemaTarget::new("team")]).metadata(json!({
        "type": "object",
        "properties": {"plan": {"type": "string"}, "seats": {"type": "integer"}},
        "required": ["plan"]
    }));
    client
        .create_schema(&Action::new(ACTION).expect("valid"), &schema)
        .await?;
    Ok(())
}

async fn run(options: VerifyOptions) -> Report {
    Verifier::new(options).run().await
}

fn check(report: &Report, id: CheckId) -> &CheckResult {
    report
        .get(id)
        .unwrap_or_else(|| panic!("{id} missing from the report:\n{report}"))
}

#[track_caller]
fn assert_status(report: &Report, id: CheckId, status: Status, finding_contains: &str) {
    let c = check(report, id);
    assert_eq!(c.status, status, "{id}:\n{report}");
    assert!(
        c.finding.contains(finding_contains),
        "{id}: finding {:?} lacks {finding_contains:?}",
        c.finding
    );
    if status == Status::Fail {
        assert!(
            c.fix.as_deref().is_some_and(|f| !f.is_empty()),
            "{id}: a FAIL needs a fix"
        );
    }
}

#[track_caller]
fn assert_fix(report: &Report, id: CheckId, contains: &str) {
    let fix = check(report, id).fix.clone().unwrap_or_default();
    assert!(fix.contains(contains), "{id}: fix {fix:?} lacks {contains:?}");
}

#[tokio::test]
async fn every_check_passes_against_a_fully_configured_testkit() {
    let kit = kit(|b| b.require_schemas(true).log_stream("Datadog", "active")).await;
    register_schema(&kit).await.expect("schema registered");
    let report = run(all_options(&kit)
        .env_var("WORKOS_CLIENT_ID", "client_01EHWNCE74X7JSDV0X3SZ3KJNY")
        .export(true))
    .await;

    assert!(report.passed(), "{report}");
    for id in CheckId::ALL {
        assert_eq!(check(&report, id).status, Status::Pass, "{id}:\n{report}");
    }
    assert_eq!(report.exit_code(), 0);
    assert_status(
        &report,
        CheckId::ApiKey,
        Status::Pass,
        "test key sk_test_…wxyz from environment",
    );
    assert_status(&report, CheckId::Dependency, Status::Pass, "→ audit-core");
    assert_status(&report, CheckId::SchemaValidation, Status::Pass, "/metadata/plan");

    // The test event followed the schema: the target type, the required metadata, the version.
    let events = kit.events(ORG);
    let accepted = events
        .iter()
        .find(|e| e.event["metadata"]["plan"].is_string())
        .expect("the test event is stored");
    assert_eq!(accepted.event["action"], ACTION);
    assert_eq!(accepted.event["version"], 1);
    assert_eq!(accepted.event["targets"][0]["type"], "team");
    assert_eq!(accepted.event["actor"]["id"], "audit-core-verify");
    // The violating event was refused, so it is the only one stored.
    assert_eq!(events.len(), 1);

    let json = report.to_json();
    assert!(!json.contains(KEY), "the key leaked into the report");
    assert!(!report.to_table().contains(KEY));
}

#[tokio::test]
async fn the_json_report_has_a_stable_shape() {
    let kit = kit(|b| b).await;
    let report = run(options(&kit).env_var("WORKOS_API_KEY", "pk_not_a_secret_key_1234")).await;
    let v: Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
    assert_eq!(v["passed"], false);
    let summary = &v["summary"];
    let total: u64 = ["pass", "fail", "warn", "skip"]
        .iter()
        .map(|k| summary[k].as_u64().expect("a count"))
        .sum();
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(total as usize, checks.len());
    // The default selection: everything but `dependency` (left out by `options`), in order.
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "api_key",
            "client_id",
            "organization",
            "event",
            "log_stream",
            "schema_validation",
            "export"
        ]
    );
    for c in checks {
        let obj = c.as_object().expect("an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["finding", "fix", "id", "status"]);
        assert!(["PASS", "FAIL", "WARN", "SKIP"].contains(&c["status"].as_str().unwrap()));
        assert!(c["fix"].is_null() || c["fix"].is_string());
    }
    assert_eq!(checks[0]["status"], "FAIL");
    assert!(checks[0]["fix"].as_str().unwrap().contains("API Keys"));
    assert_eq!(checks[6]["status"], "SKIP"); // export is opt-in
    let back: Report = serde_json::from_value(v).expect("round trip");
    assert_eq!(back, report);
}

// ---- api_key, client_id, organization ---------------------------------------------------------

#[tokio::test]
async fn missing_key_fails_and_the_api_checks_say_why_they_did_not_run() {
    let kit = kit(|b| b).await;
    let opts = options(&kit).env_vars([("WORKOS_ORGANIZATION_ID", ORG), ("WORKOS_API_KEY", "")]);
    let report = run(opts.clone()).await;
    assert_status(
        &report,
        CheckId::ApiKey,
        Status::Fail,
        "WORKOS_API_KEY is not set",
    );
    assert_status(&report, CheckId::ApiKey, Status::Fail, "empty in environment");
    assert_fix(&report, CheckId::ApiKey, "sk_test_");
    assert_status(&report, CheckId::Event, Status::Skip, "not run: `api_key` failed");
    assert_status(&report, CheckId::LogStream, Status::Skip, "not run");
    assert_eq!(report.exit_code(), 1);
    assert!(kit.requests().is_empty(), "nothing may be sent without a key");

    // With `api_key` not selected, the event check itself fails: a narrowed run cannot pass.
    let report = run(opts.only([CheckId::Event])).await;
    assert_eq!(report.checks.len(), 1);
    assert_status(
        &report,
        CheckId::Event,
        Status::Fail,
        "not run: WORKOS_API_KEY is not set",
    );
}

#[tokio::test]
async fn key_shapes() {
    let kit = kit(|b| b).await;
    let only_key = |key: &str| {
        options(&kit)
            .env_var("WORKOS_API_KEY", key)
            .only([CheckId::ApiKey])
    };

    let r = run(only_key("client_01EHWNCE74X7JSDV0X3SZ3KJNY")).await;
    assert_status(&r, CheckId::ApiKey, Status::Fail, "does not start with \"sk_\"");
    assert!(!r.to_json().contains("client_01EHWNCE74X7JSDV0X3SZ3KJNY"));

    let r = run(only_key("sk_test_with space_0123456789")).await;
    assert_status(&r, CheckId::ApiKey, Status::Fail, "whitespace");

    let live = "sk_live_0123456789abcdefghij";
    let r = run(only_key(live)).await;
    assert_status(
        &r,
        CheckId::ApiKey,
        Status::Pass,
        "live (production) key sk_live_…ghij",
    );
    let r = run(only_key(live).ci(true)).await;
    assert_status(&r, CheckId::ApiKey, Status::Warn, "in CI");
    // CI detection from the environment map.
    let r = run(VerifyOptions::new()
        .env_vars([("WORKOS_API_KEY", live), ("CI", "true")])
        .only([CheckId::ApiKey]))
    .await;
    assert_status(&r, CheckId::ApiKey, Status::Warn, "in CI");
    assert!(r.passed(), "a warning does not fail the run");
    assert!(!r.to_json().contains(live));

    let r = run(only_key("sk_other_0123456789abcdefgh")).await;
    assert_status(&r, CheckId::ApiKey, Status::Warn, "neither a test");
}

#[tokio::test]
async fn client_id_is_optional_but_must_start_with_client() {
    let r = run(VerifyOptions::new().only([CheckId::ClientId])).await;
    assert_status(&r, CheckId::ClientId, Status::Skip, "not set");
    let r = run(VerifyOptions::new()
        .env_var("WORKOS_CLIENT_ID", "client_123")
        .only([CheckId::ClientId]))
    .await;
    assert_status(&r, CheckId::ClientId, Status::Pass, "client_123 from environment");
    let r = run(VerifyOptions::new()
        .env_var("WORKOS_CLIENT_ID", "sk_test_oops")
        .only([CheckId::ClientId]))
    .await;
    assert_status(
        &r,
        CheckId::ClientId,
        Status::Fail,
        "does not start with \"client_\"",
    );
}

#[tokio::test]
async fn organization_shapes() {
    let only_org = |org: &str| {
        VerifyOptions::new()
            .organization_id(org)
            .only([CheckId::Organization])
    };
    let r = run(only_org(ORG)).await;
    assert_status(&r, CheckId::Organization, Status::Pass, "from the --org option");
    let r = run(only_org("org-01EHWNCE74X7JSDV0X3SZ3KJNY")).await;
    assert_status(
        &r,
        CheckId::Organization,
        Status::Fail,
        "is not an organization id",
    );
    assert_fix(&r, CheckId::Organization, "26 characters");
    let r = run(only_org("org_123")).await;
    assert_status(&r, CheckId::Organization, Status::Warn, "26-character ULID");
    let r = run(VerifyOptions::new().only([CheckId::Organization])).await;
    assert_status(&r, CheckId::Organization, Status::Fail, "no organization");
    // The option wins over the environment.
    let r = run(only_org(ORG).env_var("WORKOS_ORGANIZATION_ID", "org_123")).await;
    assert_status(&r, CheckId::Organization, Status::Pass, ORG);
}

#[tokio::test]
async fn an_organization_of_unusual_shape_warns_and_is_still_tested() {
    let kit = TestKit::builder().org("org_123").start().await.expect("testkit");
    let r = run(options(&kit)
        .organization_id("org_123")
        .only([CheckId::Organization, CheckId::Event]))
    .await;
    assert_status(&r, CheckId::Organization, Status::Warn, "org_123");
    assert_status(&r, CheckId::Event, Status::Pass, "org_123");
    assert!(r.passed());
}

#[tokio::test]
async fn malformed_organization_stops_the_api_checks() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).organization_id("acme")).await;
    assert_status(&r, CheckId::Organization, Status::Fail, "\"acme\"");
    assert_status(&r, CheckId::Event, Status::Skip, "not run: `organization` failed");
    assert!(kit.requests().is_empty());
}

// ---- event: 401, 404, 429, unreachable, TLS -----------------------------------------------------

#[tokio::test]
async fn refused_key_is_a_401_failure_with_the_key_fix() {
    let kit = kit(|b| {
        b.api_key("sk_test_the_right_key_000000")
            .log_stream("Datadog", "active")
    })
    .await;
    let r = run(options(&kit)).await;
    assert_status(&r, CheckId::Event, Status::Fail, "401");
    assert_fix(&r, CheckId::Event, "WorkOS Dashboard → API Keys");
    assert_fix(&r, CheckId::Event, "test vs production");
    assert_status(&r, CheckId::LogStream, Status::Skip, "not run: `event` failed");
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Skip,
        "not run: `event` failed",
    );
    assert_eq!(
        kit.requests().len(),
        1,
        "one refused request, no retries, nothing after it"
    );
    assert!(!r.to_json().contains(KEY));
}

#[tokio::test]
async fn scripted_401_on_the_events_endpoint() {
    let kit = kit(|b| b).await;
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .method("POST")
            .times(1)
            .respond(401),
    );
    let r = run(options(&kit).only([CheckId::Event])).await;
    assert_status(
        &r,
        CheckId::Event,
        Status::Fail,
        "refused the API key sk_test_…wxyz (401",
    );
}

#[tokio::test]
async fn unknown_organization_is_a_404_failure() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).organization_id(OTHER_ORG)).await;
    assert_status(&r, CheckId::Organization, Status::Pass, OTHER_ORG);
    assert_status(&r, CheckId::Event, Status::Fail, "not found (404)");
    assert_fix(&r, CheckId::Event, "\"org_\" followed by 26 characters");
    assert_status(&r, CheckId::LogStream, Status::Skip, "not run");

    // The configuration endpoint says the same when the event check is not selected.
    let r = run(options(&kit)
        .organization_id(OTHER_ORG)
        .only([CheckId::LogStream]))
    .await;
    assert_status(&r, CheckId::LogStream, Status::Fail, "not found (404)");

    // And a scripted 404 on the events endpoint alone.
    kit.fault(FaultRule::new("/audit_logs/events").times(1).respond_json(
        404,
        json!({"message": format!("Organization not found: '{ORG}'.")}),
    ));
    let r = run(options(&kit).only([CheckId::Event])).await;
    assert_status(&r, CheckId::Event, Status::Fail, "Organization not found");
}

#[tokio::test]
async fn rate_limit_is_a_429_failure_with_the_wait() {
    let kit = kit(|b| b.log_stream("Datadog", "active")).await;
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .method("POST")
            .times(1)
            .respond_json(
                429,
                json!({"message": "Too many requests.", "code": "rate_limit_exceeded"}),
            )
            .retry_after("30"),
    );
    let r = run(options(&kit)).await;
    assert_status(&r, CheckId::Event, Status::Fail, "rate-limited the request (429)");
    assert_status(&r, CheckId::Event, Status::Fail, "Retry-After: wait 30 s");
    assert_fix(&r, CheckId::Event, "wait 30 s and run again");
    assert_fix(&r, CheckId::Event, "higher limit");
    assert_status(&r, CheckId::LogStream, Status::Skip, "429");
}

#[tokio::test]
async fn rate_limit_from_the_testkit_limiter() {
    let kit = kit(|b| b.rate_limit(1, Duration::from_secs(60))).await;
    // The schema look-up spends the one request; the event gets the 429.
    let r = run(options(&kit).only([CheckId::Event])).await;
    assert_status(&r, CheckId::Event, Status::Fail, "429");
    assert_status(&r, CheckId::Event, Status::Fail, "wait");
}

#[tokio::test]
async fn unreachable_base_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let r = run(VerifyOptions::new()
        .env_vars([("WORKOS_API_KEY", KEY), ("WORKOS_ORGANIZATION_ID", ORG)])
        .env_var("WORKOS_BASE_URL", format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_secs(5))
        .skip([CheckId::Dependency]))
    .await;
    assert_status(
        &r,
        CheckId::Event,
        Status::Fail,
        &format!("could not reach http://127.0.0.1:{port}"),
    );
    assert_fix(&r, CheckId::Event, "WORKOS_BASE_URL");
    assert_status(&r, CheckId::LogStream, Status::Skip, "not run: `event` failed");
}

#[tokio::test]
async fn tls_failure() {
    // TLS spoken to a plain-HTTP server: the handshake fails.
    let kit = kit(|b| b).await;
    let url = kit.url().replace("http://", "https://");
    let r = run(options(&kit).base_url(url).only([CheckId::Event])).await;
    assert_status(&r, CheckId::Event, Status::Fail, "TLS failure");
    assert_fix(&r, CheckId::Event, "certificate");
}

#[tokio::test]
async fn unusable_base_url() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).base_url("ftp://example.com")).await;
    assert_status(&r, CheckId::Event, Status::Fail, "cannot be used");
    assert_fix(&r, CheckId::Event, "https://api.workos.com");
    assert_status(&r, CheckId::LogStream, Status::Skip, "not run");
}

#[tokio::test]
async fn server_errors_fail_without_stopping_the_other_checks() {
    let kit = kit(|b| b.log_stream("Datadog", "active")).await;
    kit.fault(FaultRule::new("/audit_logs/events").times(1).respond(503));
    let r = run(options(&kit)).await;
    assert_status(&r, CheckId::Event, Status::Fail, "503");
    assert_fix(&r, CheckId::Event, "status.workos.com");
    assert_status(&r, CheckId::LogStream, Status::Pass, "active");
}

// ---- event with schemas required --------------------------------------------------------------

#[tokio::test]
async fn required_schemas_and_an_action_without_one() {
    let kit = kit(|b| b.require_schemas(true)).await;
    let r = run(options(&kit).action("verify.checked")).await;
    assert_status(
        &r,
        CheckId::Event,
        Status::Fail,
        "refused the test event (no schema registered)",
    );
    assert_status(&r, CheckId::Event, Status::Fail, "/action");
    assert_fix(&r, CheckId::Event, "register one for `verify.checked`");
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Skip,
        "no registered schema",
    );
}

#[tokio::test]
async fn invalid_action_name() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).action("not an action")).await;
    assert_status(&r, CheckId::Event, Status::Fail, "not valid");
    assert_fix(&r, CheckId::Event, "--action");
}

// ---- log_stream -------------------------------------------------------------------------------

#[tokio::test]
async fn log_stream_states() {
    for (state, status, finding, fix) in [
        ("active", Status::Pass, "is active", None),
        (
            "inactive",
            Status::Fail,
            "is inactive",
            Some("Active vs. Inactive"),
        ),
        ("error", Status::Fail, "is in error", Some("Logs Write")),
        ("invalid", Status::Fail, "invalid configuration", Some("Datadog")),
        ("paused", Status::Warn, "unknown to this version", None),
    ] {
        let kit = kit(|b| b.log_stream("Datadog", state)).await;
        let r = run(options(&kit).only([CheckId::LogStream])).await;
        assert_status(&r, CheckId::LogStream, status, finding);
        if let Some(fix) = fix {
            assert_fix(&r, CheckId::LogStream, fix);
        }
    }
    let kit = kit(|b| b.log_stream("Splunk", "error")).await;
    let r = run(options(&kit).only([CheckId::LogStream])).await;
    assert_fix(&r, CheckId::LogStream, "HEC");
}

#[tokio::test]
async fn absent_log_stream_is_skipped_unless_required() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).only([CheckId::LogStream])).await;
    assert_status(
        &r,
        CheckId::LogStream,
        Status::Skip,
        "no log stream is configured",
    );
    assert!(r.passed());
    let r = run(options(&kit).only([CheckId::LogStream]).require_stream(true)).await;
    assert_status(
        &r,
        CheckId::LogStream,
        Status::Fail,
        "no log stream is configured",
    );
    assert_fix(&r, CheckId::LogStream, "log_streams");
    assert_eq!(r.exit_code(), 1);
}

// ---- schema_validation ------------------------------------------------------------------------

#[tokio::test]
async fn schema_validation_off_is_a_failure() {
    let kit = kit(|b| b.require_schemas(false)).await;
    register_schema(&kit).await.expect("schema registered");
    let r = run(options(&kit).only([CheckId::Event, CheckId::SchemaValidation])).await;
    assert_status(&r, CheckId::Event, Status::Pass, "schema version 1");
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Fail,
        "accepted an event violating schema version 1",
    );
    assert_status(&r, CheckId::SchemaValidation, Status::Fail, "/metadata/plan");
    assert_fix(
        &r,
        CheckId::SchemaValidation,
        "Require metadata schema validation",
    );
}

#[tokio::test]
async fn schema_validation_on_passes() {
    let kit = kit(|b| b.require_schemas(true)).await;
    register_schema(&kit).await.expect("schema registered");
    let r = run(options(&kit).only([CheckId::SchemaValidation])).await;
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Pass,
        "rejected an event violating",
    );
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Pass,
        "400 invalid_audit_log_event",
    );
    assert!(kit.events(ORG).is_empty());
}

#[tokio::test]
async fn schema_validation_is_skipped_without_a_schema_or_without_anything_to_violate() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).only([CheckId::Event, CheckId::SchemaValidation])).await;
    assert_status(&r, CheckId::Event, Status::Pass, "no schema registered");
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Skip,
        "no registered schema",
    );

    let client = Client::builder()
        .api_key(KEY)
        .base_url(kit.url())
        .build()
        .expect("client");
    client
        .create_schema(
            &Action::new(ACTION).expect("valid"),
            &CreateSchema::new([SchemaTarget::new("team")]),
        )
        .await
        .expect("schema registered");
    let r = run(options(&kit).only([CheckId::SchemaValidation])).await;
    assert_status(
        &r,
        CheckId::SchemaValidation,
        Status::Skip,
        "declares no typed property",
    );
}

// ---- export -----------------------------------------------------------------------------------

#[tokio::test]
async fn export_is_opt_in_and_reaches_ready() {
    let kit = kit(|b| b.export_delay(Duration::from_millis(50))).await;
    let r = run(options(&kit).only([CheckId::Event, CheckId::Export])).await;
    // Naming `export` in `only` turns it on.
    assert_status(&r, CheckId::Export, Status::Pass, "is ready");
    let r = run(options(&kit)).await;
    assert_status(&r, CheckId::Export, Status::Skip, "opt-in");
}

#[tokio::test]
async fn export_still_pending_fails_and_no_events_warns() {
    let slow = kit(|b| b.export_delay(Duration::from_secs(3600))).await;
    let r = run(options(&slow)
        .export(true)
        .skip([CheckId::LogStream, CheckId::SchemaValidation])
        .export_timeout(Duration::from_millis(200)))
    .await;
    assert_status(&r, CheckId::Event, Status::Pass, "accepted");
    assert_status(&r, CheckId::Export, Status::Fail, "still pending");
    assert_fix(&r, CheckId::Export, "--export-timeout");

    let empty = kit(|b| b).await;
    let r = run(options(&empty).only([CheckId::Export])).await;
    assert_status(&r, CheckId::Export, Status::Warn, "no events");
}

// ---- dependency -------------------------------------------------------------------------------

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn app_manifest(deps: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "Cargo.toml",
        &format!("[package]\nname = \"my-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n{deps}\n"),
    );
    write(dir.path(), "src/lib.rs", "");
    dir
}

#[tokio::test]
async fn dependency_check_reads_cargo_metadata() {
    let only_dep = |dir: &Path| {
        VerifyOptions::new()
            .manifest_path(dir.join("Cargo.toml"))
            .only([CheckId::Dependency])
    };
    let app = app_manifest("[dependencies]\naudit-tower = \"0.1\"\nserde = \"1\"\n");
    let r = run(only_dep(app.path())).await;
    assert_status(&r, CheckId::Dependency, Status::Pass, "my-app → audit-tower ^0.1");

    let dev = app_manifest("[dev-dependencies]\naudit-core = \"0.1\"\n");
    let r = run(only_dep(dev.path())).await;
    assert_status(&r, CheckId::Dependency, Status::Warn, "only dev-dependencies");

    let none = app_manifest("[dependencies]\nserde = \"1\"\n");
    let r = run(only_dep(none.path())).await;
    assert_status(
        &r,
        CheckId::Dependency,
        Status::Fail,
        "no workspace member (my-app)",
    );
    assert_fix(&r, CheckId::Dependency, "cargo add audit-core");

    let missing = tempfile::tempdir().expect("tempdir");
    let r = run(only_dep(missing.path())).await;
    assert_status(&r, CheckId::Dependency, Status::Fail, "`cargo metadata` failed");
    assert_fix(&r, CheckId::Dependency, "--manifest-path");
}

// ---- .env precedence --------------------------------------------------------------------------

#[tokio::test]
async fn environment_then_dot_env_local_then_dot_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_key = "sk_test_from_environment_0001";
    let file_key = "sk_test_from_dot_env_00000002";
    let local_key = "sk_test_from_dot_env_local_03";
    write(
        dir.path(),
        ".env",
        &format!("# comment\nWORKOS_API_KEY={file_key}\nWORKOS_CLIENT_ID=client_from_env_file\n"),
    );
    write(
        dir.path(),
        ".env.local",
        &format!("WORKOS_API_KEY=\"{local_key}\"\nWORKOS_ORGANIZATION_ID={ORG}\n"),
    );
    let base = || {
        VerifyOptions::new().env_dir(dir.path()).only([
            CheckId::ApiKey,
            CheckId::ClientId,
            CheckId::Organization,
        ])
    };

    // The environment wins and the shadowed files are named.
    let r = run(base().env_var("WORKOS_API_KEY", env_key)).await;
    assert_status(
        &r,
        CheckId::ApiKey,
        Status::Pass,
        "sk_test_…0001 from environment (also set in .env.local, .env, ignored)",
    );
    assert_status(
        &r,
        CheckId::ClientId,
        Status::Pass,
        "client_from_env_file from .env",
    );
    assert_status(
        &r,
        CheckId::Organization,
        Status::Pass,
        &format!("{ORG} from .env.local"),
    );

    // Then .env.local, which overrides .env.
    let r = run(base()).await;
    assert_status(
        &r,
        CheckId::ApiKey,
        Status::Pass,
        "sk_test_…l_03 from .env.local (also set in .env, ignored)",
    );

    // Then .env.
    write(
        dir.path(),
        ".env.local",
        &format!("WORKOS_ORGANIZATION_ID={ORG}\n"),
    );
    let r = run(base()).await;
    assert_status(&r, CheckId::ApiKey, Status::Pass, "sk_test_…0002 from .env");

    // An empty value does not count; an unparsable line is reported by number, never by content.
    write(
        dir.path(),
        ".env.local",
        "WORKOS_API_KEY=\nthis line has no equals sign sk_test_secret\n",
    );
    let r = run(base().no_env_files().env_dir(dir.path())).await;
    assert_status(&r, CheckId::ApiKey, Status::Warn, "from .env");
    assert_status(&r, CheckId::ApiKey, Status::Warn, "line 2 is not KEY=VALUE");
    assert_fix(&r, CheckId::ApiKey, "KEY=VALUE");
    assert!(!r.to_json().contains("sk_test_secret"));

    // No files read at all.
    let r = run(base().no_env_files()).await;
    assert_status(&r, CheckId::ApiKey, Status::Fail, "looked in: environment)");

    for key in [env_key, file_key, local_key] {
        assert!(!r.to_json().contains(key));
    }
}

#[test]
fn run_blocking_works_outside_and_inside_a_runtime() {
    let opts = || {
        VerifyOptions::new()
            .env_var("WORKOS_API_KEY", KEY)
            .only([CheckId::ApiKey])
    };
    let r = Verifier::new(opts()).run_blocking();
    assert_status(&r, CheckId::ApiKey, Status::Pass, "sk_test_…wxyz");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(async { Verifier::new(opts()).run_blocking() });
    assert!(r.passed());
}

/// The status, content type and body of an answer.
type Answer = (u16, Option<&'static str>, &'static str);

/// A loopback axum server standing where WorkOS should be (a proxy, a gateway, a web app):
/// `answer` gives the answer to each method.
async fn foreign_server(answer: fn(&Method) -> Answer) -> String {
    let app = axum::Router::new().fallback(move |method: Method| async move {
        let (status, content_type, body) = answer(&method);
        let mut response = axum::response::Response::new(axum::body::Body::from(body));
        *response.status_mut() = axum::http::StatusCode::from_u16(status).expect("a status");
        if let Some(t) = content_type {
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                t.parse().expect("a header value"),
            );
        }
        response
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Every request answered with an HTML page and `status`.
fn html(status: u16) -> Answer {
    (
        status,
        Some("text/html"),
        "<html><body>Welcome to the app</body></html>",
    )
}

#[tokio::test]
async fn a_server_that_is_not_workos() {
    let url = foreign_server(|_| html(404)).await;
    let r = run(VerifyOptions::new()
        .env_vars([("WORKOS_API_KEY", KEY), ("WORKOS_ORGANIZATION_ID", ORG)])
        .base_url(url)
        .timeout(Duration::from_secs(5))
        .only([CheckId::Event, CheckId::LogStream]))
    .await;
    assert_status(&r, CheckId::Event, Status::Fail, "not the WorkOS API's JSON");
    assert_fix(&r, CheckId::Event, "WORKOS_BASE_URL");
    assert_status(&r, CheckId::LogStream, Status::Skip, "not run");
}

/// Options with the key and organization, against `url`, for the API checks.
fn against(url: String) -> VerifyOptions {
    VerifyOptions::new()
        .env_vars([("WORKOS_API_KEY", KEY), ("WORKOS_ORGANIZATION_ID", ORG)])
        .base_url(url)
        .timeout(Duration::from_secs(5))
        .only([CheckId::Event, CheckId::LogStream])
}

#[tokio::test]
async fn a_web_app_answering_200_html_fails_the_event_check() {
    // Every request gets a 200 HTML page: the schema look-up already shows it is not WorkOS.
    let url = foreign_server(|_| html(200)).await;
    let r = run(against(url)).await;
    assert_status(&r, CheckId::Event, Status::Fail, "not the WorkOS API");
    assert_fix(&r, CheckId::Event, "WORKOS_BASE_URL");
    assert_status(&r, CheckId::LogStream, Status::Skip, "not run");
}

#[tokio::test]
async fn a_create_event_answer_that_is_not_success_true_fails_the_event_check() {
    // A gateway that answers reads as WorkOS does for an action without schemas (404 JSON), but
    // the create-event request with 200 HTML, 204 or some other JSON: not {"success":true}.
    let answers: [fn(&Method) -> Answer; 3] = [
        |m| match *m {
            Method::GET => (404, Some("application/json"), r#"{"message":"Not Found"}"#),
            _ => html(200),
        },
        |m| match *m {
            Method::GET => (404, Some("application/json"), r#"{"message":"Not Found"}"#),
            _ => (204, None, ""),
        },
        |m| match *m {
            Method::GET => (404, Some("application/json"), r#"{"message":"Not Found"}"#),
            _ => (200, Some("application/json"), r#"{"ok":true}"#),
        },
    ];
    for (answer, status) in answers.into_iter().zip(["200", "204", "200"]) {
        let url = foreign_server(answer).await;
        let r = run(against(url)).await;
        assert_status(&r, CheckId::Event, Status::Fail, "not WorkOS's answer");
        assert_status(&r, CheckId::Event, Status::Fail, &format!("answered {status}"));
        assert_fix(
            &r,
            CheckId::Event,
            "this is not the WorkOS API: check WORKOS_BASE_URL",
        );
        assert_status(&r, CheckId::LogStream, Status::Skip, "not run");
    }
}

// ---- a live key writes nothing unless allowed --------------------------------------------------

const LIVE_KEY: &str = "sk_live_QzXvRtYpWmKjHgFdSaLe";

/// The requests that would write into the organization's audit log.
fn writes(kit: &TestKit) -> Vec<String> {
    kit.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/audit_logs/events")
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn a_live_key_writes_nothing_unless_allowed() {
    let kit = kit(|b| b.require_schemas(true).log_stream("Datadog", "active")).await;
    register_schema(&kit).await.expect("schema registered");
    let live = || options(&kit).env_var("WORKOS_API_KEY", LIVE_KEY).export(true);

    let r = run(live()).await;
    assert_status(
        &r,
        CheckId::ApiKey,
        Status::Pass,
        "live (production) key sk_live_…SaLe",
    );
    assert_status(&r, CheckId::ApiKey, Status::Pass, "--allow-live-writes");
    for id in [CheckId::Event, CheckId::SchemaValidation] {
        assert_status(&r, id, Status::Skip, "pass --allow-live-writes");
        assert_status(&r, id, Status::Skip, "live (production) key");
    }
    // The checks that only read still run.
    assert_status(&r, CheckId::LogStream, Status::Pass, "active");
    assert_eq!(check(&r, CheckId::Export).status, Status::Warn, "{r}");
    assert!(r.passed(), "{r}");
    assert!(writes(&kit).is_empty(), "a live key wrote without the flag");
    assert!(kit.events(ORG).is_empty());

    // In CI the key still warns, and nothing is written either.
    let r = run(live().ci(true)).await;
    assert_status(&r, CheckId::ApiKey, Status::Warn, "in CI");
    assert_status(&r, CheckId::Event, Status::Skip, "--allow-live-writes");
    assert!(writes(&kit).is_empty());

    // With the flag: the test event and the schema probe are sent.
    let r = run(live().allow_live_writes(true)).await;
    assert_status(&r, CheckId::Event, Status::Pass, "accepted");
    assert_status(&r, CheckId::SchemaValidation, Status::Pass, "rejected");
    assert!(
        !check(&r, CheckId::ApiKey).finding.contains("--allow-live-writes"),
        "{r}"
    );
    assert_eq!(writes(&kit).len(), 2, "the test event and the schema probe");
    assert_eq!(kit.events(ORG).len(), 1);
}

#[tokio::test]
async fn a_test_key_is_not_held_back() {
    let kit = kit(|b| b).await;
    let r = run(options(&kit).only([CheckId::Event])).await;
    assert_status(&r, CheckId::Event, Status::Pass, "accepted");
    assert_eq!(writes(&kit).len(), 1);
}

// ---- no part of a secret is printed, whatever setting it is in ---------------------------------

/// Fails when the report shows any four characters in a row of the secret's random part.
#[track_caller]
fn assert_no_part_of(report: &Report, secret: &str) {
    let random: Vec<char> = secret.trim_start_matches("sk_live_").chars().collect();
    for text in [report.to_json(), report.to_table()] {
        for window in random.windows(4) {
            let part: String = window.iter().collect();
            assert!(!text.contains(&part), "{part:?} of the secret is shown:\n{text}");
        }
    }
}

#[tokio::test]
async fn a_key_in_the_wrong_setting_is_named_never_shown() {
    let kit = kit(|b| b).await;

    // The key and the organization swapped.
    let r =
        run(options(&kit).env_vars([("WORKOS_API_KEY", ORG), ("WORKOS_ORGANIZATION_ID", LIVE_KEY)])).await;
    assert_status(&r, CheckId::ApiKey, Status::Fail, "does not start with \"sk_\"");
    assert_status(
        &r,
        CheckId::Organization,
        Status::Fail,
        "WORKOS_ORGANIZATION_ID from environment is not an organization id",
    );
    assert_status(&r, CheckId::Organization, Status::Fail, "looks like a secret key");
    assert_fix(&r, CheckId::Organization, "WORKOS_API_KEY only");
    assert_no_part_of(&r, LIVE_KEY);

    // A right key, and a second one in the organization (also through --org).
    for opts in [
        options(&kit).env_var("WORKOS_ORGANIZATION_ID", LIVE_KEY),
        options(&kit).organization_id(LIVE_KEY),
    ] {
        let r = run(opts).await;
        assert_status(&r, CheckId::Organization, Status::Fail, "looks like a secret key");
        assert_status(&r, CheckId::Event, Status::Skip, "not run: `organization` failed");
        assert_no_part_of(&r, LIVE_KEY);
    }

    // In the client id.
    let r = run(options(&kit)
        .env_var("WORKOS_CLIENT_ID", LIVE_KEY)
        .only([CheckId::ClientId]))
    .await;
    assert_status(
        &r,
        CheckId::ClientId,
        Status::Fail,
        "WORKOS_CLIENT_ID from environment does not start with \"client_\"",
    );
    assert_status(&r, CheckId::ClientId, Status::Fail, "looks like a secret key");
    assert_no_part_of(&r, LIVE_KEY);

    // In the base URL, alone or inside an address.
    for url in [
        LIVE_KEY.to_owned(),
        format!("{}/{LIVE_KEY}", kit.url()),
        format!("https://{LIVE_KEY}.example.com"),
    ] {
        let r = run(VerifyOptions::new()
            .env_vars([
                ("WORKOS_API_KEY", KEY),
                ("WORKOS_ORGANIZATION_ID", ORG),
                ("WORKOS_BASE_URL", url.as_str()),
            ])
            .only([CheckId::Event, CheckId::LogStream]))
        .await;
        assert_status(
            &r,
            CheckId::Event,
            Status::Fail,
            "the base URL (from environment) holds what looks like a secret key",
        );
        assert_fix(&r, CheckId::Event, "WORKOS_BASE_URL");
        assert_status(&r, CheckId::LogStream, Status::Skip, "not run");
        assert_no_part_of(&r, LIVE_KEY);
    }
    assert!(writes(&kit).is_empty());
}
