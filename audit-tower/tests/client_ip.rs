//! The client-IP rules through the layer: audit-core's shared table of cases, and a property test
//! that no header content from an untrusted peer changes the location.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Actor, OrganizationId};
use audit_test_cases::client_ip::{self as test_cases, CASES};
use audit_tower::{AuditCtx, AuditLayer, action};
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

#[action("session.created")]
async fn audited() -> StatusCode {
    StatusCode::OK
}

/// Answers the location the layer captured for this request.
async fn location(audit: AuditCtx) -> String {
    audit.info().map(|i| i.location.clone()).unwrap_or_default()
}

fn app(layer: AuditLayer, peer: SocketAddr) -> Router {
    Router::new()
        .route("/audited", post(audited))
        .route("/location", get(location))
        .layer(layer)
        .layer(Extension(Actor::new("user_1", "user")))
        .layer(Extension(OrganizationId::new("org_1").unwrap()))
        .layer(MockConnectInfo(peer))
}

#[tokio::test]
async fn the_shared_table_through_the_layer() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    for (i, case) in CASES.iter().enumerate() {
        let layer = AuditLayer::builder(emitter.clone())
            .client_ip(case.config().unwrap())
            .build();
        let app = app(layer, case.peer_addr().unwrap());
        let mut request = Request::builder().method("POST").uri("/audited");
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
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

#[tokio::test]
async fn trusted_proxies_builder_reads_x_forwarded_for_from_the_right() {
    let sink = MemorySink::new();
    let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
    let layer = AuditLayer::builder(emitter.clone())
        .trusted_proxies(["10.0.0.0/8"])
        .unwrap()
        .build();
    let app = app(layer, "10.1.2.3:443".parse().unwrap());
    let request = Request::builder()
        .uri("/location")
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.23, 10.9.9.9")
        .body(Body::empty())
        .unwrap();
    let body = app
        .oneshot(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"198.51.100.23");
    assert!(
        AuditLayer::builder(emitter)
            .trusted_proxies(["10.0.0/8"])
            .is_err()
    );
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let location = rt.block_on(async {
            let emitter = Emitter::builder(MemorySink::new()).no_rate_limit().start();
            let app = app(AuditLayer::builder(emitter).client_ip(rules).build(), peer);
            let mut request = Request::builder().uri("/location").body(Body::empty()).unwrap();
            for (name, value) in &headers {
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    request.headers_mut().append(*name, v);
                }
            }
            let body = app.oneshot(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        });
        prop_assert_eq!(location, peer.ip().to_canonical().to_string());
    }
}
