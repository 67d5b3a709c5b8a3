//! Rejections are loud: every dead letter is counted per action and reason, warned about at a
//! bounded rate with the fix, listed in [`Stats::rejections`](super::Stats::rejections) and the
//! [`ShutdownReport`](super::ShutdownReport), and counted by the `metrics` feature.
//!
//! An operator sees, without reading dead letters:
//!
//! ```text
//! WARN audit events of invoice.paid are dead-lettered (rejected): 412 in the last hour, 3120 in all;
//!      schema version 2 declares target type `bill`, the event sends `invoice`
//!      fix: send target type `bill`, or register a new schema version of invoice.paid declaring `invoice` …
//! ```
//!
//! The warning for one action and reason is logged at most once per [`WARN_INTERVAL`] (the ones
//! in between are counted in its `suppressed` field); at most [`MAX_TRACKED`] pairs are kept
//! apart, later ones are counted under the action `(other)`. The detail comes from WorkOS's
//! answer (its message and field errors) and, when the emitter has a
//! [`SchemaRegistry`], from the schema version the event named.
//!
//! With the `metrics` feature: `workos_audit_emitter_rejections_total{action, reason}`, a
//! counter, one per dead letter (bounded like the warnings).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::dead_letter::{DeadLetter, DeadLetterReason};
use crate::schema::SchemaRegistry;

/// At most one warning per action and reason in this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// How many (action, reason) pairs are counted apart; beyond it, under the action `(other)`.
pub const MAX_TRACKED: usize = 256;

/// The action name dead letters are counted under once [`MAX_TRACKED`] pairs exist.
pub const OTHER_ACTION: &str = "(other)";

/// The window of [`Rejection::last_hour`], in one-minute buckets.
const BUCKETS: usize = 60;
const BUCKET: Duration = Duration::from_secs(60);

/// Dead letters of one action for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The action (or [`OTHER_ACTION`]).
    pub action: String,
    /// Why its events were dead-lettered.
    pub reason: DeadLetterReason,
    /// Since the emitter started.
    pub total: u64,
    /// In the last hour (one-minute resolution).
    pub last_hour: u64,
    /// What the latest one says: WorkOS's answer, and what the schema version declares.
    pub detail: Option<String>,
    /// What to change.
    pub fix: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} {} in the last hour ({} in all)",
            self.action,
            self.last_hour,
            self.reason.as_str().replace('_', " "),
            self.total
        )?;
        if let Some(d) = &self.detail {
            write!(f, ", {d}")?;
        }
        write!(f, "; fix: {}", self.fix)
    }
}

#[derive(Debug)]
struct Entry {
    total: u64,
    /// Counts per minute; `minute` is the index of the newest bucket's minute.
    buckets: [u64; BUCKETS],
    minute: u64,
    warned: Option<Instant>,
    suppressed: u64,
    detail: Option<String>,
    fix: String,
}

impl Entry {
    fn new() -> Self {
        Self {
            total: 0,
            buckets: [0; BUCKETS],
            minute: 0,
            warned: None,
            suppressed: 0,
            detail: None,
            fix: String::new(),
        }
    }

    /// Moves the window to `minute`, clearing the buckets it passed.
    fn advance(&mut self, minute: u64) {
        if minute <= self.minute {
            return;
        }
        let passed = (minute - self.minute).min(BUCKETS as u64);
        for m in 1..=passed {
            self.buckets[((self.minute + m) % BUCKETS as u64) as usize] = 0;
        }
        self.minute = minute;
    }

    fn last_hour(&self, minute: u64) -> u64 {
        if minute >= self.minute + BUCKETS as u64 {
            return 0;
        }
        // Buckets older than an hour as of `minute` are the ones `advance` would clear.
        let stale = minute.saturating_sub(self.minute);
        (0..BUCKETS as u64)
            .filter(|age| *age + stale < BUCKETS as u64)
            .map(|age| self.buckets[((self.minute + BUCKETS as u64 - age) % BUCKETS as u64) as usize])
            .sum()
    }
}

/// The counters; one per emitter, in its shared state.
#[derive(Debug)]
pub(crate) struct Rejections {
    start: Instant,
    entries: Mutex<HashMap<(String, DeadLetterReason), Entry>>,
}

impl Default for Rejections {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            entries: Mutex::default(),
        }
    }
}

impl Rejections {
    fn minute(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_secs()) / BUCKET.as_secs()
    }

    /// Counts `letter` (the emitter calls this once per dead letter) and warns when due.
    pub(crate) fn record(&self, letter: &DeadLetter, schemas: Option<&SchemaRegistry>) {
        let now = Instant::now();
        let minute = self.minute(now);
        let undeclared = (letter.reason == DeadLetterReason::Rejected)
            .then(|| undeclared_types(letter, schemas))
            .flatten();
        let detail = detail(letter, undeclared.as_ref());
        let fix = fix(letter, undeclared.is_some());
        let mut entries = crate::sync::lock(&self.entries);
        let mut action = letter.event.action.to_string();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&(action.clone(), letter.reason)) {
            action = OTHER_ACTION.to_owned();
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "workos_audit_emitter_rejections_total",
            "action" => action.clone(),
            "reason" => letter.reason.as_str()
        )
        .increment(1);
        let entry = entries
            .entry((action.clone(), letter.reason))
            .or_insert_with(Entry::new);
        entry.advance(minute);
        entry.total += 1;
        entry.buckets[(minute % BUCKETS as u64) as usize] += 1;
        entry.detail = detail;
        entry.fix = fix;
        if entry
            .warned
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_INTERVAL)
        {
            entry.suppressed += 1;
            return;
        }
        entry.warned = Some(now);
        let suppressed = std::mem::take(&mut entry.suppressed);
        let (last_hour, total) = (entry.last_hour(minute), entry.total);
        let (detail, fix) = (entry.detail.clone(), entry.fix.clone());
        drop(entries);
        tracing::warn!(
            action = %action,
            reason = %letter.reason,
            last_hour,
            total,
            suppressed,
            "audit events of {action} are dead-lettered ({}): {last_hour} in the last hour{}; fix: {fix}",
            letter.reason,
            detail.map(|d| format!(", {d}")).unwrap_or_default(),
        );
    }

    /// Every (action, reason) with its counts, most in the last hour first.
    pub(crate) fn snapshot(&self) -> Vec<Rejection> {
        let minute = self.minute(Instant::now());
        let entries = crate::sync::lock(&self.entries);
        let mut all: Vec<Rejection> = entries
            .iter()
            .map(|((action, reason), e)| Rejection {
                action: action.clone(),
                reason: *reason,
                total: e.total,
                last_hour: e.last_hour(minute),
                detail: e.detail.clone(),
                fix: e.fix.clone(),
            })
            .collect();
        all.sort_by(|a, b| {
            (b.last_hour, b.total).cmp(&(a.last_hour, a.total)).then_with(|| {
                (a.action.as_str(), a.reason.as_str()).cmp(&(b.action.as_str(), b.reason.as_str()))
            })
        });
        all
    }

    /// Logs every pair at shutdown (one warning each).
    pub(crate) fn report(&self) -> Vec<Rejection> {
        let all = self.snapshot();
        for r in &all {
            tracing::warn!(action = %r.action, reason = %r.reason, total = r.total, "audit dead letters at shutdown: {r}");
        }
        all
    }
}

/// The schema version an event named, the target types it declares and those the event sends
/// that it does not.
type Undeclared = (u32, Vec<String>, Vec<String>);

/// The event's target types that the schema version it names does not declare.
fn undeclared_types(letter: &DeadLetter, schemas: Option<&SchemaRegistry>) -> Option<Undeclared> {
    let registry = schemas?;
    let version = letter
        .event
        .version
        .or_else(|| registry.version(&letter.event.action).map(|_| 1))?;
    let declared = registry.target_types(&letter.event.action, version)?;
    let mut sent: Vec<String> = Vec::new();
    for t in &letter.event.targets {
        let kind = t.kind.as_ref();
        if !declared.iter().any(|d| d == kind) && !sent.iter().any(|s| s == kind) {
            sent.push(kind.to_owned());
        }
    }
    (!sent.is_empty()).then(|| (version, declared.to_vec(), sent))
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the latest dead letter says.
fn detail(letter: &DeadLetter, undeclared: Option<&Undeclared>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((version, declared, sent)) = undeclared {
        parts.push(format!(
            "schema version {version} declares target type{} {}, the event sends {}",
            if declared.len() == 1 { "" } else { "s" },
            quoted(declared),
            quoted(sent)
        ));
    }
    if let Some(e) = &letter.error {
        let status = e.status.map(|s| format!("{s} ")).unwrap_or_default();
        let said = e.api_message.as_deref().unwrap_or(&e.message);
        let mut text = format!("WorkOS answered {status}{said}");
        if !e.field_errors.is_empty() {
            text.push_str(&format!(" ({})", e.field_errors.join("; ")));
        }
        parts.push(text);
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What to change, by reason.
fn fix(letter: &DeadLetter, target_type: bool) -> String {
    let action = &letter.event.action;
    match letter.reason.as_str() {
        "rejected" if target_type => format!(
            "send the target types the registered schema of {action} declares, or register a new schema version declaring the types the code sends; `cargo xtask verify --local --schemas` / audit_verify::schemas lists every such action; then replay the dead letters"
        ),
        "rejected" => format!(
            "compare {action} with its schema registered in WorkOS (audit_verify::schemas::SchemaCheck names the field and the fix), correct the code or the schema, then replay the dead letters"
        ),
        "too_large" => "the request is over WorkOS's size limit: send fewer or shorter targets and metadata (ids of a bulk change belong in several events)".to_owned(),
        "retry_window_exhausted" => "WorkOS could not be reached or kept failing for the whole retry window: check connectivity and status.workos.com, widen the retry window, then replay the dead letters".to_owned(),
        "shutdown_deadline" => "give Emitter::shutdown more time (or use a spool), then replay the dead letters with their keys".to_owned(),
        "abandoned" => "call Emitter::shutdown before the runtime ends, then replay the dead letters".to_owned(),
        "refused" => "a setting or parameter the client will not send: see the error, fix the configuration, then replay".to_owned(),
        "stale" => "the event waited past WorkOS's 24-hour idempotency window: replay it if it is not in WorkOS".to_owned(),
        "not_workos" => "the destination is not the WorkOS API: check WORKOS_BASE_URL, then replay the dead letters".to_owned(),
        "overflow" => "the queue was full: raise the emitter's capacity or its rate limit, or use a spool; replay the dead letters".to_owned(),
        _ => "see the dead letter's error, correct it, then replay the dead letters".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::AuditLogSchema;
    use crate::emitter::dead_letter::DeadLetterError;
    use crate::{Action, Actor, Context, Event, OrganizationId, Target};

    fn letter(action: &str, kind: &str, reason: DeadLetterReason) -> DeadLetter {
        let event = Event::new(
            Action::new(action).unwrap(),
            Actor::new("u", "user"),
            Context::new("here"),
        )
        .target(Target::new("i_1", kind.to_owned()))
        .version(2);
        DeadLetter {
            organization_id: OrganizationId::new("org_1").unwrap(),
            event,
            idempotency_key: "k".into(),
            reason,
            error: Some(DeadLetterError {
                message: "400 invalid".into(),
                status: Some(400),
                code: None,
                api_message: Some("Invalid Audit Log event".into()),
                field_errors: vec!["/targets/0/type (enum)".into()],
                request_id: None,
            }),
            attempts: 1,
            first_attempt_at: None,
            last_attempt_at: None,
        }
    }

    fn registry() -> SchemaRegistry {
        let mut r = SchemaRegistry::new();
        let schema: AuditLogSchema = serde_json::from_value(serde_json::json!({
            "object": "audit_log_schema", "version": 2, "targets": [{"type": "bill"}],
            "created_at": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap();
        r.insert(&Action::new("invoice.paid").unwrap(), &schema).unwrap();
        r
    }

    #[tokio::test(start_paused = true)]
    async fn counts_per_action_and_reason_over_the_last_hour() {
        let r = Rejections::default();
        let schemas = registry();
        for _ in 0..3 {
            r.record(
                &letter("invoice.paid", "invoice", DeadLetterReason::Rejected),
                Some(&schemas),
            );
        }
        r.record(&letter("team.created", "team", DeadLetterReason::Overflow), None);
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        r.record(
            &letter("invoice.paid", "invoice", DeadLetterReason::Rejected),
            Some(&schemas),
        );
        let all = r.snapshot();
        assert_eq!(all.len(), 2);
        let paid = &all[0];
        assert_eq!(
            (paid.action.as_str(), paid.total, paid.last_hour),
            ("invoice.paid", 4, 4)
        );
        let text = paid.to_string();
        assert!(
            text.starts_with("invoice.paid: 4 rejected in the last hour (4 in all), schema version 2 declares target type `bill`, the event sends `invoice`"),
            "{text}"
        );
        assert!(text.contains("/targets/0/type"), "{text}");
        assert!(paid.fix.contains("register a new schema version"), "{}", paid.fix);
        assert_eq!(all[1].reason, DeadLetterReason::Overflow);
        assert!(all[1].fix.contains("capacity"));
        // 45 minutes on, the first three are older than an hour.
        tokio::time::advance(Duration::from_secs(45 * 60)).await;
        let paid = r
            .snapshot()
            .into_iter()
            .find(|x| x.action == "invoice.paid")
            .unwrap();
        assert_eq!((paid.total, paid.last_hour), (4, 1));
        tokio::time::advance(Duration::from_secs(3 * 3600)).await;
        assert!(r.snapshot().iter().all(|x| x.last_hour == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn warnings_are_bounded_and_pairs_beyond_the_cap_are_pooled() {
        let r = Rejections::default();
        for _ in 0..5 {
            r.record(
                &letter("invoice.paid", "invoice", DeadLetterReason::Rejected),
                None,
            );
        }
        {
            let entries = crate::sync::lock(&r.entries);
            let e = &entries[&("invoice.paid".to_owned(), DeadLetterReason::Rejected)];
            assert_eq!(e.suppressed, 4, "one warning for five in the same minute");
        }
        tokio::time::advance(WARN_INTERVAL).await;
        r.record(
            &letter("invoice.paid", "invoice", DeadLetterReason::Rejected),
            None,
        );
        assert_eq!(
            crate::sync::lock(&r.entries)[&("invoice.paid".to_owned(), DeadLetterReason::Rejected)]
                .suppressed,
            0
        );
        for i in 0..MAX_TRACKED + 10 {
            r.record(&letter(&format!("a.n{i}"), "t", DeadLetterReason::Rejected), None);
        }
        let all = r.snapshot();
        assert_eq!(all.len(), MAX_TRACKED + 1);
        let other = all.iter().find(|x| x.action == OTHER_ACTION).unwrap();
        assert_eq!(other.total, 11);
        assert!(all[0].detail.as_deref().unwrap().contains("WorkOS answered 400"));
    }
}
