//! Log streams: every event the testkit stores for an organization is delivered to the
//! organization's configured destination, in the envelope WorkOS uses for that destination.
//!
//! A stream is configured per organization with [`TestKit::set_stream`](crate::TestKit::set_stream),
//! `PUT /_testkit/streams/{org}`, the viewer's log-stream page or the command line
//! (`--stream-http URL`, `--stream-splunk URL --stream-splunk-token T`,
//! `--stream-datadog-url URL --stream-datadog-key K`). A background task per stream delivers the
//! events one at a time, oldest first, retrying a failed delivery with exponential backoff a
//! bounded number of times; the API never waits for it. The configuration endpoint reports the
//! stream as WorkOS does: `active` while deliveries succeed, `error` once an event could not be
//! delivered after every retry (until a delivery succeeds again), `inactive` when paused.
//!
//! [`Destination::outgoing`] builds the exact request a destination receives, so that other
//! tools (the checklist's destination probes) send the same bytes.

mod worker;

pub use worker::{DeliveryOutcome, StreamDelivery, StreamState, StreamStatus};
pub(crate) use worker::{StreamSettings, Streams};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// WorkOS's documented shapes, and what this crate assumes where nothing is documented.
///
/// Confirmed by the integration guide and the API reference: Datadog receives
/// `{"message": {event}}` with source `workos`; Splunk HEC receives `{"event": {event}}` with
/// sourcetype `workos`; a generic HTTP endpoint must accept `POST` and answer 2xx; the log
/// stream's `type` in the configuration endpoint is `Datadog`, `Splunk` or `GenericHttps`.
///
/// UNCONFIRMED (the only place these assumptions are made; change them here):
/// - the streamed event object is the stored `event` plus `id` (`audit_log_event_<ULID>`) and
///   `organization_id`;
/// - the generic HTTP body is that event object itself, sent as `application/json`;
/// - Splunk: `POST {url}/services/collector/event` unless the URL already names a
///   `/services/collector...` endpoint; `Authorization: Splunk <token>`; the body also carries `"source": "workos"` and
///   `"time"` (seconds since the epoch, of `occurred_at`);
/// - Datadog: `POST {url}/api/v2/logs` with `DD-API-KEY`; the body also carries
///   `"service": "workos"`; one event per request;
/// - the Datadog site hosts are Datadog's public ones (see [`DatadogSite`]).
pub mod shapes {
    use super::*;

    /// The event object a stream delivers: the stored event with `id` and `organization_id`.
    pub fn streamed_event(id: &str, organization_id: &str, event: &Value) -> Value {
        let mut out = match event {
            Value::Object(m) => m.clone(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("event".into(), other.clone());
                m
            }
        };
        out.insert("id".into(), json!(id));
        out.insert("organization_id".into(), json!(organization_id));
        Value::Object(out)
    }

    /// The body a destination of this kind receives for one streamed event.
    pub fn envelope(kind: StreamKind, streamed: &Value) -> Value {
        match kind {
            StreamKind::Http => streamed.clone(),
            StreamKind::Splunk => {
                let time = streamed
                    .get("occurred_at")
                    .and_then(Value::as_str)
                    .and_then(crate::util::parse_ts)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0);
                let mut out = json!({"event": streamed, "sourcetype": "workos", "source": "workos"});
                if let Some(t) = time {
                    out["time"] = json!(t);
                }
                out
            }
            StreamKind::Datadog => json!({"ddsource": "workos", "service": "workos", "message": streamed}),
        }
    }

    /// The HEC event endpoint of a Splunk URL: the URL as given when its path names a
    /// collector endpoint (`/services/collector...`), else `/services/collector/event` appended.
    pub fn splunk_event_url(url: &str) -> String {
        if url.contains("/services/collector") {
            url.to_owned()
        } else {
            append_path(url, "/services/collector/event")
        }
    }

    /// The HEC health endpoint of a Splunk URL (`/services/collector/health` on its host).
    pub fn splunk_health_url(url: &str) -> String {
        match reqwest::Url::parse(url) {
            Ok(mut u) => {
                u.set_path("/services/collector/health");
                u.set_query(None);
                u.to_string()
            }
            Err(_) => format!("{}/services/collector/health", url.trim_end_matches('/')),
        }
    }

    /// Datadog's logs intake endpoint: `/api/v2/logs` appended to the base URL (unless there).
    pub fn datadog_logs_url(url: &str) -> String {
        if url.trim_end_matches('/').ends_with("/api/v2/logs") {
            url.to_owned()
        } else {
            append_path(url, "/api/v2/logs")
        }
    }

    /// Datadog's key validation endpoint: `/api/v1/validate` appended to an API base URL.
    pub fn datadog_validate_url(url: &str) -> String {
        append_path(url, "/api/v1/validate")
    }

    fn append_path(url: &str, path: &str) -> String {
        match reqwest::Url::parse(url) {
            Ok(mut u) => {
                let joined = format!("{}{path}", u.path().trim_end_matches('/'));
                u.set_path(&joined);
                u.to_string()
            }
            Err(_) => format!("{}{path}", url.trim_end_matches('/')),
        }
    }
}

/// The kind of a log-stream destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamKind {
    /// A generic HTTP(S) endpoint that accepts `POST`.
    Http,
    /// A Splunk HTTP Event Collector.
    Splunk,
    /// Datadog's logs intake.
    Datadog,
}

impl StreamKind {
    /// The `log_stream.type` WorkOS reports for this kind.
    pub fn type_name(self) -> &'static str {
        match self {
            StreamKind::Http => "GenericHttps",
            StreamKind::Splunk => "Splunk",
            StreamKind::Datadog => "Datadog",
        }
    }
}

/// The Datadog sites WorkOS can stream to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatadogSite {
    /// `datadoghq.com`
    Us1,
    /// `us3.datadoghq.com`
    Us3,
    /// `us5.datadoghq.com`
    Us5,
    /// `datadoghq.eu`
    Eu1,
    /// `ap1.datadoghq.com`
    Ap1,
    /// `ddog-gov.com`
    Us1Fed,
}

impl DatadogSite {
    /// Every site, in the order the WorkOS dashboard lists them.
    pub const ALL: [DatadogSite; 6] = [
        DatadogSite::Us1,
        DatadogSite::Us3,
        DatadogSite::Us5,
        DatadogSite::Eu1,
        DatadogSite::Ap1,
        DatadogSite::Us1Fed,
    ];

    /// Reads `US1`, `US3`, `US5`, `EU1`, `AP1` or `US1-FED` (any case).
    pub fn parse(s: &str) -> Option<DatadogSite> {
        let s = s.trim().to_ascii_uppercase().replace('_', "-");
        DatadogSite::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The name the WorkOS dashboard shows, e.g. `US1-FED`.
    pub fn name(self) -> &'static str {
        match self {
            DatadogSite::Us1 => "US1",
            DatadogSite::Us3 => "US3",
            DatadogSite::Us5 => "US5",
            DatadogSite::Eu1 => "EU1",
            DatadogSite::Ap1 => "AP1",
            DatadogSite::Us1Fed => "US1-FED",
        }
    }

    /// The site's domain, e.g. `datadoghq.eu`.
    pub fn domain(self) -> &'static str {
        match self {
            DatadogSite::Us1 => "datadoghq.com",
            DatadogSite::Us3 => "us3.datadoghq.com",
            DatadogSite::Us5 => "us5.datadoghq.com",
            DatadogSite::Eu1 => "datadoghq.eu",
            DatadogSite::Ap1 => "ap1.datadoghq.com",
            DatadogSite::Us1Fed => "ddog-gov.com",
        }
    }

    /// The logs intake base URL, `https://http-intake.logs.<domain>`.
    pub fn intake_url(self) -> String {
        format!("https://http-intake.logs.{}", self.domain())
    }

    /// The API base URL (key validation), `https://api.<domain>`.
    pub fn api_url(self) -> String {
        format!("https://api.{}", self.domain())
    }
}

/// Where a log stream delivers. As JSON (`PUT /_testkit/streams/{org}`):
/// `{"type":"http","url":"...","headers":[["Authorization","Bearer ..."]]}`,
/// `{"type":"splunk","url":"...","token":"..."}` or
/// `{"type":"datadog","url":"...","api_key":"..."}` (`url`: the intake base URL, say
/// `https://http-intake.logs.datadoghq.eu`, or a local stand-in).
///
/// # Security
///
/// Tokens, keys and header values are credentials, and a URL may carry one in its user info or
/// query: `Debug` and [`Destination::describe`] leave them out, and no testkit endpoint, page,
/// error or redirect shows them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum Destination {
    /// A generic HTTP(S) endpoint: `POST url` with these extra headers.
    Http {
        /// The endpoint.
        url: String,
        /// Extra headers, e.g. `("Authorization", "Bearer ...")`.
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    /// A Splunk HTTP Event Collector.
    Splunk {
        /// The HEC URL (`https://splunk.example.com:8088`; a path, if given, is used as is).
        url: String,
        /// The HEC token.
        token: String,
    },
    /// Datadog's logs intake.
    Datadog {
        /// The intake base URL.
        url: String,
        /// The Datadog API key.
        api_key: String,
    },
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// One HTTP request to a destination: what [`Destination::outgoing`] builds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outgoing {
    /// The URL to `POST` to.
    pub url: String,
    /// Headers, `Content-Type` included.
    ///
    /// # Security
    ///
    /// Holds the destination's credentials: never log it.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Destination {
    /// A generic HTTP endpoint without extra headers.
    pub fn http(url: impl Into<String>) -> Destination {
        Destination::Http {
            url: url.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to an HTTP destination (no effect on the others).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Destination {
        if let Destination::Http { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// A Splunk HEC endpoint and token.
    pub fn splunk(url: impl Into<String>, token: impl Into<String>) -> Destination {
        Destination::Splunk {
            url: url.into(),
            token: token.into(),
        }
    }

    /// Datadog's intake at this base URL with this API key.
    pub fn datadog(url: impl Into<String>, api_key: impl Into<String>) -> Destination {
        Destination::Datadog {
            url: url.into(),
            api_key: api_key.into(),
        }
    }

    /// The kind of destination.
    pub fn kind(&self) -> StreamKind {
        match self {
            Destination::Http { .. } => StreamKind::Http,
            Destination::Splunk { .. } => StreamKind::Splunk,
            Destination::Datadog { .. } => StreamKind::Datadog,
        }
    }

    /// The URL given for the destination.
    pub fn url(&self) -> &str {
        match self {
            Destination::Http { url, .. }
            | Destination::Splunk { url, .. }
            | Destination::Datadog { url, .. } => url,
        }
    }

    /// The names of an HTTP destination's extra headers (empty for the others).
    pub fn header_names(&self) -> Vec<&str> {
        match self {
            Destination::Http { headers, .. } => headers.iter().map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The secrets the destination holds (header values, token, API key), to keep them out of
    /// messages.
    pub fn credentials(&self) -> Vec<&str> {
        match self {
            Destination::Http { headers, .. } => headers.iter().map(|(_, v)| v.as_str()).collect(),
            Destination::Splunk { token, .. } => vec![token.as_str()],
            Destination::Datadog { api_key, .. } => vec![api_key.as_str()],
        }
    }

    /// A description without credentials, e.g. `Splunk https://splunk:8088 (token set)`.
    ///
    /// # Security
    ///
    /// The URL is shown without its user info and with secret-looking query values (a `token`,
    /// `key`, `signature`... parameter, or a value that looks like a key) replaced by
    /// `[redacted]`; the fragment is left out.
    pub fn describe(&self) -> String {
        let url = crate::redact::redact_url(self.url());
        match self {
            Destination::Http { .. } => {
                let names = self.header_names();
                if names.is_empty() {
                    format!("GenericHttps {url}")
                } else {
                    format!("GenericHttps {url} (headers: {})", names.join(", "))
                }
            }
            Destination::Splunk { .. } => format!("Splunk {url} (token set)"),
            Destination::Datadog { .. } => format!("Datadog {url} (API key set)"),
        }
    }

    /// Checks the settings, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.url();
        match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(format!(
                    "url: the scheme must be http or https, not '{}'",
                    u.scheme()
                ));
            }
            Err(e) => return Err(format!("url: not a URL ({e})")),
        }
        match self {
            Destination::Http { headers, .. } => {
                for (name, value) in headers {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!("headers: '{name}' is not a valid header name"));
                    }
                    if http::HeaderValue::from_str(value).is_err() {
                        return Err(format!(
                            "headers: the value of '{name}' is not a valid header value"
                        ));
                    }
                }
            }
            Destination::Splunk { token, .. } if token.trim().is_empty() => {
                return Err("token: the Splunk HEC token is empty".into());
            }
            Destination::Datadog { api_key, .. } if api_key.trim().is_empty() => {
                return Err("api_key: the Datadog API key is empty".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// The request that delivers one streamed event (see [`shapes::streamed_event`]).
    pub fn outgoing(&self, streamed: &Value) -> Outgoing {
        let body = serde_json::to_vec(&shapes::envelope(self.kind(), streamed)).unwrap_or_default();
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let url = match self {
            Destination::Http { url, headers: extra } => {
                headers.extend(extra.iter().cloned());
                url.clone()
            }
            Destination::Splunk { url, token } => {
                headers.push(("Authorization".into(), format!("Splunk {token}")));
                shapes::splunk_event_url(url)
            }
            Destination::Datadog { url, api_key } => {
                headers.push(("DD-API-KEY".into(), api_key.clone()));
                shapes::datadog_logs_url(url)
            }
        };
        Outgoing { url, headers, body }
    }
}
