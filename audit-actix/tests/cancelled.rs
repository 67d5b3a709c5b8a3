//! Cancelled requests are never invisible: a response future dropped after the handler started
//! (a timeout middleware around a slow handler, a client that disconnects) is counted, and
//! emitted marked `outcome: "cancelled"` unless the policy skips it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, post, test, web};
use audit_actix::{AuditCtx, AuditMiddleware, CancelledRequests, MissingActor, action};
use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Actor, MetadataValue, OrganizationId};
use audit_test_cases::cancelled::assert_one_cancelled_report;
use tokio::sync::Notify;

#[action("report.generated")]
#[post("/reports")]
async fn slow(audit: AuditCtx, started: web::Data<Arc<Notify>>) -> HttpResponse {
    audit.meta("rows", 10);
    started.notify_one();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    HttpResponse::Ok().finish()
}

fn middleware(emitter: &Emitter, cancelled: CancelledRequests) -> AuditMiddleware {
    AuditMiddleware::builder(emitter.clone())
        .missing_actor(MissingActor::Use(Actor::new("user_1", "user")))
        .default_organization(OrganizationId::new("org_1").unwrap())
        .cancelled_requests(cancelled)
        .build()
}

async fn timed_out(cancelled: CancelledRequests) -> (u64, MemorySink) {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let audit = middleware(&emitter, cancelled);
    let counters = audit.skip_counters();
    // The timeout is outside the audit middleware: when it fires, it drops the audited future.
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(Arc::new(Notify::new())))
            .wrap(audit)
            .wrap_fn(|req, srv| {
                let response = srv.call(req);
                async move {
                    match tokio::time::timeout(Duration::from_millis(100), response).await {
                        Ok(response) => response,
                        Err(_) => Err(actix_web::error::ErrorGatewayTimeout("timed out")),
                    }
                }
            })
            .service(slow),
    )
    .await;
    let request = test::TestRequest::post().uri("/reports").to_request();
    let status = match app.call(request).await {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    (counters.cancelled(), sink)
}

#[actix_rt::test]
async fn a_timeout_cancelling_a_slow_handler_emits_the_attempt_marked_cancelled() {
    let (cancelled, sink) = timed_out(CancelledRequests::Emit).await;
    assert_eq!(cancelled, 1);
    assert_one_cancelled_report(&sink);
}

#[actix_rt::test]
async fn cancelled_requests_can_be_skipped_and_are_still_counted() {
    let (cancelled, sink) = timed_out(CancelledRequests::Skip).await;
    assert_eq!(cancelled, 1);
    assert!(sink.events().is_empty());
}

#[action("report.exported")]
#[post("/exports")]
async fn export(audit: AuditCtx, gates: web::Data<(Arc<Notify>, Arc<Notify>)>) -> HttpResponse {
    audit.meta("rows", 10);
    gates.0.notify_one();
    gates.1.notified().await;
    HttpResponse::Ok().finish()
}

/// actix-web's HTTP/1 dispatcher does not drop a handler's future when the client goes away: the
/// handler runs to its end and the request finishes normally. Either way the request is seen
/// exactly once: emitted with its status, or counted and emitted as cancelled.
#[actix_rt::test]
async fn a_client_that_disconnects_is_never_invisible() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let audit = middleware(&emitter, CancelledRequests::Emit);
    let counters = audit.skip_counters();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let data = web::Data::new((Arc::clone(&started), Arc::clone(&release)));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(audit.clone())
            .service(export)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}/exports", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let client = actix_rt::spawn(async move { reqwest::Client::new().post(url).send().await });
    started.notified().await;
    // The client goes away while the handler runs; then the handler ends.
    client.abort();
    let _ = client.await;
    release.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.events().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the request was never seen");
        emitter.flush(Duration::from_secs(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let events = sink.events();
    assert_eq!(events.len(), 1);
    let metadata = events[0].0.event.metadata.as_ref().unwrap();
    let cancelled = metadata.get("outcome") == Some(&MetadataValue::from("cancelled"));
    assert_eq!(counters.cancelled(), u64::from(cancelled));
    assert_eq!(metadata.get("rows"), Some(&MetadataValue::Integer(10)));
    handle.stop(false).await;
}
