//! Scripted faults (before/after storage, drop, hang, latency, random share), stop/restart and
//! the HTTP fault API.

mod common;
use audit_testkit::{FaultRule, TestKit};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn status_fault_before_storage_stores_nothing() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .method("POST")
            .times(2)
            .respond_json(503, json!({"message": "down"}))
            .retry_after("1"),
    );
    let c = client();
    let b = body(kit.organization_id(), event("a.b"));
    for _ in 0..2 {
        let r = post_key(&c, &kit.url(), "/audit_logs/events", &b, "k").await;
        assert_eq!(r.headers().get("retry-after").unwrap(), "1");
        let (st, body) = parts(r).await;
        assert_eq!((st, body), (503, json!({"message": "down"})));
    }
    assert!(kit.all_events().is_empty());
    let (st, _) = parts(post_key(&c, &kit.url(), "/audit_logs/events", &b, "k").await).await;
    assert_eq!(st, 200);
    assert_eq!(kit.all_events().len(), 1);
    let statuses: Vec<u16> = kit.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_can_wait_for_an_answered_request() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(FaultRule::new("/audit_logs/events").times(1).respond(500));
    // Nothing answered yet: the wait ends empty at its timeout.
    let none = kit
        .wait_for_request(Duration::from_millis(50), |r| r.status == 500)
        .await;
    assert!(none.is_none());
    let c = client();
    let b = body(kit.organization_id(), event("a.b"));
    let url = kit.url();
    let sender = tokio::spawn(async move {
        for key in ["k1", "k2"] {
            post_key(&c, &url, "/audit_logs/events", &b, key).await;
        }
    });
    let failed = kit
        .wait_for_request(Duration::from_secs(10), |r| r.status == 500)
        .await
        .expect("the scripted 500 was answered");
    assert_eq!(
        (failed.method.as_str(), failed.path.as_str()),
        ("POST", "/audit_logs/events")
    );
    let ok = kit
        .wait_for_request(Duration::from_secs(10), |r| r.status == 200)
        .await
        .expect("the next request was stored");
    assert!(ok.seq > failed.seq);
    sender.await.unwrap();
}

#[tokio::test]
async fn fault_after_storage_makes_idempotency_matter() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .respond(500)
            .after_storage(),
    );
    let c = client();
    let b = body(kit.organization_id(), event("a.b"));
    let (st, _) = parts(post_key(&c, &kit.url(), "/audit_logs/events", &b, "k1").await).await;
    assert_eq!(st, 500);
    assert_eq!(kit.all_events().len(), 1, "stored although the client saw a 500");
    let (st, _) = parts(post_key(&c, &kit.url(), "/audit_logs/events", &b, "k1").await).await;
    assert_eq!(st, 200);
    assert_eq!(
        kit.all_events().len(),
        1,
        "the retry with the same key is deduplicated"
    );
}

#[tokio::test]
async fn dropped_connection_gets_no_response() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(FaultRule::new("/audit_logs/events").times(1).drop_connection());
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .drop_connection()
            .after_storage(),
    );
    let c = client();
    let b = body(kit.organization_id(), event("a.b"));
    let e = c
        .post(format!("{}/audit_logs/events", kit.url()))
        .bearer_auth(KEY)
        .json(&b)
        .send()
        .await;
    assert!(e.is_err(), "{e:?}");
    assert!(kit.all_events().is_empty());
    let e = c
        .post(format!("{}/audit_logs/events", kit.url()))
        .bearer_auth(KEY)
        .json(&b)
        .send()
        .await;
    assert!(e.is_err(), "{e:?}");
    assert_eq!(kit.all_events().len(), 1);
    assert_eq!(kit.requests()[0].status, 0);
    let (st, _) = parts(post(&c, &kit.url(), "/audit_logs/events", &b).await).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn hang_outlasts_the_client_timeout() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(FaultRule::new("/audit_logs/events").times(1).hang());
    let b = body(kit.organization_id(), event("a.b"));
    let t = Instant::now();
    let e = post_timing_out(&kit, Duration::from_millis(300), &b).await;
    assert!(e.is_timeout(), "{e:?}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(kit.all_events().is_empty());
    let (st, _) = parts(post(&client(), &kit.url(), "/audit_logs/events", &b).await).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn wait_idle_waits_for_requests_the_client_gave_up_on() {
    let kit = TestKit::builder().start().await.unwrap();
    assert!(kit.wait_idle(Duration::ZERO).await, "idle before any request");
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .times(1)
            .latency(Duration::from_millis(400)),
    );
    let b = body(kit.organization_id(), event("a.b"));
    let e = post_timing_out(&kit, Duration::from_millis(100), &b).await;
    assert!(e.is_timeout(), "{e:?}");
    // The client gave up; the server is still in the request's latency (or just dropped it).
    assert!(kit.wait_idle(Duration::from_secs(5)).await);
    let stored = kit.all_events().len();
    assert!(stored <= 1, "{stored}");
    // Nothing ends after the wait: what is stored now stays as it is.
    let (st, _) = parts(get(&client(), &kit.url(), "/audit_logs/actions").await).await;
    assert_eq!(st, 200);
    assert_eq!(kit.all_events().len(), stored);

    // A request that hangs keeps the server busy.
    kit.fault(FaultRule::new("/audit_logs/events").times(1).hang());
    let url = kit.url();
    let hung = tokio::spawn(async move {
        let _ = client()
            .post(format!("{url}/audit_logs/events"))
            .bearer_auth(KEY)
            .json(&b)
            .send()
            .await;
    });
    // Received: the POST before, the GET, then this one.
    wait_for_requests(&kit, 3).await;
    assert!(
        !kit.wait_idle(Duration::from_millis(200)).await,
        "a hung request is still handled"
    );
    hung.abort();
}

#[tokio::test]
async fn latency_then_normal_answer() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(
        FaultRule::new("/audit_logs/")
            .method("GET")
            .times(1)
            .latency(Duration::from_millis(250)),
    );
    let c = client();
    let t = Instant::now();
    let (st, _) = parts(get(&c, &kit.url(), "/audit_logs/actions").await).await;
    assert_eq!(st, 200);
    assert!(t.elapsed() >= Duration::from_millis(250));
    // The rule is used up.
    let listed: serde_json::Value = c
        .get(format!("{}/_testkit/faults", kit.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn random_share_is_deterministic_for_a_seed() {
    async fn run() -> Vec<u16> {
        let kit = TestKit::builder().start().await.unwrap();
        kit.fault(FaultRule::new("/audit_logs/actions").share(0.5, 7).respond(502));
        let c = client();
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(get(&c, &kit.url(), "/audit_logs/actions").await.status().as_u16());
        }
        out
    }
    let a = run().await;
    assert_eq!(a, run().await);
    let failed = a.iter().filter(|s| **s == 502).count();
    assert!((8..=32).contains(&failed), "{failed} of 40");
}

#[tokio::test]
async fn faults_over_http() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let r = c.post(format!("{}/_testkit/faults", kit.url()))
        .json(&json!({"path": "/audit_logs/events", "method": "POST", "times": 1,
                      "action": {"type": "respond", "status": 429, "body": {"message": "Too many requests.", "code": "rate_limit_exceeded"}, "retry_after": 1},
                      "when": "before"}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let listed: serde_json::Value = c
        .get(format!("{}/_testkit/faults", kit.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["times"], 1);
    let r = post(
        &c,
        &kit.url(),
        "/audit_logs/events",
        &body(kit.organization_id(), event("a.b")),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let bad = c
        .post(format!("{}/_testkit/faults", kit.url()))
        .json(&json!({"path": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    for action in [
        json!({"type": "drop"}),
        json!({"type": "hang", "ms": 100}),
        json!({"type": "latency", "ms": 1}),
    ] {
        let r = c
            .post(format!("{}/_testkit/faults", kit.url()))
            .json(&json!({"path": "/x", "probability": 0.5, "seed": 1, "action": action, "when": "after"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(
        c.delete(format!("{}/_testkit/faults", kit.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let listed: serde_json::Value = c
        .get(format!("{}/_testkit/faults", kit.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn stop_and_restart_on_the_same_port() {
    let kit = TestKit::builder().start().await.unwrap();
    let c = client();
    let url = kit.url();
    let b = body(kit.organization_id(), event("a.b"));
    assert_eq!(post(&c, &url, "/audit_logs/events", &b).await.status(), 200);
    kit.stop();
    assert!(!kit.is_listening());
    let e = c
        .post(format!("{url}/audit_logs/events"))
        .bearer_auth(KEY)
        .json(&b)
        .send()
        .await;
    assert!(e.is_err());
    assert!(std::net::TcpStream::connect(kit.addr()).is_err());
    kit.restart().unwrap();
    assert_eq!(kit.url(), url);
    assert_eq!(post(&c, &url, "/audit_logs/events", &b).await.status(), 200);
    assert_eq!(kit.all_events().len(), 2, "state survives stop/restart");
    kit.stop();
    kit.stop();
    kit.restart().unwrap();
    kit.restart().unwrap();
    // The old pooled connection was closed by stop(); a fresh client avoids racing its reuse.
    let c = client();
    assert_eq!(get(&c, &url, "/audit_logs/actions").await.status(), 200);
}

#[tokio::test]
async fn stop_closes_kept_alive_and_hung_connections() {
    let kit = TestKit::builder().start().await.unwrap();
    kit.fault(FaultRule::new("/audit_logs/events").times(1).hang());
    let c = reqwest::Client::new();
    let url = kit.url();
    let b = body(kit.organization_id(), event("a.b"));
    let hung = tokio::spawn({
        let c = c.clone();
        let url = url.clone();
        let b = b.clone();
        async move {
            c.post(format!("{url}/audit_logs/events"))
                .bearer_auth(KEY)
                .json(&b)
                .send()
                .await
        }
    });
    // The request is in, hanging.
    wait_for_requests(&kit, 1).await;
    assert!(!kit.wait_idle(Duration::ZERO).await);
    let t = Instant::now();
    kit.stop();
    let r = hung.await.unwrap();
    assert!(r.is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_organization_fault_refuses_one_organization_and_serves_the_others() {
    let (refused, served) = ("org_01EHWNCE74X7JSDV0X3SZ3KJNA", "org_01EHWNCE74X7JSDV0X3SZ3KJNB");
    let kit = TestKit::builder().org(refused).org(served).start().await.unwrap();
    kit.fault(
        FaultRule::new("/audit_logs/events")
            .method("POST")
            .organization(refused)
            .respond(403),
    );
    let c = client();
    for n in 0..6 {
        let (org, expected) = if n % 2 == 0 { (refused, 403) } else { (served, 200) };
        let b = body(org, event("a.b"));
        let r = post_key(&c, &kit.url(), "/audit_logs/events", &b, &format!("k{n}")).await;
        assert_eq!(r.status(), expected, "{org}");
    }
    assert!(kit.events(refused).is_empty());
    assert_eq!(kit.events(served).len(), 3);

    // The same rule over the HTTP fault API, for an organization given in the query.
    kit.clear_faults();
    let r = c
        .post(format!("{}/_testkit/faults", kit.url()))
        .json(&json!({"path": "/audit_logs/actions", "organization": served,
                      "action": {"type": "respond", "status": 503}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (org, refused_now) in [(served, true), (refused, false)] {
        let path = format!("/audit_logs/actions?organization_id={org}");
        let status = get(&c, &kit.url(), &path).await.status();
        assert_eq!(status == 503, refused_now, "{org}: {status}");
    }
}

/// Posts `b` as an event with a client that gives up after `timeout`, and returns its error.
async fn post_timing_out(kit: &TestKit, timeout: Duration, b: &serde_json::Value) -> reqwest::Error {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
        .post(format!("{}/audit_logs/events", kit.url()))
        .bearer_auth(KEY)
        .json(b)
        .send()
        .await
        .unwrap_err()
}

/// Waits (at most 5 s) until the kit has received `n` requests.
async fn wait_for_requests(kit: &TestKit, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while kit.requests().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} requests arrived",
            kit.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
