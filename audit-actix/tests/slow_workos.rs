//! A slow, failing or unreachable WorkOS (audit-testkit with scripted latency, 500s and a stop)
//! changes neither the status nor the latency of the app's responses: the middleware only hands
//! events off. The app runs in a real actix-web `HttpServer` on loopback; the emitter's senders run
//! on the test's actix system runtime, as in `examples/actix`.

use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, post};
use audit_actix::{AuditMiddleware, action};
use audit_core::client::Client;
use audit_core::emitter::Emitter;
use audit_core::{Actor, OrganizationId};
use audit_testkit::{FaultRule, TestKit};

#[action("team.created")]
#[post("/teams")]
async fn create_team() -> HttpResponse {
    HttpResponse::Created().body("created")
}

struct Served {
    url: String,
    emitter: Emitter,
    kit: TestKit,
    server: actix_web::dev::ServerHandle,
}

async fn serve() -> Served {
    let kit = TestKit::start().await.unwrap();
    let client = Client::builder()
        .api_key("sk_test_slow")
        .base_url(kit.url())
        .build()
        .unwrap();
    let emitter = Emitter::builder(client)
        .no_rate_limit()
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .start();
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let audit = AuditMiddleware::new(emitter.clone());
    let server = HttpServer::new(move || {
        let org = org.clone();
        App::new()
            .wrap(audit.clone())
            .wrap_fn(move |req, srv| {
                req.extensions_mut().insert(Actor::new("user_1", "user"));
                req.extensions_mut().insert(org.clone());
                srv.call(req)
            })
            .service(create_team)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Served {
        url: format!("http://{addr}/teams"),
        emitter,
        kit,
        server: handle,
    }
}

/// Sends `n` requests one after the other; returns the slowest response time.
async fn slowest_of(url: &str, n: usize) -> Duration {
    let http = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let response = http.post(url).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.text().await.unwrap(), "created");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[actix_rt::test]
async fn slow_workos_does_not_slow_responses() {
    let s = serve().await;
    s.kit
        .fault(FaultRule::new("/audit_logs/events").latency(Duration::from_millis(1000)));
    let slowest = slowest_of(&s.url, 10).await;
    assert!(
        slowest < Duration::from_millis(500),
        "slowest response {slowest:?} with WorkOS at 1 s"
    );
    s.emitter.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        s.kit.events(s.kit.organization_id()).len(),
        10,
        "every event still arrives"
    );
    s.server.stop(true).await;
}

#[actix_rt::test]
async fn failing_workos_does_not_change_responses() {
    let s = serve().await;
    s.kit.fault(FaultRule::new("/audit_logs/events").respond(500));
    let slowest = slowest_of(&s.url, 10).await;
    assert!(
        slowest < Duration::from_millis(500),
        "slowest response {slowest:?} with WorkOS failing"
    );
    // The events wait for retries (the senders start a moment after the first event: wait for
    // an attempt that got the 500); once WorkOS recovers they are delivered.
    s.kit
        .wait_for_request(Duration::from_secs(10), |r| r.status == 500)
        .await
        .expect("no attempt failed while WorkOS answered 500");
    s.kit.clear_faults();
    s.emitter.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(s.kit.events(s.kit.organization_id()).len(), 10);
    assert!(s.emitter.stats().retried > 0);
    s.server.stop(true).await;
}

#[actix_rt::test]
async fn unreachable_workos_does_not_change_responses() {
    let s = serve().await;
    s.kit.stop();
    let slowest = slowest_of(&s.url, 10).await;
    assert!(
        slowest < Duration::from_millis(500),
        "slowest response {slowest:?} with WorkOS unreachable"
    );
    s.kit.restart().unwrap();
    s.emitter.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(s.kit.events(s.kit.organization_id()).len(), 10);
    s.server.stop(true).await;
}
