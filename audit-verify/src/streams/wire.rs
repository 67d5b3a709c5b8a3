//! What WorkOS sends to a log-stream destination: the streamed event, its envelope per
//! destination kind, the endpoints, the headers, and the Datadog sites.
//!
//! audit-testkit's log streams (`audit_testkit::streams`) keep their own copy of these shapes:
//! the testkit is an independent check of this workspace and shares no code with it. A test of
//! this module sends the same destinations and events through both and compares the requests
//! byte for byte.
//!
//! Confirmed by the integration guide and the API reference: Datadog receives
//! `{"message": {event}}` with source `workos`; Splunk HEC receives `{"event": {event}}` with
//! sourcetype `workos`; a generic HTTP endpoint must accept `POST` and answer 2xx.
//!
//! UNCONFIRMED (assumed, as in audit-testkit):
//! - the streamed event object is the stored `event` plus `id` (`audit_log_event_<ULID>`) and
//!   `organization_id`;
//! - the generic HTTP body is that event object itself, sent as `application/json`;
//! - Splunk: `POST {url}/services/collector/event` unless the URL already names a
//!   `/services/collector...` endpoint; `Authorization: Splunk <token>`; the body also carries
//!   `"source": "workos"` and `"time"` (seconds since the epoch, of `occurred_at`);
//! - Datadog: `POST {url}/api/v2/logs` with `DD-API-KEY`; the body also carries
//!   `"service": "workos"`; one event per request;
//! - the Datadog site hosts are Datadog's public ones (see [`DatadogSite`]).

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// The kind of a destination that receives events over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Http,
    Splunk,
    Datadog,
}

/// Where WorkOS delivers; holds the destination's credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
    Splunk {
        url: String,
        token: String,
    },
    Datadog {
        url: String,
        api_key: String,
    },
}

impl std::fmt::Debug for Destination {
    /// The kind, the URL and the header names; never a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Http { url, .. } => f
                .debug_struct("Http")
                .field("url", url)
                .field("headers", &self.header_names())
                .finish(),
            Destination::Splunk { url, .. } => {
                f.debug_struct("Splunk").field("url", url).finish_non_exhaustive()
            }
            Destination::Datadog { url, .. } => f
                .debug_struct("Datadog")
                .field("url", url)
                .finish_non_exhaustive(),
        }
    }
}

/// One HTTP request to a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) url: String,
    /// `Content-Type` and the credentials: never logged.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Destination {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Destination::Http { .. } => Kind::Http,
            Destination::Splunk { .. } => Kind::Splunk,
            Destination::Datadog { .. } => Kind::Datadog,
        }
    }

    /// The URL given for the destination.
    pub(crate) fn url(&self) -> &str {
        match self {
            Destination::Http { url, .. }
            | Destination::Splunk { url, .. }
            | Destination::Datadog { url, .. } => url,
        }
    }

    /// The names of an HTTP destination's extra headers (empty for the others).
    pub(crate) fn header_names(&self) -> Vec<&str> {
        match self {
            Destination::Http { headers, .. } => headers.iter().map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The secrets the destination holds (header values, token, API key).
    pub(crate) fn credentials(&self) -> Vec<&str> {
        match self {
            Destination::Http { headers, .. } => headers.iter().map(|(_, v)| v.as_str()).collect(),
            Destination::Splunk { token, .. } => vec![token.as_str()],
            Destination::Datadog { api_key, .. } => vec![api_key.as_str()],
        }
    }

    /// Checks the settings, naming the field at fault.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let url = self.url();
        match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(format!(
                    "url: the scheme must be http or https, not '{}'",
                    u.scheme()
                ));
            }
            Err(e) => return Err(format!("url: '{url}' is not a URL ({e})")),
        }
        match self {
            Destination::Http { headers, .. } => {
                for (name, value) in headers {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!("headers: '{name}' is not a valid header name"));
                    }
                    if reqwest::header::HeaderValue::from_str(value).is_err() {
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

    /// The request that delivers one streamed event (see [`streamed_event`]).
    pub(crate) fn outgoing(&self, streamed: &Value) -> Outgoing {
        let body = serde_json::to_vec(&envelope(self.kind(), streamed)).unwrap_or_default();
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let url = match self {
            Destination::Http { url, headers: extra } => {
                headers.extend(extra.iter().cloned());
                url.clone()
            }
            Destination::Splunk { url, token } => {
                headers.push(("Authorization".into(), format!("Splunk {token}")));
                splunk_event_url(url)
            }
            Destination::Datadog { url, api_key } => {
                headers.push(("DD-API-KEY".into(), api_key.clone()));
                datadog_logs_url(url)
            }
        };
        Outgoing { url, headers, body }
    }
}

/// The event object a stream delivers: the stored event with `id` and `organization_id`.
pub(crate) fn streamed_event(id: &str, organization_id: &str, event: &Value) -> Value {
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
fn envelope(kind: Kind, streamed: &Value) -> Value {
    match kind {
        Kind::Http => streamed.clone(),
        Kind::Splunk => {
            let time = streamed
                .get("occurred_at")
                .and_then(Value::as_str)
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0);
            let mut out = json!({"event": streamed, "sourcetype": "workos", "source": "workos"});
            if let Some(t) = time {
                out["time"] = json!(t);
            }
            out
        }
        Kind::Datadog => json!({"ddsource": "workos", "service": "workos", "message": streamed}),
    }
}

/// The HEC event endpoint of a Splunk URL: the URL as given when its path names a collector
/// endpoint (`/services/collector...`), else `/services/collector/event` appended.
fn splunk_event_url(url: &str) -> String {
    if url.contains("/services/collector") {
        url.to_owned()
    } else {
        append_path(url, "/services/collector/event")
    }
}

/// The HEC health endpoint of a Splunk URL (`/services/collector/health` on its host).
pub(crate) fn splunk_health_url(url: &str) -> String {
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
fn datadog_logs_url(url: &str) -> String {
    if url.trim_end_matches('/').ends_with("/api/v2/logs") {
        url.to_owned()
    } else {
        append_path(url, "/api/v2/logs")
    }
}

/// Datadog's key validation endpoint: `/api/v1/validate` appended to an API base URL.
pub(crate) fn datadog_validate_url(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    //! This module and audit-testkit's copy agree: the same destination and event give the same
    //! request, byte for byte, and the same Datadog sites.

    use super::*;
    use audit_testkit::streams as kit;

    fn pairs() -> Vec<(Destination, kit::Destination)> {
        let mut out = Vec::new();
        for url in [
            "https://siem.example.com/in",
            "https://siem.example.com/in/?q=1",
            "http://127.0.0.1:9000",
            "not a url",
        ] {
            let headers = vec![
                ("Authorization".to_owned(), "Bearer t".to_owned()),
                ("X-Extra".to_owned(), "v".to_owned()),
            ];
            out.push((
                Destination::Http {
                    url: url.to_owned(),
                    headers: headers.clone(),
                },
                headers
                    .iter()
                    .fold(kit::Destination::http(url), |d, (n, v)| d.header(n, v)),
            ));
        }
        for url in [
            "https://splunk.example.com:8088",
            "https://splunk.example.com:8088/",
            "https://splunk.example.com:8088/services/collector",
            "https://splunk.example.com:8088/prefix",
            "splunk:8088",
        ] {
            out.push((
                Destination::Splunk {
                    url: url.to_owned(),
                    token: "hec-token".to_owned(),
                },
                kit::Destination::splunk(url, "hec-token"),
            ));
        }
        for url in [
            "https://http-intake.logs.datadoghq.eu",
            "https://http-intake.logs.datadoghq.eu/",
            "http://127.0.0.1:9000/eu1/api/v2/logs",
            "nope",
        ] {
            out.push((
                Destination::Datadog {
                    url: url.to_owned(),
                    api_key: "dd-key".to_owned(),
                },
                kit::Destination::datadog(url, "dd-key"),
            ));
        }
        out
    }

    fn events() -> Vec<Value> {
        vec![
            json!({
                "action": "user.signed_in",
                "occurred_at": "2026-01-02T03:04:05.678Z",
                "version": 1,
                "actor": {"id": "user_1", "type": "user", "name": "Ada"},
                "targets": [{"id": "team_1", "type": "team"}],
                "context": {"location": "203.0.113.7", "user_agent": "curl/8"},
                "metadata": {"n": 3, "ok": true, "s": "x"},
            }),
            json!({"action": "a.b", "occurred_at": "not a time"}),
            json!({"action": "a.b", "occurred_at": "2026-01-02T03:04:05+02:00"}),
            json!("not an object"),
        ]
    }

    #[test]
    fn the_requests_are_those_of_audit_testkit() {
        for (ours, theirs) in pairs() {
            for event in events() {
                let streamed = streamed_event("audit_log_event_01", "org_1", &event);
                assert_eq!(
                    streamed,
                    kit::shapes::streamed_event("audit_log_event_01", "org_1", &event)
                );
                let a = ours.outgoing(&streamed);
                let b = theirs.outgoing(&streamed);
                assert_eq!(
                    (&a.url, &a.headers, &a.body),
                    (&b.url, &b.headers, &b.body),
                    "{ours:?} with {event}"
                );
            }
            assert_eq!(ours.validate(), theirs.validate(), "{ours:?}");
            assert_eq!(ours.url(), theirs.url());
            assert_eq!(ours.header_names(), theirs.header_names());
            assert_eq!(ours.credentials(), theirs.credentials());
            if let Destination::Splunk { url, .. } = &ours {
                assert_eq!(splunk_health_url(url), kit::shapes::splunk_health_url(url));
            }
            assert_eq!(
                datadog_validate_url(ours.url()),
                kit::shapes::datadog_validate_url(ours.url())
            );
        }
    }

    #[test]
    fn the_invalid_settings_are_those_of_audit_testkit() {
        let cases = [
            (
                Destination::Http {
                    url: "ftp://x".into(),
                    headers: vec![],
                },
                kit::Destination::http("ftp://x"),
            ),
            (
                Destination::Http {
                    url: "https://x".into(),
                    headers: vec![("bad name".into(), "v".into())],
                },
                kit::Destination::http("https://x").header("bad name", "v"),
            ),
            (
                Destination::Http {
                    url: "https://x".into(),
                    headers: vec![("X".into(), "line\nbreak".into())],
                },
                kit::Destination::http("https://x").header("X", "line\nbreak"),
            ),
            (
                Destination::Splunk {
                    url: "https://x".into(),
                    token: " ".into(),
                },
                kit::Destination::splunk("https://x", " "),
            ),
            (
                Destination::Datadog {
                    url: "https://x".into(),
                    api_key: String::new(),
                },
                kit::Destination::datadog("https://x", ""),
            ),
        ];
        for (ours, theirs) in cases {
            let err = ours.validate();
            assert!(err.is_err(), "{ours:?}");
            assert_eq!(err, theirs.validate());
        }
    }

    #[test]
    fn the_datadog_sites_are_those_of_audit_testkit() {
        assert_eq!(DatadogSite::ALL.len(), kit::DatadogSite::ALL.len());
        for (ours, theirs) in DatadogSite::ALL.into_iter().zip(kit::DatadogSite::ALL) {
            assert_eq!(
                (ours.name(), ours.domain(), ours.intake_url(), ours.api_url()),
                (
                    theirs.name(),
                    theirs.domain(),
                    theirs.intake_url(),
                    theirs.api_url()
                )
            );
            assert_eq!(DatadogSite::parse(&ours.name().to_ascii_lowercase()), Some(ours));
            assert_eq!(
                kit::DatadogSite::parse(&ours.name().to_ascii_lowercase()),
                Some(theirs)
            );
        }
        assert_eq!(DatadogSite::parse("us1_fed"), Some(DatadogSite::Us1Fed));
        assert_eq!(DatadogSite::parse("mars"), None);
    }
}
