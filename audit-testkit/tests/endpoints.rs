//! Exports, schemas and actions with pagination, retention, configuration, portal, the
//! `/_testkit/` API and persistence.

mod common;
use audit_testkit::TestKit;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn ev_at(action: &str, at: &str, actor: (&str, &str), targets: Value) -> Value {
    let mut e = event(action);
    e["occurred_at"] = json!(at);
    e["actor"] = json!({"id": actor.0, "type": "user", "name": actor.1});
    e["targets"] = targets;
    e
}

async fn poll_ready(c: &reqwest::Client, url: &str, id: &str) -> Value {
    for _ in 0..100 {
        let (st, b) = parts(get(c, url, &format!("/audit_logs/exports/{id}")).await).await;
        assert_eq!(st, 200);
        if b["state"] == "ready" {
            return b;
        }
        assert_eq!(b["state"], "pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("export never ready");
}

#[tokio::test]
async fn export_pending_ready_csv_and_expiry() {
    let kit = TestKit::builder()
        .export_delay(Duration::from_millis(300))
        .export_url_ttl(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let c = client();
    let org = kit.organization_id().to_owned();
    let events = [
        ev_at(
            "user.signed_in",
            "2024-01-02T00:00:00.000Z",
            ("u1", "Jon"),
            json!([{"id": "t1", "type": "team"}]),
        ),
        ev_at(
            "user.signed_out",
            "2024-01-03T00:00:00.000Z",
            ("u2", "Ann"),
            json!([{"id": "t2", "type": "team", "name": "Eng", "metadata": {"a": 1}}, {"id": "i1", "type": "invoice"}]),
        ),
        ev_at(
            "user.signed_in",
            "2024-03-01T00:00:00.000Z",
            ("u1", "Jon"),
            json!([]),
        ),
    ];
    for e in &events {
        assert_eq!(
            post(&c, &kit.url(), "/audit_logs/events", &body(&org, e.clone()))
                .await
                .status(),
            200
        );
    }
    let range = json!({"organization_id": org, "range_start": "2024-01-01T00:00:00.000Z", "range_end": "2024-02-01T00:00:00.000Z"});
    let (st, created) = parts(post(&c, &kit.url(), "/audit_logs/exports", &range).await).await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["object"], "audit_log_export");
    assert_eq!(created["state"], "pending");
    assert!(created.get("url").is_none());
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("audit_log_export_"));
    let ready = poll_ready(&c, &kit.url(), &id).await;
    let url = ready["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/_testkit/exports/{id}.csv?token=", kit.url())));
    let csv = c.get(&url).send().await.unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut r = ::csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "action",
            "occurred_at",
            "actor_id",
            "actor_type",
            "actor_name",
            "actor_metadata",
            "context_location",
            "context_user_agent",
            "metadata",
            "target_id_1",
            "target_type_1",
            "target_name_1",
            "target_metadata_1",
            "target_id_2",
            "target_type_2",
            "target_name_2",
            "target_metadata_2",
        ]
    );
    let rows: Vec<Vec<String>> = r
        .records()
        .map(|x| x.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "user.signed_in");
    assert_eq!(rows[1][2], "u2");
    assert_eq!(rows[1][8], r#"{"request_id":"req_123"}"#);
    assert_eq!(rows[1][12], r#"{"a":1}"#);
    assert_eq!(rows[1][13], "i1");
    assert_eq!(rows[0][13], "");
    // The URL expires; a new GET issues a new one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (st, b) = parts(c.get(&url).send().await.unwrap()).await;
    assert_eq!(st, 403);
    assert!(b["message"].as_str().unwrap().contains("expired"));
    let again = poll_ready(&c, &kit.url(), &id).await;
    assert_ne!(again["url"], ready["url"]);
    assert_eq!(
        c.get(again["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (st, _) = parts(
        c.get(format!("{}/_testkit/exports/{id}.csv?token=nope", kit.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn export_filters_and_errors() {
    let kit = TestKit::builder()
        .export_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let c = client();
    let org = kit.organization_id().to_owned();
    for e in [
        ev_at(
            "a.one",
            "2024-01-02T00:00:00.000Z",
            ("u1", "Jon"),
            json!([{"id": "t1", "type": "team"}]),
        ),
        ev_at(
            "a.two",
            "2024-01-03T00:00:00.000Z",
            ("u2", "Ann"),
            json!([{"id": "i1", "type": "invoice"}]),
        ),
    ] {
        assert_eq!(
            post(&c, &kit.url(), "/audit_logs/events", &body(&org, e))
                .await
                .status(),
            200
        );
    }
    let base = json!({"organization_id": org, "range_start": "2024-01-01T00:00:00.000Z", "range_end": "2024-02-01T00:00:00.000Z"});
    let count = |extra: Value| {
        let c = c.clone();
        let url = kit.url();
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        async move {
            let (st, created) = parts(post(&c, &url, "/audit_logs/exports", &b).await).await;
            if st == 400 {
                assert_eq!(created, json!({"message": "No audit log events found"}));
                return 0;
            }
            assert_eq!(st, 201);
            assert_eq!(created["state"], "ready");
            let text = get_text(&c, created["url"].as_str().unwrap()).await;
            text.lines().count() - 1
        }
    };
    assert_eq!(count(json!({})).await, 2);
    assert_eq!(count(json!({"actions": ["a.one"]})).await, 1);
    assert_eq!(count(json!({"actor_names": ["Ann"]})).await, 1);
    assert_eq!(count(json!({"actors": ["Jon"]})).await, 1);
    assert_eq!(count(json!({"actor_ids": ["u2", "u1"]})).await, 2);
    assert_eq!(count(json!({"targets": ["invoice"]})).await, 1);
    assert_eq!(count(json!({"targets": ["nothing"]})).await, 0);
    assert_eq!(count(json!({"range_end": "2024-01-02T12:00:00.000Z"})).await, 1);
    let mut inverted = base.clone();
    inverted["range_start"] = json!("2024-03-01T00:00:00.000Z");
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/exports", &inverted).await).await;
    assert_eq!(
        (st, b),
        (
            400,
            json!({"message": "Invalid date range", "code": "invalid_audit_log_export_range_date"})
        )
    );
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/exports",
            &json!({"organization_id": org}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(b["errors"][0]["code"], "required");
    let mut bad = base.clone();
    bad["range_start"] = json!("soon");
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/exports", &bad).await).await;
    assert_eq!(st, 422);
    assert_eq!(
        b["errors"],
        json!([{"code": "invalid_date", "field": "range_start"}])
    );
    let mut other = base.clone();
    other["organization_id"] = json!("org_nope");
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/exports", &other).await).await;
    assert_eq!(
        (st, b),
        (404, json!({"message": "Organization not found: 'org_nope'."}))
    );
    let (st, b) = parts(get(&c, &kit.url(), "/audit_logs/exports/audit_log_export_x").await).await;
    assert_eq!(
        (st, b),
        (
            404,
            json!({"message": "Audit Log Export not found: 'audit_log_export_x'."})
        )
    );
}

#[tokio::test]
async fn schemas_upsert_versions_and_pagination() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let url = kit.url();
    let s1 = json!({"targets": [{"type": "invoice", "metadata": {"type": "object", "properties": {"cost": {"type": "number"}}}}]});
    let (st, a) = parts(post(&c, &url, "/audit_logs/actions/invoice.paid/schemas", &s1).await).await;
    assert_eq!(st, 201);
    assert_eq!(a["object"], "audit_log_schema");
    assert_eq!(a["version"], 1);
    assert_eq!(a["targets"], s1["targets"]);
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));
    let (st, same) = parts(post(&c, &url, "/audit_logs/actions/invoice.paid/schemas", &s1).await).await;
    assert_eq!(
        (st, same["version"].clone()),
        (201, json!(1)),
        "unchanged schema returns the latest version"
    );
    let s2 = json!({"targets": [{"type": "invoice"}], "actor": {"metadata": {"type": "object"}}, "metadata": {"type": "object"}});
    let (_, b) = parts(post(&c, &url, "/audit_logs/actions/invoice.paid/schemas", &s2).await).await;
    assert_eq!(b["version"], 2);
    assert_eq!(b["actor"], s2["actor"]);
    // Errors.
    let (st, b) = parts(post(&c, &url, "/audit_logs/actions/x/schemas", &json!({"targets": []})).await).await;
    assert_eq!(st, 422, "{b}");
    assert_eq!(b["message"], "Validation failed.");
    let (st, b) = parts(post(&c, &url, "/audit_logs/actions/x/schemas", &json!({})).await).await;
    assert_eq!(
        (st, b["errors"][0].clone()),
        (422, json!({"code": "required", "field": "targets"}))
    );
    let (st, b) = parts(
        post(
            &c,
            &url,
            "/audit_logs/actions/x/schemas",
            &json!({"targets": [{"type": "t", "metadata": {"type": "nope"}}]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (st, b["errors"][0].clone()),
        (
            422,
            json!({"code": "invalid_json_schema", "field": "targets.0.metadata"})
        )
    );
    // Schema list.
    let (st, list) = parts(get(&c, &url, "/audit_logs/actions/invoice.paid/schemas").await).await;
    assert_eq!(st, 200);
    assert_eq!(list["object"], "list");
    let versions: Vec<i64> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![2, 1], "desc by default");
    let (_, list) = parts(
        get(
            &c,
            &url,
            "/audit_logs/actions/invoice.paid/schemas?order=asc&limit=1",
        )
        .await,
    )
    .await;
    assert_eq!(list["data"][0]["version"], 1);
    assert_eq!(list["list_metadata"]["before"], Value::Null);
    let after = list["list_metadata"]["after"].as_str().unwrap().to_owned();
    let (_, list) = parts(
        get(
            &c,
            &url,
            &format!("/audit_logs/actions/invoice.paid/schemas?order=asc&limit=1&after={after}"),
        )
        .await,
    )
    .await;
    assert_eq!(list["data"][0]["version"], 2);
    assert_eq!(list["list_metadata"]["after"], Value::Null);
    let (st, b) = parts(get(&c, &url, "/audit_logs/actions/nope/schemas").await).await;
    assert_eq!(
        (st, b),
        (404, json!({"message": "Audit Log Action not found: 'nope'."}))
    );
}

#[tokio::test]
async fn list_actions_pagination_walk() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let url = kit.url();
    let names: Vec<String> = (0..25).map(|i| format!("thing.a{i:02}")).collect();
    for n in &names {
        let (st, _) = parts(
            post(
                &c,
                &url,
                &format!("/audit_logs/actions/{n}/schemas"),
                &json!({"targets": [{"type": "t"}]}),
            )
            .await,
        )
        .await;
        assert_eq!(st, 201);
    }
    for (order, expect) in [
        ("asc", names.clone()),
        ("normal", names.clone()),
        ("desc", names.iter().rev().cloned().collect()),
    ] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &after {
                Some(a) => format!("/audit_logs/actions?order={order}&limit=10&after={a}"),
                None => format!("/audit_logs/actions?order={order}&limit=10"),
            };
            let (st, page) = parts(get(&c, &url, &q).await).await;
            assert_eq!(st, 200);
            pages += 1;
            for a in page["data"].as_array().unwrap() {
                assert_eq!(a["object"], "audit_log_action");
                assert_eq!(a["schema"]["version"], 1);
                seen.push(a["name"].as_str().unwrap().to_owned());
            }
            match page["list_metadata"]["after"].as_str() {
                Some(a) => after = Some(a.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, expect, "order {order}");
    }
    // Walk backwards with `before` from the last page.
    let (_, p1) = parts(get(&c, &url, "/audit_logs/actions?order=asc&limit=10").await).await;
    let a1 = p1["list_metadata"]["after"].as_str().unwrap().to_owned();
    let (_, p2) = parts(
        get(
            &c,
            &url,
            &format!("/audit_logs/actions?order=asc&limit=10&after={a1}"),
        )
        .await,
    )
    .await;
    let b2 = p2["list_metadata"]["before"].as_str().unwrap().to_owned();
    let (_, back) = parts(
        get(
            &c,
            &url,
            &format!("/audit_logs/actions?order=asc&limit=10&before={b2}"),
        )
        .await,
    )
    .await;
    assert_eq!(back["data"], p1["data"]);
    assert_eq!(back["list_metadata"]["before"], Value::Null);
    // Default limit 10.
    let (_, d) = parts(get(&c, &url, "/audit_logs/actions").await).await;
    assert_eq!(d["data"].as_array().unwrap().len(), 10);
    for bad in ["limit=0", "limit=101", "limit=x", "order=sideways", "after=nope"] {
        let (st, b) = parts(get(&c, &url, &format!("/audit_logs/actions?{bad}")).await).await;
        assert_eq!(st, 422, "{bad}");
        assert_eq!(b["message"], "Validation failed.");
        assert!(b["errors"][0]["field"].is_string());
    }
    let (st, _) = parts(get(&c, &url, "/audit_logs/actions?limit=100").await).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn retention_both_forms_and_configuration() {
    let kit = TestKit::builder()
        .org("org_A")
        .log_stream("Datadog", "active")
        .start()
        .await
        .unwrap();
    let c = client();
    let url = kit.url();
    let path = "/organizations/org_A/audit_logs_retention";
    let (st, b) = parts(get(&c, &url, path).await).await;
    assert_eq!((st, b), (200, json!({"retention_period_in_days": 30})));
    let (st, b) = parts(put(&c, &url, path, &json!({"retention_period_in_days": 365})).await).await;
    assert_eq!((st, b), (200, json!({"retention_period_in_days": 365})));
    let (st, b) = parts(put(&c, &url, path, &json!({"retention_period": "3_MONTHS"})).await).await;
    assert_eq!((st, b), (200, json!({"retention_period_in_days": 90})));
    let (st, b) = parts(put(&c, &url, path, &json!({"retention_period": "10_YEARS"})).await).await;
    assert_eq!((st, b), (200, json!({"retention_period_in_days": 3650})));
    let (_, b) = parts(get(&c, &url, path).await).await;
    assert_eq!(b, json!({"retention_period_in_days": 3650}));
    for bad in [
        json!({"retention_period_in_days": 30, "retention_period": "1_MONTH"}),
        json!({"retention_period_in_days": 31}),
        // The OpenAPI enum: 30 or 365 only; other periods go through `retention_period`.
        json!({"retention_period_in_days": 60}),
        json!({"retention_period_in_days": 730}),
        json!({"retention_period_in_days": "30"}),
        json!({"retention_period": "13_MONTHS"}),
        json!({"retention_period": "1_MONTHS"}),
        json!({}),
    ] {
        let (st, b) = parts(put(&c, &url, path, &bad).await).await;
        assert_eq!(st, 422, "{bad}");
        assert_eq!(b["message"], "Validation failed.");
    }
    let (st, b) = parts(get(&c, &url, "/organizations/org_B/audit_logs_retention").await).await;
    assert_eq!(
        (st, b),
        (404, json!({"message": "Organization not found: 'org_B'."}))
    );
    let (st, _) = parts(
        put(
            &c,
            &url,
            "/organizations/org_B/audit_logs_retention",
            &json!({"retention_period_in_days": 30}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);
    let (st, cfg) = parts(get(&c, &url, "/organizations/org_A/audit_log_configuration").await).await;
    assert_eq!(st, 200);
    assert_eq!(cfg["organization_id"], "org_A");
    assert_eq!(cfg["retention_period_in_days"], 3650);
    assert_eq!(cfg["state"], "active");
    assert_eq!(cfg["log_stream"]["type"], "Datadog");
    assert_eq!(cfg["log_stream"]["state"], "active");
    assert!(cfg["log_stream"]["id"].as_str().unwrap().starts_with("als_"));
    let (st, _) = parts(get(&c, &url, "/organizations/org_B/audit_log_configuration").await).await;
    assert_eq!(st, 404);
    let plain = TestKit::builder().start().await.unwrap();
    let (_, cfg) = parts(
        get(
            &c,
            &plain.url(),
            &format!(
                "/organizations/{}/audit_log_configuration",
                plain.organization_id()
            ),
        )
        .await,
    )
    .await;
    assert!(cfg.get("log_stream").is_none());
}

#[tokio::test]
async fn portal_link_and_page() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let url = kit.url();
    let org = kit.organization_id().to_owned();
    let (st, b) = parts(
        post(
            &c,
            &url,
            "/portal/generate_link",
            &json!({"organization": org, "intent": "audit_logs"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 201);
    let link = b["link"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&format!("{url}/portal?token=")));
    assert!(link.ends_with("&intent=audit_logs"));
    let page = c.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(&org));
    assert_eq!(
        c.get(format!("{url}/portal?token=bad"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let (st, b) = parts(
        post(
            &c,
            &url,
            "/portal/generate_link",
            &json!({"organization": org, "intent": "log_streams"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 201);
    assert!(b["link"].as_str().unwrap().ends_with("intent=log_streams"));
    let (st, _) = parts(
        post(
            &c,
            &url,
            "/portal/generate_link",
            &json!({"organization": "org_x", "intent": "audit_logs"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = parts(
        post(
            &c,
            &url,
            "/portal/generate_link",
            &json!({"intent": "audit_logs"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422);
    let (st, _) = parts(
        post(
            &c,
            &url,
            "/portal/generate_link",
            &json!({"organization": org, "intent": "bogus"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422);
    let (st, _) = parts(
        post(
            &c,
            &url,
            "/portal/generate_link",
            &json!({"organization": org, "intent": "sso"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn testkit_http_api() {
    let kit = TestKit::builder()
        .org("org_A")
        .org("org_B")
        .start()
        .await
        .unwrap();
    let c = client();
    let url = kit.url();
    let (st, b) = testkit_get(&c, &url, "/_testkit/health").await;
    assert_eq!((st, b), (200, json!({"status": "ok"})));
    post_key(
        &c,
        &url,
        "/audit_logs/events",
        &body("org_A", event("a.b")),
        "k-a",
    )
    .await;
    post(&c, &url, "/audit_logs/events", &body("org_B", event("a.c"))).await;
    let (_, a) = testkit_get(&c, &url, "/_testkit/events?organization_id=org_A").await;
    assert_eq!(a["data"].as_array().unwrap().len(), 1);
    assert_eq!(a["data"][0]["organization_id"], "org_A");
    assert_eq!(a["data"][0]["idempotency_key"], "k-a");
    assert_eq!(a["data"][0]["event"], event("a.b"));
    assert!(a["data"][0]["received_at"].is_string());
    let (_, all) = testkit_get(&c, &url, "/_testkit/events").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let (_, reqs) = testkit_get(&c, &url, "/_testkit/requests").await;
    let reqs = reqs["data"].as_array().unwrap().clone();
    assert_eq!(reqs.len(), 2, "/_testkit/ calls are not recorded");
    let headers = reqs[0]["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["idempotency-key", "k-a"])));
    assert_eq!(reqs[0]["status"], 200);
    assert!(reqs[0]["body"].as_str().unwrap().contains("org_A"));
    let (st, _) = parts(c.post(format!("{url}/_testkit/reset")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert!(kit.all_events().is_empty());
    assert!(kit.requests().is_empty());
    // After a reset the idempotency key is forgotten.
    post_key(
        &c,
        &url,
        "/audit_logs/events",
        &body("org_A", event("a.z")),
        "k-a",
    )
    .await;
    assert_eq!(kit.events("org_A").len(), 1);
    kit.reset();
    assert!(kit.all_events().is_empty());
}

#[tokio::test]
async fn testkit_requests_redact_keys_but_the_rust_api_keeps_them() {
    let kit = TestKit::builder().org("org_A").start().await.unwrap();
    let c = client();
    let url = kit.url();
    let mut e = event("a.b");
    e["metadata"] = json!({"leaked": "sk_live_body_secret", "task_id": "t1"});
    let res = c
        .post(format!("{url}/audit_logs/events?probe=sk_test_query_secret"))
        .bearer_auth(KEY)
        .header("x-api-key", "sk_test_header_secret")
        .json(&body("org_A", e))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c.get(format!("{url}/_testkit/requests")).send().await.unwrap();
    let text = res.text().await.unwrap();
    for secret in [
        KEY,
        "sk_live_body_secret",
        "sk_test_query_secret",
        "sk_test_header_secret",
    ] {
        assert!(!text.contains(secret), "{secret} served in {text}");
    }
    let reqs: Value = serde_json::from_str(&text).unwrap();
    let r = &reqs["data"][0];
    let headers = r["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["authorization", "Bearer [redacted]"])));
    assert!(headers.contains(&json!(["x-api-key", "sk_[redacted]"])));
    assert_eq!(r["query"], "probe=sk_[redacted]");
    let sent: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["event"]["metadata"]["leaked"], "sk_[redacted]");
    assert_eq!(sent["event"]["metadata"]["task_id"], "t1");
    // In the same process the test sees what was sent.
    assert_eq!(
        kit.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn the_request_log_is_bounded_by_count_and_by_bytes() {
    let kit = TestKit::builder()
        .org("org_A")
        .max_recorded_requests(3)
        .start()
        .await
        .unwrap();
    let c = client();
    for i in 0..5 {
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body("org_A", event(&format!("a.n{i}"))),
        )
        .await;
    }
    let seqs: Vec<u64> = kit.requests().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [3, 4, 5], "the oldest go first");

    let kit = TestKit::builder()
        .org("org_A")
        .max_recorded_bytes(4_000)
        .start()
        .await
        .unwrap();
    let big = |n: usize| {
        // Metadata values are limited to 500 characters: pad with several keys.
        let mut e = event("a.big");
        let pad: serde_json::Map<String, Value> = (0..n / 400)
            .map(|i| (format!("pad{i}"), json!("x".repeat(400))))
            .collect();
        e["metadata"] = Value::Object(pad);
        body("org_A", e)
    };
    for _ in 0..4 {
        post(&c, &kit.url(), "/audit_logs/events", &big(1_000)).await;
    }
    let kept = kit.requests();
    let bytes: usize = kept
        .iter()
        .map(|r| r.body.len() + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
        .sum();
    assert!(kept.len() < 4, "{} kept", kept.len());
    assert!(!kept.is_empty());
    assert!(bytes <= 4_000, "{bytes} bytes kept");
    assert_eq!(kept.last().unwrap().seq, 4, "the newest stays");
    // A body larger than the whole bound is kept, cut to fit.
    post(&c, &kit.url(), "/audit_logs/events", &big(10_000)).await;
    let kept = kit.requests();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].seq, 5);
    assert_eq!(kept[0].status, 200);
    assert!(kept[0].body.len() < 4_000 && kept[0].body.starts_with("{\""));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn data_file_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("testkit.sqlite");
    let c = client();
    let export_id;
    {
        let kit = TestKit::builder()
            .org("org_A")
            .data_path(&path)
            .export_delay(Duration::ZERO)
            .start()
            .await
            .unwrap();
        let url = kit.url();
        assert_eq!(
            post_key(
                &c,
                &url,
                "/audit_logs/events",
                &body("org_A", event("a.b")),
                "key-1"
            )
            .await
            .status(),
            200
        );
        let (st, _) = parts(
            post(
                &c,
                &url,
                "/audit_logs/actions/a.b/schemas",
                &json!({"targets": [{"type": "team"}]}),
            )
            .await,
        )
        .await;
        assert_eq!(st, 201);
        assert_eq!(
            put(
                &c,
                &url,
                "/organizations/org_A/audit_logs_retention",
                &json!({"retention_period": "2_MONTHS"})
            )
            .await
            .status(),
            200
        );
        let (st, e) = parts(post(&c, &url, "/audit_logs/exports", &json!({"organization_id": "org_A", "range_start": "2024-01-01T00:00:00.000Z", "range_end": "2024-02-01T00:00:00.000Z"})).await).await;
        assert_eq!(st, 201);
        export_id = e["id"].as_str().unwrap().to_owned();
        kit.shutdown();
    }
    let kit = TestKit::builder()
        .org("org_A")
        .data_path(&path)
        .start()
        .await
        .unwrap();
    let url = kit.url();
    let stored = kit.events("org_A");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event, event("a.b"));
    assert_eq!(stored[0].idempotency_key.as_deref(), Some("key-1"));
    // The idempotency record survived: a retry is replayed, not stored twice.
    assert_eq!(
        post_key(
            &c,
            &url,
            "/audit_logs/events",
            &body("org_A", event("a.b")),
            "key-1"
        )
        .await
        .status(),
        200
    );
    assert_eq!(kit.events("org_A").len(), 1);
    assert_eq!(
        post_key(
            &c,
            &url,
            "/audit_logs/events",
            &body("org_A", event("x.y")),
            "key-1"
        )
        .await
        .status(),
        409
    );
    let (_, list) = parts(get(&c, &url, "/audit_logs/actions/a.b/schemas").await).await;
    assert_eq!(list["data"][0]["version"], 1);
    assert_eq!(list["data"][0]["targets"], json!([{"type": "team"}]));
    let (_, r) = parts(get(&c, &url, "/organizations/org_A/audit_logs_retention").await).await;
    assert_eq!(r["retention_period_in_days"], 60);
    let (st, e) = parts(get(&c, &url, &format!("/audit_logs/exports/{export_id}")).await).await;
    assert_eq!((st, e["state"].clone()), (200, json!("ready")));
    let csv = get_text(&c, e["url"].as_str().unwrap()).await;
    assert!(csv.contains("a.b"));
    // The same schema body again is still version 1 (the upsert sees the persisted version).
    let (_, s) = parts(
        post(
            &c,
            &url,
            "/audit_logs/actions/a.b/schemas",
            &json!({"targets": [{"type": "team"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(s["version"], 1);
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    for r in [
        c.get(format!("{}/", kit.url())).send().await.unwrap(),
        c.get(format!("{}/_testkit/health", kit.url()))
            .send()
            .await
            .unwrap(),
        c.get(format!("{}/audit_logs/actions", kit.url()))
            .send()
            .await
            .unwrap(),
        c.patch(format!("{}/audit_logs/actions", kit.url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    ] {
        let h = r
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(h.starts_with("req_") && h.len() == 36, "{h}");
    }
}
