//! Validation of request bodies against the JSON Schemas of the OpenAPI extract, plus the
//! metadata rules of WorkOS (enforced by hand so that `instancePath` points at the offending key
//! or value), plus user-registered action schemas.

use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value, json};

const OPENAPI: &str = include_str!("../schemas/openapi-audit-logs.json");

/// Maximum number of metadata keys.
pub(crate) const MAX_METADATA_KEYS: usize = 50;
/// Maximum metadata key length.
pub(crate) const MAX_METADATA_KEY_LEN: usize = 40;
/// Maximum metadata string value length (characters).
pub(crate) const MAX_METADATA_STRING_LEN: usize = 500;
/// Maximum number of targets of one event: WorkOS rejects more with a 400 invalid audit-log
/// event (`maxItems: 20` in the embedded OpenAPI copy; the public spec omits it, production
/// shows it, dust-tt/dust#27021).
pub(crate) const MAX_TARGETS: usize = 20;
/// The default largest create-event request body, in bytes; a larger one is answered 413.
/// WorkOS answers oversized requests with 413 "request entity too large" but publishes no
/// figure (UNCONFIRMED); 100 KiB is the default JSON limit of the Node.js body parser whose
/// error text that is. Configurable with `TestKitBuilder::max_event_request_bytes`.
pub(crate) const DEFAULT_MAX_EVENT_REQUEST_BYTES: usize = 100 * 1024;

/// Validators compiled once from the embedded OpenAPI extract.
pub(crate) struct Validators {
    ingestion: Validator,
    schema_create: Validator,
    export_create: Validator,
}

/// Why a body was rejected.
#[derive(Debug)]
pub(crate) enum Problem {
    /// 422 `Validation failed.` with `(code, field)` pairs.
    Structural(Vec<(String, String)>),
    /// 400 `invalid_audit_log_event` with Ajv-style error objects.
    Invalid(Vec<Value>),
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "$ref" {
                    if let Value::String(s) = val
                        && let Some(rest) = s.strip_prefix("#/components/schemas/")
                    {
                        *s = format!("#/definitions/{rest}");
                    }
                } else {
                    rewrite_refs(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// The `components.schemas` section of the OpenAPI extract as JSON with rewritten `$ref`s.
pub(crate) fn component_definitions() -> Result<Value, String> {
    let doc: Value = serde_json::from_str(OPENAPI).map_err(|e| format!("embedded OpenAPI extract: {e}"))?;
    let mut json = doc
        .get("components")
        .and_then(|c| c.get("schemas"))
        .cloned()
        .ok_or("embedded OpenAPI extract has no components.schemas")?;
    rewrite_refs(&mut json);
    Ok(json)
}

fn compile(defs: &Value, root: &str) -> Result<Validator, String> {
    let doc = json!({ "definitions": defs, "$ref": format!("#/definitions/{root}") });
    jsonschema::validator_for(&doc).map_err(|e| format!("compiling {root}: {e}"))
}

impl Validators {
    pub(crate) fn load() -> Result<Self, String> {
        let defs = component_definitions()?;
        Ok(Validators {
            ingestion: compile(&defs, "AuditLogEventIngestionDto")?,
            schema_create: compile(&defs, "AuditLogSchemaDto")?,
            export_create: compile(&defs, "AuditLogExportCreationDto")?,
        })
    }

    /// Validates a create-event body: structure (422), metadata rules and `occurred_at` (400).
    pub(crate) fn check_event_body(&self, body: &Value) -> Result<(), Problem> {
        let mut structural = Vec::new();
        let mut invalid = Vec::new();
        if !self.ingestion.is_valid(body) {
            for err in self.ingestion.iter_errors(body) {
                let segs = segments(err.instance_path.as_str());
                if in_metadata(&segs) {
                    continue;
                }
                if segs == ["event", "targets"] && keyword(&err) == "maxItems" {
                    // WorkOS answers this one as an invalid event (400), not as a 422.
                    invalid.push(json!({
                        "instancePath": "/targets",
                        "schemaPath": "#/properties/targets/maxItems",
                        "keyword": "maxItems",
                        "params": {"limit": MAX_TARGETS},
                        "message": format!("must NOT have more than {MAX_TARGETS} items"),
                    }));
                    continue;
                }
                structural.push(structural_error(&segs, &err));
            }
        }
        if !structural.is_empty() {
            structural.dedup();
            return Err(Problem::Structural(structural));
        }
        if let Some(event) = body.get("event") {
            check_nul(event, &mut String::new(), &mut invalid);
            if let Some(m) = event.get("metadata") {
                check_metadata(m, "/metadata", &mut invalid);
            }
            if let Some(m) = event.get("actor").and_then(|a| a.get("metadata")) {
                check_metadata(m, "/actor/metadata", &mut invalid);
            }
            if let Some(targets) = event.get("targets").and_then(Value::as_array) {
                for (i, t) in targets.iter().enumerate() {
                    if let Some(m) = t.get("metadata") {
                        check_metadata(m, &format!("/targets/{i}/metadata"), &mut invalid);
                    }
                }
            }
            if let Some(s) = event.get("occurred_at").and_then(Value::as_str)
                && crate::util::parse_ts(s).is_none()
            {
                invalid.push(json!({
                    "instancePath": "/occurred_at",
                    "schemaPath": "#/properties/occurred_at/format",
                    "keyword": "format",
                    "params": {"format": "date-time"},
                    "message": "must match format \"date-time\" (RFC 3339)",
                }));
            }
        }
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(Problem::Invalid(invalid))
        }
    }

    /// Structural validation of a create-schema body (422 on failure).
    pub(crate) fn check_schema_body(&self, body: &Value) -> Result<(), Vec<(String, String)>> {
        check_structural(&self.schema_create, body)
    }

    /// Structural validation of a create-export body (422 on failure).
    pub(crate) fn check_export_body(&self, body: &Value) -> Result<(), Vec<(String, String)>> {
        check_structural(&self.export_create, body)
    }
}

fn check_structural(v: &Validator, body: &Value) -> Result<(), Vec<(String, String)>> {
    if v.is_valid(body) {
        return Ok(());
    }
    let mut errs: Vec<(String, String)> = v
        .iter_errors(body)
        .map(|e| structural_error(&segments(e.instance_path.as_str()), &e))
        .collect();
    errs.dedup();
    Err(errs)
}

fn structural_error(segs: &[String], err: &ValidationError<'_>) -> (String, String) {
    use jsonschema::error::ValidationErrorKind as K;
    let mut field = segs.join(".");
    let code = match &err.kind {
        K::Required { property } => {
            let p = property
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| property.to_string());
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&p);
            "required".to_owned()
        }
        K::Type { .. } => "invalid_type".to_owned(),
        _ => keyword(err),
    };
    if field.is_empty() {
        field = "body".to_owned();
    }
    (code, field)
}

/// The JSON Schema keyword that failed: the last segment of the schema path.
pub(crate) fn keyword(err: &ValidationError<'_>) -> String {
    err.schema_path
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Splits and unescapes a JSON pointer.
fn segments(ptr: &str) -> Vec<String> {
    ptr.split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn in_metadata(segs: &[String]) -> bool {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    matches!(
        s.as_slice(),
        ["event", "metadata", ..]
            | ["event", "actor", "metadata", ..]
            | ["event", "targets", _, "metadata", ..]
    )
}

/// Escapes one JSON pointer segment.
pub(crate) fn escape_ptr(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn valid_key(k: &str) -> bool {
    k.len() <= MAX_METADATA_KEY_LEN
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// WorkOS's metadata rules, reported with `instancePath` at the offending key or value.
pub(crate) fn check_metadata(m: &Value, base: &str, errs: &mut Vec<Value>) {
    let Some(map) = m.as_object() else {
        errs.push(json!({
            "instancePath": base, "keyword": "type", "params": {"type": "object"},
            "message": "must be object",
        }));
        return;
    };
    if map.len() > MAX_METADATA_KEYS {
        errs.push(json!({
            "instancePath": base, "keyword": "maxProperties",
            "params": {"limit": MAX_METADATA_KEYS},
            "message": format!("must NOT have more than {MAX_METADATA_KEYS} properties"),
        }));
    }
    for (k, v) in map {
        let path = format!("{base}/{}", escape_ptr(k));
        if !valid_key(k) {
            errs.push(json!({
                "instancePath": path, "keyword": "additionalProperties",
                "params": {"additionalProperty": k},
                "message": "must NOT have additional properties: metadata keys must match ^[a-zA-Z0-9_-]{0,40}$",
            }));
            continue;
        }
        match v {
            Value::String(s) if s.chars().count() > MAX_METADATA_STRING_LEN => {
                errs.push(json!({
                    "instancePath": path, "keyword": "maxLength",
                    "params": {"limit": MAX_METADATA_STRING_LEN},
                    "message": format!("must NOT have more than {MAX_METADATA_STRING_LEN} characters"),
                }));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => errs.push(json!({
                "instancePath": path, "keyword": "type",
                "params": {"type": ["string", "number", "boolean"]},
                "message": "must be string, number or boolean",
            })),
        }
    }
}

/// Refuses U+0000 in any string of the event (keys included), at the string's pointer.
///
/// What WorkOS does with one is not documented (UNCONFIRMED): the testkit refuses it as an
/// invalid event, because PostgreSQL's `jsonb`, the usual store of JSON events, cannot hold
/// `\u0000` (SQLSTATE 22P05), so a client that lets one through would lose the event.
fn check_nul(v: &Value, path: &mut String, errs: &mut Vec<Value>) {
    match v {
        Value::String(s) if s.contains('\0') => errs.push(json!({
            "instancePath": path.clone(),
            "keyword": "pattern",
            "params": {"pattern": "^[^\\u0000]*$"},
            "message": "must not contain U+0000 (NUL)",
        })),
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&escape_ptr(k));
                if k.contains('\0') {
                    errs.push(json!({
                        "instancePath": path.clone(),
                        "keyword": "propertyNames",
                        "message": "property names must not contain U+0000 (NUL)",
                    }));
                }
                check_nul(v, path, errs);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                check_nul(v, path, errs);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The compiled form of one registered schema version.
pub(crate) struct CompiledSchema {
    actor: Option<Validator>,
    targets: Vec<(String, Option<Validator>)>,
    metadata: Option<Validator>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema").finish_non_exhaustive()
    }
}

fn compile_user(v: Option<&Value>, field: &str) -> Result<Option<Validator>, (String, String)> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(s) => jsonschema::validator_for(s)
            .map(Some)
            .map_err(|_| ("invalid_json_schema".to_owned(), field.to_owned())),
    }
}

impl CompiledSchema {
    /// Compiles the metadata JSON Schemas of a create-schema body.
    pub(crate) fn compile(body: &Value) -> Result<Self, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let actor = compile_user(
            body.get("actor").and_then(|a| a.get("metadata")),
            "actor.metadata",
        )
        .unwrap_or_else(|e| {
            errs.push(e);
            None
        });
        let metadata = compile_user(body.get("metadata"), "metadata").unwrap_or_else(|e| {
            errs.push(e);
            None
        });
        let mut targets = Vec::new();
        for (i, t) in body
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ty = t.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
            match compile_user(t.get("metadata"), &format!("targets.{i}.metadata")) {
                Ok(v) => targets.push((ty, v)),
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(CompiledSchema {
                actor,
                targets,
                metadata,
            })
        } else {
            Err(errs)
        }
    }

    /// Validates an event against this schema version; errors are Ajv-style objects.
    pub(crate) fn check_event(&self, event: &Value, action: &str, version: i64) -> Vec<Value> {
        let empty = Value::Object(Map::new());
        let mut errs = Vec::new();
        if let Some(v) = &self.metadata {
            run(v, event.get("metadata").unwrap_or(&empty), "/metadata", &mut errs);
        }
        if let Some(v) = &self.actor {
            let m = event
                .get("actor")
                .and_then(|a| a.get("metadata"))
                .unwrap_or(&empty);
            run(v, m, "/actor/metadata", &mut errs);
        }
        for (i, t) in event
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ty = t.get("type").and_then(Value::as_str).unwrap_or("");
            match self.targets.iter().find(|(st, _)| st == ty) {
                None => errs.push(json!({
                    "instancePath": format!("/targets/{i}/type"),
                    "keyword": "enum",
                    "params": {"allowedValues": self.targets.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>()},
                    "message": format!("target type '{ty}' is not declared in version {version} of the schema of '{action}'"),
                })),
                Some((_, Some(v))) => run(
                    v,
                    t.get("metadata").unwrap_or(&empty),
                    &format!("/targets/{i}/metadata"),
                    &mut errs,
                ),
                Some((_, None)) => {}
            }
        }
        errs
    }
}

fn run(v: &Validator, instance: &Value, base: &str, errs: &mut Vec<Value>) {
    if v.is_valid(instance) {
        return;
    }
    for e in v.iter_errors(instance) {
        errs.push(json!({
            "instancePath": format!("{base}{}", e.instance_path.as_str()),
            "schemaPath": format!("#{}", e.schema_path.as_str()),
            "keyword": keyword(&e),
            "message": e.to_string(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile() {
        assert!(Validators::load().is_ok());
    }

    #[test]
    fn missing_action_is_structural() {
        let v = Validators::load().expect("load");
        let body = json!({"organization_id": "org_1", "event": {
            "occurred_at": "2024-01-02T03:04:05.678Z",
            "actor": {"id": "u", "type": "user"}, "targets": [], "context": {"location": "x"}}});
        match v.check_event_body(&body) {
            Err(Problem::Structural(e)) => {
                assert_eq!(e, vec![("required".to_owned(), "event.action".to_owned())])
            }
            other => panic!("{other:?}"),
        }
    }

    fn event_with_targets(n: usize) -> Value {
        let targets: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("t{i}"), "type": "team"}))
            .collect();
        json!({"organization_id": "org_1", "event": {
            "action": "a.b", "occurred_at": "2024-01-02T03:04:05.678Z",
            "actor": {"id": "u", "type": "user"}, "targets": targets, "context": {"location": "x"}}})
    }

    #[test]
    fn more_than_twenty_targets_is_an_invalid_event_naming_targets() {
        let v = Validators::load().expect("load");
        assert!(v.check_event_body(&event_with_targets(MAX_TARGETS)).is_ok());
        match v.check_event_body(&event_with_targets(MAX_TARGETS + 1)) {
            Err(Problem::Invalid(e)) => {
                assert_eq!(e.len(), 1);
                assert_eq!(e[0]["instancePath"], "/targets");
                assert_eq!(e[0]["keyword"], "maxItems");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nul_is_refused_at_its_pointer() {
        let v = Validators::load().expect("load");
        let mut body = event_with_targets(2);
        body["event"]["targets"][1]["id"] = json!("t\u{0}");
        body["event"]["actor"]["name"] = json!("\u{0}");
        match v.check_event_body(&body) {
            Err(Problem::Invalid(e)) => {
                let p: Vec<&str> = e.iter().filter_map(|e| e["instancePath"].as_str()).collect();
                assert_eq!(p, ["/actor/name", "/targets/1/id"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
