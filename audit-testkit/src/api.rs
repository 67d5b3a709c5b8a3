//! The WorkOS Audit Logs endpoints and the `/_testkit/` inspection API.
// Handlers return complete responses as their error values; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use crate::export_query::{ExportQuery, NoExport};
use crate::fault::FaultRule;
use crate::state::{ExportRec, Idem, Shared, lock};
use crate::util::{
    format_ts, json_bytes_response, json_response, message, now, org_not_found, parse_ts, token,
    validation_failed,
};
use crate::validate::{CompiledSchema, Problem};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type S = State<Arc<Shared>>;
type Res = Response<Body>;

/// Builds the router of every endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/audit_logs/events", post(create_event))
        .route("/audit_logs/exports", post(create_export))
        .route("/audit_logs/exports/{id}", get(get_export))
        .route(
            "/audit_logs/actions/{action}/schemas",
            post(create_schema).get(list_schemas),
        )
        .route("/audit_logs/actions", get(list_actions))
        .route(
            "/organizations/{id}/audit_logs_retention",
            get(get_retention).put(put_retention),
        )
        .route(
            "/organizations/{id}/audit_log_configuration",
            get(get_configuration),
        )
        .route("/portal/generate_link", post(generate_link))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    let testkit = Router::new()
        .route("/_testkit/health", get(health))
        .route("/_testkit/events", get(tk_events))
        .route("/_testkit/requests", get(tk_requests))
        .route(
            "/_testkit/faults",
            post(tk_add_fault).get(tk_list_faults).delete(tk_clear_faults),
        )
        .route("/_testkit/reset", post(tk_reset))
        .route("/_testkit/streams", get(tk_streams))
        .route(
            "/_testkit/streams/{org}",
            get(tk_stream).put(tk_put_stream).delete(tk_delete_stream),
        )
        .route("/_testkit/exports/{file}", get(tk_export_csv));
    // The browser pages, `/portal` (where Admin Portal links lead) included: see `viewer`.
    api.merge(testkit)
        .merge(crate::viewer::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn not_found() -> Res {
    message(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Res {
    message(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

fn unauthorized() -> Res {
    message(StatusCode::UNAUTHORIZED, "Unauthorized")
}

/// Bearer-key check and per-key rate limit for the WorkOS endpoints.
async fn auth(State(s): S, req: Request, next: Next) -> Res {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return unauthorized();
    };
    let Some(key) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
    else {
        return unauthorized();
    };
    let allowed = if s.config.api_keys.is_empty() {
        key.starts_with("sk_") && key.len() > 3
    } else {
        s.config.api_keys.iter().any(|k| k == key)
    };
    if !allowed {
        return unauthorized();
    }
    if let Err(secs) = s.rate_check(key) {
        let mut res = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"message": "Too many requests.", "code": "rate_limit_exceeded"}),
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return res;
    }
    next.run(req).await
}

/// Parses a JSON request body, insisting on a JSON content type.
fn parse_json(headers: &HeaderMap, body: &[u8]) -> Result<Value, Res> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json")
        || (mime.starts_with("application/") && mime.ends_with("+json")))
    {
        return Err(json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!({"message": format!("Unsupported Content-Type '{ct}': send application/json."), "code": "unsupported_media_type"}),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": format!("Malformed JSON body: {e}."), "code": "invalid_json"}),
        )
    })
}

fn invalid_event(errors: Vec<Value>) -> Res {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"message": "Invalid Audit Log event.", "code": "invalid_audit_log_event", "errors": errors}),
    )
}

fn idempotency_conflict() -> Res {
    json_response(
        StatusCode::CONFLICT,
        &json!({
            "message": "This Idempotency-Key was already used with a different request body.",
            "code": "idempotency_error",
        }),
    )
}

fn replay(status: u16, body: Vec<u8>) -> Res {
    let mut res = json_bytes_response(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
    res.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

const SUCCESS: &[u8] = b"{\"success\":true}";

/// The message of WorkOS's 400 for an export without matching events.
pub(crate) const NO_EVENTS: &str = "No audit log events found";

// ---- 1. create event ----------------------------------------------------------------------

/// The 413 of a create-event request over the budget. WorkOS's body for it is not documented
/// (UNCONFIRMED): this one has its usual `message` and `code` shape, with the text of the
/// Node.js body parser's error ("request entity too large").
fn request_too_large(limit: usize) -> Res {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({
            "message": "request entity too large",
            "code": "entity_too_large",
            "limit": limit,
        }),
    )
}

async fn create_event(State(s): S, headers: HeaderMap, body: Bytes) -> Res {
    if body.len() > s.config.max_event_request_bytes {
        return request_too_large(s.config.max_event_request_bytes);
    }
    let mut body = match parse_json(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    if let Some(k) = &key {
        match Shared::idem_lookup(&lock(&s.data), k, &body) {
            Idem::Miss => {}
            Idem::Replay(st, b) => return replay(st, b),
            Idem::Conflict => return idempotency_conflict(),
        }
    }
    match s.validators.check_event_body(&body) {
        Ok(()) => {}
        Err(Problem::Structural(e)) => return validation_failed(e),
        Err(Problem::Invalid(e)) => return invalid_event(e),
    }
    let org = body
        .get("organization_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !s.org_known(&org) {
        return org_not_found(&org);
    }
    let event = body.get("event").cloned().unwrap_or(Value::Null);
    if s.config.require_schemas
        && let Err(r) = check_against_schema(&s, &event)
    {
        return r;
    }
    // Keep the full request only when a key needs it for comparison.
    let request = key.as_ref().map(|_| std::mem::take(&mut body));
    match s.store_event(org, event, key, request, SUCCESS) {
        Idem::Miss => json_bytes_response(StatusCode::OK, SUCCESS.to_vec()),
        Idem::Replay(st, b) => replay(st, b),
        Idem::Conflict => idempotency_conflict(),
    }
}

fn check_against_schema(s: &Shared, event: &Value) -> Result<(), Res> {
    let action = event.get("action").and_then(Value::as_str).unwrap_or("");
    let version = event.get("version").and_then(Value::as_i64).unwrap_or(1);
    let compiled = {
        let data = lock(&s.data);
        let rec = data.action_index.get(action).map(|i| &data.actions[*i]);
        match rec {
            None => {
                return Err(invalid_event(vec![json!({
                    "instancePath": "/action",
                    "keyword": "schema",
                    "params": {"action": action},
                    "message": format!("No schema is registered for action '{action}'; create one with POST /audit_logs/actions/{action}/schemas."),
                })]));
            }
            Some(rec) => match rec.versions.iter().find(|v| v.version == version) {
                None => {
                    return Err(invalid_event(vec![json!({
                        "instancePath": "/version",
                        "keyword": "schema",
                        "params": {"action": action, "version": version, "latest": rec.versions.len()},
                        "message": format!("Action '{action}' has no schema version {version} (latest is {}).", rec.versions.len()),
                    })]));
                }
                Some(v) => v.compiled.clone(),
            },
        }
    };
    let errs = compiled.check_event(event, action, version);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(invalid_event(errs))
    }
}

// ---- 2, 3. exports ------------------------------------------------------------------------

fn str_list(body: &Value, field: &str) -> Option<Vec<String>> {
    body.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

async fn create_export(State(s): S, headers: HeaderMap, body: Bytes) -> Res {
    let body = match parse_json(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(e) = s.validators.check_export_body(&body) {
        return validation_failed(e);
    }
    let org = body.get("organization_id").and_then(Value::as_str).unwrap_or("");
    if !s.org_known(org) {
        return org_not_found(org);
    }
    let start = body.get("range_start").and_then(Value::as_str).and_then(parse_ts);
    let end = body.get("range_end").and_then(Value::as_str).and_then(parse_ts);
    let (start, end) = match (start, end) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => {
            let mut errs = Vec::new();
            if a.is_none() {
                errs.push(("invalid_date".to_owned(), "range_start".to_owned()));
            }
            if b.is_none() {
                errs.push(("invalid_date".to_owned(), "range_end".to_owned()));
            }
            return validation_failed(errs);
        }
    };
    if start > end {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": "Invalid date range", "code": "invalid_audit_log_export_range_date"}),
        );
    }
    let mut actor_names = str_list(&body, "actor_names");
    if let Some(old) = str_list(&body, "actors") {
        actor_names.get_or_insert_with(Vec::new).extend(old);
    }
    let query = ExportQuery {
        start: Some(start),
        end: Some(end),
        actions: str_list(&body, "actions"),
        actor_names,
        actor_ids: str_list(&body, "actor_ids"),
        targets: str_list(&body, "targets"),
    };
    let rec = match s.create_export(org, &query) {
        Ok(rec) => rec,
        Err(NoExport::NoEvents) => return message(StatusCode::BAD_REQUEST, NO_EVENTS),
        Err(NoExport::TooLarge(limit)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": NoExport::too_large_message(limit), "code": "export_too_large"}),
            );
        }
    };
    json_response(StatusCode::CREATED, &export_json(&s, &rec))
}

fn export_json(s: &Shared, rec: &ExportRec) -> Value {
    if rec.is_ready() && s.config.failing_exports {
        json!({
            "object": "audit_log_export", "id": rec.id, "state": "error",
            "created_at": rec.created_at, "updated_at": rec.ready_at,
        })
    } else if rec.is_ready() {
        let t = token();
        let expires = now() + s.config.export_url_ttl;
        crate::state::insert_token(
            &mut lock(&s.data).export_tokens,
            t.clone(),
            (rec.id.clone(), expires),
            |v| v.1,
        );
        json!({
            "object": "audit_log_export", "id": rec.id, "state": "ready",
            "url": format!("{}/_testkit/exports/{}.csv?token={t}", s.base_url, rec.id),
            "created_at": rec.created_at, "updated_at": rec.ready_at,
        })
    } else {
        json!({
            "object": "audit_log_export", "id": rec.id, "state": "pending",
            "created_at": rec.created_at, "updated_at": rec.created_at,
        })
    }
}

async fn get_export(State(s): S, Path(id): Path<String>) -> Res {
    let rec = lock(&s.data).exports.get(&id).cloned();
    match rec {
        Some(rec) => json_response(StatusCode::OK, &export_json(&s, &rec)),
        None => message(
            StatusCode::NOT_FOUND,
            format!("Audit Log Export not found: '{id}'."),
        ),
    }
}

// ---- 4, 5, 6. schemas and actions ---------------------------------------------------------

async fn create_schema(State(s): S, Path(action): Path<String>, headers: HeaderMap, body: Bytes) -> Res {
    let body = match parse_json(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if action.is_empty() || action.len() > 256 {
        return validation_failed(vec![("invalid".into(), "action".into())]);
    }
    if let Err(e) = s.validators.check_schema_body(&body) {
        return validation_failed(e);
    }
    let compiled = match CompiledSchema::compile(&body) {
        Ok(c) => c,
        Err(e) => return validation_failed(e),
    };
    let out = s.upsert_schema(&action, body, compiled);
    json_response(StatusCode::CREATED, &out)
}

struct PageParams {
    limit: usize,
    before: Option<String>,
    after: Option<String>,
    desc: bool,
}

fn page_params(query: Option<String>) -> Result<PageParams, Res> {
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let mut errs = Vec::new();
    let limit = match q.get("limit") {
        None => 10,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                errs.push(json!({"code": "invalid_limit", "field": "limit", "message": "limit must be an integer between 1 and 100"}));
                10
            }
        },
    };
    let desc = match q.get("order").map(String::as_str) {
        None | Some("desc") => true,
        Some("asc") | Some("normal") => false,
        Some(_) => {
            errs.push(json!({"code": "invalid_order", "field": "order", "message": "order must be one of normal, desc, asc"}));
            true
        }
    };
    let before = q.get("before").filter(|s| !s.is_empty()).cloned();
    let after = q.get("after").filter(|s| !s.is_empty()).cloned();
    if before.is_some() && after.is_some() {
        errs.push(json!({"code": "invalid_cursor", "field": "before", "message": "send either before or after, not both"}));
    }
    if !errs.is_empty() {
        return Err(json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"message": "Validation failed.", "errors": errs}),
        ));
    }
    Ok(PageParams {
        limit,
        before,
        after,
        desc,
    })
}

/// Pages through `(cursor, item)` pairs given in ascending creation order.
fn paginate(mut items: Vec<(String, Value)>, p: &PageParams) -> Result<Value, Res> {
    if p.desc {
        items.reverse();
    }
    let len = items.len();
    let find = |c: &str, field: &str| {
        items.iter().position(|(id, _)| id == c).ok_or_else(|| {
            json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"message": "Validation failed.", "errors": [{"code": "invalid_cursor", "field": field, "message": format!("unknown cursor '{c}'")}]}),
            )
        })
    };
    let (start, end) = if let Some(a) = &p.after {
        let pos = find(a, "after")? + 1;
        (pos, (pos + p.limit).min(len))
    } else if let Some(b) = &p.before {
        let pos = find(b, "before")?;
        (pos.saturating_sub(p.limit), pos)
    } else {
        (0, p.limit.min(len))
    };
    let page = &items[start..end];
    let before = (start > 0 && !page.is_empty()).then(|| page[0].0.clone());
    let after = (end < len && !page.is_empty()).then(|| page[page.len() - 1].0.clone());
    Ok(json!({
        "object": "list",
        "data": page.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "list_metadata": {"before": before, "after": after},
    }))
}

async fn list_schemas(State(s): S, Path(action): Path<String>, RawQuery(q): RawQuery) -> Res {
    let p = match page_params(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items = {
        let data = lock(&s.data);
        match data.action_index.get(&action) {
            None => {
                return message(
                    StatusCode::NOT_FOUND,
                    format!("Audit Log Action not found: '{action}'."),
                );
            }
            Some(i) => data.actions[*i]
                .versions
                .iter()
                .map(|v| (v.id.clone(), v.to_json()))
                .collect::<Vec<_>>(),
        }
    };
    match paginate(items, &p) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(r) => r,
    }
}

async fn list_actions(State(s): S, RawQuery(q): RawQuery) -> Res {
    let p = match page_params(q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let items: Vec<(String, Value)> = lock(&s.data)
        .actions
        .iter()
        .map(|a| (a.id.clone(), a.to_json()))
        .collect();
    match paginate(items, &p) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(r) => r,
    }
}

// ---- 7, 8, 9. retention and configuration -------------------------------------------------

/// Default retention of an organization that never set one (UNCONFIRMED: WorkOS's default).
const DEFAULT_RETENTION_DAYS: i64 = 30;

fn retention_of(s: &Shared, org: &str) -> Option<i64> {
    lock(&s.data)
        .retention
        .get(org)
        .copied()
        .unwrap_or(Some(DEFAULT_RETENTION_DAYS))
}

async fn get_retention(State(s): S, Path(org): Path<String>) -> Res {
    if !s.org_known(&org) {
        return org_not_found(&org);
    }
    json_response(
        StatusCode::OK,
        &json!({"retention_period_in_days": retention_of(&s, &org)}),
    )
}

/// `retention_period_in_days` takes 30 or 365 only: the enum of the OpenAPI specification
/// ("Valid values are `30` and `365`"). Other periods are set with `retention_period`.
fn valid_days(d: i64) -> bool {
    d == 30 || d == 365
}

fn period_days(p: &str) -> Option<i64> {
    let (n, unit) = p.split_once('_')?;
    let n: i64 = n.parse().ok()?;
    match unit {
        "MONTH" if n == 1 => Some(30),
        "MONTHS" if (2..=11).contains(&n) => Some(30 * n),
        "YEAR" if n == 1 => Some(365),
        "YEARS" if (2..=10).contains(&n) => Some(365 * n),
        _ => None,
    }
}

async fn put_retention(State(s): S, Path(org): Path<String>, headers: HeaderMap, body: Bytes) -> Res {
    let body = match parse_json(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !s.org_known(&org) {
        return org_not_found(&org);
    }
    let days = body.get("retention_period_in_days");
    let period = body.get("retention_period");
    let days = match (days, period) {
        (Some(_), Some(_)) => {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({"message": "Validation failed.", "errors": [{"code": "mutually_exclusive", "field": "retention_period", "message": "send either retention_period_in_days or retention_period, not both"}]}),
            );
        }
        (None, None) => {
            return validation_failed(vec![("required".into(), "retention_period_in_days".into())]);
        }
        (Some(d), None) => match d.as_i64().filter(|d| valid_days(*d)) {
            Some(d) => d,
            None => {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"message": "Validation failed.", "errors": [{"code": "invalid_retention_period", "field": "retention_period_in_days", "message": "must be 30 or 365; set other periods with retention_period"}]}),
                );
            }
        },
        (None, Some(p)) => match p.as_str().and_then(period_days) {
            Some(d) => d,
            None => {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"message": "Validation failed.", "errors": [{"code": "invalid_retention_period", "field": "retention_period", "message": "must be 1_MONTH, 2_MONTHS .. 11_MONTHS, 1_YEAR, 2_YEARS .. 10_YEARS"}]}),
                );
            }
        },
    };
    lock(&s.data).retention.insert(org.clone(), Some(days));
    #[cfg(feature = "sqlite")]
    s.with_db(|db| db.set_retention(&org, Some(days)));
    json_response(StatusCode::OK, &json!({"retention_period_in_days": days}))
}

async fn get_configuration(State(s): S, Path(org): Path<String>) -> Res {
    if !s.org_known(&org) {
        return org_not_found(&org);
    }
    let mut out = json!({
        "organization_id": org,
        "retention_period_in_days": retention_of(&s, &org),
        "state": s.config.configuration_state.as_deref().unwrap_or("active"),
    });
    if let Some(stream) = s.streams.status(&org) {
        out["log_stream"] = stream.configuration_json();
    } else if let Some((ty, state)) = &s.config.log_stream {
        let suffix: String = org.trim_start_matches("org_").chars().take(26).collect();
        out["log_stream"] = json!({
            "id": format!("als_{suffix}"),
            "type": ty,
            "state": state,
            "last_synced_at": if state == "active" { json!(format_ts(now())) } else { Value::Null },
            "created_at": format_ts(s.started_at),
        });
    }
    json_response(StatusCode::OK, &out)
}

// ---- 10. Admin Portal ---------------------------------------------------------------------

async fn generate_link(State(s): S, headers: HeaderMap, body: Bytes) -> Res {
    let body = match parse_json(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(org) = body.get("organization").and_then(Value::as_str) else {
        return validation_failed(vec![("required".into(), "organization".into())]);
    };
    let intent = body.get("intent").and_then(Value::as_str).unwrap_or("");
    const ALL: [&str; 7] = [
        "sso",
        "dsync",
        "audit_logs",
        "log_streams",
        "domain_verification",
        "certificate_renewal",
        "bring_your_own_key",
    ];
    if !ALL.contains(&intent) {
        return validation_failed(vec![("invalid_intent".into(), "intent".into())]);
    }
    if intent != "audit_logs" && intent != "log_streams" {
        return message(
            StatusCode::BAD_REQUEST,
            format!("Intent '{intent}' is not supported by audit-testkit (audit_logs, log_streams)."),
        );
    }
    if !s.org_known(org) {
        return org_not_found(org);
    }
    let t = token();
    let expires = now() + crate::state::PORTAL_LINK_TTL;
    crate::state::insert_token(
        &mut lock(&s.data).portal_tokens,
        t.clone(),
        (org.to_owned(), intent.to_owned(), expires),
        |v| v.2,
    );
    json_response(
        StatusCode::CREATED,
        &json!({"link": format!("{}/portal?token={t}&intent={intent}", s.base_url)}),
    )
}

// The page an Admin Portal link leads to is served by `crate::viewer`.

// ---- /_testkit/ ---------------------------------------------------------------------------

async fn health() -> Res {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn tk_events(State(s): S, RawQuery(q): RawQuery) -> Res {
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let org = q.get("organization_id");
    let data = lock(&s.data);
    let list: Vec<&crate::StoredEvent> = data
        .events
        .iter()
        .filter(|e| org.is_none_or(|o| &e.organization_id == o))
        .collect();
    json_response(StatusCode::OK, &json!({"data": list}))
}

/// The recorded requests with `Authorization` values and `sk_` keys redacted.
async fn tk_requests(State(s): S) -> Res {
    let list: Vec<crate::RecordedRequest> = lock(&s.requests).items.iter().map(|r| r.redacted()).collect();
    json_response(StatusCode::OK, &json!({"data": list}))
}

async fn tk_add_fault(State(s): S, body: Bytes) -> Res {
    let rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": format!("Invalid fault rule: {e}."), "code": "invalid_fault"}),
            );
        }
    };
    let out = json!({"rule": rule});
    lock(&s.faults).push(crate::fault::ActiveFault::new(rule));
    json_response(StatusCode::CREATED, &out)
}

async fn tk_list_faults(State(s): S) -> Res {
    let rules: Vec<FaultRule> = lock(&s.faults).iter().map(|f| f.rule.clone()).collect();
    json_response(StatusCode::OK, &json!({"data": rules}))
}

async fn tk_clear_faults(State(s): S) -> Res {
    lock(&s.faults).clear();
    json_response(StatusCode::OK, &json!({"cleared": true}))
}

async fn tk_streams(State(s): S) -> Res {
    let list: Vec<Value> = s.streams.all().iter().map(|st| st.to_json()).collect();
    json_response(StatusCode::OK, &json!({"data": list}))
}

fn no_stream(org: &str) -> Res {
    message(
        StatusCode::NOT_FOUND,
        format!("Organization '{org}' has no log stream."),
    )
}

async fn tk_stream(State(s): S, Path(org): Path<String>) -> Res {
    match s.streams.status(&org) {
        Some(st) => json_response(StatusCode::OK, &st.to_json()),
        None => no_stream(&org),
    }
}

fn invalid_stream(msg: impl std::fmt::Display) -> Res {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"message": format!("Invalid log stream: {msg}."), "code": "invalid_stream"}),
    )
}

/// Configures a stream: a [`crate::Destination`] as JSON, plus an optional `"state"`
/// (`active`, the default, or `inactive`). With only `"state"`, pauses or resumes the stream.
async fn tk_put_stream(State(s): S, Path(org): Path<String>, body: Bytes) -> Res {
    if !s.org_known(&org) {
        return org_not_found(&org);
    }
    let mut body: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => Value::Object(m),
        Ok(_) => return invalid_stream("the body must be a JSON object"),
        Err(e) => return invalid_stream(e),
    };
    let active = match body.as_object_mut().and_then(|m| m.remove("state")) {
        None => true,
        Some(v) if v == "active" => true,
        Some(v) if v == "inactive" => false,
        Some(_) => return invalid_stream("state: must be active or inactive"),
    };
    if body.as_object().is_some_and(|m| m.is_empty()) {
        return match s.streams.set_active(&org, active) {
            Some(st) => json_response(StatusCode::OK, &st.to_json()),
            None => no_stream(&org),
        };
    }
    let dest: crate::Destination = match serde_json::from_value(body) {
        Ok(d) => d,
        Err(e) => return invalid_stream(e),
    };
    match s.streams.set(&org, dest, active) {
        Ok(st) => json_response(StatusCode::OK, &st.to_json()),
        Err(e) => invalid_stream(e),
    }
}

async fn tk_delete_stream(State(s): S, Path(org): Path<String>) -> Res {
    if s.streams.remove(&org) {
        json_response(StatusCode::OK, &json!({"removed": true}))
    } else {
        no_stream(&org)
    }
}

async fn tk_reset(State(s): S) -> Res {
    s.reset();
    json_response(StatusCode::OK, &json!({"reset": true}))
}

async fn tk_export_csv(State(s): S, Path(file): Path<String>, RawQuery(q): RawQuery) -> Res {
    let id = file.strip_suffix(".csv").unwrap_or(&file);
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let data = lock(&s.data);
    let tok = q.get("token").and_then(|t| data.export_tokens.get(t));
    let Some((eid, expires)) = tok else {
        return message(StatusCode::FORBIDDEN, "Invalid export URL token.");
    };
    if eid != id {
        return message(StatusCode::FORBIDDEN, "Invalid export URL token.");
    }
    if now() > *expires {
        return message(
            StatusCode::FORBIDDEN,
            "Export URL expired: GET the export again for a new URL.",
        );
    }
    let Some(rec) = data.exports.get(id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut res = Response::new(Body::from(rec.csv.clone()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    res
}
