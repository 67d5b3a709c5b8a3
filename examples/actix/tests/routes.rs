//! The example app against an in-process audit-testkit: every route over loopback HTTP, then the
//! stored events; the app without audit; and the binary's SIGTERM flush and report.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use actix_web::{App, HttpServer, test};
use audit_core::OrganizationId;
use audit_core::client::Client;
use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::Emitter;
use audit_testkit::TestKit;
use example_actix::{AppState, audit_middleware, routes};
use serde_json::{Value, json};

#[actix_rt::test]
async fn every_route_against_the_testkit() {
    let kit = TestKit::start().await.unwrap();
    let client = Client::builder()
        .api_key("sk_test_example")
        .base_url(kit.url())
        .build()
        .unwrap();
    let emitter = Emitter::builder(client).no_rate_limit().start();
    let audit = audit_middleware(emitter.clone(), ClientIpConfig::socket_peer());
    let counters = audit.skip_counters();
    let state = AppState::new(OrganizationId::new(kit.organization_id()).unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(audit.clone())
            .app_data(state.clone())
            .configure(routes)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);

    let http = reqwest::Client::builder()
        .user_agent("example-test/1")
        .build()
        .unwrap();
    let session: Value = http
        .post(format!("{base}/sessions"))
        .json(&json!({"email": "ada@example.com", "password": "demo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(token, "user_1");
    let bad = http
        .post(format!("{base}/sessions"))
        .json(&json!({"email": "ada@example.com", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let team: Value = http
        .post(format!("{base}/teams"))
        .bearer_auth(&token)
        .json(&json!({"name": "Platform"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_id = team["id"].as_str().unwrap().to_owned();
    let deleted = http
        .delete(format!("{base}/teams/{team_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let again = http
        .delete(format!("{base}/teams/{team_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let invoice = http
        .get(format!("{base}/invoices/inv_42"))
        .bearer_auth("user_2")
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(invoice.status(), 200);
    let anonymous = http.get(format!("{base}/invoices/inv_42")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap(),
        json!({"error": "sign in first: POST /sessions"})
    );
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    assert_eq!(
        http.get(format!("{base}/nowhere")).send().await.unwrap().status(),
        404
    );
    let blank = http
        .post(format!("{base}/teams"))
        .bearer_auth(&token)
        .json(&json!({"name": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(blank.status(), 422);

    emitter.flush(Duration::from_secs(10)).await.unwrap();
    let mut events: Vec<Value> = kit
        .events(kit.organization_id())
        .into_iter()
        .map(|e| e.event)
        .collect();
    // Delivery is concurrent, so the testkit may store the events in any order: put them in the
    // order of the requests (each action happens once here) before comparing.
    let request_order = ["user.signed_in", "team.created", "team.deleted", "invoice.viewed"];
    events.sort_by_key(|e| {
        request_order
            .iter()
            .position(|a| e["action"] == *a)
            .unwrap_or(usize::MAX)
    });
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["user.signed_in", "team.created", "team.deleted", "invoice.viewed"]
    );
    assert_eq!(
        events[0]["actor"],
        json!({"id": "user_1", "type": "user", "name": "Ada Lovelace"})
    );
    assert_eq!(
        events[1]["targets"],
        json!([{"id": team_id, "type": "team", "name": "Platform"}])
    );
    assert_eq!(events[2]["targets"], json!([{"id": team_id, "type": "team"}]));
    assert_eq!(events[3]["targets"], json!([{"id": "inv_42", "type": "invoice"}]));
    assert_eq!(events[3]["actor"]["id"], "user_2");
    for e in &events {
        assert_eq!(
            e["context"]["location"], "127.0.0.1",
            "the forged X-Forwarded-For is ignored"
        );
        assert_eq!(e["context"]["user_agent"], "example-test/1");
    }
    // The failed sign-in, the second delete and the blank team name were refused by the outcome
    // policy.
    assert_eq!(counters.get(audit_actix::SkipReason::Outcome), 3);
    handle.stop(true).await;
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 4);
}

#[actix_rt::test]
async fn without_audit_the_routes_still_work() {
    let app = test::init_service(
        App::new()
            .app_data(audit_actix::AuditDisabled)
            .app_data(AppState::new(OrganizationId::new("org_1").unwrap()))
            .configure(routes),
    )
    .await;
    let req = test::TestRequest::get()
        .uri("/invoices/inv_1")
        .insert_header(("authorization", "Bearer user_1"))
        .to_request();
    assert_eq!(test::call_service(&app, req).await.status(), 200);
}

/// Reads the binary's standard output up to a line starting with `prefix`.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with(prefix);
        seen.push(line);
        if done {
            return seen;
        }
    }
    panic!("no line starting with {prefix:?} in {seen:#?}");
}

#[actix_rt::test]
async fn the_binary_flushes_and_reports_on_sigterm() {
    let kit = TestKit::start().await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-actix"))
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("WORKOS_BASE_URL", kit.url())
        .env("WORKOS_API_KEY", "sk_test_binary")
        .env("WORKOS_ORGANIZATION_ID", kit.organization_id())
        .env("AUDIT_TRUSTED_PROXIES", "127.0.0.0/8")
        .env_remove("AUDIT_DISABLED")
        .env_remove("AUDIT_SINK")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["audit"], "workos");
    assert_eq!(first["workos_base_url"], kit.url());
    assert_eq!(first["organization_id"], kit.organization_id());
    assert_eq!(first["trusted_proxies"], json!(["127.0.0.0/8"]));
    let base = first["listening"].as_str().unwrap().to_owned();
    read_until(&mut lines, "example-actix: listening on");

    // Behind a trusted proxy (loopback), X-Forwarded-For names the client: read from the right.
    let http = reqwest::Client::new();
    for i in 0..5 {
        let response = http
            .get(format!("{base}/invoices/inv_{i}"))
            .bearer_auth("user_1")
            .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let tail = read_until(&mut lines, "{\"shutdown\"");
    assert!(
        tail.iter().any(|l| l.contains("stopped taking requests")),
        "{tail:#?}"
    );
    let report: Value = serde_json::from_str(tail.last().unwrap()).unwrap();
    assert_eq!(report["shutdown"]["delivered"], 5, "{report}");
    assert_eq!(report["shutdown"]["pending_at_deadline"], 0);
    let summary = lines.next().unwrap().unwrap();
    assert!(
        summary.starts_with("example-actix: 5 events delivered"),
        "{summary}"
    );
    assert!(child.wait().unwrap().success());

    let events = kit.events(kit.organization_id());
    assert_eq!(events.len(), 5);
    assert!(
        events
            .iter()
            .all(|e| e.event["context"]["location"] == "198.51.100.7")
    );
}
