//! A local event viewer in the browser: server-rendered pages that show what the testkit stored,
//! the way the WorkOS dashboard and Admin Portal show it.
//!
//! | page | shows |
//! |---|---|
//! | `GET /` | the organizations, with event counts and links |
//! | `GET /portal?token=T&intent=...` | the page an Admin Portal link (`POST /portal/generate_link`) leads to: a redirect to the organization's events (`audit_logs`) or its log stream (`log_streams`); an unknown token is a 404 page |
//! | `GET /viewer/events?org=ORG&...` | the events, newest first, 50 a page (`page=N`), filtered by `action`, `actor_id`, `actor_name`, `target` (target type), `from`, `to` |
//! | `GET /viewer/events/{n}` | one event as stored (pretty JSON) and the idempotency key it came with |
//! | `POST /viewer/export` (the list's "Export CSV" form) | creates an export record with the list's filters (the same code as `POST /audit_logs/exports`) and answers its CSV as a download |
//! | `GET /viewer/log-streams?org=ORG` | the organization's log stream: type, state, destination (without credentials), counters and the recent deliveries and failures; a form to set, pause, resume or remove it (`POST`, accepted only from the testkit's own pages) |
//!
//! # Security
//!
//! Every value from an event is untrusted: the pages are `maud` templates, which HTML-escape
//! every value spliced into text or an attribute (only the templates' own markup is not), and carry
//! `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; ...` so that no script,
//! image or other resource can load even if markup slipped through. Every `GET` only reads; the
//! two forms that act (the export and the log-stream form) `POST`, and a post is refused unless
//! it carries the page's per-process form token (which another site cannot read) and the browser
//! says it comes from the same origin (`Origin`, `Sec-Fetch-Site`), so another site can neither
//! point a stream elsewhere nor make the testkit build exports. None changes stored events (the
//! export creates an export record, as `POST /audit_logs/exports` does). Like `/_testkit/`, the
//! viewer needs no API key (but the control token when one is set, see `security`), and it is
//! served only under the testkit's own host names (DNS rebinding). Destinations are shown
//! without user info and secret-looking query values. Viewer requests are not recorded and
//! faults never apply to them.

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
use axum::routing::{get, post};
use filter::Filters;
use html::{href, page, problem, secure};
use maud::{Markup, html};
use serde_json::Value;
use std::collections::HashMap;
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
        .route("/viewer/export", post(export))
        .route("/viewer/log-streams", get(log_streams).post(log_streams_post))
}

fn query(q: Option<String>) -> HashMap<String, String> {
    serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default()
}

/// A JSON string's text; anything else (absent, another type) shows as nothing.
fn text(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
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
        let at = text(e.event.get("occurred_at"));
        if at > c.1.as_str() {
            c.1 = at.to_owned();
        }
    }
    let mut orgs: Vec<String> = s.config.orgs.clone();
    let mut seen: Vec<String> = counts.keys().filter(|o| !orgs.contains(o)).cloned().collect();
    seen.sort();
    orgs.extend(seen);
    let body = html! {
        h1 { "Organizations" }
        p.sub { "Audit-log events stored by the audit-testkit at " (s.base_url) }
        @if s.config.any_org {
            p.note { "This testkit accepts any organization id; organizations appear here once they have events." }
        }
        table {
            thead { tr { th { "Organization" } th { "Events" } th { "Latest event" } th {} } }
            tbody {
                @for org in &orgs {
                    @let (n, latest) = counts.get(org).cloned().unwrap_or_default();
                    @let events = href("/viewer/events", &[("org", org)]);
                    tr {
                        td { a.mono href=(events) { (org) } }
                        td { (n) }
                        td.mono { @if latest.is_empty() { "—" } @else { (latest) } }
                        td {
                            a href=(events) { "Events" } " · "
                            a href=(href("/viewer/log-streams", &[("org", org)])) { "Log stream" }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, "Organizations", body)
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

fn text_input(name: &str, label: &str, value: &str, placeholder: &str) -> Markup {
    html! { label { (label) input name=(name) value=(value) placeholder=(placeholder); } }
}

fn actor_cell(ev: &Value) -> Markup {
    let a = ev.get("actor");
    let get = |k: &str| text(a.and_then(|a| a.get(k)));
    let (id, ty, name) = (get("id"), get("type"), get("name"));
    html! {
        (if name.is_empty() { id } else { name })
        br;
        span class="mono muted" { (id) " · " (ty) }
    }
}

fn targets_cell(ev: &Value) -> Markup {
    let targets = ev.get("targets").and_then(Value::as_array).into_iter().flatten();
    html! {
        @for t in targets {
            @let get = |k: &str| text(t.get(k));
            @let label = if get("name").is_empty() { get("id") } else { get("name") };
            span.pill title=(get("id")) { (get("type")) ": " (label) }
        }
    }
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
        let skip = (page_no - 1).saturating_mul(PAGE_SIZE);
        let rows = html! {
            @for (i, e) in matched.iter().skip(skip).take(PAGE_SIZE) {
                @let ev = &e.event;
                @let ctx = ev.get("context");
                @let ua = text(ctx.and_then(|c| c.get("user_agent")));
                tr data-index=(i) {
                    td class="time mono" { (text(ev.get("occurred_at"))) }
                    td { a href={ "/viewer/events/" (i) } { (text(ev.get("action"))) } }
                    td { (actor_cell(ev)) }
                    td { (targets_cell(ev)) }
                    td.mono { (text(ctx.and_then(|c| c.get("location")))) }
                    td.ua title=(ua) { (ua) }
                }
            }
        };
        (total_org, rows, total)
    };
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_link = |n: usize, label: &str| {
        let n = n.to_string();
        let mut pairs = f.pairs();
        pairs.push(("page", &n));
        html! { a href=(href("/viewer/events", &pairs)) rel=(label) { (label) } }
    };
    // Past the last page: an empty page whose "prev" leads back to the last one.
    let prev = if page_no > pages {
        page_link(pages, "prev")
    } else if page_no > 1 {
        page_link(page_no - 1, "prev")
    } else {
        html! { span.muted { "prev" } }
    };
    let next = if page_no < pages {
        page_link(page_no + 1, "next")
    } else {
        html! { span.muted { "next" } }
    };
    let first = (page_no - 1).saturating_mul(PAGE_SIZE).saturating_add(1);
    let last = page_no.saturating_mul(PAGE_SIZE).min(total);
    let shown = if total == 0 {
        "No events match.".to_owned()
    } else if page_no > pages {
        format!("No events on this page ({total} match)")
    } else {
        format!("Events {first}–{last} of {total}")
    };
    let body = html! {
        h1 { "Audit log events" }
        p.sub {
            "Organization " code { (f.org) } " · " (total_org) " stored · "
            a href=(href("/viewer/log-streams", &[("org", &f.org)])) { "Log stream" }
        }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        form.filters method="get" action="/viewer/events" {
            input type="hidden" name="org" value=(f.org);
            (text_input("action", "Action", &f.action, "user.signed_in"))
            (text_input("actor_id", "Actor ID", &f.actor_id, "user_…"))
            (text_input("actor_name", "Actor name", &f.actor_name, ""))
            (text_input("target", "Target type", &f.target, "team"))
            (text_input("from", "From (UTC)", &f.from, "2026-02-02T00:00:00Z"))
            (text_input("to", "To (UTC)", &f.to, "2026-02-03T00:00:00Z"))
            button type="submit" class="primary" { "Filter" }
            @if f.any() {
                " " a.button href=(href("/viewer/events", &[("org", &f.org)])) { "Clear" }
            }
        }
        div.bar {
            span id="count" { (shown) }
            span {
                form method="post" action="/viewer/export" style="display:inline" {
                    input type="hidden" name=(FORM_TOKEN) value=(s.form_token);
                    @for (k, v) in f.pairs() {
                        @if !v.is_empty() { input type="hidden" name=(k) value=(v); }
                    }
                    button type="submit" id="export" { "Export CSV" }
                }
                span.pager { (prev) " " span { "page " (page_no) " of " (pages) } " " (next) }
            }
        }
        table id="events" {
            thead {
                tr {
                    th { "Time (occurred_at)" } th { "Action" } th { "Actor" } th { "Targets" }
                    th { "Location" } th { "User agent" }
                }
            }
            tbody { (rows) }
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    page(status, &format!("Events of {}", f.org), body)
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
    let get = |k: &str| text(e.event.get(k));
    let body = html! {
        p { a href=(href("/viewer/events", &[("org", &e.organization_id)])) { "← Events of " (e.organization_id) } }
        h1 { (get("action")) }
        dl {
            dt { "Organization" } dd { code { (e.organization_id) } }
            dt { "Occurred at" } dd { code { (get("occurred_at")) } }
            dt { "Received by the testkit" } dd { code { (format_ts(e.received_at)) } }
            dt { "Idempotency-Key" }
            dd {
                @match &e.idempotency_key {
                    Some(k) => code id="idempotency-key" { (k) },
                    None => span.muted id="idempotency-key" { "none (sent without an Idempotency-Key header)" },
                }
            }
        }
        p.sub {
            "The event as it was received and stored (the " code { "event" } " object of "
            code { "POST /audit_logs/events" } "):"
        }
        pre id="event-json" { (json) }
    };
    page(StatusCode::OK, &format!("Event {}", get("action")), body)
}

// ---- export -------------------------------------------------------------------------------

/// The name of the hidden field that carries the per-process form token.
const FORM_TOKEN: &str = "form_token";

#[allow(clippy::result_large_err)] // a complete response as the error value, as in `api`
/// Reads a viewer form post, or the 403 page when it does not come from the testkit's own pages
/// (no form token, a wrong one, or another site's `Origin` / `Sec-Fetch-Site`).
fn own_form(
    s: &Shared,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, Res> {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let token_ok = form
        .get(FORM_TOKEN)
        .is_some_and(|t| crate::security::same_secret(t, &s.form_token));
    if !token_ok || !crate::security::same_origin(headers) {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form can only be sent from the testkit's own pages: reload the page and send it again.",
        ));
    }
    Ok(form)
}

async fn export(State(s): S, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Res {
    let form = match own_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let f = Filters::from_query(&form);
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
        Err(NoExport::TooLarge(limit)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Export too large",
                &NoExport::too_large_message(limit),
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

fn stream_section(st: &crate::StreamStatus) -> Markup {
    use crate::streams::DeliveryOutcome;
    let synced = st.last_synced_at.map(format_ts);
    html! {
        dl {
            dt { "Type" } dd id="stream-type" { (st.kind.type_name()) }
            dt { "State" } dd id="stream-state" { (st.state.as_str()) }
            dt { "Destination" } dd id="stream-destination" class="mono" { (st.destination) }
            dt { "Delivered" } dd id="stream-delivered" { (st.delivered) }
            dt { "Failed" } dd id="stream-failed" { (st.failed) }
            dt { "Waiting" } dd id="stream-pending" { (st.pending) }
            dt { "Last synced" } dd.mono { (synced.as_deref().unwrap_or("never")) }
        }
        h2 { "Recent deliveries and failures" }
        table id="stream-deliveries" {
            thead {
                tr {
                    th { "Time" } th { "Event id" } th { "Action" } th { "Attempt" } th { "Outcome" }
                    th { "Detail" }
                }
            }
            tbody {
                @for d in st.recent.iter().rev() {
                    @let (class, outcome, detail) = match &d.outcome {
                        DeliveryOutcome::Delivered { status } => ("", "delivered", format!("HTTP {status}")),
                        DeliveryOutcome::Retrying { error } => ("muted", "failed, retrying", error.clone()),
                        DeliveryOutcome::GaveUp { error } => ("", "failed, gave up", error.clone()),
                        DeliveryOutcome::Dropped => ("", "dropped", "too many events waiting".to_owned()),
                    };
                    tr class=(class) data-outcome=(outcome) {
                        td class="time mono" { (format_ts(d.at)) }
                        td.mono { (d.event_id) }
                        td { (d.action) }
                        td { (d.attempt) }
                        td { (outcome) }
                        td.mono { (detail) }
                    }
                }
                @if st.recent.is_empty() {
                    tr {
                        td colspan="6" class="muted" {
                            "Nothing delivered yet: events stored from now on are streamed."
                        }
                    }
                }
            }
        }
    }
}

fn stream_form(org: &str, form_token: &str, configured: bool, active: bool) -> Markup {
    let (toggle, toggle_label) = if active {
        ("pause", "Pause")
    } else {
        ("resume", "Resume")
    };
    html! {
        h2 {
            @if configured { "Change the destination" } @else { "Stream this organization's events" }
        }
        @if configured {
            form method="post" action="/viewer/log-streams" style="display:inline" {
                input type="hidden" name=(FORM_TOKEN) value=(form_token);
                input type="hidden" name="org" value=(org);
                button name="do" value=(toggle) id={ "stream-" (toggle) } { (toggle_label) }
                " "
                button name="do" value="remove" id="stream-remove" { "Remove" }
            }
        }
        form.filters method="post" action="/viewer/log-streams" {
            input type="hidden" name=(FORM_TOKEN) value=(form_token);
            input type="hidden" name="org" value=(org);
            input type="hidden" name="do" value="set";
            label {
                "Type"
                select name="type" {
                    option value="http" { "HTTP POST" }
                    option value="splunk" { "Splunk HEC" }
                    option value="datadog" { "Datadog" }
                }
            }
            label { "URL" input name="url" placeholder="http://127.0.0.1:9000/collect"; }
            label { "Token / API key (Splunk, Datadog)" input name="secret" type="password" autocomplete="off"; }
            label { "Header (HTTP), Name: value" input name="header" placeholder="Authorization: Bearer …"; }
            button type="submit" class="primary" id="stream-save" { "Stream to this destination" }
        }
    }
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
    let status = s.streams.status(&f.org);
    let form = stream_form(
        &f.org,
        &s.form_token,
        status.is_some(),
        status
            .as_ref()
            .is_some_and(|st| st.state != crate::StreamState::Inactive),
    );
    let body = html! {
        p { a href=(href("/viewer/events", &[("org", &f.org)])) { "← Events of " (f.org) } }
        h1 { "Log stream" }
        p.sub { "Organization " code { (f.org) } }
        @if let Some(e) = q.get("error") { p.error role="alert" { (e) } }
        @match (&status, &s.config.log_stream) {
            (Some(st), _) => (stream_section(st)),
            (None, Some((ty, state))) => {
                dl {
                    dt { "Type" } dd id="stream-type" { (ty) }
                    dt { "State" } dd id="stream-state" { (state) }
                }
                p.note {
                    "This stream is simulated (" code { "--log-stream TYPE:STATE" } "): audit-testkit reports its type \
                     and state in " code { "GET /organizations/" (f.org) "/audit_log_configuration" } " and sends nothing."
                }
            },
            (None, None) => {
                p.note id="stream-none" {
                    "No log stream is configured for this organization. Configure one below, with "
                    code { "PUT /_testkit/streams/ORG" } ", or start the testkit with " code { "--stream-http URL" }
                    " (or " code { "--stream-splunk" } ", " code { "--stream-datadog-url" } "); "
                    code { "--log-stream TYPE:STATE" } " only simulates one."
                }
            },
        }
        p.note {
            "Log streams are configured in WorkOS (the dashboard or the Admin Portal), not through the API. Here \
             audit-testkit delivers every event stored for the organization to the destination, in the envelope \
             WorkOS uses for it, so that you can see what your SIEM or collector receives."
        }
        (form)
    };
    page(StatusCode::OK, "Log stream", body)
}

/// The log-stream page's form: set, pause, resume or remove the organization's stream.
async fn log_streams_post(State(s): S, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Res {
    let form = match own_form(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
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
