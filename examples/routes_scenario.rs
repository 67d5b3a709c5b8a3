//! The scripted requests that both example apps' route tests send over loopback HTTP, and the
//! events the testkit must have stored afterwards: one script, so that the two apps are held to
//! exactly the same behaviour. Included by `examples/{axum,actix}/tests/routes.rs`.

use audit_testkit::TestKit;
use serde_json::{Value, json};

/// Requests the outcome policy refuses: the failed sign-in, the second delete of a team and the
/// blank team name.
pub(crate) const REFUSED_BY_OUTCOME: u64 = 3;
/// Events the script produces.
pub(crate) const EVENTS: u64 = 4;

/// Sends every route once (and a few failures) to the app at `base`; returns the created team's
/// id.
pub(crate) async fn send_requests(base: &str) -> String {
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
    let delete = || {
        http.delete(format!("{base}/teams/{team_id}"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), 204);
    assert_eq!(delete().await.unwrap().status(), 404);
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
    team_id
}

/// The events the testkit stored for the script, checked one by one.
pub(crate) fn check_events(kit: &TestKit, team_id: &str) {
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
    assert_eq!(actions, request_order);
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
}
