//! The event-list filters: read from the query string, applied like the export filters.
//!
//! Each filter maps onto one field of `POST /audit_logs/exports`, with the same meaning: `action`
//! → `actions`, `actor_id` → `actor_ids`, `actor_name` → `actor_names`, `target` → `targets`
//! (an event matches when any of its targets has that type), `from`/`to` → `range_start` /
//! `range_end` (inclusive, on `occurred_at`).

use crate::export_query::ExportQuery;
use crate::util::parse_ts;
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

    /// The export filters these filters mean (one value each), with the parsed time range.
    pub(crate) fn query(&self, range: (Option<OffsetDateTime>, Option<OffsetDateTime>)) -> ExportQuery {
        let one = |v: &str| (!v.is_empty()).then(|| vec![v.to_owned()]);
        ExportQuery {
            start: range.0,
            end: range.1,
            actions: one(&self.action),
            actor_names: one(&self.actor_name),
            actor_ids: one(&self.actor_id),
            targets: one(&self.target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::format_ts;

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
    fn the_list_filters_are_the_export_filters() {
        let f = Filters {
            org: "org_1".into(),
            action: "user.signed_in".into(),
            target: "team".into(),
            ..Filters::default()
        };
        let q = f.query((None, None));
        assert_eq!(q.actions, Some(vec!["user.signed_in".to_owned()]));
        assert_eq!(q.targets, Some(vec!["team".to_owned()]));
        assert!(q.actor_ids.is_none() && q.actor_names.is_none());
        let ev = serde_json::json!({"action": "user.signed_in", "targets": [{"type": "team"}]});
        assert!(q.matches(&ev), "no bound: no need for occurred_at");
        let from = parse_bound("2026-01-01T00:00");
        assert!(!f.query((from, None)).matches(&ev), "a bound needs occurred_at");
    }
}
