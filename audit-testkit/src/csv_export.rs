//! The CSV file of an export.
//!
//! Columns (UNCONFIRMED: WorkOS documents none; these are the header names a third-party parser
//! of real exports reads): `action, occurred_at, actor_id, actor_type, actor_name,
//! actor_metadata, context_location, context_user_agent, metadata`, then for N = 1 up to the
//! largest number of targets of any exported event: `target_id_N, target_type_N, target_name_N,
//! target_metadata_N`. Metadata columns hold compact JSON text; absent values are empty.
//! Rows are sorted by `occurred_at`, oldest first.
//!
//! # Security
//!
//! A cell that begins with `=`, `+`, `-` or `@` is what a spreadsheet runs as a formula (CSV
//! injection): such a cell is written with a leading `'`, as spreadsheet-safe CSV writers do, so
//! that it shows as text. The rendering stops with [`TooLarge`] once the CSV passes the
//! configured size.

use serde_json::Value;

/// The characters that make a spreadsheet read a cell as a formula.
const FORMULA_START: [char; 4] = ['=', '+', '-', '@'];

/// A cell's text, with a `'` before a leading formula character.
fn safe(text: String) -> String {
    if text.starts_with(FORMULA_START) {
        format!("'{text}")
    } else {
        text
    }
}

fn s(v: Option<&Value>) -> String {
    safe(match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    })
}

fn j(v: Option<&Value>) -> String {
    safe(match v {
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    })
}

/// The CSV would be larger than the limit, in bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) usize);

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

/// Renders events as CSV of at most `max_bytes` bytes.
pub(crate) fn render<'a>(
    events: impl Iterator<Item = &'a Value> + Clone,
    max_bytes: usize,
) -> Result<String, TooLarge> {
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
        // What the writer handed on so far (its buffer of a few KB not counted yet).
        if w.get_ref().len() > max_bytes {
            return Err(TooLarge(max_bytes));
        }
    }
    let csv = w
        .into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if csv.len() > max_bytes {
        return Err(TooLarge(max_bytes));
    }
    Ok(csv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formula_cells_are_written_as_text() {
        let ev = json!({
            "action": "a.b", "occurred_at": "2026-01-01T00:00:00.000Z",
            "actor": {"id": "=HYPERLINK(\"http://x\")", "type": "+1", "name": "-2+3"},
            "context": {"location": "@SUM(A1)", "user_agent": "ok = fine"},
            "targets": [{"id": "t", "type": "=cmd", "name": "plain"}],
        });
        let csv = render(std::iter::once(&ev), 1 << 20).unwrap();
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[2], "'=HYPERLINK(\"http://x\")");
        assert_eq!(&row[3], "'+1");
        assert_eq!(&row[4], "'-2+3");
        assert_eq!(&row[6], "'@SUM(A1)");
        assert_eq!(&row[7], "ok = fine", "only a leading character counts");
        assert_eq!(&row[10], "'=cmd");
        assert_eq!(&row[11], "plain");
    }

    #[test]
    fn a_csv_past_the_limit_is_refused() {
        let ev = json!({"action": "a.b", "actor": {"name": "x".repeat(1000)}});
        let many = vec![ev; 100];
        assert!(render(many.iter(), 200_000).is_ok());
        assert_eq!(render(many.iter(), 50_000), Err(TooLarge(50_000)));
        assert_eq!(render(many.iter().take(1), 500), Err(TooLarge(500)));
    }
}
