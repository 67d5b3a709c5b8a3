//! Secrets kept out of what the testkit serves over HTTP: `Authorization` values and anything
//! that looks like a WorkOS API key (`sk_...`).

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
