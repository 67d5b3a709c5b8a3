//! A local event viewer in the browser: server-rendered pages that show what the testkit stored,
//! the way the WorkOS dashboard and Admin Portal show it.
//!
//! | page | shows |
//! |---|---|
//! | `GET /` | the organizations, with event counts and links |
//! | `GET /portal?token=T&intent=...` | the page an Admin Portal link (`POST /portal/generate_link`) leads to: a redirect to the organization's events (`audit_logs`) or its log stream (`log_streams`); an unknown token is a 404 page |
//! | `GET /viewer/events?org=ORG&...` | the events, newest first, 50 a page (`page=N`), filtered by `action`, `actor_id`, `actor_name`, `target` (target type), `from`, `to` |
//! | `GET /viewer/events/{n}` | one event as stored (pretty JSON) and the idempotency key it came with |
//! | `GET /viewer/export?org=ORG&...` | creates an export record with the list's filters (the same code as `POST /audit_logs/exports`) and answers its CSV as a download |
//! | `GET /viewer/log-streams?org=ORG` | the organization's log stream: type, state, destination (without credentials), counters and the recent deliveries and failures; a form to set, pause, resume or remove it (`POST`, accepted only from the testkit's own pages) |
//!
//! # Security
//!
//! Every value from an event is untrusted: all text is HTML-escaped, and the pages carry
//! `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; ...` so that no script,
//! image or other resource can load even if markup slipped through. Every route but the log-stream
//! form is a `GET`; the form's `POST` is refused unless the browser says it comes from the same
//! origin (`Origin`, `Sec-Fetch-Site`), so another site cannot point a stream elsewhere. None
//! changes stored events (the export route creates an export record, as `POST
//! /audit_logs/exports` does). Like `/_testkit/`, the viewer needs no API key: the testkit is
//! meant for loopback use in development and tests. Viewer requests are not recorded and faults
//! never apply to them.

mod filter;
mod html;

use crate::api::NO_EVENTS;
use crate::export_query::NoExport;
use crate::state::{Shared, lock};
use crate::util::{format_ts, parse_ts};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::get;
use filter::Filters;
use html::{esc, href, page, problem, secure};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

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
        .route("/viewer/log-streams", get(log_streams).post(log_streams_post))
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
        .and_then(|t| lock(&s.data).portal_tokens.get(t).cloned())
        .filter(|(_, _, expires)| crate::util::now() <= *expires);
    match found {
        Some((org, intent, _)) if intent == "log_streams" => {
            see_other(&href("/viewer/log-streams", &[("org", &org)]))
        }
        Some((org, _, _)) => see_other(&href("/viewer/events", &[("org", &org)])),
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
            Some(r) => {
                let q = f.query(r);
                in_org.into_iter().filter(|(_, e)| q.matches(&e.event)).collect()
            }
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
        let skip = (page_no - 1).saturating_mul(PAGE_SIZE);
        for (i, e) in matched.iter().skip(skip).take(PAGE_SIZE) {
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
    // Past the last page: an empty page whose "prev" leads back to the last one.
    let prev = if page_no > pages {
        page_link(pages, "prev")
    } else if page_no > 1 {
        page_link(page_no - 1, "prev")
    } else {
        "<span class=\"muted\">prev</span>".to_owned()
    };
    let next = if page_no < pages {
        page_link(page_no + 1, "next")
    } else {
        "<span class=\"muted\">next</span>".to_owned()
    };
    let first = (page_no - 1).saturating_mul(PAGE_SIZE).saturating_add(1);
    let last = page_no.saturating_mul(PAGE_SIZE).min(total);
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
        } else if page_no > pages {
            format!("No events on this page ({total} match)")
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
    let rec = match s.create_export(&f.org, &f.query(range)) {
        Ok(rec) => rec,
        Err(NoExport::NoEvents) => {
            return problem(
                StatusCode::NOT_FOUND,
                "Nothing to export",
                &format!("{NO_EVENTS}: no event matches these filters."),
            );
        }
    };
    let mut res = Response::new(Body::from(rec.csv));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let disposition = format!("attachment; filename=\"{}.csv\"", rec.id.replace('"', ""));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    secure(&mut res);
    res
}

// ---- log streams --------------------------------------------------------------------------

fn stream_section(st: &crate::StreamStatus) -> String {
    use crate::streams::DeliveryOutcome;
    let mut rows = String::new();
    for d in st.recent.iter().rev() {
        let (class, outcome, detail) = match &d.outcome {
            DeliveryOutcome::Delivered { status } => ("", "delivered", format!("HTTP {status}")),
            DeliveryOutcome::Retrying { error } => ("muted", "failed, retrying", error.clone()),
            DeliveryOutcome::GaveUp { error } => ("", "failed, gave up", error.clone()),
            DeliveryOutcome::Dropped => ("", "dropped", "too many events waiting".to_owned()),
        };
        let _ = write!(
            rows,
            "<tr class=\"{class}\" data-outcome=\"{outcome}\"><td class=\"time mono\">{at}</td><td class=\"mono\">{id}</td>\
             <td>{action}</td><td>{attempt}</td><td>{outcome}</td><td class=\"mono\">{detail}</td></tr>",
            at = esc(&format_ts(d.at)),
            id = esc(&d.event_id),
            action = esc(&d.action),
            attempt = d.attempt,
            detail = esc(&detail),
        );
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=\"6\" class=\"muted\">Nothing delivered yet: events stored from now on are \
                streamed.</td></tr>"
            .to_owned();
    }
    format!(
        "<dl><dt>Type</dt><dd id=\"stream-type\">{ty}</dd><dt>State</dt><dd id=\"stream-state\">{state}</dd>\
         <dt>Destination</dt><dd id=\"stream-destination\" class=\"mono\">{dest}</dd>\
         <dt>Delivered</dt><dd id=\"stream-delivered\">{delivered}</dd><dt>Failed</dt><dd id=\"stream-failed\">{failed}</dd>\
         <dt>Waiting</dt><dd id=\"stream-pending\">{pending}</dd><dt>Last synced</dt><dd class=\"mono\">{synced}</dd></dl>\
         <h2>Recent deliveries and failures</h2><table id=\"stream-deliveries\"><thead><tr><th>Time</th><th>Event id</th>\
         <th>Action</th><th>Attempt</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table>",
        ty = esc(st.kind.type_name()),
        state = esc(st.state.as_str()),
        dest = esc(&st.destination),
        delivered = st.delivered,
        failed = st.failed,
        pending = st.pending,
        synced = st
            .last_synced_at
            .map(format_ts)
            .unwrap_or_else(|| "never".to_owned()),
    )
}

fn stream_form(org: &str, configured: bool, active: bool) -> String {
    let controls = if configured {
        let toggle = if active {
            ("pause", "Pause")
        } else {
            ("resume", "Resume")
        };
        format!(
            "<form method=\"post\" action=\"/viewer/log-streams\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"org\" value=\"{org}\"><button name=\"do\" value=\"{}\" id=\"stream-{}\">{}</button> \
             <button name=\"do\" value=\"remove\" id=\"stream-remove\">Remove</button></form>",
            toggle.0,
            toggle.0,
            toggle.1,
            org = esc(org)
        )
    } else {
        String::new()
    };
    format!(
        "<h2>{title}</h2>{controls}<form class=\"filters\" method=\"post\" action=\"/viewer/log-streams\">\
         <input type=\"hidden\" name=\"org\" value=\"{org}\"><input type=\"hidden\" name=\"do\" value=\"set\">\
         <label>Type<select name=\"type\"><option value=\"http\">HTTP POST</option><option value=\"splunk\">Splunk HEC</option>\
         <option value=\"datadog\">Datadog</option></select></label>\
         <label>URL<input name=\"url\" placeholder=\"http://127.0.0.1:9000/collect\"></label>\
         <label>Token / API key (Splunk, Datadog)<input name=\"secret\" type=\"password\" autocomplete=\"off\"></label>\
         <label>Header (HTTP), Name: value<input name=\"header\" placeholder=\"Authorization: Bearer …\"></label>\
         <button type=\"submit\" class=\"primary\" id=\"stream-save\">Stream to this destination</button></form>",
        title = if configured {
            "Change the destination"
        } else {
            "Stream this organization's events"
        },
        org = esc(org),
    )
}

async fn log_streams(State(s): S, RawQuery(q): RawQuery) -> Res {
    let q = query(q);
    let f = Filters::from_query(&q);
    if f.org.is_empty() {
        return see_other("/");
    }
    if !org_exists(&s, &f.org) {
        return unknown_org(&f.org);
    }
    let error_html = q
        .get("error")
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let status = s.streams.status(&f.org);
    let stream = match (&status, &s.config.log_stream) {
        (Some(st), _) => stream_section(st),
        (None, Some((ty, state))) => format!(
            "<dl><dt>Type</dt><dd id=\"stream-type\">{}</dd><dt>State</dt><dd id=\"stream-state\">{}</dd></dl>\
             <p class=\"note\">This stream is simulated (<code>--log-stream TYPE:STATE</code>): audit-testkit reports its \
             type and state in <code>GET /organizations/{org}/audit_log_configuration</code> and sends nothing.</p>",
            esc(ty),
            esc(state),
            org = esc(&f.org),
        ),
        (None, None) => "<p class=\"note\" id=\"stream-none\">No log stream is configured for this organization. \
                 Configure one below, with <code>PUT /_testkit/streams/ORG</code>, or start the testkit with \
                 <code>--stream-http URL</code> (or <code>--stream-splunk</code>, <code>--stream-datadog-url</code>); \
                 <code>--log-stream TYPE:STATE</code> only simulates one.</p>"
            .to_owned(),
    };
    let form = stream_form(
        &f.org,
        status.is_some(),
        status
            .as_ref()
            .is_some_and(|st| st.state != crate::StreamState::Inactive),
    );
    let body = format!(
        "<p><a href=\"{back}\">← Events of {org}</a></p><h1>Log stream</h1>\
         <p class=\"sub\">Organization <code>{org}</code></p>{error_html}{stream}\
         <p class=\"note\">Log streams are configured in WorkOS (the dashboard or the Admin Portal), not through \
         the API. Here audit-testkit delivers every event stored for the organization to the destination, in the \
         envelope WorkOS uses for it, so that you can see what your SIEM or collector receives.</p>{form}",
        back = esc(&href("/viewer/events", &[("org", &f.org)])),
        org = esc(&f.org),
    );
    page(StatusCode::OK, "Log stream", &body)
}

/// Whether a form post comes from a viewer page, so that another site cannot point a stream
/// elsewhere. Browsers say where a request comes from in `Sec-Fetch-Site`; the pages'
/// `Referrer-Policy: no-referrer` makes Chromium send `Origin: null` on their own form posts, so
/// `Origin` decides only without `Sec-Fetch-Site` (then it must be absent or this host).
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.strip_prefix("http://").is_some_and(|o| o == host),
        (Some(_), None) => false,
    }
}

/// The log-stream page's form: set, pause, resume or remove the organization's stream.
async fn log_streams_post(State(s): S, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Res {
    if !same_origin(&headers) {
        return problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "Log streams can only be changed from the testkit's own pages.",
        );
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let org = get("org");
    if org.is_empty() || !org_exists(&s, &org) {
        return unknown_org(&org);
    }
    let back = |error: Option<&str>| {
        let mut pairs = vec![("org", org.as_str())];
        if let Some(e) = error {
            pairs.push(("error", e));
        }
        see_other(&href("/viewer/log-streams", &pairs))
    };
    match get("do").as_str() {
        "pause" => {
            s.streams.set_active(&org, false);
            back(None)
        }
        "resume" => {
            s.streams.set_active(&org, true);
            back(None)
        }
        "remove" => {
            s.streams.remove(&org);
            back(None)
        }
        "set" => {
            let (url, secret) = (get("url"), get("secret"));
            let dest = match get("type").as_str() {
                "splunk" => crate::Destination::splunk(url, secret),
                "datadog" => crate::Destination::datadog(url, secret),
                _ => {
                    let mut d = crate::Destination::http(url);
                    let header = get("header");
                    if !header.is_empty() {
                        match header.split_once(':') {
                            Some((k, v)) => d = d.header(k.trim(), v.trim()),
                            None => return back(Some("header: expected 'Name: value'")),
                        }
                    }
                    d
                }
            };
            match s.streams.set(&org, dest, true) {
                Ok(_) => back(None),
                Err(e) => back(Some(&e)),
            }
        }
        _ => back(Some("unknown action")),
    }
}
