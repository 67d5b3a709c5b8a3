//! Create event: success, every error body, idempotency, auth, bad input.

mod common;
use audit_testkit::TestKit;
use common::*;
use serde_json::json;

#[tokio::test]
async fn create_event_stores_it_exactly() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let ev = event("user.signed_in");
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body(kit.organization_id(), ev.clone()),
        )
        .await,
    )
    .await;
    assert_eq!((st, b), (200, json!({"success": true})));
    let stored = kit.events(kit.organization_id());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event, ev);
    assert_eq!(stored[0].idempotency_key, None);
    assert_eq!(kit.all_events().len(), 1);
    let reqs = kit.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/audit_logs/events");
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].header("authorization"), Some("Bearer sk_test_key"));
}

#[tokio::test]
async fn organization_id_is_generated_ulid_like() {
    let kit = TestKit::builder().start().await.unwrap();
    let org = kit.organization_id();
    assert!(org.starts_with("org_"));
    assert_eq!(org.len(), 30);
    assert!(
        org[4..]
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    assert!(kit.url().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn unknown_org_is_404() {
    let kit = TestKit::builder().org("org_A").start().await.unwrap();
    let c = client();
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &body("org_x", event("a.b"))).await).await;
    assert_eq!(st, 404);
    assert_eq!(b, json!({"message": "Organization not found: 'org_x'."}));
    let any = TestKit::builder().any_org(true).start().await.unwrap();
    let (st, _) = parts(post(&c, &any.url(), "/audit_logs/events", &body("org_x", event("a.b"))).await).await;
    assert_eq!(st, 200);
    assert_eq!(any.events("org_x").len(), 1);
}

#[tokio::test]
async fn missing_fields_are_422() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let mut ev = event("a.b");
    ev.as_object_mut().unwrap().remove("action");
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body(kit.organization_id(), ev),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(
        b,
        json!({"message": "Validation failed.", "errors": [{"code": "required", "field": "event.action"}]})
    );
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &json!({"event": event("a.b")}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(
        b["errors"],
        json!([{"code": "required", "field": "organization_id"}])
    );
    let mut ev = event("a.b");
    ev["targets"][0].as_object_mut().unwrap().remove("id");
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body(kit.organization_id(), ev),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(
        b["errors"],
        json!([{"code": "required", "field": "event.targets.0.id"}])
    );
    assert!(kit.all_events().is_empty());
}

#[tokio::test]
async fn metadata_violations_are_400_with_instance_paths() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let org = kit.organization_id().to_owned();
    let check = |ev: serde_json::Value, path: &'static str, keyword: &'static str| {
        let c = c.clone();
        let url = kit.url();
        let org = org.clone();
        async move {
            let (st, b) = parts(post(&c, &url, "/audit_logs/events", &body(&org, ev)).await).await;
            assert_eq!(st, 400, "{b}");
            assert_eq!(b["message"], "Invalid Audit Log event.");
            assert_eq!(b["code"], "invalid_audit_log_event");
            assert_eq!(b["errors"][0]["instancePath"], path, "{b}");
            assert_eq!(b["errors"][0]["keyword"], keyword, "{b}");
        }
    };
    let mut ev = event("a.b");
    ev["metadata"] = json!({"x": {"nested": true}});
    check(ev, "/metadata/x", "type").await;
    let mut ev = event("a.b");
    ev["targets"] = json!([{"id": "1", "type": "t"}, {"id": "2", "type": "t", "metadata": {"cost": null}}]);
    check(ev, "/targets/1/metadata/cost", "type").await;
    let mut ev = event("a.b");
    ev["actor"]["metadata"] = json!({"s": "x".repeat(501)});
    check(ev, "/actor/metadata/s", "maxLength").await;
    let mut ev = event("a.b");
    ev["metadata"] = json!({"bad key!": 1});
    check(ev, "/metadata/bad key!", "additionalProperties").await;
    let mut ev = event("a.b");
    ev["metadata"] = json!({"k".repeat(41): 1});
    check(
        ev,
        "/metadata/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
        "additionalProperties",
    )
    .await;
    let mut ev = event("a.b");
    let many: serde_json::Map<String, serde_json::Value> =
        (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
    ev["metadata"] = json!(many);
    check(ev, "/metadata", "maxProperties").await;
    let mut ev = event("a.b");
    ev["metadata"] = json!([1]);
    check(ev, "/metadata", "type").await;
    let mut ev = event("a.b");
    ev["occurred_at"] = json!("yesterday");
    check(ev, "/occurred_at", "format").await;
    // Exactly at the limits is fine.
    let mut ev = event("a.b");
    let fifty: serde_json::Map<String, serde_json::Value> = (0..50)
        .map(|i| (format!("k{i}"), json!("v".repeat(500))))
        .collect();
    ev["metadata"] = json!(fifty);
    ev["actor"]["metadata"] = json!({"k".repeat(40): true, "n": 1.5});
    let (st, _) = parts(post(&c, &kit.url(), "/audit_logs/events", &body(&org, ev)).await).await;
    assert_eq!(st, 200);
    assert_eq!(kit.all_events().len(), 1);
}

#[tokio::test]
async fn idempotency_replays_and_conflicts() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let b1 = body(kit.organization_id(), event("a.b"));
    for _ in 0..3 {
        let r = post_key(&c, &kit.url(), "/audit_logs/events", &b1, "key-1").await;
        let (st, b) = parts(r).await;
        assert_eq!((st, b), (200, json!({"success": true})));
    }
    let stored = kit.events(kit.organization_id());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].idempotency_key.as_deref(), Some("key-1"));
    // Same JSON value, different key order and whitespace: still the same body.
    let text = serde_json::to_string_pretty(&b1).unwrap();
    let r = c
        .post(format!("{}/audit_logs/events", kit.url()))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("idempotency-key", "key-1")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("idempotent-replayed").unwrap(), "true");
    let b2 = body(kit.organization_id(), event("other.action"));
    let (st, b) = parts(post_key(&c, &kit.url(), "/audit_logs/events", &b2, "key-1").await).await;
    assert_eq!(st, 409);
    assert_eq!(b["code"], "idempotency_error");
    assert!(b["message"].as_str().unwrap().contains("Idempotency-Key"));
    assert_eq!(kit.all_events().len(), 1);
}

#[tokio::test]
async fn auth_errors_are_401() {
    let kit = TestKit::builder().api_key("sk_test_only").start().await.unwrap();
    let c = client();
    let url = format!("{}/audit_logs/events", kit.url());
    let b = body(kit.organization_id(), event("a.b"));
    for req in [
        c.post(&url).json(&b),
        c.post(&url).header("authorization", "Basic abc").json(&b),
        c.post(&url).bearer_auth("sk_test_other").json(&b),
    ] {
        let (st, body) = parts(req.send().await.unwrap()).await;
        assert_eq!((st, body), (401, json!({"message": "Unauthorized"})));
    }
    let (st, _) = parts(
        c.post(&url)
            .bearer_auth("sk_test_only")
            .json(&b)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    let open = TestKit::builder().start().await.unwrap();
    let (st, _) = parts(
        c.get(format!("{}/audit_logs/actions", open.url()))
            .bearer_auth("pk_nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = parts(
        c.get(format!("{}/audit_logs/actions", open.url()))
            .bearer_auth("sk_anything")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let kit = TestKit::builder().max_body_bytes(2048).start().await.unwrap();
    let c = client();
    let url = format!("{}/audit_logs/events", kit.url());
    let r = c
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (st, b) = parts(r).await;
    assert_eq!(st, 400);
    assert_eq!(b["code"], "invalid_json");
    let r = c
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (st, b) = parts(r).await;
    assert_eq!(st, 415);
    assert!(b["message"].as_str().unwrap().contains("application/json"));
    let r = c
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    let (st, b) = parts(r).await;
    assert_eq!(st, 413);
    assert!(b["message"].as_str().unwrap().contains("2048"));
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &json!([1, 2])).await).await;
    assert_eq!(st, 422, "{b}");
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &json!({"organization_id": 5, "event": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(st, 422, "{b}");
    let (st, b) = parts(get(&c, &kit.url(), "/no/such/route").await).await;
    assert_eq!((st, b), (404, json!({"message": "Not Found"})));
    let (st, b) = parts(c.delete(&url).bearer_auth(KEY).send().await.unwrap()).await;
    assert_eq!((st, b), (405, json!({"message": "Method Not Allowed"})));
    let (st, _) = parts(
        c.get(format!("{}/audit_logs/exports/%2e%2e", kit.url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404);
    assert!(kit.all_events().is_empty());
}

#[tokio::test]
async fn require_schemas_validates_against_the_version() {
    let kit = TestKit::builder().require_schemas(true).start().await.unwrap();
    let c = client();
    let org = kit.organization_id().to_owned();
    let (st, b) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body(&org, event("user.signed_in")),
        )
        .await,
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(b["errors"][0]["instancePath"], "/action");
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("No schema is registered for action 'user.signed_in'")
    );
    let schema = json!({
        "actor": {"metadata": {"type": "object", "properties": {"role": {"type": "string"}}}},
        "targets": [{"type": "team", "metadata": {"type": "object", "properties": {"owner": {"type": "string"}}}}],
        "metadata": {"type": "object", "properties": {"request_id": {"type": "string"}}, "required": ["request_id"]}
    });
    let (st, s1) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/actions/user.signed_in/schemas",
            &schema,
        )
        .await,
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(s1["version"], 1);
    let (st, _) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body(&org, event("user.signed_in")),
        )
        .await,
    )
    .await;
    assert_eq!(st, 200);
    let mut ev = event("user.signed_in");
    ev["targets"][0]["metadata"] = json!({"owner": 5});
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &body(&org, ev)).await).await;
    assert_eq!(st, 400);
    assert_eq!(b["errors"][0]["instancePath"], "/targets/0/metadata/owner");
    let mut ev = event("user.signed_in");
    ev.as_object_mut().unwrap().remove("metadata");
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &body(&org, ev)).await).await;
    assert_eq!(st, 400);
    assert_eq!(b["errors"][0]["keyword"], "required");
    let mut ev = event("user.signed_in");
    ev["targets"][0]["type"] = json!("invoice");
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &body(&org, ev)).await).await;
    assert_eq!(st, 400);
    assert_eq!(b["errors"][0]["instancePath"], "/targets/0/type");
    // Version 2 changes the metadata type; events naming version 1 still validate against v1.
    let mut schema2 = schema.clone();
    schema2["metadata"]["properties"]["request_id"] = json!({"type": "number"});
    let (st, s2) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/actions/user.signed_in/schemas",
            &schema2,
        )
        .await,
    )
    .await;
    assert_eq!((st, s2["version"].clone()), (201, json!(2)));
    let (st, _) = parts(
        post(
            &c,
            &kit.url(),
            "/audit_logs/events",
            &body(&org, event("user.signed_in")),
        )
        .await,
    )
    .await;
    assert_eq!(st, 200);
    let mut ev = event("user.signed_in");
    ev["version"] = json!(2);
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &body(&org, ev)).await).await;
    assert_eq!(st, 400);
    assert_eq!(b["errors"][0]["instancePath"], "/metadata/request_id");
    let mut ev = event("user.signed_in");
    ev["version"] = json!(7);
    let (st, b) = parts(post(&c, &kit.url(), "/audit_logs/events", &body(&org, ev)).await).await;
    assert_eq!(st, 400);
    assert_eq!(b["errors"][0]["instancePath"], "/version");
    assert_eq!(kit.all_events().len(), 2);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let kit = TestKit::builder()
        .rate_limit(3, std::time::Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &kit.url(), "/audit_logs/actions").await.status(), 200);
    }
    let r = get(&c, &kit.url(), "/audit_logs/actions").await;
    let ra: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&ra));
    let (st, b) = parts(r).await;
    assert_eq!(
        (st, b),
        (
            429,
            json!({"message": "Too many requests.", "code": "rate_limit_exceeded"})
        )
    );
    // Another key has its own window.
    let r = c
        .get(format!("{}/audit_logs/actions", kit.url()))
        .bearer_auth("sk_test_other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(get(&c, &kit.url(), "/audit_logs/actions").await.status(), 200);
}

#[test]
fn works_without_any_runtime() {
    let kit = TestKit::builder().start_blocking().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (st, _) = parts(
            post(
                &client(),
                &kit.url(),
                "/audit_logs/events",
                &body(kit.organization_id(), event("a.b")),
            )
            .await,
        )
        .await;
        assert_eq!(st, 200);
    });
    assert_eq!(kit.all_events().len(), 1);
    kit.shutdown();
}

#[tokio::test(start_paused = true)]
async fn works_under_a_paused_clock() {
    let kit = TestKit::builder()
        .export_delay(std::time::Duration::from_millis(0))
        .start()
        .await
        .unwrap();
    // No client timeout: under a paused clock tokio would auto-advance it.
    let (st, _) = parts(
        post(
            &reqwest::Client::new(),
            &kit.url(),
            "/audit_logs/events",
            &body(kit.organization_id(), event("a.b")),
        )
        .await,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(kit.all_events().len(), 1);
}

#[test]
fn testkit_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TestKit>();
    assert_send_sync::<audit_testkit::StoredEvent>();
    assert_send_sync::<audit_testkit::RecordedRequest>();
}

#[tokio::test]
async fn bench_runs_and_reports_a_rate() {
    let rate = audit_testkit::bench::try_create_event_throughput(4, 200).unwrap();
    assert!(rate > 0.0);
}
