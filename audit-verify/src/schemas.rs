//! The registered-actions check: does WorkOS know every action this binary can emit, with the
//! target types and metadata the code sends?
//!
//! Events of an action WorkOS has never registered are rejected, and so are events whose target
//! types or metadata the registered schema version does not allow: in the background, long
//! after the request that caused them, as dead letters. This check compares audit-core's
//! link-time registry ([`audit_core::registry`]: every `#[action]`, `declare_action!` and
//! `declare_schema!` linked into the binary) with WorkOS's list of actions and their schema
//! versions (`GET /audit_logs/actions`, `GET /audit_logs/actions/{action}/schemas`), and
//! names, per action, what would be rejected and the fix:
//!
//! | finding | when |
//! |---|---|
//! | [`FindingKind::NotRegistered`] | WorkOS has no schema for the action |
//! | [`FindingKind::TargetType`] | the code sends a target type the checked schema version does not declare |
//! | [`FindingKind::Metadata`] | a sample of the metadata the code sends (from the schema declared in code, and what the adapter adds under the [`AuditPolicy`]) breaks the checked version's JSON Schemas |
//! | [`FindingKind::Version`] | several versions exist and the code sends no `version` (WorkOS then checks version 1, not the latest) |
//!
//! The checked version is the one the code's events name: version 1 unless
//! [`SchemaCheck::emitter_fills_version`] says the emitter has a
//! [`SchemaRegistry`], which fills in the latest one.
//!
//! It only reads from WorkOS. An app's own test can run it against WorkOS or audit-testkit:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = audit_core::Client::from_env()?;
//! let report = audit_verify::schemas::SchemaCheck::linked().run(&client).await?;
//! assert!(report.passed(), "{report}");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use futures_util::TryStreamExt;
use serde_json::{Value, json};

use audit_core::client::{AuditLogSchema, Client, ListOptions};
use audit_core::registry::{self, KnownAction};
use audit_core::request::{AuditPolicy, CancelledRequests, Outcomes};
use audit_core::{
    ActionSchema, Event, FieldErrorKind, Metadata, MetadataValue, SchemaError, SchemaRegistry, Target,
};

use crate::plan::Plan;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FindingKind {
    /// The action is not registered in WorkOS.
    NotRegistered,
    /// A target type the code sends is not declared by the checked schema version.
    TargetType,
    /// Metadata the code sends breaks the checked schema version.
    Metadata,
    /// Several schema versions exist and the code sends no `version`.
    Version,
}

impl FindingKind {
    /// `not_registered`, `target_type`, `metadata`, `version`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRegistered => "not_registered",
            Self::TargetType => "target_type",
            Self::Metadata => "metadata",
            Self::Version => "version",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem of one action, with its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The action.
    pub action: String,
    /// What kind of problem.
    pub kind: FindingKind,
    /// What is wrong (names the action, the version and the field).
    pub message: String,
    /// What to change.
    pub fix: String,
    /// Where the code declares the action (`file:line`), when known.
    pub origin: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FAIL   {} [{}]: {}", self.action, self.kind, self.message)?;
        if let Some(o) = &self.origin {
            write!(f, " (declared at {o})")?;
        }
        write!(f, "\n       fix: {}", self.fix)
    }
}

/// What [`SchemaCheck::run`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaReport {
    /// The actions checked, with the schema version their events are checked against (`None`
    /// when not registered).
    pub checked: Vec<(String, Option<u32>)>,
    /// Every finding, by action.
    pub findings: Vec<Finding>,
}

impl SchemaReport {
    /// No finding.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    /// The findings of one action.
    pub fn of<'a>(&'a self, action: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.action == action)
    }

    /// The report as one JSON document (`{"passed", "checked", "findings"}`).
    pub fn to_json(&self) -> String {
        let checked: Vec<Value> = self
            .checked
            .iter()
            .map(|(a, v)| json!({"action": a, "version": v}))
            .collect();
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({"action": f.action, "kind": f.kind.as_str(), "message": f.message, "fix": f.fix, "origin": f.origin})
            })
            .collect();
        json!({"passed": self.passed(), "checked": checked, "findings": findings}).to_string()
    }
}

impl fmt::Display for SchemaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (action, version) in &self.checked {
            if self.of(action).next().is_none() {
                let v = version.map_or_else(String::new, |v| format!(" (schema version {v})"));
                writeln!(f, "PASS   {action}{v}")?;
            }
            for finding in self.of(action) {
                writeln!(f, "{finding}")?;
            }
        }
        let n = self.findings.len();
        write!(
            f,
            "{} action{} checked, {n} finding{}",
            self.checked.len(),
            if self.checked.len() == 1 { "" } else { "s" },
            if n == 1 { "" } else { "s" }
        )
    }
}

/// The registered-actions check: the actions to check and what the app does with versions and
/// request metadata. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct SchemaCheck {
    actions: Vec<KnownAction>,
    fills_version: bool,
    policy: AuditPolicy,
}

impl SchemaCheck {
    /// Checks these actions (for example [`registry::known_actions_in`] of one app).
    pub fn new(actions: Vec<KnownAction>) -> Self {
        Self {
            actions,
            fills_version: false,
            policy: AuditPolicy::default(),
        }
    }

    /// Checks every action linked into this binary ([`registry::known_actions`]).
    pub fn linked() -> Self {
        Self::new(registry::known_actions())
    }

    /// Whether the app's emitter has a [`SchemaRegistry`] (`EmitterBuilder::schemas`), which
    /// fills in each action's latest version: events are then checked against the latest
    /// version and several versions are no finding. Default `false`: events name no version and
    /// WorkOS checks them against version 1.
    pub fn emitter_fills_version(mut self, yes: bool) -> Self {
        self.fills_version = yes;
        self
    }

    /// The adapter's policy of the app (default [`AuditPolicy::default`]): which metadata the
    /// adapter adds to the events of annotated handlers (`outcome`, `http_status`, the request
    /// metadata).
    pub fn policy(mut self, policy: AuditPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Lists WorkOS's actions and each known action's schema versions, and compares.
    ///
    /// # Errors
    /// [`SchemaError::Client`] when WorkOS refuses a list (the action is named, `*` for the list
    /// of actions); [`SchemaError::InvalidJsonSchema`] when a registered schema does not compile.
    pub async fn run(&self, client: &Client) -> Result<SchemaReport, SchemaError> {
        let registered: BTreeMap<String, AuditLogSchema> = client
            .list_actions_all(ListOptions::new().limit(ListOptions::MAX_LIMIT))
            .map_ok(|a| (a.name.to_string(), a.schema))
            .try_collect()
            .await
            .map_err(|source| SchemaError::Client {
                action: "*".into(),
                source,
            })?;
        let mut report = SchemaReport::default();
        for known in &self.actions {
            let name = known.action.to_string();
            if !registered.contains_key(&name) {
                report.checked.push((name, None));
                report.findings.push(not_registered(known));
                continue;
            }
            let mut versions: Vec<AuditLogSchema> = client
                .list_schemas_all(&known.action, ListOptions::new().limit(ListOptions::MAX_LIMIT))
                .try_collect()
                .await
                .map_err(|source| SchemaError::Client {
                    action: name.clone(),
                    source,
                })?;
            if versions.is_empty() {
                versions.push(registered[&name].clone());
            }
            versions.sort_by_key(|v| v.version);
            let latest = versions.last().map_or(1, |v| v.version);
            let sent = if self.fills_version {
                latest
            } else {
                versions
                    .iter()
                    .find(|v| v.version == 1)
                    .map_or(versions[0].version, |v| v.version)
            };
            let Some(schema) = versions.iter().find(|v| v.version == sent) else {
                continue;
            };
            report.checked.push((name.clone(), Some(sent)));
            if !self.fills_version && versions.len() > 1 {
                report.findings.push(version_finding(known, sent, latest));
            }
            report.findings.extend(target_findings(known, schema));
            report.findings.extend(self.metadata_findings(known, schema)?);
        }
        Ok(report)
    }

    /// Sample events of `known` (the metadata the schema declared in code describes, plus each
    /// set of metadata the adapter adds) checked against `schema`.
    fn metadata_findings(
        &self,
        known: &KnownAction,
        schema: &AuditLogSchema,
    ) -> Result<Vec<Finding>, SchemaError> {
        let mut registry = SchemaRegistry::new();
        registry.insert(&known.action, schema)?;
        let mut findings: Vec<Finding> = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        let declared = known
            .schema
            .as_ref()
            .and_then(|s| as_registered(s, schema.version));
        let base = Plan::conforming(&known.action, declared.as_ref()).to_event();
        let adapter = if known.handler {
            adapter_metadata(&self.policy)
        } else {
            vec![(None, Metadata::new())]
        };
        for (when, extra) in adapter {
            let mut event = sample_event(base.clone(), known, schema.version);
            if !extra.is_empty() {
                let mut meta = event.metadata.take().unwrap_or_default();
                for (k, v) in extra.iter() {
                    meta.insert(k, v.clone());
                }
                event.metadata = Some(meta);
            }
            let Err(errors) = registry.check(&event) else {
                continue;
            };
            for e in errors.errors() {
                // Undeclared target types are reported once, as target-type findings.
                if e.pointer.starts_with("/targets/") && e.pointer.ends_with("/type") {
                    continue;
                }
                let FieldErrorKind::Schema { keyword, message } = &e.kind else {
                    continue;
                };
                let message = format!(
                    "schema version {} rejects the metadata the code sends{}: {} ({keyword}) {message}",
                    schema.version,
                    when.map(|w| format!(" {w}")).unwrap_or_default(),
                    e.pointer
                );
                let at = (e.pointer.clone(), keyword.clone());
                if seen.contains(&at) {
                    continue;
                }
                seen.push(at);
                findings.push(Finding {
                    action: known.action.to_string(),
                    kind: FindingKind::Metadata,
                    fix: metadata_fix(known, &e.pointer, keyword, when.is_some()),
                    message,
                    origin: origin(known),
                });
            }
        }
        Ok(findings)
    }
}

fn origin(known: &KnownAction) -> Option<String> {
    known.origin().map(|o| o.to_string())
}

fn types_list<'a>(types: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<String> = types.into_iter().map(|t| format!("`{t}`")).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn not_registered(known: &KnownAction) -> Finding {
    let fix = match (&known.schema, known.schema_origin) {
        (Some(_), Some(at)) => format!(
            "register the schema declared in code at {at}: SchemaRegistry::sync_declared(&client) at start-up, or create `{}` in the WorkOS Dashboard (Audit Logs → Configuration → Create event)",
            known.action
        ),
        _ => format!(
            "create `{}` with target types {} in the WorkOS Dashboard (Audit Logs → Configuration → Create event), or declare its schema in code (audit_core::declare_schema!) and register it with SchemaRegistry::sync_declared",
            known.action,
            types_list(known.targets.iter().map(String::as_str))
        ),
    };
    Finding {
        action: known.action.to_string(),
        kind: FindingKind::NotRegistered,
        message: format!(
            "`{}` is not registered in WorkOS: every event of it is rejected",
            known.action
        ),
        fix,
        origin: origin(known),
    }
}

fn version_finding(known: &KnownAction, sent: u32, latest: u32) -> Finding {
    Finding {
        action: known.action.to_string(),
        kind: FindingKind::Version,
        message: format!(
            "WorkOS has schema versions up to {latest} of `{}`, and the code sends no `version`: its events are checked against version {sent}",
            known.action
        ),
        fix: format!(
            "give the emitter a SchemaRegistry (EmitterBuilder::schemas with SchemaRegistry::from_workos or ::sync), which fills in version {latest}, or set Event::version; then check with emitter_fills_version(true)"
        ),
        origin: origin(known),
    }
}

fn target_findings(known: &KnownAction, schema: &AuditLogSchema) -> Vec<Finding> {
    let declared: Vec<&str> = schema.targets.iter().map(|t| t.kind.as_str()).collect();
    let missing: Vec<&str> = known
        .targets
        .iter()
        .map(String::as_str)
        .filter(|t| !declared.contains(t))
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    vec![Finding {
        action: known.action.to_string(),
        kind: FindingKind::TargetType,
        message: format!(
            "schema version {} declares target type{} {}, the code sends {}: those events are rejected",
            schema.version,
            if declared.len() == 1 { "" } else { "s" },
            types_list(declared.iter().copied()),
            types_list(missing.iter().copied())
        ),
        fix: format!(
            "add target type{} {} to the schema of `{}` in WorkOS (a new version; then send it), or change the code's targets to the registered type{}",
            if missing.len() == 1 { "" } else { "s" },
            types_list(missing.iter().copied()),
            known.action,
            if declared.len() == 1 { "" } else { "s" },
        ),
        origin: origin(known),
    }]
}

fn metadata_fix(known: &KnownAction, pointer: &str, keyword: &str, from_adapter: bool) -> String {
    let field = pointer.rsplit('/').next().unwrap_or(pointer);
    match keyword {
        "required" if known.schema.is_none() => format!(
            "the registered schema of `{}` requires metadata the code is not known to send: declare the schema in code (audit_core::declare_schema!) so that its metadata is known, or make the property optional in WorkOS",
            known.action
        ),
        "additionalProperties" if from_adapter => format!(
            "allow the adapter's metadata in the schema of `{}` (a new version), or change the AuditPolicy (outcomes, request_metadata, cancelled) so that it is not added",
            known.action
        ),
        _ => format!(
            "make the schema of `{}` in WorkOS and the metadata the code sends agree at {pointer} (`{field}`): register the schema declared in code (SchemaRegistry::sync), or change the code",
            known.action
        ),
    }
}

/// The schema declared in code, read as the registered version `version` would be.
fn as_registered(declared: &ActionSchema, version: u32) -> Option<AuditLogSchema> {
    let mut v = serde_json::to_value(&declared.schema).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert("object".into(), json!("audit_log_schema"));
    obj.insert("version".into(), json!(version));
    obj.insert("created_at".into(), json!("2026-01-01T00:00:00.000Z"));
    serde_json::from_value(v).ok()
}

/// `base` with one target of every type the code sends (keeping the declared schema's target
/// metadata) and `version`.
fn sample_event(mut event: Event, known: &KnownAction, version: u32) -> Event {
    let mut targets = Vec::new();
    for kind in &known.targets {
        match event.targets.iter().find(|t| t.kind == kind.as_str()) {
            Some(t) => targets.push(t.clone()),
            None => targets.push(Target::new(format!("verify_{kind}"), kind.clone())),
        }
    }
    event.targets = targets;
    event.version = Some(version);
    event
}

/// The sets of metadata the adapter adds to a handler's events under `policy`, with when.
fn adapter_metadata(policy: &AuditPolicy) -> Vec<(Option<&'static str>, Metadata)> {
    let request = |meta: &mut Metadata, status: bool| {
        if policy.request_metadata {
            meta.insert("request_id", "req_verify");
            meta.insert("http_method", "POST");
            meta.insert("http_route", "/verify");
            if status {
                meta.insert("http_status", MetadataValue::Integer(200));
            }
        }
    };
    let mut sets = Vec::new();
    let mut done = Metadata::new();
    if policy.outcomes == Outcomes::All {
        done.insert("outcome", "success");
        done.insert("http_status", MetadataValue::Integer(200));
    }
    request(&mut done, true);
    let label = (!done.is_empty()).then_some("(as the adapter adds it to a response)");
    sets.push((label, done));
    if policy.cancelled == CancelledRequests::Emit {
        let mut cancelled = Metadata::new();
        cancelled.insert("outcome", "cancelled");
        request(&mut cancelled, false);
        sets.push((Some("(as the adapter adds it to a cancelled request)"), cancelled));
    }
    sets
}
