#![allow(dead_code, unreachable_pub, missing_docs)]

use reqwest::{Client, Response};
use serde_json::{Value, json};

pub const KEY: &str = "sk_test_key";

pub fn client() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
}

pub fn event(action: &str) -> Value {
    json!({
        "action": action,
        "occurred_at": "2024-01-02T03:04:05.678Z",
        "version": 1,
        "actor": {"id": "user_1", "type": "user", "name": "Jon Smith", "metadata": {"role": "admin"}},
        "targets": [{"id": "team_1", "type": "team", "name": "Engineering", "metadata": {"owner": "user_2"}}],
        "context": {"location": "203.0.113.7", "user_agent": "Mozilla/5.0"},
        "metadata": {"request_id": "req_123"}
    })
}

pub fn body(org: &str, event: Value) -> Value {
    json!({"organization_id": org, "event": event})
}

pub async fn post(c: &Client, url: &str, path: &str, body: &Value) -> Response {
    c.post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .expect("send")
}

pub async fn post_key(c: &Client, url: &str, path: &str, body: &Value, key: &str) -> Response {
    c.post(format!("{url}{path}"))
        .bearer_auth(KEY)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("send")
}

pub async fn get(c: &Client, url: &str, path: &str) -> Response {
    c.get(format!("{url}{path}"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("send")
}

pub async fn put(c: &Client, url: &str, path: &str, body: &Value) -> Response {
    c.put(format!("{url}{path}"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .expect("send")
}

/// GET of one of the testkit's own `/_testkit/...` paths (no API key): its [`parts`].
pub async fn testkit_get(c: &Client, url: &str, path: &str) -> (u16, Value) {
    parts(c.get(format!("{url}{path}")).send().await.expect("send")).await
}

/// DELETE of one of the testkit's own `/_testkit/...` paths (no API key): its [`parts`].
pub async fn testkit_delete(c: &Client, url: &str, path: &str) -> (u16, Value) {
    parts(c.delete(format!("{url}{path}")).send().await.expect("send")).await
}

/// The body of a plain GET of `url` (no API key): a download link, a viewer page.
pub async fn get_text(c: &Client, url: &str) -> String {
    c.get(url).send().await.expect("send").text().await.expect("body")
}

/// Status, X-Request-ID presence and JSON body.
pub async fn parts(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let rid = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(rid.starts_with("req_"), "missing X-Request-ID on {status}");
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The viewer's per-process form token, read from the page at `page_url` (a page with a form).
pub async fn form_token(c: &Client, page_url: &str) -> String {
    let page = get_text(c, page_url).await;
    let at = page
        .find("name=\"form_token\" value=\"")
        .unwrap_or_else(|| panic!("no form token on {page_url}"));
    let rest = &page[at + "name=\"form_token\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// A viewer form post with the form token of the page at `page_url`, as the page sends it.
pub async fn viewer_post(c: &Client, page_url: &str, action_url: &str, form: &[(&str, &str)]) -> Response {
    let token = form_token(c, page_url).await;
    let mut fields: Vec<(&str, &str)> = vec![("form_token", token.as_str())];
    fields.extend_from_slice(form);
    c.post(action_url).form(&fields).send().await.expect("send")
}
