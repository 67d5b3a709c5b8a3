//! What the testkit records: stored events and received requests.

use serde::{Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

fn ser_ts<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::util::format_ts(*t))
}

/// An audit-log event accepted by `POST /audit_logs/events`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    /// The organization the event belongs to.
    pub organization_id: String,
    /// The `event` object exactly as it was received.
    pub event: Value,
    /// The `Idempotency-Key` header of the request that stored it, if any.
    pub idempotency_key: Option<String>,
    /// When the testkit stored it.
    #[serde(serialize_with = "ser_ts")]
    pub received_at: OffsetDateTime,
}

/// One request received on the WorkOS API surface (not `/_testkit/` or `/portal`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// Sequence number, starting at 1.
    pub seq: u64,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path without the query, e.g. `/audit_logs/events`.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers in the order received (names lower-case; values lossily decoded as UTF-8).
    pub headers: Vec<(String, String)>,
    /// Body, lossily decoded as UTF-8.
    pub body: String,
    /// The status answered; 0 while in flight or when no response was sent (dropped or hung).
    pub status: u16,
    /// The `X-Request-ID` the testkit assigned.
    pub request_id: String,
    /// When it arrived.
    #[serde(serialize_with = "ser_ts")]
    pub received_at: OffsetDateTime,
}

impl RecordedRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
