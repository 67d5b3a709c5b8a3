//! The CSV file of an export.
//!
//! Columns (UNCONFIRMED: WorkOS documents none; these are the header names a third-party parser
//! of real exports reads): `action, occurred_at, actor_id, actor_type, actor_name,
//! actor_metadata, context_location, context_user_agent, metadata`, then for N = 1 up to the
//! largest number of targets of any exported event: `target_id_N, target_type_N, target_name_N,
//! target_metadata_N`. Metadata columns hold compact JSON text; absent values are empty.
//! Rows are sorted by `occurred_at`, oldest first.

use serde_json::Value;

fn s(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn j(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The fixed columns before the per-target ones.
pub(crate) const FIXED_COLUMNS: [&str; 9] = [
    "action",
    "occurred_at",
    "actor_id",
    "actor_type",
    "actor_name",
    "actor_metadata",
    "context_location",
    "context_user_agent",
    "metadata",
];

/// Renders events as CSV.
pub(crate) fn render<'a>(events: impl Iterator<Item = &'a Value> + Clone) -> String {
    let max_targets = events
        .clone()
        .map(|e| e.get("targets").and_then(Value::as_array).map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = FIXED_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    for n in 1..=max_targets {
        for c in ["target_id", "target_type", "target_name", "target_metadata"] {
            header.push(format!("{c}_{n}"));
        }
    }
    let _ = w.write_record(&header);
    for e in events {
        let actor = e.get("actor");
        let ctx = e.get("context");
        let mut row = vec![
            s(e.get("action")),
            s(e.get("occurred_at")),
            s(actor.and_then(|a| a.get("id"))),
            s(actor.and_then(|a| a.get("type"))),
            s(actor.and_then(|a| a.get("name"))),
            j(actor.and_then(|a| a.get("metadata"))),
            s(ctx.and_then(|c| c.get("location"))),
            s(ctx.and_then(|c| c.get("user_agent"))),
            j(e.get("metadata")),
        ];
        let targets = e.get("targets").and_then(Value::as_array);
        for n in 0..max_targets {
            let t = targets.and_then(|t| t.get(n));
            row.push(s(t.and_then(|t| t.get("id"))));
            row.push(s(t.and_then(|t| t.get("type"))));
            row.push(s(t.and_then(|t| t.get("name"))));
            row.push(j(t.and_then(|t| t.get("metadata"))));
        }
        let _ = w.write_record(&row);
    }
    w.into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
