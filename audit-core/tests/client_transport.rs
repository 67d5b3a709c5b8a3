//! The transport: an application's own `reqwest::Client` shared through
//! `ClientBuilder::http_client`, and the settings that then come from it.

use std::time::Duration;

use audit_core::{Action, Actor, Client, Context, Error, Event, OrganizationId, RetryPolicy};
use audit_testkit::{FaultRule, TestKit};

fn event() -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new("user_01", "user"),
        Context::new("203.0.113.7"),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn requests_go_through_the_shared_client_with_its_headers() {
    let kit = TestKit::builder().start().await.unwrap();
    let mut defaults = reqwest::header::HeaderMap::new();
    defaults.insert("x-app-tenant", reqwest::header::HeaderValue::from_static("acme"));
    let http = reqwest::Client::builder()
        .user_agent("my-app/1.0")
        .default_headers(defaults)
        .build()
        .unwrap();
    let client = Client::builder()
        .api_key("sk_test_shared")
        .base_url(kit.url())
        .http_client(http)
        .build()
        .unwrap();
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    client.create_event(&org, &event()).await.unwrap();

    let requests = kit.requests();
    let post = requests
        .iter()
        .find(|r| r.path == "/audit_logs/events")
        .expect("the event was posted");
    assert_eq!(header(&post.headers, "user-agent"), Some("my-app/1.0"));
    assert_eq!(header(&post.headers, "x-app-tenant"), Some("acme"));
    assert_eq!(
        header(&post.headers, "authorization"),
        Some("Bearer sk_test_shared")
    );
    assert_eq!(kit.events(kit.organization_id()).len(), 1);
    assert!(format!("{client:?}").contains("sk_test_[redacted]"));
}

#[tokio::test]
async fn the_attempt_timeout_applies_to_a_shared_client_with_a_longer_one() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(FaultRule::new("/audit_logs/events").times(1).hang());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let client = Client::builder()
        .api_key("sk_test_shared")
        .base_url(kit.url())
        .http_client(http)
        .timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::disabled())
        .build()
        .unwrap();
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let err = client.create_event(&org, &event()).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
}

#[test]
fn settings_of_the_shared_client_cannot_be_given_twice() {
    let http = reqwest::Client::new();
    let err = Client::builder()
        .api_key("sk_test_shared")
        .http_client(http.clone())
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { setting: "connect_timeout", ref message } if message.contains("http_client")),
        "{err:?}"
    );
    let err = Client::builder()
        .api_key("sk_test_shared")
        .user_agent("x/1")
        .http_client(http)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                setting: "user_agent",
                ..
            }
        ),
        "{err:?}"
    );
}

/// Built without any TLS feature, a client of the crate's own cannot reach an `https` URL: the
/// builder says so instead of every request failing later.
#[cfg(not(any(
    feature = "rustls-tls-webpki-roots",
    feature = "rustls-tls-native-roots",
    feature = "native-tls"
)))]
#[test]
fn https_without_a_tls_feature_is_a_configuration_error() {
    let err = Client::builder().api_key("sk_test_x").build().unwrap_err();
    assert!(
        matches!(err, Error::Config { setting: "base_url", ref message } if message.contains("TLS feature")),
        "{err:?}"
    );
    // Loopback http and a shared client still work.
    Client::builder()
        .api_key("sk_test_x")
        .base_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    Client::builder()
        .api_key("sk_test_x")
        .http_client(reqwest::Client::new())
        .build()
        .unwrap();
}

/// Each TLS feature builds a client of its own for the real API's `https` URL.
#[cfg(any(
    feature = "rustls-tls-webpki-roots",
    feature = "rustls-tls-native-roots",
    feature = "native-tls"
))]
#[test]
fn a_tls_feature_builds_an_https_client() {
    let client = Client::builder().api_key("sk_test_x").build().unwrap();
    assert_eq!(client.base_url(), "https://api.workos.com");
}

/// A server on loopback that answers every request with `head` and then an endless chunked body
/// (until the client goes away); its address.
async fn endless_body(head: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buf).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                // 64 MiB at most, should the client read on.
                for _ in 0..1024 {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_body_longer_than_the_limit_is_cut_and_the_error_says_so() {
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let body = audit_core::CreateEvent::new(org, event());
    for (head, check) in [
        (
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n",
            "api",
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\n\r\n",
            "not workos",
        ),
    ] {
        let url = endless_body(head).await;
        let client = Client::builder()
            .api_key("sk_test_bounded")
            .base_url(&url)
            .retry_policy(RetryPolicy::disabled())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let error = client.send_event_once(&body, "key-1").await.unwrap_err();
        match (check, &error) {
            ("api", Error::Api(api)) => {
                assert_eq!(api.status, 500);
                assert!(
                    api.body.contains("[cut: the body is longer than 262144 bytes]"),
                    "{}",
                    api.body.len()
                );
            }
            ("not workos", Error::NotWorkOs { status: 200, .. }) => {}
            _ => panic!("{check}: {error:?}"),
        }
    }
}

#[tokio::test]
async fn a_refused_connection_says_so() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .api_key("sk_test_refused")
        .base_url(format!("http://127.0.0.1:{port}"))
        .retry_policy(RetryPolicy::disabled())
        .build()
        .unwrap();
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let error = client
        .send_event_once(&audit_core::CreateEvent::new(org, event()), "key-1")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    let text = error_chain(&error);
    assert!(text.contains("connection refused"), "{text}");
}

/// An error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}
