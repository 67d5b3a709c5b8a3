//! The client-IP rules through the actix middleware: audit-core's shared table of cases (the same
//! table audit-tower runs), and a property test that no header content from an untrusted peer
//! changes the location.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use actix_web::test as at;
use actix_web::{App, HttpMessage, HttpResponse, get, post};
use audit_actix::{AuditCtx, AuditMiddleware, action};
use audit_core::client_ip::{ClientIpConfig, ForwardedHeader};
use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Actor, OrganizationId};
use audit_test_cases::client_ip::{self as test_cases, CASES};
use proptest::prelude::*;

#[action("session.created")]
#[post("/audited")]
async fn audited() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// Answers the location the middleware captured for this request.
#[get("/location")]
async fn location(audit: AuditCtx) -> String {
    audit.info().map(|i| i.location.clone()).unwrap_or_default()
}

macro_rules! app {
    ($audit:expr) => {
        at::init_service(
            App::new()
                .wrap($audit)
                .wrap_fn(|req, srv| {
                    req.extensions_mut().insert(Actor::new("user_1", "user"));
                    req.extensions_mut().insert(OrganizationId::new("org_1").unwrap());
                    srv.call(req)
                })
                .service(audited)
                .service(location),
        )
        .await
    };
}

#[actix_rt::test]
async fn the_shared_table_through_the_middleware() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    for (i, case) in CASES.iter().enumerate() {
        let app = app!(
            AuditMiddleware::builder(emitter.clone())
                .client_ip(case.config().unwrap())
                .build()
        );
        let mut request = at::TestRequest::post()
            .uri("/audited")
            .peer_addr(case.peer_addr().unwrap());
        for (name, value) in case.headers {
            // append, not insert: several instances of a header must all arrive
            request = request.append_header((*name, *value));
        }
        let response = at::call_service(&app, request.to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", case.name);
        emitter.flush(Duration::from_secs(5)).await.unwrap();
        let events = sink.events();
        assert_eq!(events.len(), i + 1, "{}: one event per case", case.name);
        assert_eq!(
            events[i].0.event.context.location, case.expected,
            "case {}: headers {:?}, peer {}",
            case.name, case.headers, case.peer
        );
    }
}

#[actix_rt::test]
async fn trusted_proxies_builder_reads_x_forwarded_for_from_the_right() {
    let emitter = Emitter::builder(MemorySink::new()).no_rate_limit().start();
    let audit = AuditMiddleware::builder(emitter.clone())
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap()
        .build();
    let app = app!(audit);
    let request = at::TestRequest::get()
        .uri("/location")
        .peer_addr("10.1.2.3:443".parse().unwrap())
        .insert_header(("x-forwarded-for", "6.6.6.6, 198.51.100.23, 10.9.9.9"))
        .to_request();
    let body = at::call_and_read_body(&app, request).await;
    assert_eq!(&body[..], b"198.51.100.23");

    // the same request from an untrusted peer: its own address, whatever the header says
    let request = at::TestRequest::get()
        .uri("/location")
        .peer_addr("203.0.113.50:443".parse().unwrap())
        .insert_header(("x-forwarded-for", "198.51.100.23"))
        .insert_header(("forwarded", "for=198.51.100.24"))
        .insert_header(("x-real-ip", "198.51.100.25"))
        .to_request();
    let body = at::call_and_read_body(&app, request).await;
    assert_eq!(&body[..], b"203.0.113.50");

    // the header read from trusted proxies can be changed without repeating the ranges
    let audit = AuditMiddleware::builder(emitter.clone())
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap()
        .forwarded_header(ForwardedHeader::Single("x-real-ip"))
        .build();
    let app = app!(audit);
    let request = at::TestRequest::get()
        .uri("/location")
        .peer_addr("10.1.2.3:443".parse().unwrap())
        .insert_header(("x-forwarded-for", "6.6.6.6"))
        .insert_header(("x-real-ip", "198.51.100.30"))
        .to_request();
    let body = at::call_and_read_body(&app, request).await;
    assert_eq!(&body[..], b"198.51.100.30");
    assert!(
        AuditMiddleware::builder(emitter)
            .trusted_proxies(["10.0.0/8"])
            .is_err()
    );
}

#[actix_rt::test]
async fn real_ip_remote_addr_is_not_the_source() {
    // actix-web's ConnectionInfo::realip_remote_addr believes the leftmost Forwarded /
    // X-Forwarded-For value from anyone; the middleware does not.
    let emitter = Emitter::builder(MemorySink::new()).no_rate_limit().start();
    let app = app!(AuditMiddleware::new(emitter));
    let request = || {
        at::TestRequest::get()
            .uri("/location")
            .peer_addr("203.0.113.9:51000".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6"))
    };
    let head = request().to_http_request();
    assert_eq!(head.connection_info().realip_remote_addr(), Some("6.6.6.6"));
    let body = at::call_and_read_body(&app, request().to_request()).await;
    assert_eq!(&body[..], b"203.0.113.9");
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // plausible forwarding syntax
        "([0-9a-fA-F:.\\[\\]_]{0,20}(, ?)?){0,5}".prop_map(String::into_bytes),
        "(for=\"?[0-9a-zA-Z:._\\[\\]]{0,24}\"?;? ?,? ?){0,4}".prop_map(String::into_bytes),
        // anything a header value may hold (visible ASCII, space, tab, obs-text)
        proptest::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff], 0..80),
    ]
}

fn header_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(test_cases::FORWARDING_HEADER_NAMES)
}

fn rules() -> impl Strategy<Value = ClientIpConfig> {
    prop::sample::select(test_cases::property_rules())
}

fn untrusted_peer() -> impl Strategy<Value = SocketAddr> {
    prop::sample::select(test_cases::untrusted_peers())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn untrusted_peer_headers_never_change_the_location(
        rules in rules(),
        peer in untrusted_peer(),
        headers in proptest::collection::vec((header_name(), header_value()), 0..6),
    ) {
        let seen = actix_rt::System::new().block_on(async {
            let emitter = Emitter::builder(MemorySink::new()).no_rate_limit().start();
            let app = app!(AuditMiddleware::builder(emitter).client_ip(rules).build());
            let mut request = at::TestRequest::get().uri("/location").peer_addr(peer);
            for (name, value) in &headers {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    request = request.append_header((*name, value));
                }
            }
            let body = at::call_and_read_body(&app, request.to_request()).await;
            String::from_utf8(body.to_vec()).unwrap()
        });
        prop_assert_eq!(seen, peer.ip().to_canonical().to_string());
    }
}
