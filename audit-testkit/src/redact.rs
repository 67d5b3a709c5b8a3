//! Secrets kept out of what the testkit serves over HTTP: `Authorization` values, anything that
//! looks like a WorkOS API key (`sk_...`), a destination's credentials, and the user info and
//! secret-looking query values of a destination's URL.

use crate::model::RecordedRequest;

/// What a redacted secret is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// Whether `c` can be part of an API key (`sk_test_...`, `sk_live_...`).
fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Replaces every `sk_...` word in `s` with `sk_[redacted]`. A word starts where the preceding
/// character cannot be part of a key, so `task_id` stays as it is.
pub(crate) fn redact_keys(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find("sk_") {
        let before = rest[..i].chars().next_back().or(prev);
        out.push_str(&rest[..i]);
        if before.is_some_and(key_char) {
            out.push_str("sk_");
            prev = Some('_');
            rest = &rest[i + 3..];
            continue;
        }
        let tail = &rest[i + 3..];
        let end = tail.find(|c: char| !key_char(c)).unwrap_or(tail.len());
        out.push_str("sk_");
        out.push_str(REDACTED);
        prev = Some(']');
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `text` with every known secret (of at least 4 characters) and every `sk_` word replaced.
pub(crate) fn redact_secrets(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, REDACTED);
    }
    redact_keys(&out)
}

/// Whether a query parameter's name says its value is a secret (`token`, `api_key`, `sig`...).
fn secret_name(name: &str) -> bool {
    const WORDS: [&str; 12] = [
        "token",
        "key",
        "secret",
        "pass",
        "pwd",
        "auth",
        "sig",
        "credential",
        "session",
        "code",
        "cookie",
        "jwt",
    ];
    let name = name.to_ascii_lowercase();
    WORDS.iter().any(|w| name.contains(w))
}

/// Whether a query value looks like a secret: an `sk_` key, or a long word mixing letters and
/// digits (a token).
fn secret_value(value: &str) -> bool {
    let word = value.len() >= 16
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~%=/".contains(c))
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_alphabetic());
    word || value.starts_with("sk_")
}

/// A URL fit to show: user info replaced by `[redacted]`, secret-looking query values (by name
/// or by look) replaced by `[redacted]`, no fragment. Text that is not a URL shows as
/// `(not a URL)`.
pub(crate) fn redact_url(raw: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(raw.trim()) else {
        return "(not a URL)".to_owned();
    };
    let had_user = !u.username().is_empty() || u.password().is_some();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_fragment(None);
    if let Some(q) = u.query().map(str::to_owned) {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if secret_name(k) || secret_value(v) => format!("{k}={REDACTED}"),
                None if secret_value(pair) => REDACTED.to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        u.set_query(Some(&pairs.join("&")));
    }
    let shown = u.to_string();
    if had_user {
        shown.replacen("://", &format!("://{REDACTED}@"), 1)
    } else {
        shown
    }
}

/// A header value with its credentials hidden: `Authorization: Bearer sk_...` keeps only the
/// scheme; every other header only loses its `sk_` words.
fn redact_header(name: &str, value: &str) -> String {
    if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("proxy-authorization") {
        match value.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} {REDACTED}"),
            None => REDACTED.to_owned(),
        }
    } else {
        redact_keys(value)
    }
}

impl RecordedRequest {
    /// A copy safe to serve: `Authorization` values and `sk_` words (in headers, query and
    /// body) replaced.
    pub(crate) fn redacted(&self) -> RecordedRequest {
        RecordedRequest {
            query: self.query.as_deref().map(redact_keys),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), redact_header(k, v)))
                .collect(),
            body: redact_keys(&self.body),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_replaced_wherever_they_stand() {
        assert_eq!(redact_keys("sk_test_abc"), "sk_[redacted]");
        assert_eq!(
            redact_keys("{\"key\":\"sk_live_A1-b\",\"task_id\":\"x\"}"),
            "{\"key\":\"sk_[redacted]\",\"task_id\":\"x\"}"
        );
        assert_eq!(redact_keys("a=1&k=sk_x&b=2"), "a=1&k=sk_[redacted]&b=2");
        assert_eq!(redact_keys("ask_me mask_sk_1"), "ask_me mask_sk_1");
        assert_eq!(redact_keys("é sk_é"), "é sk_[redacted]é");
        assert_eq!(redact_keys("sk_"), "sk_[redacted]");
    }

    #[test]
    fn urls_lose_user_info_and_secret_query_values() {
        assert_eq!(
            redact_url("https://user:hunter2@collector.example/in?token=abc&team=ops#frag"),
            "https://[redacted]@collector.example/in?token=[redacted]&team=ops"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/hook?x=AKIA1234567890ABCDEF&page=2&API_KEY=1&sig"),
            "http://127.0.0.1:9000/hook?x=[redacted]&page=2&API_KEY=[redacted]&sig"
        );
        assert_eq!(redact_url("https://splunk:8088"), "https://splunk:8088/");
        assert_eq!(redact_url("not a url with sk_live_1"), "(not a URL)");
        assert_eq!(
            redact_secrets("echo tok-123456 and sk_test_9 ab", &["tok-123456", "ab"]),
            "echo [redacted] and sk_[redacted] ab"
        );
    }

    #[test]
    fn authorization_keeps_only_its_scheme() {
        assert_eq!(
            redact_header("Authorization", "Bearer sk_test_1"),
            "Bearer [redacted]"
        );
        assert_eq!(redact_header("authorization", "opaque"), "[redacted]");
        assert_eq!(redact_header("x-api-key", "sk_test_1"), "sk_[redacted]");
        assert_eq!(redact_header("accept", "application/json"), "application/json");
    }
}
