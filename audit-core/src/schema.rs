//! Keeping schemas and code in step: action schemas declared in Rust (or loaded from JSON files),
//! registered with WorkOS, and checked locally before an event is queued.
//!
//! WorkOS lets you register, per action, JSON Schemas for the event's `metadata`, the actor's
//! `metadata` and each target type's `metadata` (`POST /audit_logs/actions/{action}/schemas`).
//! Registering is an upsert that answers the schema's **version**; with the dashboard's "Require
//! metadata schema validation" an event must name the right `version` and match that version's
//! schemas, or WorkOS answers 400 (in the background, long after the request that caused it).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use audit_core::schema::{ActionSchema, SchemaRegistry};
//! use audit_core::{Action, Client, Emitter};
//! use serde_json::json;
//!
//! let client = Client::from_env()?;
//! let invoice_paid = ActionSchema::new(Action::new("invoice.paid")?)
//!     .target_with_metadata("invoice", json!({
//!         "type": "object",
//!         "properties": {"cost": {"type": "number"}},
//!         "required": ["cost"],
//!     }))
//!     .metadata(json!({"type": "object", "properties": {"currency": {"type": "string"}}}));
//!
//! // At start-up: register (idempotent: an unchanged schema keeps its version) and load.
//! let registry = Arc::new(SchemaRegistry::sync(&client, &[invoice_paid]).await?);
//! let emitter = Emitter::builder(client).schemas(registry).start();
//! // Every event of `invoice.paid` now carries the registered `version`, and one whose metadata
//! // breaks the schema is refused by `try_emit` with the JSON pointer WorkOS would name.
//! # Ok(()) }
//! ```
//!
//! # What the registry does for the emitter
//!
//! Given a registry ([`EmitterBuilder::schemas`](crate::emitter::EmitterBuilder::schemas)), the
//! emit call, before anything is queued:
//! 1. fills in `version` with the action's current version (the one [`SchemaRegistry::sync`]
//!    registered, or the latest one [`SchemaRegistry::from_workos`] listed) unless the event sets
//!    one;
//! 2. with the `schema` feature, checks the event against that version's JSON Schemas, as
//!    WorkOS does: `metadata` (an absent one is checked as `{}`), `actor.metadata`, and each
//!    target's `metadata` by its type; a target type the version does not declare is an error at
//!    `/targets/N/type`. Errors are [`FieldErrorKind::Schema`] with the JSON pointer
//!    (`/targets/0/metadata/cost`) and keyword (`type`, `required`) of WorkOS's (and
//!    audit-testkit's) 400 `instancePath`s.
//!
//! An action the registry does not know, or a version it has not loaded, is not checked (the
//! registry may cover only some actions); [`SchemaRegistry::strict`] makes both errors, at
//! `/action` and `/version`, as WorkOS's require-schemas mode does.
//!
//! **Default**: an emitter without a registry does neither; with one, both run
//! ([`SchemaRegistry::check_locally`]`(false)` keeps only the version filling). The check costs a
//! few microseconds per event (`cargo xtask bench`, "schema check"), paid by the emit call, so
//! it stays within the request path's budget while catching the error at the earliest point.
//! Without the `schema` feature the registry fills versions only.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{AuditLogSchema, Client, CreateSchema, ListOptions, SchemaActor, SchemaTarget};
use crate::error::Error;
use crate::event::{Action, Event};
use crate::validate::{FieldError, FieldErrorKind, ValidationErrors};

/// One action's schema, declared in code or loaded from JSON: its target types (each with an
/// optional metadata JSON Schema), the actor's metadata schema and the event's metadata schema.
///
/// The JSON form is the create-schema body plus the action's name:
/// `{"action": "invoice.paid", "targets": [{"type": "invoice", "metadata": {...}}],
/// "actor": {"metadata": {...}}, "metadata": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionSchema {
    /// The action.
    pub action: Action,
    /// The schema sent to WorkOS.
    #[serde(flatten)]
    pub schema: CreateSchema,
}

impl ActionSchema {
    /// A schema for `action` with no target types yet (WorkOS needs at least one).
    pub fn new(action: Action) -> Self {
        Self {
            action,
            schema: CreateSchema::new([]),
        }
    }

    /// Adds a target type whose metadata is not constrained.
    pub fn target(mut self, kind: impl Into<String>) -> Self {
        self.schema.targets.push(SchemaTarget::new(kind));
        self
    }

    /// Adds a target type whose metadata must match `schema` (a JSON Schema).
    pub fn target_with_metadata(mut self, kind: impl Into<String>, schema: Value) -> Self {
        self.schema.targets.push(SchemaTarget::new(kind).metadata(schema));
        self
    }

    /// Sets the JSON Schema of the actor's metadata.
    pub fn actor_metadata(mut self, schema: Value) -> Self {
        self.schema.actor = Some(SchemaActor::new(schema));
        self
    }

    /// Sets the JSON Schema of the event's metadata.
    pub fn metadata(mut self, schema: Value) -> Self {
        self.schema.metadata = Some(schema);
        self
    }

    /// Reads one schema (a JSON object) or several (a JSON array of objects) from `json`.
    ///
    /// # Errors
    /// [`SchemaError::Json`] naming what does not fit.
    pub fn from_json(json: &str) -> Result<Vec<Self>, SchemaError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<ActionSchema>),
            One(Box<ActionSchema>),
        }
        match serde_json::from_str::<OneOrMany>(json) {
            Ok(OneOrMany::Many(all)) => Ok(all),
            Ok(OneOrMany::One(one)) => Ok(vec![*one]),
            Err(_) => {
                // Parse as one object again for a precise message.
                serde_json::from_str::<ActionSchema>(json)
                    .map(|one| vec![one])
                    .map_err(|e| SchemaError::Json {
                        file: None,
                        message: e.to_string(),
                    })
            }
        }
    }

    /// Reads schemas from a JSON file (see [`ActionSchema::from_json`]).
    ///
    /// # Errors
    /// [`SchemaError::Json`] with the file's path for an unreadable or malformed file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Vec<Self>, SchemaError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError::Json {
            file: Some(path.display().to_string()),
            message: e.to_string(),
        })?;
        Self::from_json(&text).map_err(|e| match e {
            SchemaError::Json { message, .. } => SchemaError::Json {
                file: Some(path.display().to_string()),
                message,
            },
            other => other,
        })
    }
}

/// Why declaring, registering or loading schemas failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// WorkOS (or the transport) refused a call.
    #[error("{action}: {source}")]
    Client {
        /// The action being registered or listed (`*` for the action list).
        action: String,
        /// The client's error.
        #[source]
        source: Error,
    },
    /// A metadata schema is not a valid JSON Schema.
    #[error("{action} version {version}: {field} is not a valid JSON Schema: {message}")]
    InvalidJsonSchema {
        /// The action.
        action: String,
        /// The version.
        version: u32,
        /// Which schema (`metadata`, `actor.metadata`, `targets.0.metadata`).
        field: String,
        /// The validator's complaint.
        message: String,
    },
    /// A schema file or text could not be read.
    #[error("could not read schemas{}: {message}", file.as_deref().map(|s| format!(" from {s}")).unwrap_or_default())]
    Json {
        /// The file, when reading one.
        file: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// The compiled schemas of one version of one action.
struct Version {
    #[cfg_attr(not(feature = "schema"), allow(dead_code))]
    compiled: Compiled,
    /// The target types the version declares.
    targets: Vec<String>,
}

#[cfg(feature = "schema")]
struct Compiled {
    metadata: Option<jsonschema::Validator>,
    actor: Option<jsonschema::Validator>,
    targets: Vec<(String, Option<jsonschema::Validator>)>,
}

#[cfg(not(feature = "schema"))]
struct Compiled;

struct Entry {
    /// The version filled into events that set none.
    current: u32,
    versions: BTreeMap<u32, Version>,
}

/// Action → (current version, compiled schemas of the versions loaded). Build it once at
/// start-up ([`sync`](Self::sync), [`from_workos`](Self::from_workos), [`insert`](Self::insert)),
/// share it in an `Arc`. See the [module documentation](self).
pub struct SchemaRegistry {
    actions: BTreeMap<String, Entry>,
    strict: bool,
    check: bool,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (action, e) in &self.actions {
            m.entry(action, &(e.current, e.versions.keys().collect::<Vec<_>>()));
        }
        m.finish()
    }
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaRegistry {
    /// An empty registry (lenient, checking on).
    pub fn new() -> Self {
        Self {
            actions: BTreeMap::new(),
            strict: false,
            check: true,
        }
    }

    /// Registers every declared schema with WorkOS (the upsert answers the version: unchanged
    /// schemas keep theirs, changed ones get n+1) and returns a registry of those versions.
    ///
    /// # Errors
    /// [`SchemaError::Client`] when WorkOS refuses a schema (the action is named);
    /// [`SchemaError::InvalidJsonSchema`] when a schema does not compile locally.
    pub async fn sync(client: &Client, schemas: &[ActionSchema]) -> Result<Self, SchemaError> {
        let mut registry = Self::new();
        for declared in schemas {
            let registered = client
                .create_schema(&declared.action, &declared.schema)
                .await
                .map_err(|source| SchemaError::Client {
                    action: declared.action.to_string(),
                    source,
                })?;
            tracing::debug!(action = %declared.action, version = registered.version, "schema registered");
            registry.insert(&declared.action, &registered)?;
        }
        Ok(registry)
    }

    /// [`sync`](Self::sync) of every schema declared in code and linked into this binary
    /// ([`declare_schema!`](crate::declare_schema), listed by
    /// [`registry::declared_schemas`](crate::registry::declared_schemas)); an action declared
    /// more than once is registered with its first declaration (sorted by place).
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub async fn sync_declared(client: &Client) -> Result<Self, SchemaError> {
        let mut schemas: Vec<ActionSchema> = Vec::new();
        for (schema, _) in crate::registry::declared_schemas() {
            if !schemas.iter().any(|s| s.action == schema.action) {
                schemas.push(schema);
            }
        }
        Self::sync(client, &schemas).await
    }

    /// A registry of every action WorkOS knows with its latest schema (`GET /audit_logs/actions`,
    /// every page, 100 per page).
    ///
    /// # Errors
    /// [`SchemaError::Client`] (action `*`) when listing fails; [`SchemaError::InvalidJsonSchema`].
    pub async fn from_workos(client: &Client) -> Result<Self, SchemaError> {
        let mut registry = Self::new();
        let actions: Vec<_> = client
            .list_actions_all(ListOptions::new().limit(100))
            .try_collect()
            .await
            .map_err(|source| SchemaError::Client {
                action: "*".into(),
                source,
            })?;
        for a in actions {
            registry.insert(&a.name, &a.schema)?;
        }
        Ok(registry)
    }

    /// Loads every version of `action` (`GET /audit_logs/actions/{action}/schemas`, every page),
    /// so that events naming an older version are checked too. The current version becomes the
    /// highest one.
    ///
    /// # Errors
    /// As [`from_workos`](Self::from_workos).
    pub async fn load_versions(&mut self, client: &Client, action: &Action) -> Result<(), SchemaError> {
        let versions: Vec<AuditLogSchema> = client
            .list_schemas_all(action, ListOptions::new().limit(100))
            .try_collect()
            .await
            .map_err(|source| SchemaError::Client {
                action: action.to_string(),
                source,
            })?;
        for v in &versions {
            self.insert(action, v)?;
        }
        Ok(())
    }

    /// Adds (or replaces) one version of `action`'s schema; the highest version inserted becomes
    /// the current one.
    ///
    /// # Errors
    /// [`SchemaError::InvalidJsonSchema`] when a metadata schema does not compile (feature
    /// `schema`; without it nothing is compiled).
    pub fn insert(&mut self, action: &Action, schema: &AuditLogSchema) -> Result<(), SchemaError> {
        let compiled = compile(action, schema)?;
        let entry = self.actions.entry(action.to_string()).or_insert_with(|| Entry {
            current: schema.version,
            versions: BTreeMap::new(),
        });
        entry.current = entry.current.max(schema.version);
        let targets = schema.targets.iter().map(|t| t.kind.clone()).collect();
        entry
            .versions
            .insert(schema.version, Version { compiled, targets });
        Ok(())
    }

    /// Sets the current version of `action` (the one filled into events), for example to keep
    /// sending an older version during a rollout. `false` when the action is unknown.
    pub fn set_current(&mut self, action: &Action, version: u32) -> bool {
        match self.actions.get_mut(action.as_str()) {
            Some(e) => {
                e.current = version;
                true
            }
            None => false,
        }
    }

    /// Strict mode: an action the registry does not know is an error at `/action`, a version it
    /// has not loaded an error at `/version` (WorkOS's require-schemas behaviour). Default off.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Whether [`apply`](Self::apply) checks events against their schemas (default on); off
    /// keeps only the version filling.
    pub fn check_locally(mut self, check: bool) -> Self {
        self.check = check;
        self
    }

    /// The current version of `action`, if known.
    pub fn version(&self, action: &Action) -> Option<u32> {
        self.actions.get(action.as_str()).map(|e| e.current)
    }

    /// The target types version `version` of `action` declares, if that version is loaded.
    pub fn target_types(&self, action: &Action, version: u32) -> Option<&[String]> {
        self.actions
            .get(action.as_str())
            .and_then(|e| e.versions.get(&version))
            .map(|v| v.targets.as_slice())
    }

    /// The actions known, sorted.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// What the emitter does with each event: fills in `version` (unless set), then checks it
    /// (unless [`check_locally`](Self::check_locally) is off).
    ///
    /// # Errors
    /// The schema violations, with JSON pointers (see [`check`](Self::check)).
    pub fn apply(&self, event: &mut Event) -> Result<(), ValidationErrors> {
        if event.version.is_none()
            && let Some(v) = self.version(&event.action)
        {
            event.version = Some(v);
        }
        if self.check { self.check(event) } else { Ok(()) }
    }

    /// Checks `event` against the schemas of its version (its `version`, or 1 when it sets none,
    /// as WorkOS assumes). Without the `schema` feature only strict mode's unknown action and
    /// version errors are reported.
    ///
    /// # Errors
    /// Every violation, as [`FieldErrorKind::Schema`] errors at the
    /// JSON pointers WorkOS names.
    pub fn check(&self, event: &Event) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let version = event.version.unwrap_or(1);
        match self.actions.get(event.action.as_str()) {
            None if self.strict => errors.push(schema_error(
                "/action",
                "schema",
                format!("no schema is registered for action '{}'", event.action),
            )),
            None => {}
            Some(entry) => match entry.versions.get(&version) {
                None if self.strict => errors.push(schema_error(
                    "/version",
                    "schema",
                    format!(
                        "action '{}' has no schema version {version} loaded (current is {})",
                        event.action, entry.current
                    ),
                )),
                None => {}
                #[cfg(feature = "schema")]
                Some(v) => check_compiled(&v.compiled, event, version, &mut errors),
                #[cfg(not(feature = "schema"))]
                Some(_) => {}
            },
        }
        match ValidationErrors::new(errors) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn schema_error(pointer: &str, keyword: &str, message: String) -> FieldError {
    FieldError {
        pointer: pointer.to_owned(),
        kind: FieldErrorKind::Schema {
            keyword: keyword.to_owned(),
            message,
        },
    }
}

#[cfg(feature = "schema")]
fn compile(action: &Action, schema: &AuditLogSchema) -> Result<Compiled, SchemaError> {
    let one = |v: Option<&Value>, field: String| -> Result<Option<jsonschema::Validator>, SchemaError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(s) => jsonschema::validator_for(s)
                .map(Some)
                .map_err(|e| SchemaError::InvalidJsonSchema {
                    action: action.to_string(),
                    version: schema.version,
                    field,
                    message: e.to_string(),
                }),
        }
    };
    let mut targets = Vec::new();
    for (i, t) in schema.targets.iter().enumerate() {
        targets.push((
            t.kind.clone(),
            one(t.metadata.as_ref(), format!("targets.{i}.metadata"))?,
        ));
    }
    Ok(Compiled {
        metadata: one(schema.metadata.as_ref(), "metadata".into())?,
        actor: one(
            schema.actor.as_ref().map(|a| &a.metadata),
            "actor.metadata".into(),
        )?,
        targets,
    })
}

#[cfg(not(feature = "schema"))]
fn compile(_action: &Action, _schema: &AuditLogSchema) -> Result<Compiled, SchemaError> {
    Ok(Compiled)
}

#[cfg(feature = "schema")]
fn check_compiled(c: &Compiled, event: &Event, version: u32, errors: &mut Vec<FieldError>) {
    fn as_value(m: Option<&crate::Metadata>) -> Value {
        m.and_then(|m| serde_json::to_value(m).ok())
            .unwrap_or_else(|| Value::Object(Default::default()))
    }
    fn run(v: &jsonschema::Validator, instance: &Value, base: &str, errors: &mut Vec<FieldError>) {
        if v.is_valid(instance) {
            return;
        }
        for e in v.iter_errors(instance) {
            let keyword = e.schema_path.as_str().rsplit('/').next().unwrap_or("").to_owned();
            errors.push(FieldError {
                pointer: format!("{base}{}", e.instance_path.as_str()),
                kind: FieldErrorKind::Schema {
                    keyword,
                    message: e.to_string(),
                },
            });
        }
    }
    if let Some(v) = &c.metadata {
        run(v, &as_value(event.metadata.as_ref()), "/metadata", errors);
    }
    if let Some(v) = &c.actor {
        run(
            v,
            &as_value(event.actor.metadata.as_ref()),
            "/actor/metadata",
            errors,
        );
    }
    for (i, t) in event.targets.iter().enumerate() {
        match c.targets.iter().find(|(kind, _)| *kind == t.kind) {
            None => errors.push(schema_error(
                &format!("/targets/{i}/type"),
                "enum",
                format!(
                    "target type '{}' is not declared in version {version} of the schema of '{}'",
                    t.kind, event.action
                ),
            )),
            Some((_, Some(v))) => run(
                v,
                &as_value(t.metadata.as_ref()),
                &format!("/targets/{i}/metadata"),
                errors,
            ),
            Some((_, None)) => {}
        }
    }
}

#[cfg(all(test, feature = "schema"))]
mod tests {
    use super::*;
    use crate::{Actor, Context, Target};
    use serde_json::json;

    fn registry() -> SchemaRegistry {
        let mut r = SchemaRegistry::new();
        let schema: AuditLogSchema = serde_json::from_value(json!({
            "object": "audit_log_schema", "version": 2,
            "targets": [{"type": "invoice", "metadata": {"type": "object", "properties": {"cost": {"type": "number"}}, "required": ["cost"]}}, {"type": "team"}],
            "actor": {"metadata": {"type": "object", "properties": {"role": {"type": "string"}}}},
            "metadata": {"type": "object", "properties": {"currency": {"type": "string"}}},
            "created_at": "2026-01-01T00:00:00.000Z"
        }))
        .unwrap();
        r.insert(&Action::new("invoice.paid").unwrap(), &schema).unwrap();
        r
    }

    fn event() -> Event {
        Event::new(
            Action::new("invoice.paid").unwrap(),
            Actor::new("u", "user"),
            Context::new("here"),
        )
    }

    #[test]
    fn fills_the_version_and_checks_every_part() {
        let r = registry();
        let mut ok = event().target(Target::new("i", "invoice").meta("cost", 1.5));
        r.apply(&mut ok).unwrap();
        assert_eq!(ok.version, Some(2));
        let mut bad = event()
            .target(Target::new("t", "team"))
            .target(Target::new("i", "invoice").meta("cost", "x"))
            .target(Target::new("i", "invoice"))
            .target(Target::new("p", "project"))
            .meta("currency", 1);
        bad.actor = bad.actor.meta("role", true);
        let err = r.apply(&mut bad).unwrap_err();
        let pointers: Vec<&str> = err.pointers().collect();
        assert_eq!(
            pointers,
            [
                "/metadata/currency",
                "/actor/metadata/role",
                "/targets/1/metadata/cost",
                "/targets/2/metadata",
                "/targets/3/type"
            ]
        );
        assert!(
            matches!(&err.errors()[3].kind, FieldErrorKind::Schema { keyword, .. } if keyword == "required")
        );
    }

    #[test]
    fn unknown_actions_and_versions_pass_unless_strict() {
        let r = registry();
        let mut other = Event::new(
            Action::new("x.y").unwrap(),
            Actor::new("u", "user"),
            Context::new("h"),
        );
        assert!(r.apply(&mut other).is_ok());
        assert_eq!(other.version, None);
        let old = event().version(1);
        assert!(r.check(&old).is_ok());
        let r = r.strict(true);
        assert_eq!(
            r.check(&other).unwrap_err().pointers().collect::<Vec<_>>(),
            ["/action"]
        );
        assert_eq!(
            r.check(&old).unwrap_err().pointers().collect::<Vec<_>>(),
            ["/version"]
        );
    }

    #[test]
    fn schemas_load_from_json() {
        let one = ActionSchema::from_json(
            r#"{"action":"a.b","targets":[{"type":"t"}],"metadata":{"type":"object"}}"#,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].schema.targets[0].kind, "t");
        let many = ActionSchema::from_json(
            r#"[{"action":"a.b","targets":[{"type":"t"}]},{"action":"c","targets":[]}]"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        let err = ActionSchema::from_json(r#"{"targets":[]}"#).unwrap_err();
        assert!(err.to_string().contains("action"), "{err}");
        assert_eq!(
            ActionSchema::new(Action::new("a.b").unwrap())
                .target("t")
                .metadata(json!({"type": "object"})),
            one[0]
        );
    }
}
