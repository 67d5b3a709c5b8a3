//! Log streams: every stored event reaches the destination once, in its envelope; a destination
//! that keeps failing turns the stream to `error`; the `/_testkit/streams` API and the viewer.

mod common;
use audit_testkit::stand_ins::{DatadogKey, StandIn};
use audit_testkit::streams::{DatadogSite, DeliveryOutcome};
use audit_testkit::{Destination, StreamState, TestKit, TestKitBuilder};
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Stores one event for `org` through the API.
async fn store(c: &reqwest::Client, kit: &TestKit, org: &str, action: &str) {
    let res = post(c, &kit.url(), "/audit_logs/events", &body(org, event(action))).await;
    assert_eq!(res.status(), 200, "storing {action}");
}

async fn config_stream(c: &reqwest::Client, url: &str, org: &str) -> Value {
    let (st, cfg) = parts(get(c, url, &format!("/organizations/{org}/audit_log_configuration")).await).await;
    assert_eq!(st, 200);
    cfg["log_stream"].clone()
}

/// A testkit with the organization `org`, whose events stream to `stand_in` over HTTP.
fn streaming_to(org: &str, stand_in: &StandIn) -> TestKitBuilder {
    TestKit::builder()
        .org(org)
        .stream(org, Destination::http(stand_in.url()))
}

/// Stores an event `first` for `org` and waits until its delivery hangs at `stuck`.
async fn first_delivery_hangs(c: &reqwest::Client, kit: &TestKit, org: &str, stuck: &StandIn) {
    store(c, kit, org, "first").await;
    stuck
        .wait_for(1, WAIT)
        .await
        .expect("the first delivery is in flight");
}

#[tokio::test]
async fn every_stored_event_reaches_an_http_collector_once() {
    let collector = StandIn::collector(200);
    let kit = TestKit::builder()
        .org("org_S")
        .org("org_T")
        .stream(
            "org_S",
            Destination::http(format!("{}/collect", collector.url()))
                .header("Authorization", "Bearer collector-secret"),
        )
        .start()
        .await
        .unwrap();
    let c = client();
    let before = config_stream(&c, &kit.url(), "org_S").await;
    assert_eq!(before["type"], "GenericHttps");
    assert_eq!(before["state"], "active");
    assert_eq!(before["last_synced_at"], Value::Null, "nothing synced yet");
    for i in 0..5 {
        store(&c, &kit, "org_S", &format!("a.n{i}")).await;
    }
    // Another organization's events are not streamed.
    store(&c, &kit, "org_T", "other.org").await;
    let status = kit
        .wait_for_stream("org_S", WAIT, |s| s.delivered == 5)
        .await
        .expect("five deliveries");
    assert_eq!((status.failed, status.pending), (0, 0));
    let got = collector.received();
    assert_eq!(got.len(), 5, "each event once");
    let actions: Vec<String> = got
        .iter()
        .map(|r| r.json()["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        ["a.n0", "a.n1", "a.n2", "a.n3", "a.n4"],
        "in the order stored"
    );
    let ids: HashSet<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5);
    let first = &got[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/collect"));
    assert_eq!(first.header("authorization"), Some("Bearer collector-secret"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    let body = first.json();
    assert_eq!(body["organization_id"], "org_S");
    let mut stored = event("a.n0");
    stored["id"] = body["id"].clone();
    stored["organization_id"] = json!("org_S");
    assert_eq!(body, stored, "the stored event with its id and organization");
    let after = config_stream(&c, &kit.url(), "org_S").await;
    assert_eq!(after["state"], "active");
    assert!(after["last_synced_at"].is_string());
    assert!(after["id"].as_str().unwrap().starts_with("als_"));
    // The other organization has no stream.
    assert_eq!(config_stream(&c, &kit.url(), "org_T").await, Value::Null);
}

#[tokio::test]
async fn a_destination_that_keeps_failing_turns_the_stream_to_error_and_back() {
    let collector = StandIn::collector(503);
    let kit = TestKit::builder()
        .org("org_E")
        .stream("org_E", Destination::http(collector.url()))
        .stream_retries(3, Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let c = client();
    store(&c, &kit, "org_E", "will.fail").await;
    let status = kit
        .wait_for_stream("org_E", WAIT, |s| s.state == StreamState::Error)
        .await
        .expect("error state");
    assert_eq!((status.delivered, status.failed, status.pending), (0, 1, 0));
    assert_eq!(collector.received().len(), 3, "three attempts, then given up");
    let attempts: Vec<u32> = status.recent.iter().map(|d| d.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(config_stream(&c, &kit.url(), "org_E").await["state"], "error");
    // The testkit's answers never waited for the destination; the stream recovers on success.
    collector.set_status(200);
    store(&c, &kit, "org_E", "will.pass").await;
    let status = kit
        .wait_for_stream("org_E", WAIT, |s| s.delivered == 1)
        .await
        .expect("delivered after recovery");
    assert_eq!(status.state, StreamState::Active);
    assert_eq!(config_stream(&c, &kit.url(), "org_E").await["state"], "active");
}

#[tokio::test]
async fn a_hanging_destination_never_slows_the_api() {
    let stuck = StandIn::hanging();
    let kit = streaming_to("org_H", &stuck).start().await.unwrap();
    let c = client();
    first_delivery_hangs(&c, &kit, "org_H", &stuck).await;
    // While that delivery hangs, the API keeps answering and the events wait their turn.
    for i in 0..20 {
        store(&c, &kit, "org_H", &format!("next.n{i}")).await;
    }
    assert_eq!(kit.events("org_H").len(), 21);
    let status = kit.stream_status("org_H").unwrap();
    assert_eq!((status.delivered, status.pending), (0, 21));
    assert!(
        status.recent.is_empty(),
        "no attempt has ended: {:?}",
        status.recent
    );
    let got = stuck.received();
    assert_eq!(got.len(), 1, "one delivery at a time, in order");
    assert_eq!(got[0].status, 0, "the destination never answered");
    assert_eq!(got[0].json()["action"], "first");
}

#[tokio::test]
async fn the_queue_of_a_stuck_stream_is_bounded() {
    let stuck = StandIn::hanging();
    let kit = streaming_to("org_Q", &stuck)
        .stream_queue(3)
        .start()
        .await
        .unwrap();
    let c = client();
    first_delivery_hangs(&c, &kit, "org_Q", &stuck).await;
    for i in 0..5 {
        store(&c, &kit, "org_Q", &format!("more.n{i}")).await;
    }
    assert_eq!(kit.events("org_Q").len(), 6, "every event is stored");
    let status = kit.stream_status("org_Q").unwrap();
    assert_eq!((status.pending, status.failed, status.delivered), (3, 3, 0));
    let dropped: Vec<&str> = status
        .recent
        .iter()
        .filter(|d| d.outcome == DeliveryOutcome::Dropped)
        .map(|d| d.action.as_str())
        .collect();
    assert_eq!(dropped, ["more.n2", "more.n3", "more.n4"]);
}

#[tokio::test]
async fn splunk_and_datadog_receive_their_envelopes() {
    let splunk = StandIn::splunk("hec-token-1");
    let datadog = StandIn::datadog(vec![DatadogKey::new(DatadogSite::Eu1, "dd-key-1")]);
    let kit = TestKit::builder()
        .org("org_SP")
        .org("org_DD")
        .stream("org_SP", Destination::splunk(splunk.url(), "hec-token-1"))
        .stream(
            "org_DD",
            Destination::datadog(datadog.datadog_site_url(DatadogSite::Eu1), "dd-key-1"),
        )
        .start()
        .await
        .unwrap();
    let c = client();
    store(&c, &kit, "org_SP", "to.splunk").await;
    store(&c, &kit, "org_DD", "to.datadog").await;
    kit.wait_for_stream("org_SP", WAIT, |s| s.delivered == 1)
        .await
        .expect("splunk");
    kit.wait_for_stream("org_DD", WAIT, |s| s.delivered == 1)
        .await
        .expect("datadog");

    let hec = &splunk.received()[0];
    assert_eq!(hec.path, "/services/collector/event");
    assert_eq!(hec.header("authorization"), Some("Splunk hec-token-1"));
    assert_eq!(hec.status, 200);
    let b = hec.json();
    assert_eq!(b["sourcetype"], "workos");
    assert_eq!(b["event"]["action"], "to.splunk");
    assert_eq!(b["event"]["organization_id"], "org_SP");
    assert_eq!(config_stream(&c, &kit.url(), "org_SP").await["type"], "Splunk");

    let dd = &datadog.received()[0];
    assert_eq!(dd.path, "/eu1/api/v2/logs");
    assert_eq!(dd.header("dd-api-key"), Some("dd-key-1"));
    assert_eq!(dd.status, 202);
    let b = dd.json();
    assert_eq!(b["ddsource"], "workos");
    assert_eq!(b["message"]["action"], "to.datadog");
    assert_eq!(config_stream(&c, &kit.url(), "org_DD").await["type"], "Datadog");
}

#[tokio::test]
async fn the_testkit_api_configures_pauses_and_removes_streams_without_showing_secrets() {
    let splunk = StandIn::splunk("hec-secret-token");
    let kit = TestKit::builder().org("org_API").start().await.unwrap();
    let c = client();
    let url = kit.url();
    let put = |b: Value| {
        let c = c.clone();
        let url = url.clone();
        async move {
            parts(
                c.put(format!("{url}/_testkit/streams/org_API"))
                    .json(&b)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (st, b) = put(json!({"type": "splunk", "url": "not a url", "token": "x"})).await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("url"), "{b}");
    let (st, b) = put(json!({"type": "splunk", "url": splunk.url(), "token": ""})).await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("token"), "{b}");
    let (st, b) = put(json!({"type": "ftp", "url": splunk.url()})).await;
    assert_eq!((st, b["code"].as_str()), (400, Some("invalid_stream")));
    let (st, _) = parts(
        c.put(format!("{url}/_testkit/streams/org_nope"))
            .json(&json!({"type": "http", "url": splunk.url()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404);

    let (st, b) = put(json!({"type": "splunk", "url": splunk.url(), "token": "hec-secret-token"})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["state"], "active");
    store(&c, &kit, "org_API", "via.api").await;
    kit.wait_for_stream("org_API", WAIT, |s| s.delivered == 1)
        .await
        .expect("delivered");
    let text = get_text(&c, &format!("{url}/_testkit/streams")).await;
    assert!(!text.contains("hec-secret-token"), "{text}");
    let all: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(all["data"][0]["delivered"], 1);
    assert_eq!(all["data"][0]["recent"][0]["outcome"], "delivered");
    // A reset forgets the counters and recent deliveries, not the destination.
    kit.reset();
    let after_reset = kit.stream_status("org_API").expect("still configured");
    assert_eq!((after_reset.delivered, after_reset.recent.len()), (0, 0));
    assert_eq!(after_reset.last_synced_at, None);
    store(&c, &kit, "org_API", "after.reset").await;
    kit.wait_for_stream("org_API", WAIT, |s| s.delivered == 1)
        .await
        .expect("delivered after the reset");

    // Paused: reported inactive, nothing delivered.
    let (st, b) = put(json!({"state": "inactive"})).await;
    assert_eq!((st, b["state"].as_str()), (200, Some("inactive")));
    assert_eq!(config_stream(&c, &url, "org_API").await["state"], "inactive");
    store(&c, &kit, "org_API", "while.paused").await;
    let (_, one) = testkit_get(&c, &url, "/_testkit/streams/org_API").await;
    assert_eq!(
        (one["delivered"].as_u64(), one["pending"].as_u64()),
        (Some(1), Some(0))
    );
    let (st, _) = put(json!({"state": "active"})).await;
    assert_eq!(st, 200);
    assert_eq!(config_stream(&c, &url, "org_API").await["state"], "active");

    let (st, _) = testkit_delete(&c, &url, "/_testkit/streams/org_API").await;
    assert_eq!(st, 200);
    assert_eq!(config_stream(&c, &url, "org_API").await, Value::Null);
    let (st, _) = testkit_delete(&c, &url, "/_testkit/streams/org_API").await;
    assert_eq!(st, 404);
    assert_eq!(splunk.received().len(), 2, "nothing while paused");
}

#[tokio::test]
async fn the_viewer_shows_deliveries_and_refuses_cross_site_changes() {
    let collector = StandIn::collector(500);
    let kit = TestKit::builder()
        .org("org_V")
        .stream_retries(2, Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let c = client();
    let url = kit.url();
    let page_url = format!("{url}/viewer/log-streams?org=org_V");
    let token = form_token(&c, &page_url).await;
    let form = [
        ("form_token", token.as_str()),
        ("org", "org_V"),
        ("do", "set"),
        ("type", "http"),
        ("url", &collector.url()),
        ("header", "X-Token: view-secret"),
    ];
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .post(format!("{url}/viewer/log-streams"))
        .header("origin", "http://evil.example")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(kit.stream_status("org_V").is_none());
    let res = no_redirects
        .post(format!("{url}/viewer/log-streams"))
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "a browser saying cross-site is refused");
    assert!(kit.stream_status("org_V").is_none());
    let res = no_redirects
        .post(format!("{url}/viewer/log-streams"))
        .header("sec-fetch-site", "same-origin")
        .form(&form[1..])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "a form without the page's token is refused");
    assert!(kit.stream_status("org_V").is_none());
    let res = no_redirects
        .post(format!("{url}/viewer/log-streams"))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    store(&c, &kit, "org_V", "shown.failed").await;
    kit.wait_for_stream("org_V", WAIT, |s| s.state == StreamState::Error)
        .await
        .expect("error");
    let page = get_text(&c, &page_url).await;
    assert!(page.contains("<dd id=\"stream-type\">GenericHttps</dd>"));
    assert!(page.contains("<dd id=\"stream-state\">error</dd>"));
    assert!(page.contains("data-outcome=\"failed, gave up\""));
    assert!(page.contains("HTTP 500"));
    assert!(page.contains("X-Token"), "header names are shown");
    assert!(!page.contains("view-secret"), "header values are not");
    collector.set_status(200);
    store(&c, &kit, "org_V", "shown.delivered").await;
    kit.wait_for_stream("org_V", WAIT, |s| s.delivered == 1)
        .await
        .expect("delivered");
    let page = get_text(&c, &page_url).await;
    assert!(page.contains("<dd id=\"stream-state\">active</dd>"));
    assert!(page.contains("data-outcome=\"delivered\""));
    // Pause from the page.
    let res = no_redirects
        .post(format!("{url}/viewer/log-streams"))
        .form(&[("form_token", token.as_str()), ("org", "org_V"), ("do", "pause")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(kit.stream_status("org_V").unwrap().state, StreamState::Inactive);
}
