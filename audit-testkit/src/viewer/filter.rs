//! The event-list filters: read from the query string, applied like the export filters.
//!
//! Each filter maps onto one field of `POST /audit_logs/exports`, with the same meaning: `action`
//! → `actions`, `actor_id` → `actor_ids`, `actor_name` → `actor_names`, `target` → `targets`
//! (an event matches when any of its targets has that type), `from`/`to` → `range_start` /
//! `range_end` (inclusive, on `occurred_at`).

use crate::util::{format_ts, parse_ts};
use serde_json::{Value, json};
use std::collections::HashMap;
use time::OffsetDateTime;

/// The filters of one list or export request. Empty strings mean "no filter".
#[derive(Clone, Debug, Default)]
pub(crate) struct Filters {
    pub(crate) org: String,
    pub(crate) action: String,
    pub(crate) actor_id: String,
    pub(crate) actor_name: String,
    pub(crate) target: String,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// The earliest and latest instants an export range can name when the viewer has no bound.
const OPEN_START: &str = "1970-01-01T00:00:00.000Z";
const OPEN_END: &str = "9999-12-31T23:59:59.999Z";

/// Reads a time bound: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` / `YYYY-MM-DD HH:MM[:SS]` taken as UTC.
pub(crate) fn parse_bound(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim().replacen(' ', "T", 1);
    parse_ts(&s)
        .or_else(|| parse_ts(&format!("{s}Z")))
        .or_else(|| parse_ts(&format!("{s}:00Z")))
}

impl Filters {
    /// Reads the filters from a raw query string.
    pub(crate) fn from_query(q: &HashMap<String, String>) -> Filters {
        let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        Filters {
            org: get("org"),
            action: get("action"),
            actor_id: get("actor_id"),
            actor_name: get("actor_name"),
            target: get("target"),
            from: get("from"),
            to: get("to"),
        }
    }

    /// The query pairs that reproduce these filters (the organization included).
    pub(crate) fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("org", self.org.as_str()),
            ("action", self.action.as_str()),
            ("actor_id", self.actor_id.as_str()),
            ("actor_name", self.actor_name.as_str()),
            ("target", self.target.as_str()),
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
        ]
    }

    /// Whether any filter besides the organization is set.
    pub(crate) fn any(&self) -> bool {
        self.pairs().iter().skip(1).any(|(_, v)| !v.is_empty())
    }

    /// The parsed time range, or a message naming the bound that could not be read.
    pub(crate) fn range(&self) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), String> {
        let read = |name: &str, v: &str| {
            if v.is_empty() {
                Ok(None)
            } else {
                parse_bound(v).map(Some).ok_or_else(|| {
                    format!("'{name}' is not a time: use RFC 3339 (2026-02-02T16:35:39Z) or 2026-02-02T16:35 (UTC).")
                })
            }
        };
        let from = read("from", &self.from)?;
        let to = read("to", &self.to)?;
        if let (Some(a), Some(b)) = (from, to)
            && a > b
        {
            return Err("'from' is after 'to'.".to_owned());
        }
        Ok((from, to))
    }

    /// Whether a stored event passes the filters (the organization is checked by the caller).
    pub(crate) fn matches(
        &self,
        ev: &Value,
        range: (Option<OffsetDateTime>, Option<OffsetDateTime>),
    ) -> bool {
        fn s(v: Option<&Value>) -> &str {
            v.and_then(Value::as_str).unwrap_or("")
        }
        if !self.action.is_empty() && s(ev.get("action")) != self.action {
            return false;
        }
        let actor = ev.get("actor");
        if !self.actor_id.is_empty() && s(actor.and_then(|a| a.get("id"))) != self.actor_id {
            return false;
        }
        if !self.actor_name.is_empty() && s(actor.and_then(|a| a.get("name"))) != self.actor_name {
            return false;
        }
        if !self.target.is_empty() {
            let any = ev
                .get("targets")
                .and_then(Value::as_array)
                .is_some_and(|ts| ts.iter().any(|t| s(t.get("type")) == self.target));
            if !any {
                return false;
            }
        }
        if range.0.is_some() || range.1.is_some() {
            let Some(at) = parse_ts(s(ev.get("occurred_at"))) else {
                return false;
            };
            if range.0.is_some_and(|a| at < a) || range.1.is_some_and(|b| at > b) {
                return false;
            }
        }
        true
    }

    /// The `POST /audit_logs/exports` body for these filters.
    pub(crate) fn export_body(&self, range: (Option<OffsetDateTime>, Option<OffsetDateTime>)) -> Value {
        let mut body = json!({
            "organization_id": self.org,
            "range_start": range.0.map_or_else(|| OPEN_START.to_owned(), format_ts),
            "range_end": range.1.map_or_else(|| OPEN_END.to_owned(), format_ts),
        });
        for (field, v) in [
            ("actions", &self.action),
            ("actor_ids", &self.actor_id),
            ("actor_names", &self.actor_name),
            ("targets", &self.target),
        ] {
            if !v.is_empty() {
                body[field] = json!([v]);
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_accept_rfc3339_and_browser_forms() {
        let a = parse_bound("2026-02-02T16:35:39Z").map(format_ts);
        assert_eq!(a.as_deref(), Some("2026-02-02T16:35:39.000Z"));
        let b = parse_bound("2026-02-02T16:35").map(format_ts);
        assert_eq!(b.as_deref(), Some("2026-02-02T16:35:00.000Z"));
        let c = parse_bound("2026-02-02 16:35:10").map(format_ts);
        assert_eq!(c.as_deref(), Some("2026-02-02T16:35:10.000Z"));
        assert!(parse_bound("yesterday").is_none());
    }

    #[test]
    fn export_body_carries_the_same_filters() {
        let f = Filters {
            org: "org_1".into(),
            action: "user.signed_in".into(),
            target: "team".into(),
            ..Filters::default()
        };
        let body = f.export_body((None, None));
        assert_eq!(body["actions"], json!(["user.signed_in"]));
        assert_eq!(body["targets"], json!(["team"]));
        assert!(body.get("actor_ids").is_none());
        assert_eq!(body["range_start"], OPEN_START);
        assert!(parse_ts(OPEN_END).is_some());
    }
}
