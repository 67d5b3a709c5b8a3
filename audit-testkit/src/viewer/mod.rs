//! A local event viewer in the browser: server-rendered pages that show what the testkit stored,
//! the way the WorkOS dashboard and Admin Portal show it.
//!
//! | page | shows |
//! |---|---|
//! | `GET /` | the organizations, with event counts and links |
//! | `GET /portal?token=T&intent=...` | the page an Admin Portal link (`POST /portal/generate_link`) leads to: a redirect to the organization's events (`audit_logs`) or its log stream (`log_streams`); an unknown token is a 404 page |
//! | `GET /viewer/events?org=ORG&...` | the events, newest first, 50 a page (`page=N`), filtered by `action`, `actor_id`, `actor_name`, `target` (target type), `from`, `to` |
//! | `GET /viewer/events/{n}` | one event as stored (pretty JSON) and the idempotency key it came with |
//! | `GET /viewer/export?org=ORG&...` | creates an export with the list's filters through the export endpoints, waits until it is ready and answers the CSV as a download |
//! | `GET /viewer/log-streams?org=ORG` | the simulated log stream's type and state |
//!
//! # Security
//!
//! Every value from an event is untrusted: all text is HTML-escaped, and the pages carry
//! `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; ...` so that no script,
//! image or other resource can load even if markup slipped through. Every route is a `GET`; none
//! changes stored events (the export route creates an export record, as `POST
//! /audit_logs/exports` does). Like `/_testkit/`, the viewer needs no API key: the testkit is
//! meant for loopback use in development and tests. Viewer requests are not recorded and faults
//! never apply to them.

mod filter;
mod html;

use crate::state::{Shared, lock};
use crate::util::{format_ts, parse_ts};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::get;
use filter::Filters;
use html::{esc, href, page, problem, secure};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

type S = State<Arc<Shared>>;
type Res = Response<Body>;

/// Events per page of the list.
pub(crate) const PAGE_SIZE: usize = 50;

/// Whether a path belongs to the viewer (such requests are not recorded and never faulted).
pub(crate) fn is_viewer_path(path: &str) -> bool {
    path == "/" || path == "/viewer" || path.starts_with("/viewer/")
}

/// The viewer's routes, `/portal` included.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(organizations))
        .route("/portal", get(portal))
        .route("/viewer/events", get(events))
        .route("/viewer/events/{n}", get(event_detail))
        .route("/viewer/export", get(export))
        .route("/viewer/log-streams", get(log_streams))
}

fn query(q: Option<String>) -> HashMap<String, String> {
    serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default()
}

fn org_exists(s: &Shared, org: &str) -> bool {
    s.org_known(org) || lock(&s.data).events.iter().any(|e| e.organization_id == org)
}

fn unknown_org(org: &str) -> Res {
    problem(
        StatusCode::NOT_FOUND,
        "Organization not found",
        &format!("The testkit knows no organization '{org}'."),
    )
}

fn see_other(location: &str) -> Res {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    secure(&mut res);
    res
}

// ---- organizations ------------------------------------------------------------------------

async fn organizations(State(s): S) -> Res {
    let mut counts: HashMap<String, (usize, String)> = HashMap::new();
    for e in lock(&s.data).events.iter() {
        let c = counts.entry(e.organization_id.clone()).or_default();
        c.0 += 1;
        let at = e.event.get("occurred_at").and_then(Value::as_str).unwrap_or("");
        if at > c.1.as_str() {
            c.1 = at.to_owned();
        }
    }
    let mut orgs: Vec<String> = s.config.orgs.clone();
    let mut seen: Vec<String> = counts.keys().filter(|o| !orgs.contains(o)).cloned().collect();
    seen.sort();
    orgs.extend(seen);
    let mut rows = String::new();
    for org in &orgs {
        let (n, latest) = counts.get(org).cloned().unwrap_or_default();
        let _ = write!(
            rows,
            "<tr><td><a class=\"mono\" href=\"{events}\">{o}</a></td><td>{n}</td><td class=\"mono\">{latest}</td>\
             <td><a href=\"{events}\">Events</a> · <a href=\"{streams}\">Log stream</a></td></tr>",
            events = esc(&href("/viewer/events", &[("org", org)])),
            streams = esc(&href("/viewer/log-streams", &[("org", org)])),
            o = esc(org),
            latest = if latest.is_empty() {
                "—".to_owned()
            } else {
                esc(&latest)
            },
        );
    }
    let any = if s.config.any_org {
        "<p class=\"note\">This testkit accepts any organization id; organizations appear here once they have events.</p>"
    } else {
        ""
    };
    page(
        StatusCode::OK,
        "Organizations",
        &format!(
            "<h1>Organizations</h1><p class=\"sub\">Audit-log events stored by the audit-testkit at {url}</p>{any}\
             <table><thead><tr><th>Organization</th><th>Events</th><th>Latest event</th><th></th></tr></thead>\
             <tbody>{rows}</tbody></table>",
            url = esc(&s.base_url)
        ),
    )
}

// ---- the Admin Portal link ----------------------------------------------------------------

async fn portal(State(s): S, RawQuery(q): RawQuery) -> Res {
    let q = query(q);
    let found = q
        .get("token")
        .and_then(|t| lock(&s.data).portal_tokens.get(t).cloned());
    match found {
        Some((org, intent)) if intent == "log_streams" => {
            see_other(&href("/viewer/log-streams", &[("org", &org)]))
        }
        Some((org, _)) => see_other(&href("/viewer/events", &[("org", &org)])),
        None => problem(
            StatusCode::NOT_FOUND,
            "Unknown or expired Admin Portal link",
            "This link's token is not known to the testkit (it was never issued, or the testkit was reset or \
             restarted without a data file). Generate a new one with POST /portal/generate_link.",
        ),
    }
}

// ---- the event list -----------------------------------------------------------------------

fn text_input(name: &str, label: &str, value: &str, placeholder: &str) -> String {
    format!(
        "<label>{label}<input name=\"{name}\" value=\"{v}\" placeholder=\"{p}\"></label>",
        v = esc(value),
        p = esc(placeholder)
    )
}

fn actor_cell(ev: &Value) -> String {
    let a = ev.get("actor");
    let get = |k: &str| a.and_then(|a| a.get(k)).and_then(Value::as_str).unwrap_or("");
    let (id, ty, name) = (get("id"), get("type"), get("name"));
    let head = if name.is_empty() { esc(id) } else { esc(name) };
    format!(
        "{head}<br><span class=\"mono muted\">{} · {}</span>",
        esc(id),
        esc(ty)
    )
}

fn targets_cell(ev: &Value) -> String {
    let mut out = String::new();
    for t in ev.get("targets").and_then(Value::as_array).into_iter().flatten() {
        let get = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
        let label = if get("name").is_empty() {
            get("id")
        } else {
            get("name")
        };
        let _ = write!(
            out,
            "<span class=\"pill\" title=\"{id}\">{ty}: {label}</span>",
            id = esc(get("id")),
            ty = esc(get("type")),
            label = esc(label)
        );
    }
    out
}

async fn events(State(s): S, RawQuery(q): RawQuery) -> Res {
    let q = query(q);
    let f = Filters::from_query(&q);
    if f.org.is_empty() {
        return see_other("/");
    }
    if !org_exists(&s, &f.org) {
        return unknown_org(&f.org);
    }
    let page_no: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let (range, error) = match f.range() {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let (total_org, rows, total) = {
        let data = lock(&s.data);
        let in_org: Vec<(usize, &crate::StoredEvent)> = data
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.organization_id == f.org)
            .collect();
        let total_org = in_org.len();
        let mut matched: Vec<(usize, &crate::StoredEvent)> = match range {
            Some(r) => in_org
                .into_iter()
                .filter(|(_, e)| f.matches(&e.event, r))
                .collect(),
            None => Vec::new(),
        };
        // Newest first by `occurred_at` (the time WorkOS orders by), then by arrival.
        matched.sort_by_cached_key(|(i, e)| {
            let at = e
                .event
                .get("occurred_at")
                .and_then(Value::as_str)
                .and_then(parse_ts)
                .unwrap_or(e.received_at);
            std::cmp::Reverse((at, *i))
        });
        let total = matched.len();
        let mut rows = String::new();
        for (i, e) in matched.iter().skip((page_no - 1) * PAGE_SIZE).take(PAGE_SIZE) {
            let ev = &e.event;
            let get = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
            let ctx = ev.get("context");
            let ua = get(ctx.and_then(|c| c.get("user_agent")));
            let _ = write!(
                rows,
                "<tr data-index=\"{i}\"><td class=\"time mono\">{time}</td><td><a href=\"/viewer/events/{i}\">{action}</a></td>\
                 <td>{actor}</td><td>{targets}</td><td class=\"mono\">{loc}</td><td class=\"ua\" title=\"{ua}\">{ua}</td></tr>",
                time = esc(&get(ev.get("occurred_at"))),
                action = esc(&get(ev.get("action"))),
                actor = actor_cell(ev),
                targets = targets_cell(ev),
                loc = esc(&get(ctx.and_then(|c| c.get("location")))),
                ua = esc(&ua),
            );
        }
        (total_org, rows, total)
    };
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_link = |n: usize, label: &str| {
        let n = n.to_string();
        let mut pairs = f.pairs();
        pairs.push(("page", &n));
        format!(
            "<a href=\"{}\" rel=\"{label}\">{label}</a>",
            esc(&href("/viewer/events", &pairs))
        )
    };
    let prev = if page_no > 1 {
        page_link(page_no - 1, "prev")
    } else {
        "<span class=\"muted\">prev</span>".to_owned()
    };
    let next = if page_no < pages {
        page_link(page_no + 1, "next")
    } else {
        "<span class=\"muted\">next</span>".to_owned()
    };
    let first = if total == 0 {
        0
    } else {
        (page_no - 1) * PAGE_SIZE + 1
    };
    let last = (page_no * PAGE_SIZE).min(total);
    let export_hidden: String = f
        .pairs()
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        .collect();
    let clear = if f.any() {
        format!(
            " <a class=\"button\" href=\"{}\">Clear</a>",
            esc(&href("/viewer/events", &[("org", &f.org)]))
        )
    } else {
        String::new()
    };
    let error_html = error
        .as_deref()
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Audit log events</h1>\
         <p class=\"sub\">Organization <code>{org}</code> · {total_org} stored · \
         <a href=\"{streams}\">Log stream</a></p>{error_html}\
         <form class=\"filters\" method=\"get\" action=\"/viewer/events\">\
         <input type=\"hidden\" name=\"org\" value=\"{org}\">{action}{actor_id}{actor_name}{target}{from}{to}\
         <button type=\"submit\" class=\"primary\">Filter</button>{clear}</form>\
         <div class=\"bar\"><span id=\"count\">{shown}</span>\
         <span><form method=\"get\" action=\"/viewer/export\" style=\"display:inline\">{export_hidden}\
         <button type=\"submit\" id=\"export\">Export CSV</button></form>\
         <span class=\"pager\">{prev} <span>page {page_no} of {pages}</span> {next}</span></span></div>\
         <table id=\"events\"><thead><tr><th>Time (occurred_at)</th><th>Action</th><th>Actor</th><th>Targets</th>\
         <th>Location</th><th>User agent</th></tr></thead><tbody>{rows}</tbody></table>",
        org = esc(&f.org),
        streams = esc(&href("/viewer/log-streams", &[("org", &f.org)])),
        action = text_input("action", "Action", &f.action, "user.signed_in"),
        actor_id = text_input("actor_id", "Actor ID", &f.actor_id, "user_…"),
        actor_name = text_input("actor_name", "Actor name", &f.actor_name, ""),
        target = text_input("target", "Target type", &f.target, "team"),
        from = text_input("from", "From (UTC)", &f.from, "2026-02-02T00:00:00Z"),
        to = text_input("to", "To (UTC)", &f.to, "2026-02-03T00:00:00Z"),
        shown = if total == 0 {
            "No events match.".to_owned()
        } else {
            format!("Events {first}–{last} of {total}")
        },
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    page(status, &format!("Events of {}", f.org), &body)
}

// ---- one event ----------------------------------------------------------------------------

async fn event_detail(State(s): S, Path(n): Path<String>) -> Res {
    let stored = n
        .parse::<usize>()
        .ok()
        .and_then(|i| lock(&s.data).events.get(i).cloned());
    let Some(e) = stored else {
        return problem(
            StatusCode::NOT_FOUND,
            "Event not found",
            "No stored event has this number (the testkit may have been reset).",
        );
    };
    let json = serde_json::to_string_pretty(&e.event).unwrap_or_default();
    let get = |k: &str| e.event.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let key = match &e.idempotency_key {
        Some(k) => format!("<code id=\"idempotency-key\">{}</code>", esc(k)),
        None => "<span class=\"muted\" id=\"idempotency-key\">none (sent without an Idempotency-Key header)</span>"
            .to_owned(),
    };
    let body = format!(
        "<p><a href=\"{back}\">← Events of {org}</a></p><h1>{action}</h1>\
         <dl><dt>Organization</dt><dd><code>{org}</code></dd><dt>Occurred at</dt><dd><code>{at}</code></dd>\
         <dt>Received by the testkit</dt><dd><code>{received}</code></dd><dt>Idempotency-Key</dt><dd>{key}</dd></dl>\
         <p class=\"sub\">The event as it was received and stored (the <code>event</code> object of \
         <code>POST /audit_logs/events</code>):</p><pre id=\"event-json\">{json}</pre>",
        back = esc(&href("/viewer/events", &[("org", &e.organization_id)])),
        org = esc(&e.organization_id),
        action = esc(&get("action")),
        at = esc(&get("occurred_at")),
        received = esc(&format_ts(e.received_at)),
        json = esc(&json),
    );
    page(StatusCode::OK, &format!("Event {}", get("action")), &body)
}

// ---- export -------------------------------------------------------------------------------

async fn json_of(res: Res) -> (StatusCode, Value) {
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn export(State(s): S, RawQuery(q): RawQuery) -> Res {
    let f = Filters::from_query(&query(q));
    if f.org.is_empty() {
        return problem(
            StatusCode::BAD_REQUEST,
            "No organization",
            "Export needs an organization (org=...).",
        );
    }
    if !org_exists(&s, &f.org) {
        return unknown_org(&f.org);
    }
    let range = match f.range() {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "Invalid filter", &e),
    };
    let body = f.export_body(range);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let created = crate::api::create_export(
        State(s.clone()),
        headers,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
    .await;
    let (status, created) = json_of(created).await;
    let message = created
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if audit_core::error::is_no_events_message(status.as_u16(), &message) {
        return problem(
            StatusCode::NOT_FOUND,
            "Nothing to export",
            "No audit log events found: no event matches these filters.",
        );
    }
    let Some(id) = created.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return problem(
            StatusCode::BAD_GATEWAY,
            "Export failed",
            &format!("POST /audit_logs/exports answered {status}: {message}"),
        );
    };
    // Poll like a client would, until the export is ready.
    let deadline = tokio::time::Instant::now() + s.config.export_delay + Duration::from_secs(30);
    let url = loop {
        let (_, ex) = json_of(crate::api::get_export(State(s.clone()), Path(id.clone())).await).await;
        if ex.get("state").and_then(Value::as_str) == Some("ready")
            && let Some(url) = ex.get("url").and_then(Value::as_str)
        {
            break url.to_owned();
        }
        if tokio::time::Instant::now() >= deadline {
            return problem(
                StatusCode::GATEWAY_TIMEOUT,
                "Export not ready",
                &format!("Export {id} did not become ready in time."),
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let token = url.split_once("token=").map(|(_, t)| t.to_owned());
    let mut res = crate::api::tk_export_csv(
        State(s.clone()),
        Path(format!("{id}.csv")),
        RawQuery(token.map(|t| format!("token={t}"))),
    )
    .await;
    if res.status() == StatusCode::OK {
        let disposition = format!("attachment; filename=\"{}.csv\"", id.replace('"', ""));
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    secure(&mut res);
    res
}

// ---- log streams --------------------------------------------------------------------------

async fn log_streams(State(s): S, RawQuery(q): RawQuery) -> Res {
    let f = Filters::from_query(&query(q));
    if f.org.is_empty() {
        return see_other("/");
    }
    if !org_exists(&s, &f.org) {
        return unknown_org(&f.org);
    }
    let stream = match &s.config.log_stream {
        Some((ty, state)) => format!(
            "<dl><dt>Type</dt><dd id=\"stream-type\">{}</dd><dt>State</dt><dd id=\"stream-state\">{}</dd></dl>",
            esc(ty),
            esc(state)
        ),
        None => "<p class=\"note\" id=\"stream-none\">No log stream is configured for this testkit \
                 (start it with <code>--log-stream TYPE:STATE</code>, e.g. <code>--log-stream Datadog:active</code>, \
                 or <code>TestKit::builder().log_stream(\"Datadog\", \"active\")</code>).</p>"
            .to_owned(),
    };
    let body = format!(
        "<p><a href=\"{back}\">← Events of {org}</a></p><h1>Log stream</h1>\
         <p class=\"sub\">Organization <code>{org}</code></p>{stream}\
         <p class=\"note\">Log streams are configured in WorkOS (the dashboard or the Admin Portal), not through \
         the API. This stream is simulated: audit-testkit reports the type and state it was started with in \
         <code>GET /organizations/{org}/audit_log_configuration</code> and sends nothing anywhere.</p>",
        back = esc(&href("/viewer/events", &[("org", &f.org)])),
        org = esc(&f.org),
    );
    page(StatusCode::OK, "Log stream", &body)
}
