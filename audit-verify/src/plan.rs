//! Events for the checks: one that satisfies the action's registered schema, and one built to
//! violate it.

use serde_json::Value;

use audit_core::client::AuditLogSchema;
use audit_core::event::{Action, Actor, Context, Event, Metadata, MetadataValue, Target};

/// The actor of the test events.
pub(crate) const ACTOR_ID: &str = "audit-core-verify";

/// The metadata of an event, its actor and its targets, before it becomes an [`Event`].
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    action: Action,
    version: Option<u32>,
    actor: Metadata,
    targets: Vec<(String, Metadata)>,
    metadata: Metadata,
}

/// How the violating event breaks the schema.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    /// A JSON pointer into the event, e.g. `/metadata/amount`.
    pub(crate) pointer: String,
    /// What was done, e.g. `declared "number", sent the string "not-a-number"`.
    pub(crate) how: String,
}

impl Plan {
    /// An event for `action` that satisfies `schema` as far as its JSON Schemas can be read: every
    /// declared property of a simple type gets a value of that type (the first `enum` or the
    /// `const` value when given, the `minimum` for numbers), and there is one target per declared
    /// target type.
    pub(crate) fn conforming(action: &Action, schema: Option<&AuditLogSchema>) -> Self {
        let Some(schema) = schema else {
            return Plan {
                action: action.clone(),
                version: None,
                actor: Metadata::new(),
                targets: Vec::new(),
                metadata: Metadata::new(),
            };
        };
        Plan {
            action: action.clone(),
            version: Some(schema.version),
            actor: schema
                .actor
                .as_ref()
                .map(|a| conforming_metadata(&a.metadata))
                .unwrap_or_default(),
            targets: schema
                .targets
                .iter()
                .map(|t| {
                    (
                        t.kind.clone(),
                        t.metadata.as_ref().map(conforming_metadata).unwrap_or_default(),
                    )
                })
                .collect(),
            metadata: schema
                .metadata
                .as_ref()
                .map(conforming_metadata)
                .unwrap_or_default(),
        }
    }

    /// The same event broken in one place: the event's metadata first, then a target's, then
    /// the actor's. `None` when the schema declares nothing that can be broken.
    pub(crate) fn violating(&self, schema: &AuditLogSchema) -> Option<(Plan, Violation)> {
        let mut plan = self.clone();
        if let Some(s) = &schema.metadata
            && let Some(v) = violate(s, &mut plan.metadata, "/metadata")
        {
            return Some((plan, v));
        }
        for (i, t) in schema.targets.iter().enumerate() {
            let (Some(s), Some((_, meta))) = (&t.metadata, plan.targets.get_mut(i)) else {
                continue;
            };
            if let Some(v) = violate(s, meta, &format!("/targets/{i}/metadata")) {
                return Some((plan, v));
            }
        }
        if let Some(a) = &schema.actor
            && let Some(v) = violate(&a.metadata, &mut plan.actor, "/actor/metadata")
        {
            return Some((plan, v));
        }
        None
    }

    /// The event, occurring now.
    pub(crate) fn to_event(&self) -> Event {
        let mut actor = Actor::new(ACTOR_ID, "system").name("audit-core verification checklist");
        if !self.actor.is_empty() {
            actor = actor.metadata(self.actor.clone());
        }
        let mut event = Event::new(
            self.action.clone(),
            actor,
            Context::new("127.0.0.1").user_agent(concat!("audit-core-verify/", env!("CARGO_PKG_VERSION"))),
        );
        for (i, (kind, meta)) in self.targets.iter().enumerate() {
            let mut target = Target::new(format!("verify_{kind}_{i}"), kind.clone());
            if !meta.is_empty() {
                target = target.metadata(meta.clone());
            }
            event = event.target(target);
        }
        if !self.metadata.is_empty() {
            event = event.metadata(self.metadata.clone());
        }
        if let Some(v) = self.version {
            event = event.version(v);
        }
        event
    }
}

/// The declared simple type of a property: `string`, `number`, `integer` or `boolean`.
fn simple_type(prop: &Value) -> Option<&str> {
    let ty = match prop.get("type") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    ty.filter(|t| matches!(*t, "string" | "number" | "integer" | "boolean"))
}

fn to_metadata_value(v: &Value) -> Option<MetadataValue> {
    match v {
        Value::String(s) => Some(MetadataValue::String(s.clone())),
        Value::Bool(b) => Some(MetadataValue::Bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(MetadataValue::Integer)
            .or_else(|| n.as_f64().map(MetadataValue::Float)),
        _ => None,
    }
}

/// A value that satisfies a property's schema, as far as this simple reading goes.
fn sample(prop: &Value) -> Option<MetadataValue> {
    if let Some(v) = prop.get("const").and_then(to_metadata_value) {
        return Some(v);
    }
    if let Some(v) = prop
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.iter().find_map(to_metadata_value))
    {
        return Some(v);
    }
    match simple_type(prop)? {
        "string" => {
            let min = prop.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            Some(MetadataValue::String("verify".repeat(min.div_ceil(6).max(1))))
        }
        "integer" => {
            let min = prop.get("minimum").and_then(Value::as_f64).unwrap_or(1.0);
            Some(MetadataValue::Integer(min.ceil().clamp(-1e15, 1e15) as i64))
        }
        "number" => Some(MetadataValue::Float(
            prop.get("minimum").and_then(Value::as_f64).unwrap_or(1.5),
        )),
        "boolean" => Some(MetadataValue::Bool(true)),
        _ => None,
    }
}

fn conforming_metadata(schema: &Value) -> Metadata {
    let mut meta = Metadata::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, prop) in props {
            if let Some(v) = sample(prop) {
                meta.insert(key.clone(), v);
            }
        }
    }
    meta
}

/// Breaks `meta` against `schema`: a property of the wrong type, else a required property left
/// out, else an undeclared property where `additionalProperties` is false.
fn violate(schema: &Value, meta: &mut Metadata, base: &str) -> Option<Violation> {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, prop) in props {
            let (wrong, how) = match simple_type(prop) {
                Some("string") => (MetadataValue::Integer(12345), "the number 12345".to_owned()),
                Some("number" | "integer") => (
                    MetadataValue::String("not-a-number".into()),
                    "the string \"not-a-number\"".to_owned(),
                ),
                Some("boolean") => (
                    MetadataValue::String("not-a-boolean".into()),
                    "the string \"not-a-boolean\"".to_owned(),
                ),
                _ => continue,
            };
            let declared = simple_type(prop).unwrap_or("?");
            meta.insert(key.clone(), wrong);
            return Some(Violation {
                pointer: format!("{base}/{key}"),
                how: format!("declared {declared:?}, sent {how}"),
            });
        }
    }
    if let Some(key) = schema
        .get("required")
        .and_then(Value::as_array)
        .and_then(|r| r.iter().find_map(Value::as_str))
    {
        meta.remove(key);
        return Some(Violation {
            pointer: format!("{base}/{key}"),
            how: "required, left out".to_owned(),
        });
    }
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        meta.insert("verify_undeclared", MetadataValue::String("x".into()));
        return Some(Violation {
            pointer: format!("{base}/verify_undeclared"),
            how: "not declared (additionalProperties is false), sent anyway".to_owned(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> AuditLogSchema {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn conforming_event_follows_the_schema_and_the_violation_breaks_one_property() {
        let s = schema(json!({
            "object": "audit_log_schema", "version": 3, "created_at": "2026-01-01T00:00:00.000Z",
            "targets": [{"type": "team", "metadata": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 2}}}}],
            "metadata": {"type": "object", "properties": {"plan": {"enum": ["pro", "free"]}, "paid": {"type": "boolean"}}}
        }));
        let action = Action::new("team.created").unwrap();
        let plan = Plan::conforming(&action, Some(&s));
        let event = serde_json::to_value(plan.to_event()).unwrap();
        assert_eq!(event["version"], 3);
        assert_eq!(event["metadata"], json!({"plan": "pro", "paid": true}));
        assert_eq!(event["targets"][0]["type"], "team");
        assert_eq!(event["targets"][0]["metadata"], json!({"size": 2}));

        let (bad, violation) = plan.violating(&s).unwrap();
        assert_eq!(violation.pointer, "/metadata/paid");
        let event = serde_json::to_value(bad.to_event()).unwrap();
        assert_eq!(event["metadata"]["paid"], "not-a-boolean");
        assert_eq!(event["metadata"]["plan"], "pro");
    }

    #[test]
    fn required_and_closed_schemas_are_violated_and_open_ones_are_not() {
        let mut meta = Metadata::new().with("id", "x");
        let v = violate(&json!({"required": ["id"]}), &mut meta, "/metadata").unwrap();
        assert_eq!(v.pointer, "/metadata/id");
        assert!(meta.get("id").is_none());
        let mut meta = Metadata::new();
        let v = violate(
            &json!({"additionalProperties": false}),
            &mut meta,
            "/actor/metadata",
        )
        .unwrap();
        assert_eq!(v.pointer, "/actor/metadata/verify_undeclared");
        assert!(violate(&json!({"type": "object"}), &mut Metadata::new(), "/metadata").is_none());
    }
}
