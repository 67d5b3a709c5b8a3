//! The attacks a testkit left running on a developer's machine must refuse, each as an HTTP
//! request over loopback: DNS rebinding, cross-site changes, use beyond loopback without the
//! control token, secrets on screen, unbounded exports, and a replaced stream's double delivery.
mod common;

use audit_testkit::stand_ins::StandIn;
use audit_testkit::{Destination, StreamState, TestKit};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn store(c: &reqwest::Client, kit: &TestKit, org: &str, action: &str) {
    let res = post(c, &kit.url(), "/audit_logs/events", &body(org, event(action))).await;
    assert_eq!(res.status(), 200);
}

fn port_of(kit: &TestKit) -> u16 {
    kit.addr().port()
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_with_how_to_allow_it() {
    let kit = TestKit::builder().org("org_R").start().await.unwrap();
    let c = client();
    store(&c, &kit, "org_R", "user.signed_in").await;
    let evil = format!("attacker.example:{}", port_of(&kit));
    let res = c
        .get(format!("{}/_testkit/events", kit.url()))
        .header("host", &evil)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["code"], "host_not_allowed");
    let msg = b["message"].as_str().unwrap();
    assert!(msg.contains(&format!("--allowed-host {evil}")), "{msg}");
    assert!(!msg.contains("user.signed_in"));
    let collector = StandIn::collector(200);
    let res = c
        .put(format!("{}/_testkit/streams/org_R", kit.url()))
        .header("host", &evil)
        .json(&json!({"type": "http", "url": collector.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(kit.stream_status("org_R").is_none(), "no stream was set");
    for path in ["/", "/viewer/events?org=org_R", "/audit_logs/actions"] {
        let res = c
            .get(format!("{}{path}", kit.url()))
            .bearer_auth(KEY)
            .header("host", &evil)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }
    // The names a developer or an SDK uses are answered.
    for host in [
        format!("127.0.0.1:{}", port_of(&kit)),
        format!("localhost:{}", port_of(&kit)),
        "localhost".to_owned(),
    ] {
        let res = c
            .get(format!("{}/_testkit/events", kit.url()))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{host}");
    }
    let via_localhost = format!("http://localhost:{}", port_of(&kit));
    let res = post(
        &c,
        &via_localhost,
        "/audit_logs/events",
        &body("org_R", event("via.localhost")),
    )
    .await;
    assert_eq!(res.status(), 200, "an SDK pointed at localhost");
    assert_eq!(kit.events("org_R").len(), 2);
}

#[tokio::test]
async fn allowed_hosts_are_answered() {
    let kit = TestKit::builder()
        .allowed_host("testkit:8787")
        .allowed_host("host.docker.internal")
        .start()
        .await
        .unwrap();
    let c = client();
    let status = |host: &'static str| {
        let c = c.clone();
        let url = format!("{}/_testkit/health", kit.url());
        async move {
            c.get(url)
                .header("host", host)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("testkit:8787").await, 200);
    assert_eq!(
        status("testkit:9999").await,
        403,
        "the port given is the port allowed"
    );
    assert_eq!(status("host.docker.internal:1234").await, 200);
    assert_eq!(status("evil.example").await, 403);
}

#[tokio::test]
async fn cross_site_requests_change_nothing() {
    let kit = TestKit::builder().org("org_X").start().await.unwrap();
    let c = client();
    store(&c, &kit, "org_X", "user.signed_in").await;
    let url = kit.url();
    // A page's "simple" request: text/plain and its own Origin.
    let res = c
        .post(format!("{url}/_testkit/reset"))
        .header("content-type", "text/plain")
        .header("origin", "https://attacker.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(kit.events("org_X").len(), 1, "nothing was wiped");
    // The same without Origin (an old browser or a page that hides it) still needs JSON.
    let res = c
        .post(format!("{url}/_testkit/reset"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let b: Value = res.json().await.unwrap();
    assert!(b["message"].as_str().unwrap().contains("application/json"));
    // A fault that would acknowledge events without storing them, as text/plain.
    let rule = r#"{"path":"/audit_logs/events","action":{"type":"respond","status":200}}"#;
    for (ct, origin, site) in [
        ("text/plain", None, None),
        ("application/x-www-form-urlencoded", None, None),
        ("application/json", Some("https://attacker.example"), None),
        ("application/json", Some("null"), None),
        ("application/json", None, Some("cross-site")),
        ("application/json", None, Some("same-site")),
    ] {
        let mut req = c
            .post(format!("{url}/_testkit/faults"))
            .header("content-type", ct)
            .body(rule);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        let st = req.send().await.unwrap().status().as_u16();
        assert!(st == 403 || st == 415, "{ct} {origin:?} {site:?}: {st}");
    }
    let (_, faults) = testkit_get(&c, &url, "/_testkit/faults").await;
    assert_eq!(faults["data"], json!([]), "no fault was installed");
    // A bodyless post from a page carries an Origin: refused.
    let res = c
        .post(format!("{url}/_testkit/reset"))
        .header("origin", "https://attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = c
        .delete(format!("{url}/_testkit/faults"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(kit.events("org_X").len(), 1);
    // Tests and scripts: JSON, or a bodyless request from no browser, work as before.
    let res = c
        .post(format!("{url}/_testkit/faults"))
        .header("content-type", "application/json")
        .header("origin", &url)
        .body(rule)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "same-origin JSON");
    let (st, _) = parts(c.post(format!("{url}/_testkit/reset")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert!(kit.events("org_X").is_empty());
}

#[tokio::test]
async fn the_control_token_guards_the_testkit_api_and_the_viewer() {
    let kit = TestKit::builder()
        .org("org_T")
        .control_token("ctl-s3cret-token")
        .export_delay(Duration::ZERO)
        .start()
        .await
        .unwrap();
    let c = client();
    let url = kit.url();
    store(&c, &kit, "org_T", "user.signed_in").await;
    let res = c.get(format!("{url}/_testkit/events")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let b: Value = res.json().await.unwrap();
    assert!(b["message"].as_str().unwrap().contains("--control-token"));
    let res = c
        .get(format!("{url}/_testkit/events"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .post(format!("{url}/_testkit/reset"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "an API key is not the control token");
    assert_eq!(kit.events("org_T").len(), 1);
    let res = c
        .get(format!("{url}/_testkit/events"))
        .bearer_auth("ctl-s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The viewer asks the browser for it (HTTP Basic, the token as password).
    let res = c.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let res = c
        .get(format!("{url}/viewer/events?org=org_T"))
        .basic_auth("dev", Some("ctl-s3cret-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Health, the WorkOS endpoints and export downloads keep their own rules.
    let (st, _) = testkit_get(&c, &url, "/_testkit/health").await;
    assert_eq!(st, 200);
    let res = post(
        &c,
        &url,
        "/audit_logs/exports",
        &json!({"organization_id": "org_T", "range_start": "2024-01-01T00:00:00Z", "range_end": "2024-12-31T00:00:00Z"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let export: Value = res.json().await.unwrap();
    let csv = get_text(&c, export["url"].as_str().unwrap()).await;
    assert!(csv.starts_with("action,"), "{csv}");
    // The in-process handle needs no token.
    assert_eq!(kit.events("org_T").len(), 1);
    kit.reset();
    assert!(kit.events("org_T").is_empty());
    assert!(
        kit.exposure_warning().is_none(),
        "loopback: nothing to warn about"
    );
}

#[tokio::test]
async fn listening_beyond_loopback_warns_about_what_is_exposed() {
    let open = TestKit::builder()
        .addr("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let w = open.exposure_warning().expect("a warning");
    assert!(w.contains("0.0.0.0:"), "{w}");
    assert!(
        w.contains("every stored event") && w.contains("--control-token"),
        "{w}"
    );
    assert!(w.contains("any sk_ key"), "{w}");
    let guarded = TestKit::builder()
        .addr("0.0.0.0:0".parse().unwrap())
        .control_token("t0k3n-value")
        .api_key("sk_test_only")
        .start()
        .await
        .unwrap();
    let w = guarded.exposure_warning().expect("a warning");
    assert!(
        w.contains("with the control token only") && !w.contains("t0k3n-value"),
        "{w}"
    );
    assert!(!format!("{:?}", TestKit::builder().control_token("t0k3n-value")).contains("t0k3n"));
    // Reached through loopback, it still answers (every IP literal is the bound address).
    let (st, _) = testkit_get(&client(), &guarded.url(), "/_testkit/health").await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn destination_secrets_are_never_shown() {
    let kit = TestKit::builder()
        .org("org_S")
        .stream_retries(1, Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let c = client();
    let url = kit.url();
    // A collector that keeps failing, so that errors are shown too.
    let collector = StandIn::collector(500);
    let port = collector.url().rsplit(':').next().unwrap().to_owned();
    let dest_url = format!("http://alice:pa55word@127.0.0.1:{port}/in?token=tok-qwerty-99&team=ops");
    let dest = Destination::http(&dest_url).header("Authorization", "Bearer hdr-secret-77");
    for shown in [dest.describe(), format!("{dest:?}")] {
        assert!(!shown.contains("pa55word") && !shown.contains("alice"), "{shown}");
        assert!(
            !shown.contains("tok-qwerty-99") && !shown.contains("hdr-secret-77"),
            "{shown}"
        );
        assert!(shown.contains("team=ops") && shown.contains("/in"), "{shown}");
    }
    let res = c
        .put(format!("{url}/_testkit/streams/org_S"))
        .json(
            &json!({"type": "http", "url": dest_url, "headers": [["Authorization", "Bearer hdr-secret-77"]]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("pa55word") && !text.contains("tok-qwerty-99"),
        "{text}"
    );
    store(&c, &kit, "org_S", "user.signed_in").await;
    kit.wait_for_stream("org_S", WAIT, |s| s.state == StreamState::Error)
        .await
        .expect("error");
    let listed = get_text(&c, &format!("{url}/_testkit/streams")).await;
    let page = get_text(&c, &format!("{url}/viewer/log-streams?org=org_S")).await;
    for shown in [&listed, &page] {
        assert!(shown.contains("HTTP 500"), "{shown}");
        for secret in ["pa55word", "tok-qwerty-99", "hdr-secret-77"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
    // Errors, and the viewer's redirect that carries them, do not repeat the URL.
    let bad = "ftp://bob:hunter22@files.example/x?key=k3y-abcdef";
    let res = c
        .put(format!("{url}/_testkit/streams/org_S"))
        .json(&json!({"type": "http", "url": bad}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("url: the scheme") && !text.contains("hunter22") && !text.contains("k3y-abcdef"),
        "{text}"
    );
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page_url = format!("{url}/viewer/log-streams?org=org_S");
    let token = form_token(&c, &page_url).await;
    for bad in [bad, "bob:hunter22@@ not a url k3y-abcdef"] {
        let res = no_redirects
            .post(format!("{url}/viewer/log-streams"))
            .form(&[
                ("form_token", token.as_str()),
                ("org", "org_S"),
                ("do", "set"),
                ("type", "http"),
                ("url", bad),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("error="), "{location}");
        assert!(
            !location.contains("hunter22") && !location.contains("k3y-abcdef"),
            "{location}"
        );
    }
}

#[tokio::test]
async fn exports_are_bounded_in_number_and_size_and_formulas_are_text() {
    let kit = TestKit::builder()
        .org("org_E")
        .export_delay(Duration::ZERO)
        .max_exports(2)
        .max_export_bytes(4_000)
        .start()
        .await
        .unwrap();
    let c = client();
    let url = kit.url();
    let mut e = event("user.signed_in");
    e["actor"]["name"] = json!("=HYPERLINK(\"http://attacker.example\",\"click\")");
    e["targets"][0]["name"] = json!("@SUM(1+1)");
    let res = post(&c, &url, "/audit_logs/events", &body("org_E", e)).await;
    assert_eq!(res.status(), 200);
    let range = json!({"organization_id": "org_E", "range_start": "2024-01-01T00:00:00Z", "range_end": "2024-12-31T00:00:00Z"});
    let mut exports = Vec::new();
    for _ in 0..3 {
        let res = post(&c, &url, "/audit_logs/exports", &range).await;
        assert_eq!(res.status(), 201);
        exports.push(res.json::<Value>().await.unwrap());
    }
    let first = exports[0]["id"].as_str().unwrap();
    let res = get(&c, &url, &format!("/audit_logs/exports/{first}")).await;
    assert_eq!(res.status(), 404, "the oldest export was pruned");
    let res = c.get(exports[0]["url"].as_str().unwrap()).send().await.unwrap();
    assert!(res.status().is_client_error(), "and so was its download");
    let csv = get_text(&c, exports[2]["url"].as_str().unwrap()).await;
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let row = r.records().next().unwrap().unwrap();
    assert_eq!(&row[4], "'=HYPERLINK(\"http://attacker.example\",\"click\")");
    assert_eq!(&row[11], "'@SUM(1+1)");
    // Past the size limit: a clear refusal, nothing stored.
    for i in 0..40 {
        let mut e = event("bulk.made");
        e["metadata"] = json!({"filler": "x".repeat(100), "i": i.to_string()});
        post(&c, &url, "/audit_logs/events", &body("org_E", e)).await;
    }
    let res = post(&c, &url, "/audit_logs/exports", &range).await;
    assert_eq!(res.status(), 400);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["code"], "export_too_large");
    assert!(b["message"].as_str().unwrap().contains("4000 bytes"), "{b}");
}

/// A one-connection HTTP destination: reads one request, waits for `answer`, then answers 200.
async fn held_destination() -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/held", listener.local_addr().unwrap());
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<()>();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = sock.read(&mut buf).await;
        let _ = got_tx.send(());
        let _ = answer_rx.await;
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .await;
    });
    (url, answer_tx, got_rx)
}

#[tokio::test]
async fn an_event_in_flight_when_its_stream_is_replaced_is_sent_once() {
    let kit = TestKit::builder().org("org_F").start().await.unwrap();
    let c = client();
    let (held, answer, got) = held_destination().await;
    kit.set_stream("org_F", Destination::http(held)).unwrap();
    store(&c, &kit, "org_F", "in.flight").await;
    got.await.unwrap();
    // Replaced while the first destination holds the event's request.
    let next = StandIn::collector(200);
    kit.set_stream("org_F", Destination::http(next.url())).unwrap();
    answer.send(()).unwrap();
    let st = kit
        .wait_for_stream("org_F", WAIT, |s| s.delivered == 1 && s.pending == 0)
        .await
        .expect("delivered");
    assert_eq!(st.recent.len(), 1);
    store(&c, &kit, "org_F", "after.replace").await;
    let got = next.wait_for(1, WAIT).await.expect("the next event");
    assert_eq!(
        got[0].json()["action"],
        "after.replace",
        "in.flight was not sent again"
    );
    kit.wait_for_stream("org_F", WAIT, |s| s.delivered == 2)
        .await
        .expect("both");
    assert_eq!(next.received().len(), 1);
}

#[tokio::test]
async fn a_huge_answer_is_read_only_in_part_and_the_cut_is_said() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/big", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let _ = sock.read(&mut buf).await;
        let total = 64 * 1024 * 1024;
        let head = format!("HTTP/1.1 500 Internal Server Error\r\ncontent-length: {total}\r\n\r\n");
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if sock.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let kit = TestKit::builder()
        .org("org_B")
        .stream_retries(1, Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    kit.set_stream("org_B", Destination::http(url)).unwrap();
    store(&client(), &kit, "org_B", "big.answer").await;
    let st = kit
        .wait_for_stream("org_B", WAIT, |s| s.state == StreamState::Error)
        .await
        .expect("given up");
    let detail = match &st.recent[0].outcome {
        audit_testkit::streams::DeliveryOutcome::GaveUp { error } => error.clone(),
        other => panic!("{other:?}"),
    };
    assert!(detail.starts_with("HTTP 500: xxx"), "{detail}");
    assert!(detail.contains("answer longer than 262144 bytes"), "{detail}");
    assert!(detail.len() < 1_000, "only the start is shown");
}
