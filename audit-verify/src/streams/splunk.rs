//! `stream_splunk`: the HEC health endpoint, then one event with the token.
//!
//! HEC's answers carry a numeric `code` (Splunk's "HTTP Event Collector error codes"): 0 success,
//! 1 token disabled, 2 token required, 3 invalid authorization, 4 invalid token, 5 no data,
//! 6 invalid data format, 7 incorrect index, 8 internal error, 9 server busy, 12 event field
//! required, 13 event field blank, 17 healthy, 18-20 unhealthy.

use super::wire::{self, Destination};
use serde_json::Value;

use super::{Body, Probe, Sent, display_url, sample_event};
use crate::report::{CheckId, CheckResult};

const ID: CheckId = CheckId::StreamSplunk;

const ENABLE_HEC: &str = "; a Splunk instance listens on the HEC port (8088 by default) only when HEC is enabled: Settings → Data inputs → HTTP Event Collector → Global Settings → All Tokens: Enabled";

fn code(body: &Body) -> Option<i64> {
    serde_json::from_str::<Value>(body.as_str())
        .ok()?
        .get("code")?
        .as_i64()
}

fn text(body: &Body) -> String {
    serde_json::from_str::<Value>(body.as_str())
        .ok()
        .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.excerpt())
}

pub(super) async fn probe(p: &Probe, dest: &Destination) -> CheckResult {
    let url = dest.url();
    let health = wire::splunk_health_url(url);
    let shown = display_url(url);
    match p.send(reqwest::Method::GET, &health, &[], None).await {
        Sent::Failed(t) => return p.transport_failure(ID, &health, &t, ENABLE_HEC),
        Sent::Answer { status: 200, .. } => {}
        Sent::Answer { status: 404, .. } => {
            return CheckResult::fail(
                ID,
                format!(
                    "{} answered 404: no HTTP Event Collector at {shown}",
                    display_url(&health)
                ),
                "use the HEC URL (the HEC port, 8088 by default, e.g. https://splunk.example.com:8088), not Splunk Web's",
            );
        }
        Sent::Answer { status, body, .. } => {
            return CheckResult::fail(
                ID,
                format!("HEC health check answered {status}: {}", text(&body)),
                "HEC is unhealthy (queues full or acknowledgement unavailable): check the indexers and the HEC settings in Splunk",
            );
        }
    }
    let out = dest.outgoing(&sample_event());
    let (status, body) = match p
        .send(reqwest::Method::POST, &out.url, &out.headers, Some(out.body))
        .await
    {
        Sent::Answer { status, body, .. } => (status, body),
        Sent::Failed(t) => return p.transport_failure(ID, &out.url, &t, ENABLE_HEC),
    };
    let hec = text(&body);
    let new_token = "create a token in Settings → Data inputs → HTTP Event Collector and paste it into the WorkOS stream (and here with --stream-splunk-token)";
    match (code(&body), status) {
        (Some(0), _) | (None, 200) => CheckResult::pass(
            ID,
            format!("HEC at {shown} is healthy and accepted a sample event (sourcetype workos)"),
        ),
        (Some(1), _) => CheckResult::fail(
            ID,
            format!("HEC refused the token: {hec} (code 1)"),
            format!("the token is disabled: enable it, or {new_token}"),
        ),
        (Some(4), _) => CheckResult::fail(
            ID,
            format!("HEC refused the token: {hec} (code 4)"),
            format!(
                "the token is not known to this Splunk (expired, deleted, or from another instance): {new_token}"
            ),
        ),
        (Some(2 | 3), _) | (None, 401 | 403) => CheckResult::fail(
            ID,
            format!("HEC refused the authorization: {hec} ({status})"),
            format!("WorkOS sends `Authorization: Splunk <token>`; {new_token}"),
        ),
        (Some(5 | 6 | 12 | 13), _) => CheckResult::fail(
            ID,
            format!("HEC refused the sample event: {hec}"),
            "the URL must be HEC's JSON event endpoint (/services/collector or /services/collector/event, not /raw), and the token must accept JSON events",
        ),
        (Some(7), _) => CheckResult::fail(
            ID,
            format!("HEC refused the index: {hec} (code 7)"),
            "give the token a default index it may write to (the event names none)",
        ),
        (Some(8 | 9), _) | (None, 500..=599) => CheckResult::fail(
            ID,
            format!("HEC failed: {hec} ({status})"),
            "Splunk is overloaded or failing: check splunkd.log and the indexers' health",
        ),
        _ => CheckResult::fail(
            ID,
            format!("HEC answered {status}: {hec}"),
            "check the HEC URL and token, and splunkd.log for the refused request",
        ),
    }
}
