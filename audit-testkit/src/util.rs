//! Small helpers: timestamps, ids and JSON error responses.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use rand::Rng;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 UTC with milliseconds and `Z`, as WorkOS writes timestamps.
pub(crate) fn format_ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 timestamp.
pub(crate) fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID-like identifier: 10 characters of millisecond time and 16 random ones.
pub(crate) fn ulid() -> String {
    let ms = (now().unix_timestamp_nanos() / 1_000_000) as u64;
    let mut out = String::with_capacity(26);
    for i in (0..10).rev() {
        out.push(CROCKFORD[((ms >> (i * 5)) & 31) as usize] as char);
    }
    let mut rng = rand::rng();
    for _ in 0..16 {
        out.push(CROCKFORD[rng.random_range(0..32)] as char);
    }
    out
}

/// A fresh `X-Request-ID` value.
pub(crate) fn request_id() -> String {
    // 128 random bits from the thread-local generator: no getrandom syscall per request.
    format!("req_{:032x}", rand::rng().random::<u128>())
}

/// A random URL-safe token.
pub(crate) fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    json_bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON response from already-serialized bytes.
pub(crate) fn json_bytes_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// `{"message": ...}` with the given status.
pub(crate) fn message(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json_response(status, &serde_json::json!({ "message": msg.into() }))
}

/// The 422 `Validation failed.` body with `{code, field}` errors.
pub(crate) fn validation_failed(errors: Vec<(String, String)>) -> Response<Body> {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(code, field)| serde_json::json!({ "code": code, "field": field }))
        .collect();
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({ "message": "Validation failed.", "errors": errors }),
    )
}

/// The 404 body for an unknown organization.
pub(crate) fn org_not_found(org: &str) -> Response<Body> {
    message(StatusCode::NOT_FOUND, format!("Organization not found: '{org}'."))
}
