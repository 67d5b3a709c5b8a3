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

#[path = "../../routes_scenario.rs"]
mod routes_scenario;
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

    let team_id = routes_scenario::send_requests(&base).await;
    emitter.flush(Duration::from_secs(10)).await.unwrap();
    routes_scenario::check_events(&kit, &team_id);
    assert_eq!(
        counters.get(audit_actix::SkipReason::Outcome),
        routes_scenario::REFUSED_BY_OUTCOME
    );
    handle.stop(true).await;
    let report = emitter.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, routes_scenario::EVENTS);
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
