//! The API key never shows: not in `Debug` of the client or its builder, not in the `Display` or
//! `Debug` of any error (nor anywhere in its source chain), not even when a server echoes it.

use std::process::Command;
use std::time::Duration;

use audit_core::client::{CreateExport, ListOptions};
use audit_core::{
    Action, Actor, Client, Context, CreateEvent, Error, Event, Metadata, OrganizationId, RetryPolicy,
};
use audit_testkit::{FaultRule, TestKit};
use serde_json::json;

const KEY: &str = "sk_test_SECRET123";
const SECRET: &str = "SECRET123";

fn event() -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new("user_01", "user"),
        Context::new("203.0.113.7"),
    )
}

/// Checks `Display` and `Debug` of the error and of every error in its source chain.
fn assert_hides_key(e: &Error) {
    let mut texts = vec![e.to_string(), format!("{e:?}"), format!("{e:#?}")];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    for t in texts {
        assert!(!t.contains(SECRET), "the key leaked: {t}");
    }
}

fn client_at(url: &str) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(url)
        .timeout(Duration::from_millis(500))
        .retry_policy(RetryPolicy::disabled())
        .build()
        .unwrap()
}

#[test]
fn debug_of_client_and_builder_redacts_the_key() {
    let builder = Client::builder().api_key(KEY);
    let shown = format!("{builder:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("sk_test_[redacted]"), "{shown}");

    let client = builder.build().unwrap();
    for shown in [format!("{client:?}"), format!("{client:#?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("sk_test_[redacted]"), "{shown}");
        assert!(shown.contains("https://api.workos.com"), "{shown}");
    }

    let live = Client::builder().api_key("sk_live_SECRET123").build().unwrap();
    assert!(format!("{live:?}").contains("sk_live_[redacted]"));
    let other = Client::builder().api_key("sk_SECRET123").build().unwrap();
    assert!(!format!("{other:?}").contains(SECRET));
}

#[test]
fn configuration_errors_never_quote_the_key() {
    for bad in [
        "pk_test_SECRET123",
        "client_SECRET123",
        "SECRET123",
        " sk_test_SECRET123",
        "sk_test_SECRET123\n",
        "sk_test_SECRET 123",
        "sk_test_SECRET123\u{e9}",
    ] {
        let builder = Client::builder().api_key(bad);
        assert!(!format!("{builder:?}").contains(SECRET));
        let err = builder.build().unwrap_err();
        let Error::Config { setting, .. } = &err else {
            panic!("expected a configuration error for {bad:?}, got {err:?}")
        };
        assert_eq!(*setting, "api_key");
        assert_hides_key(&err);
    }
    let err = Client::builder().build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                setting: "api_key",
                ..
            }
        ),
        "{err:?}"
    );

    for bad_url in [
        "ftp://api.workos.com",
        "http://api.workos.com",
        "not a url",
        "https://u:p@x.com",
    ] {
        let err = Client::builder()
            .api_key(KEY)
            .base_url(bad_url)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    setting: "base_url",
                    ..
                }
            ),
            "{bad_url}: {err:?}"
        );
        assert_hides_key(&err);
    }
    let err = Client::builder()
        .api_key(KEY)
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                setting: "timeout",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_transport_timeout_and_decode_errors_never_contain_the_key() {
    let kit = TestKit::builder().start().await.unwrap();
    let client = client_at(&kit.url());
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let mut errors = Vec::new();

    // A server that echoes the Authorization header in its error body.
    kit.fault(FaultRule::new("/audit_logs/events").times(1).respond_json(
        500,
        json!({"message": format!("bad header: Bearer {KEY}"), "code": KEY}),
    ));
    let err = client.create_event(&org, &event()).await.unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.message.as_deref(), Some("bad header: Bearer [redacted]"));
    assert!(!api.body.contains(SECRET));
    errors.push(err);

    // 429 with Retry-After, 404, 400, 422.
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .respond(429)
            .retry_after("5"),
    );
    errors.push(client.create_event(&org, &event()).await.unwrap_err());
    let unknown = OrganizationId::new("org_01EHQMYV6MBK39QC5PZXHY59C3").unwrap();
    errors.push(client.create_event(&unknown, &event()).await.unwrap_err());
    let mut bad = event();
    bad.metadata = Some(Metadata::new().with("x".repeat(41), 1));
    errors.push(
        client
            .send_event_once(&CreateEvent::new(org.clone(), bad.clone()), "k")
            .await
            .unwrap_err(),
    );
    errors.push(
        client
            .list_actions(&ListOptions::new().limit(0))
            .await
            .unwrap_err(),
    );

    // Local validation and parameter errors.
    errors.push(client.create_event(&org, &bad).await.unwrap_err());
    errors.push(client.get_export("..").await.unwrap_err());
    let t = |s| audit_core::event::rfc3339_millis::parse(s).unwrap();
    errors.push(
        client
            .create_export(&CreateExport::new(
                org.clone(),
                t("2026-01-02T00:00:00Z"),
                t("2026-01-01T00:00:00Z"),
            ))
            .await
            .unwrap_err(),
    );

    // Decode, also of a body that quotes the key where a timestamp belongs.
    kit.fault(FaultRule::new("/audit_logs/exports/").times(1).respond_json(
        200,
        json!({"object": "audit_log_export", "id": "e", "state": "ready", "created_at": KEY, "updated_at": KEY}),
    ));
    let err = client.get_export("audit_log_export_1").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("[redacted]"), "{err}");
    errors.push(err);
    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .times(1)
            .respond_json(200, json!([KEY])),
    );
    errors.push(client.get_export("audit_log_export_1").await.unwrap_err());

    // Timeout.
    kit.fault(FaultRule::new("/organizations/").times(1).hang());
    errors.push(client.get_retention(&org).await.unwrap_err());

    // 401 from a server that knows another key.
    let other = TestKit::builder().api_key("sk_test_OTHER").start().await.unwrap();
    errors.push(
        client_at(&other.url())
            .create_event(&org, &event())
            .await
            .unwrap_err(),
    );

    // Connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    errors.push(
        client_at(&format!("http://127.0.0.1:{port}"))
            .create_event(&org, &event())
            .await
            .unwrap_err(),
    );

    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            Error::Api(_) => "api",
            Error::Transport { .. } => "transport",
            Error::Timeout { .. } => "timeout",
            Error::Decode { .. } => "decode",
            Error::Invalid(_) => "invalid",
            Error::InvalidParameter { .. } => "parameter",
            Error::Config { .. } => "config",
            _ => "other",
        })
        .collect();
    for kind in ["api", "transport", "timeout", "decode", "invalid", "parameter"] {
        assert!(kinds.contains(&kind), "no {kind} error among {kinds:?}");
    }
    assert!(errors.iter().any(|e| e.is_unauthorized()));
    for e in &errors {
        assert_hides_key(e);
    }
}

/// `from_env` reads the process environment, which a test cannot change safely in-process
/// (`set_var` is `unsafe`); each case runs this test binary again with the variables set.
#[test]
fn from_env_reads_the_key_and_the_base_url() {
    let cases: [(&str, &[(&str, &str)]); 5] = [
        (
            "ok",
            &[
                ("WORKOS_API_KEY", KEY),
                ("WORKOS_BASE_URL", "http://127.0.0.1:9/"),
            ],
        ),
        ("default_url", &[("WORKOS_API_KEY", KEY)]),
        ("missing", &[]),
        ("bad_key", &[("WORKOS_API_KEY", "pk_test_SECRET123")]),
        (
            "bad_url",
            &[("WORKOS_API_KEY", KEY), ("WORKOS_BASE_URL", "http://example.com")],
        ),
    ];
    for (case, vars) in cases {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["from_env_child", "--exact", "--nocapture", "--test-threads=1"])
            .env_remove("WORKOS_API_KEY")
            .env_remove("WORKOS_BASE_URL")
            .env("AUDIT_CORE_FROM_ENV_CASE", case);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "case {case}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("checked {case}")),
            "case {case} did not run: {stdout}"
        );
    }
}

/// The child half of [`from_env_reads_the_key_and_the_base_url`]; does nothing on its own.
#[test]
fn from_env_child() {
    let Ok(case) = std::env::var("AUDIT_CORE_FROM_ENV_CASE") else {
        return;
    };
    let result = Client::from_env();
    match case.as_str() {
        "ok" => {
            let client = result.unwrap();
            assert_eq!(client.base_url(), "http://127.0.0.1:9");
            assert!(!format!("{client:?}").contains(SECRET));
        }
        "default_url" => assert_eq!(result.unwrap().base_url(), "https://api.workos.com"),
        "missing" | "bad_key" => {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        setting: "WORKOS_API_KEY",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_hides_key(&err);
        }
        "bad_url" => {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        setting: "WORKOS_BASE_URL",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        other => panic!("unknown case {other}"),
    }
    println!("checked {case}");
}
