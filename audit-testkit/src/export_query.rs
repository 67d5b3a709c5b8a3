//! Which events an export holds, and creating one: shared by `POST /audit_logs/exports` and the
//! viewer (whose list filters are the same filters).

use crate::state::{ExportRec, Shared, lock};
use crate::util::{format_ts, now, parse_ts, ulid};
use serde_json::Value;
use time::OffsetDateTime;

/// The filters of an export. `None` means "no filter"; a list matches any of its values.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExportQuery {
    /// Inclusive bounds on `occurred_at`; with either set, an event needs a readable one.
    pub(crate) start: Option<OffsetDateTime>,
    pub(crate) end: Option<OffsetDateTime>,
    pub(crate) actions: Option<Vec<String>>,
    pub(crate) actor_names: Option<Vec<String>>,
    pub(crate) actor_ids: Option<Vec<String>>,
    /// Target types: an event matches when any of its targets has one of them.
    pub(crate) targets: Option<Vec<String>>,
}

fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

fn listed(list: &Option<Vec<String>>, v: &str) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|x| x == v))
}

impl ExportQuery {
    /// The `occurred_at` of an event that passes the filters (`None` when unreadable); `Err`
    /// when it does not pass.
    pub(crate) fn check(&self, ev: &Value) -> Result<Option<OffsetDateTime>, ()> {
        let actor = ev.get("actor");
        let pass = listed(&self.actions, text(ev.get("action")))
            && listed(&self.actor_names, text(actor.and_then(|a| a.get("name"))))
            && listed(&self.actor_ids, text(actor.and_then(|a| a.get("id"))))
            && self.targets.as_ref().is_none_or(|tt| {
                ev.get("targets")
                    .and_then(Value::as_array)
                    .is_some_and(|ts| ts.iter().any(|t| tt.iter().any(|x| x == text(t.get("type")))))
            });
        if !pass {
            return Err(());
        }
        let at = parse_ts(text(ev.get("occurred_at")));
        if self.start.is_some() || self.end.is_some() {
            let Some(at) = at else { return Err(()) };
            if self.start.is_some_and(|a| at < a) || self.end.is_some_and(|b| at > b) {
                return Err(());
            }
        }
        Ok(at)
    }

    /// Whether an event passes the filters.
    pub(crate) fn matches(&self, ev: &Value) -> bool {
        self.check(ev).is_ok()
    }
}

/// Why an export could not be created.
pub(crate) enum NoExport {
    /// No event of the organization matches (WorkOS answers 400 "No audit log events found").
    NoEvents,
    /// The CSV would pass the configured size (the limit, in bytes).
    TooLarge(usize),
}

impl NoExport {
    /// The message of a refused export that was too large.
    pub(crate) fn too_large_message(limit: usize) -> String {
        format!(
            "The export would be larger than audit-testkit's limit of {limit} bytes of CSV \
             (TestKitBuilder::max_export_bytes, --max-export-bytes): narrow its date range or filters."
        )
    }
}

impl Shared {
    /// Creates an export of the organization's matching events (oldest first by `occurred_at`),
    /// stores it (and writes it to the data file) and returns it. When more than
    /// `max_exports` are kept, the oldest go (with their download tokens).
    pub(crate) fn create_export(&self, org: &str, q: &ExportQuery) -> Result<ExportRec, NoExport> {
        let csv = {
            let data = lock(&self.data);
            let mut matched: Vec<(Option<OffsetDateTime>, &Value)> = data
                .events
                .iter()
                .filter(|e| e.organization_id == org)
                .filter_map(|e| q.check(&e.event).ok().map(|at| (at, &e.event)))
                .collect();
            if matched.is_empty() {
                return Err(NoExport::NoEvents);
            }
            matched.sort_by_key(|(at, _)| *at);
            crate::csv_export::render(matched.iter().map(|(_, e)| *e), self.config.max_export_bytes)
                .map_err(|e| NoExport::TooLarge(e.0))?
        };
        let created = now();
        let rec = ExportRec {
            id: format!("audit_log_export_{}", ulid()),
            organization_id: org.to_owned(),
            created_at: format_ts(created),
            ready_at: format_ts(created + self.config.export_delay),
            csv,
        };
        #[cfg(feature = "sqlite")]
        if let Ok(text) = serde_json::to_string(&rec) {
            self.with_db(|db| db.upsert_export(&rec.id, &text));
        }
        let mut data = lock(&self.data);
        data.exports.insert(rec.id.clone(), rec.clone());
        data.export_order.push_back(rec.id.clone());
        while data.export_order.len() > self.config.max_exports.max(1) {
            let Some(old) = data.export_order.pop_front() else {
                break;
            };
            data.exports.remove(&old);
            data.export_tokens.retain(|_, (id, _)| *id != old);
            #[cfg(feature = "sqlite")]
            self.with_db(|db| db.delete_export(&old));
        }
        Ok(rec)
    }
}
