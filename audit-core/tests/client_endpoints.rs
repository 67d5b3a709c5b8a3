//! Every client endpoint over loopback HTTP against audit-testkit, a WorkOS-compatible server:
//! path, method, headers, body and parsed response; every documented error body; retries with a
//! stable idempotency key; no retry on 400/401/404/422; timeouts and refused connections; paging.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use audit_core::client::{
    ConfigurationState, CreateExport, CreateSchema, ExportState, GeneratePortalLink, ListOptions,
    LogStreamState, LogStreamType, Order, PortalIntent, Retention, RetentionPeriod, SchemaTarget,
};
use audit_core::{
    Action, Actor, Client, Context, CreateEvent, CreateEventOptions, Error, Event, OrganizationId,
    RetryPolicy, Target,
};
use audit_testkit::{FaultRule, RecordedRequest, TestKit};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk_test_SECRET123";

async fn start_kit() -> TestKit {
    TestKit::builder()
        .export_delay(Duration::from_millis(20))
        .start()
        .await
        .expect("testkit starts")
}

/// Retries with waits of at most a few milliseconds, so tests stay fast over real sockets.
fn fast_retries() -> RetryPolicy {
    RetryPolicy::standard()
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
        .with_max_retry_after(Duration::from_millis(20))
}

fn client_of(kit: &TestKit) -> Client {
    client_with(kit, fast_retries())
}

fn client_with(kit: &TestKit, policy: RetryPolicy) -> Client {
    Client::builder()
        .api_key(KEY)
        .base_url(kit.url())
        .retry_policy(policy)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("valid configuration")
}

fn org_of(kit: &TestKit) -> OrganizationId {
    OrganizationId::new(kit.organization_id()).expect("the testkit's organization id is valid")
}

fn event() -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new("user_01", "user").name("Jon Smith"),
        Context::new("203.0.113.7").user_agent("Mozilla/5.0"),
    )
    .occurred_at(audit_core::event::rfc3339_millis::parse("2026-02-02T16:35:39.317Z").unwrap())
    .target(Target::new("team_01", "team"))
    .meta("plan", "enterprise")
}

/// Requests on one path (without the query), oldest first.
fn requests_to(kit: &TestKit, path: &str) -> Vec<RecordedRequest> {
    kit.requests().into_iter().filter(|r| r.path == path).collect()
}

fn assert_common_headers(r: &RecordedRequest) {
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(r.header("accept"), Some("application/json"));
    let ua = r.header("user-agent").unwrap_or("");
    assert!(ua.starts_with("audit-core/"), "{ua}");
}

fn assert_json_body(r: &RecordedRequest, expected: &Value) {
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
    assert_eq!(&body, expected);
}

fn api(e: &Error) -> &audit_core::ApiError {
    e.api()
        .unwrap_or_else(|| panic!("expected an API error, got {e:?}"))
}

#[test]
fn the_client_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send + 'static>(_: T) {}
    let client = Client::builder().api_key(KEY).build().unwrap();
    send_sync(&client);
    send(client.list_actions_all(ListOptions::new()));
    let c = client.clone();
    send(async move {
        let org = OrganizationId::new("org_1").unwrap();
        c.create_event(&org, &event()).await
    });
    let c = client.clone();
    send(async move { c.download_export_csv("https://x.example/e.csv").await });
}

// ---- 1. create event --------------------------------------------------------------------------

#[tokio::test]
async fn create_event_sends_the_event_with_a_uuid_idempotency_key() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    client.create_event(&org, &event()).await.unwrap();

    let reqs = requests_to(&kit, "/audit_logs/events");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.query, None);
    assert_common_headers(r);
    assert_json_body(
        r,
        &serde_json::to_value(CreateEvent::new(org.clone(), event())).unwrap(),
    );
    let key = r.header("idempotency-key").expect("an Idempotency-Key");
    let uuid = uuid::Uuid::parse_str(key).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4);

    let stored = kit.events(org.as_str());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].idempotency_key.as_deref(), Some(key));
    assert_eq!(stored[0].event, serde_json::to_value(event()).unwrap());
}

#[tokio::test]
async fn each_create_event_call_gets_its_own_key_unless_given_one() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    client.create_event(&org, &event()).await.unwrap();
    client.create_event(&org, &event()).await.unwrap();
    let opts = CreateEventOptions::new().idempotency_key("order-42-created");
    client
        .create_event_with(&org, &event(), opts.clone())
        .await
        .unwrap();
    client.create_event_with(&org, &event(), opts).await.unwrap();

    let keys: Vec<String> = requests_to(&kit, "/audit_logs/events")
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 4);
    assert_ne!(keys[0], keys[1]);
    assert_eq!(keys[2], "order-42-created");
    assert_eq!(keys[3], "order-42-created");
    // The repeated key is deduplicated by the server: three events, not four.
    assert_eq!(kit.events(org.as_str()).len(), 3);
}

#[tokio::test]
async fn create_event_validates_locally_and_sends_nothing() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let bad = event()
        .meta("bad key!", 1)
        .target(Target::new("", "team").meta("x", f64::NAN));
    let err = client.create_event(&org_of(&kit), &bad).await.unwrap_err();
    let Error::Invalid(v) = &err else {
        panic!("expected a local validation error, got {err:?}")
    };
    let pointers: Vec<&str> = v.pointers().collect();
    assert_eq!(
        pointers,
        ["/targets/1/id", "/targets/1/metadata/x", "/metadata/bad key!"]
    );
    assert!(err.is_invalid_event());
    let bad_key = CreateEventOptions::new().idempotency_key("has space");
    let err = client
        .create_event_with(&org_of(&kit), &event(), bad_key)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                field: "idempotency_key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(requests_to(&kit, "/audit_logs/events").is_empty());
}

#[tokio::test]
async fn create_event_retries_500_503_and_429_with_the_same_key() {
    for (status, retry_after) in [
        (500, None),
        (503, None),
        (429, Some("1")),
        (502, None),
        (504, None),
    ] {
        let kit = start_kit().await;
        let client = client_of(&kit);
        let mut rule = FaultRule::new("/audit_logs/events").times(2).respond(status);
        if let Some(ra) = retry_after {
            rule = rule.retry_after(ra);
        }
        kit.fault(rule);
        client.create_event(&org_of(&kit), &event()).await.unwrap();

        let reqs = requests_to(&kit, "/audit_logs/events");
        assert_eq!(reqs.len(), 3, "status {status}");
        let keys: HashSet<&str> = reqs
            .iter()
            .map(|r| r.header("idempotency-key").unwrap())
            .collect();
        assert_eq!(keys.len(), 1, "one key across the retries of {status}");
        let bodies: HashSet<&str> = reqs.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies.len(), 1, "the same body on every attempt");
        assert_eq!(kit.events(kit.organization_id()).len(), 1);
    }
}

#[tokio::test]
async fn a_lost_response_is_retried_and_recorded_once() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    // The event is stored, then the connection is closed before the answer.
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .drop_connection()
            .after_storage(),
    );
    client.create_event(&org_of(&kit), &event()).await.unwrap();
    assert_eq!(requests_to(&kit, "/audit_logs/events").len(), 2);
    assert_eq!(kit.events(kit.organization_id()).len(), 1);
}

#[tokio::test]
async fn retries_stop_after_the_policy_allows() {
    let kit = start_kit().await;
    let client = client_with(&kit, fast_retries().with_max_retries(2));
    kit.fault(FaultRule::new("/audit_logs/events").respond(503));
    let err = client.create_event(&org_of(&kit), &event()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.is_retryable());
    assert_eq!(requests_to(&kit, "/audit_logs/events").len(), 3);
}

#[tokio::test]
async fn documented_error_bodies_map_to_errors_and_are_not_retried() {
    let bodies = [
        (
            400,
            json!({"message": "Invalid Audit Log event.", "code": "invalid_audit_log_event",
                   "errors": [{"instancePath": "/metadata/ip_address"}, {"instancePath": "/targets/0/metadata/cost", "keyword": "type", "message": "must be number"}]}),
        ),
        (
            422,
            json!({"message": "Validation failed.", "errors": [{"code": "required", "field": "event.action"}]}),
        ),
        (
            404,
            json!({"message": "Organization not found: 'org_01EHQMYV6MBK39QC5PZXHY59C3'."}),
        ),
        (401, json!({"message": "Unauthorized"})),
        (403, json!({"message": "Forbidden"})),
        (
            409,
            json!({"message": "This Idempotency-Key was already used with a different request body.", "code": "idempotency_error"}),
        ),
    ];
    for (status, body) in bodies {
        let kit = start_kit().await;
        let client = client_of(&kit);
        kit.fault(FaultRule::new("/audit_logs/events").respond_json(status, body.clone()));
        let err = client.create_event(&org_of(&kit), &event()).await.unwrap_err();
        assert_eq!(
            requests_to(&kit, "/audit_logs/events").len(),
            1,
            "{status} is not retried"
        );
        let a = api(&err);
        assert_eq!(a.status, status);
        assert_eq!(a.message.as_deref(), body["message"].as_str());
        assert_eq!(a.code.as_deref(), body["code"].as_str());
        assert!(a.request_id.is_some(), "X-Request-ID is kept");
        assert_eq!(
            serde_json::from_str::<Value>(&a.body).unwrap(),
            body,
            "the body is kept"
        );
        assert!(!err.is_retryable());
        match status {
            400 => {
                assert!(err.is_invalid_event());
                let paths: Vec<_> = a.errors.iter().map(|e| e.instance_path.as_deref()).collect();
                assert_eq!(
                    paths,
                    [Some("/metadata/ip_address"), Some("/targets/0/metadata/cost")]
                );
                assert_eq!(a.errors[1].keyword.as_deref(), Some("type"));
                assert!(err.to_string().contains("/targets/0/metadata/cost"), "{err}");
            }
            422 => {
                assert!(err.is_invalid_event());
                assert_eq!(a.errors[0].field.as_deref(), Some("event.action"));
                assert_eq!(a.errors[0].code.as_deref(), Some("required"));
            }
            404 => assert!(err.is_not_found()),
            401 => assert!(err.is_unauthorized()),
            403 => assert!(err.is_forbidden()),
            _ => {}
        }
    }
}

#[tokio::test]
async fn real_server_refusals_map_to_errors() {
    // Unknown organization: 404.
    let kit = start_kit().await;
    let client = client_of(&kit);
    let unknown = OrganizationId::new("org_01EHQMYV6MBK39QC5PZXHY59C3").unwrap();
    let err = client.create_event(&unknown, &event()).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(
        api(&err)
            .message
            .as_deref()
            .unwrap_or("")
            .contains("org_01EHQMYV6MBK39QC5PZXHY59C3")
    );

    // A key the server does not know: 401, once.
    let kit = TestKit::builder().api_key("sk_test_OTHER").start().await.unwrap();
    let client = client_of(&kit);
    let err = client.create_event(&org_of(&kit), &event()).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");
    assert_eq!(kit.requests().len(), 1);

    // An event the server refuses (sent without local validation): 400 with instancePaths.
    let kit = start_kit().await;
    let client = client_of(&kit);
    let mut bad = event();
    bad.metadata = Some(audit_core::Metadata::new().with("x".repeat(41), 1));
    let body = CreateEvent::new(org_of(&kit), bad);
    let err = client.send_event_once(&body, "key-1").await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert!(err.is_invalid_event());
    assert_eq!(api(&err).code.as_deref(), Some("invalid_audit_log_event"));
    assert!(
        api(&err).errors.iter().any(|e| e
            .instance_path
            .as_deref()
            .is_some_and(|p| p.starts_with("/metadata"))),
        "{err:?}"
    );
}

#[tokio::test]
async fn retry_after_is_read_in_seconds_and_as_an_http_date() {
    let kit = start_kit().await;
    let client = client_with(&kit, RetryPolicy::disabled());
    let org = org_of(&kit);

    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .respond_json(
                429,
                json!({"message": "Too many requests.", "code": "rate_limit_exceeded"}),
            )
            .retry_after("7"),
    );
    let err = client.create_event(&org, &event()).await.unwrap_err();
    assert!(err.is_rate_limited());
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(api(&err).code.as_deref(), Some("rate_limit_exceeded"));

    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .respond(429)
            .retry_after(date),
    );
    let err = client.create_event(&org, &event()).await.unwrap_err();
    let wait = err.retry_after().expect("a Retry-After");
    assert!(
        wait > Duration::from_secs(115) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert_eq!(
        requests_to(&kit, "/audit_logs/events").len(),
        2,
        "no retries when disabled"
    );
}

#[tokio::test]
async fn a_retry_waits_for_retry_after() {
    let kit = start_kit().await;
    let policy = fast_retries().with_max_retry_after(Duration::from_secs(60));
    let client = client_with(&kit, policy);
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .respond(429)
            .retry_after("0.3"),
    );
    let started = std::time::Instant::now();
    client.create_event(&org_of(&kit), &event()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(requests_to(&kit, "/audit_logs/events").len(), 2);
}

#[tokio::test]
async fn send_event_once_makes_exactly_one_attempt() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let body = CreateEvent::new(org_of(&kit), event());

    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .respond_json(503, json!({"message": "unavailable"}))
            .retry_after("3"),
    );
    let err = client.send_event_once(&body, "emitter-key-1").await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.request_id().is_some());
    assert_eq!(requests_to(&kit, "/audit_logs/events").len(), 1);

    client.send_event_once(&body, "emitter-key-1").await.unwrap();
    let reqs = requests_to(&kit, "/audit_logs/events");
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter()
            .all(|r| r.header("idempotency-key") == Some("emitter-key-1"))
    );
    assert_json_body(&reqs[1], &serde_json::to_value(&body).unwrap());
    assert_common_headers(&reqs[1]);

    let err = client.send_event_once(&body, "").await.unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidParameter {
            field: "idempotency_key",
            ..
        }
    ));
}

// ---- transport failures -----------------------------------------------------------------------

#[tokio::test]
async fn a_hung_request_times_out() {
    let kit = start_kit().await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(kit.url())
        .timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::disabled())
        .build()
        .unwrap();
    kit.fault(FaultRule::new("/audit_logs/events").hang());
    let err = client.create_event(&org_of(&kit), &event()).await.unwrap_err();
    let Error::Timeout { url, timeout } = &err else {
        panic!("expected a timeout, got {err:?}")
    };
    assert_eq!(*timeout, Duration::from_millis(300));
    assert!(url.ends_with("/audit_logs/events"), "{url}");
    assert!(err.is_retryable());

    // With retries, each attempt times out and the same key is sent every time.
    let client = Client::builder()
        .api_key(KEY)
        .base_url(kit.url())
        .timeout(Duration::from_millis(200))
        .retry_policy(fast_retries().with_max_retries(2))
        .build()
        .unwrap();
    let before = requests_to(&kit, "/audit_logs/events").len();
    let err = client.create_event(&org_of(&kit), &event()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let reqs = requests_to(&kit, "/audit_logs/events");
    assert_eq!(reqs.len() - before, 3);
    let keys: HashSet<_> = reqs[before..]
        .iter()
        .map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::builder()
        .api_key(KEY)
        .base_url(format!("http://127.0.0.1:{port}"))
        .retry_policy(fast_retries().with_max_retries(1))
        .build()
        .unwrap();
    let org = OrganizationId::new("org_1").unwrap();
    let err = client.create_event(&org, &event()).await.unwrap_err();
    let Error::Transport { url, source } = &err else {
        panic!("expected a transport error, got {err:?}")
    };
    assert_eq!(url, &format!("http://127.0.0.1:{port}/audit_logs/events"));
    assert!(source.to_string().contains("connection"), "{source}");
    assert!(err.is_retryable());
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause chain is kept"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_retried_then_reported() {
    let kit = start_kit().await;
    let client = client_with(&kit, fast_retries().with_max_retries(1));
    kit.fault(FaultRule::new("/audit_logs/exports/").drop_connection());
    let err = client.get_export("audit_log_export_1").await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(
        requests_to(&kit, "/audit_logs/exports/audit_log_export_1").len(),
        2
    );
}

#[tokio::test]
async fn an_unexpected_success_body_is_a_decode_error() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    kit.fault(FaultRule::new("/audit_logs/exports/").respond_json(200, json!({"unexpected": true})));
    let err = client.get_export("audit_log_export_1").await.unwrap_err();
    let Error::Decode { status, .. } = &err else {
        panic!("expected a decode error, got {err:?}")
    };
    assert_eq!(*status, 200);
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(kit.requests().len(), 1, "decode errors are not retried");
}

// ---- 2, 3. exports ----------------------------------------------------------------------------

#[tokio::test]
async fn exports_are_created_polled_and_downloaded() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    client.create_event(&org, &event()).await.unwrap();

    let range_start = audit_core::event::rfc3339_millis::parse("2026-02-01T00:00:00Z").unwrap();
    let range_end = audit_core::event::rfc3339_millis::parse("2026-02-03T00:00:00Z").unwrap();
    let request = CreateExport::new(org.clone(), range_start, range_end)
        .action(Action::new("user.signed_in").unwrap())
        .actor_name("Jon Smith");
    let export = client.create_export(&request).await.unwrap();
    assert!(export.id.starts_with("audit_log_export_"), "{}", export.id);
    assert!(matches!(export.state, ExportState::Pending | ExportState::Ready));

    let r = requests_to(&kit, "/audit_logs/exports").pop().unwrap();
    assert_eq!(r.method, "POST");
    assert_common_headers(&r);
    assert!(r.header("idempotency-key").is_some(), "every POST carries a key");
    assert_json_body(
        &r,
        &json!({
            "organization_id": org.as_str(),
            "range_start": "2026-02-01T00:00:00.000Z",
            "range_end": "2026-02-03T00:00:00.000Z",
            "actions": ["user.signed_in"],
            "actor_names": ["Jon Smith"],
        }),
    );

    let ready = client
        .wait_for_export(&export.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ready.state, ExportState::Ready);
    let get = requests_to(&kit, &format!("/audit_logs/exports/{}", ready.id))
        .pop()
        .unwrap();
    assert_eq!(get.method, "GET");
    assert_common_headers(&get);
    assert_eq!(get.header("idempotency-key"), None);
    assert_eq!(get.header("content-type"), None, "no body, no content type");

    let url = ready.url.clone().expect("a ready export has a URL");
    let csv = client
        .download_export_csv(&url)
        .await
        .unwrap()
        .collect_bytes()
        .await
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("action,occurred_at,actor_id"), "{header}");
    assert!(
        csv.contains("user.signed_in") && csv.contains("Jon Smith"),
        "{csv}"
    );

    // A wrong token: the storage host's refusal is an API error, and the signature stays out of it.
    let forged = format!("{}tampered", url);
    let err = client.download_export_csv(&forged).await.unwrap_err();
    assert!(err.status().is_some_and(|s| s >= 400), "{err:?}");
    assert!(!err.to_string().contains("token="), "{err}");
}

#[tokio::test]
async fn export_errors() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    let t = |s| audit_core::event::rfc3339_millis::parse(s).unwrap();

    // Nothing matches: WorkOS's 400 "No audit log events found".
    let err = client
        .create_export(&CreateExport::new(
            org.clone(),
            t("2026-01-01T00:00:00Z"),
            t("2026-01-02T00:00:00Z"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert_eq!(api(&err).message.as_deref(), Some("No audit log events found"));

    // A reversed range is refused locally.
    let before = kit.requests().len();
    let err = client
        .create_export(&CreateExport::new(
            org.clone(),
            t("2026-01-02T00:00:00Z"),
            t("2026-01-01T00:00:00Z"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                field: "range_end",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(kit.requests().len(), before);

    // Unknown export: 404, not retried.
    let err = client.get_export("audit_log_export_missing").await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        api(&err).message.as_deref(),
        Some("Audit Log Export not found: 'audit_log_export_missing'.")
    );
    assert_eq!(
        requests_to(&kit, "/audit_logs/exports/audit_log_export_missing").len(),
        1
    );

    // Dot segments are refused, other characters are encoded per segment.
    for bad in ["", ".", ".."] {
        let err = client.get_export(bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    field: "export_id",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let _ = client.get_export("a/b c?d").await.unwrap_err();
    assert_eq!(
        kit.requests().last().unwrap().path,
        "/audit_logs/exports/a%2Fb%20c%3Fd"
    );

    // Download URLs must be https or loopback http.
    let err = client
        .download_export_csv("http://exports.example.com/x.csv")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { field: "url", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn create_export_is_retried_with_its_key_and_get_export_on_503() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    client.create_event(&org, &event()).await.unwrap();
    let t = |s| audit_core::event::rfc3339_millis::parse(s).unwrap();
    kit.fault(
        FaultRule::new("/audit_logs/exports")
            .method("POST")
            .times(1)
            .respond(500),
    );
    let export = client
        .create_export(&CreateExport::new(
            org,
            t("2026-02-01T00:00:00Z"),
            t("2026-02-03T00:00:00Z"),
        ))
        .await
        .unwrap();
    let posts = requests_to(&kit, "/audit_logs/exports");
    assert_eq!(posts.len(), 2);
    assert!(posts[0].header("idempotency-key").is_some());
    assert_eq!(
        posts[0].header("idempotency-key"),
        posts[1].header("idempotency-key")
    );

    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .method("GET")
            .times(2)
            .respond(503),
    );
    client.get_export(&export.id).await.unwrap();
    assert_eq!(
        requests_to(&kit, &format!("/audit_logs/exports/{}", export.id)).len(),
        3
    );
}

// ---- 4, 5, 6. schemas, actions, paging --------------------------------------------------------

fn schema() -> CreateSchema {
    CreateSchema::new([SchemaTarget::new("invoice")
        .metadata(json!({"type": "object", "properties": {"cost": {"type": "number"}}}))])
    .actor_metadata(json!({"type": "object", "properties": {"role": {"type": "string"}}}))
    .metadata(json!({"type": "object", "properties": {"transactionId": {"type": "string"}}}))
}

#[tokio::test]
async fn schemas_are_created_and_listed() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let action = Action::new("user.viewed_invoice").unwrap();

    let created = client.create_schema(&action, &schema()).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.targets[0].kind, "invoice");
    assert_eq!(created.metadata, schema().metadata);
    assert_eq!(created.actor, schema().actor);

    let r = requests_to(&kit, "/audit_logs/actions/user.viewed_invoice/schemas")
        .pop()
        .unwrap();
    assert_eq!(r.method, "POST");
    assert_common_headers(&r);
    assert!(r.header("idempotency-key").is_some());
    assert_json_body(&r, &serde_json::to_value(schema()).unwrap());
    assert_eq!(
        serde_json::to_value(schema()).unwrap(),
        json!({
            "targets": [{"type": "invoice", "metadata": {"type": "object", "properties": {"cost": {"type": "number"}}}}],
            "actor": {"metadata": {"type": "object", "properties": {"role": {"type": "string"}}}},
            "metadata": {"type": "object", "properties": {"transactionId": {"type": "string"}}}
        })
    );

    // A changed schema is a new version.
    let v2 = CreateSchema::new([SchemaTarget::new("invoice"), SchemaTarget::new("team")]);
    assert_eq!(client.create_schema(&action, &v2).await.unwrap().version, 2);

    let page = client
        .list_schemas(&action, &ListOptions::new().limit(1).order(Order::Desc))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].version, 2);
    assert!(page.list_metadata.after.is_some());
    let r = kit.requests().pop().unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/audit_logs/actions/user.viewed_invoice/schemas");
    assert_eq!(r.query.as_deref(), Some("limit=1&order=desc"));

    let all: Vec<_> = client
        .list_schemas_all(&action, ListOptions::new().limit(1).order(Order::Asc))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.iter().map(|s| s.version).collect::<Vec<_>>(), [1, 2]);

    // Refused locally: no target type, a limit out of range.
    let before = kit.requests().len();
    let err = client
        .create_schema(&action, &CreateSchema::new([]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { field: "targets", .. }),
        "{err:?}"
    );
    for limit in [0, 101] {
        let err = client
            .list_schemas(&action, &ListOptions::new().limit(limit))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { field: "limit", .. }),
            "{err:?}"
        );
    }
    assert_eq!(kit.requests().len(), before);

    // Unknown action: 404.
    let err = client
        .list_schemas(&Action::new("no.such_action").unwrap(), &ListOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn schema_refusals_keep_the_field_list() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    kit.fault(FaultRule::new("/audit_logs/actions/").method("POST").respond_json(
        422,
        json!({"message": "Validation failed.", "errors": [{"code": "invalid", "field": "targets.0.metadata"}]}),
    ));
    let err = client
        .create_schema(&Action::new("a.b").unwrap(), &schema())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert_eq!(api(&err).errors[0].field.as_deref(), Some("targets.0.metadata"));
    assert_eq!(kit.requests().len(), 1);
}

#[tokio::test]
async fn every_page_of_actions_is_walked() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let names: Vec<String> = (0..7).map(|i| format!("team.action_{i}")).collect();
    for n in &names {
        client
            .create_schema(
                &Action::new(n.as_str()).unwrap(),
                &CreateSchema::new([SchemaTarget::new("team")]),
            )
            .await
            .unwrap();
    }

    let page = client
        .list_actions(&ListOptions::new().order(Order::Asc).limit(3))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 3);
    assert_eq!(page.data[0].name.as_str(), "team.action_0");
    assert_eq!(page.data[0].schema.version, 1);
    let r = kit.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/audit_logs/actions")
    );
    assert_common_headers(&r);

    let before = kit.requests().len();
    let walked: Vec<String> = client
        .list_actions_all(ListOptions::new().order(Order::Asc).limit(3))
        .map_ok(|a| a.name.as_str().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(walked, names);
    let pages: Vec<RecordedRequest> = kit.requests()[before..].to_vec();
    assert_eq!(pages.len(), 3, "7 actions in pages of 3");
    assert_eq!(pages[0].query.as_deref(), Some("limit=3&order=asc"));
    let after_cursor = |r: &RecordedRequest| {
        r.query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .any(|kv| kv.starts_with("after="))
    };
    assert!(pages[1..].iter().all(after_cursor), "{pages:?}");

    // Newest first by default.
    let desc: Vec<String> = client
        .list_actions_all(ListOptions::new().limit(100))
        .map_ok(|a| a.name.as_str().to_owned())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(desc, names.iter().rev().cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failing_page_ends_the_walk_with_its_error() {
    let kit = start_kit().await;
    let client = client_with(&kit, RetryPolicy::disabled());
    for i in 0..4 {
        client
            .create_schema(
                &Action::new(format!("a.b{i}")).unwrap(),
                &CreateSchema::new([SchemaTarget::new("t")]),
            )
            .await
            .unwrap();
    }
    let mut walk = Box::pin(client.list_actions_all(ListOptions::new().limit(2)));
    assert!(walk.try_next().await.unwrap().is_some());
    assert!(walk.try_next().await.unwrap().is_some());
    kit.fault(FaultRule::new("/audit_logs/actions").times(1).respond(500));
    let err = walk.try_next().await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(
        walk.try_next().await.unwrap().is_none(),
        "the walk stops after an error"
    );
}

// ---- 7, 8. retention --------------------------------------------------------------------------

#[tokio::test]
async fn retention_is_read_and_set_in_both_forms() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    let path = format!("/organizations/{}/audit_logs_retention", org.as_str());

    let r = client.get_retention(&org).await.unwrap();
    assert_eq!(r.retention_period_in_days, Some(30));
    let get = kit.requests().pop().unwrap();
    assert_eq!((get.method.as_str(), get.path.as_str()), ("GET", path.as_str()));

    let r = client.set_retention(&org, Retention::Days(365)).await.unwrap();
    assert_eq!(r.retention_period_in_days, Some(365));
    let put = kit.requests().pop().unwrap();
    assert_eq!((put.method.as_str(), put.path.as_str()), ("PUT", path.as_str()));
    assert_common_headers(&put);
    assert_json_body(&put, &json!({"retention_period_in_days": 365}));
    assert_eq!(put.header("idempotency-key"), None, "PUT is idempotent by itself");

    let r = client
        .set_retention(&org, Retention::Period(RetentionPeriod::ThreeYears))
        .await
        .unwrap();
    assert_eq!(r.retention_period_in_days, Some(1095));
    assert_json_body(
        &kit.requests().pop().unwrap(),
        &json!({"retention_period": "3_YEARS"}),
    );
    assert_eq!(
        client.get_retention(&org).await.unwrap().retention_period_in_days,
        Some(1095)
    );

    // Day counts other than the spec's 30 and 365 are refused locally (60 and 730 are periods
    // WorkOS takes by name only).
    let before = kit.requests().len();
    for days in [31, 60, 730] {
        let err = client
            .set_retention(&org, Retention::Days(days))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    field: "retention_period_in_days",
                    ..
                }
            ),
            "{days}: {err}"
        );
    }
    assert_eq!(kit.requests().len(), before);

    // The PUT is retried on 503.
    kit.fault(FaultRule::new(&path).method("PUT").times(1).respond(503));
    client.set_retention(&org, Retention::Days(30)).await.unwrap();
    assert_eq!(kit.requests().len(), before + 2);

    // Unknown organization: 404.
    let unknown = OrganizationId::new("org_01EHQMYV6MBK39QC5PZXHY59C3").unwrap();
    assert!(client.get_retention(&unknown).await.unwrap_err().is_not_found());
}

// ---- 9. configuration -------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_configuration_is_read() {
    let kit = TestKit::builder()
        .log_stream("Datadog", "active")
        .start()
        .await
        .unwrap();
    let client = client_of(&kit);
    let org = org_of(&kit);
    let c = client.get_audit_log_configuration(&org).await.unwrap();
    assert_eq!(c.organization_id, org);
    assert_eq!(c.state, ConfigurationState::Active);
    assert_eq!(c.retention_period_in_days, Some(30));
    let stream = c.log_stream.expect("a log stream");
    assert_eq!(stream.kind, LogStreamType::Datadog);
    assert_eq!(stream.state, LogStreamState::Active);
    assert!(stream.id.starts_with("als_"));
    assert!(stream.last_synced_at.is_some());
    let r = kit.requests().pop().unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.path,
        format!("/organizations/{}/audit_log_configuration", org.as_str())
    );
    assert_common_headers(&r);

    // Values this version does not know are kept, not refused.
    let kit = TestKit::builder()
        .log_stream("Kafka", "paused")
        .start()
        .await
        .unwrap();
    let c = client_of(&kit)
        .get_audit_log_configuration(&org_of(&kit))
        .await
        .unwrap();
    let stream = c.log_stream.unwrap();
    assert_eq!(stream.kind, LogStreamType::Unknown("Kafka".into()));
    assert_eq!(stream.state, LogStreamState::Unknown("paused".into()));
    assert_eq!(stream.last_synced_at, None);

    // No stream configured.
    let kit = start_kit().await;
    let c = client_of(&kit)
        .get_audit_log_configuration(&org_of(&kit))
        .await
        .unwrap();
    assert!(c.log_stream.is_none());
}

// ---- 10. admin portal -------------------------------------------------------------------------

#[tokio::test]
async fn portal_links_are_generated_for_both_intents() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);

    let link = client
        .generate_portal_link(
            &GeneratePortalLink::new(org.clone(), PortalIntent::AuditLogs)
                .return_url("https://example.com/admin")
                .success_url("https://example.com/done"),
        )
        .await
        .unwrap();
    assert!(link.link.contains("token="), "{}", link.link);
    assert!(!format!("{link:?}").contains("token="), "Debug hides the token");
    let r = requests_to(&kit, "/portal/generate_link").pop().unwrap();
    assert_eq!(r.method, "POST");
    assert_common_headers(&r);
    assert!(r.header("idempotency-key").is_some());
    assert_json_body(
        &r,
        &json!({"organization": org.as_str(), "intent": "audit_logs",
                "return_url": "https://example.com/admin", "success_url": "https://example.com/done"}),
    );

    client
        .generate_portal_link(&GeneratePortalLink::new(org.clone(), PortalIntent::LogStreams))
        .await
        .unwrap();
    let r = requests_to(&kit, "/portal/generate_link").pop().unwrap();
    assert_json_body(
        &r,
        &json!({"organization": org.as_str(), "intent": "log_streams"}),
    );

    let err = client
        .generate_portal_link(&GeneratePortalLink::new(org, PortalIntent::AuditLogs).return_url("not a url"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                field: "return_url",
                ..
            }
        ),
        "{err:?}"
    );

    let unknown = OrganizationId::new("org_01EHQMYV6MBK39QC5PZXHY59C3").unwrap();
    let err = client
        .generate_portal_link(&GeneratePortalLink::new(unknown, PortalIntent::AuditLogs))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

// ---- configuration ----------------------------------------------------------------------------

#[tokio::test]
async fn base_url_with_a_trailing_slash_and_a_custom_user_agent() {
    let kit = start_kit().await;
    let client = Client::builder()
        .api_key(KEY)
        .base_url(format!("{}/", kit.url()))
        .user_agent("my-app/1.2")
        .build()
        .unwrap();
    assert_eq!(client.base_url(), kit.url());
    client.get_retention(&org_of(&kit)).await.unwrap();
    let r = kit.requests().pop().unwrap();
    assert_eq!(
        r.path,
        format!("/organizations/{}/audit_logs_retention", kit.organization_id())
    );
    assert_eq!(r.header("user-agent"), Some("my-app/1.2"));
}

#[tokio::test]
async fn clones_share_one_client_across_tasks() {
    let kit = start_kit().await;
    let client = client_of(&kit);
    let org = org_of(&kit);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let org = org.clone();
            tokio::spawn(async move { client.create_event(&org, &event()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(kit.events(org.as_str()).len(), 8);
}
