//! Destination probes: check a log-stream destination before it is pasted into the WorkOS
//! dashboard. Each probe is a check of the report ([`CheckId::PROBES`]) and runs only when its
//! destination is given ([`VerifyOptions::stream_probe`](crate::VerifyOptions::stream_probe)).
//!
//! | check | what it does | PASS | FAIL (each with its fix) |
//! |---|---|---|---|
//! | `stream_http` | `POST`s one sample event in the generic envelope, with the given headers | 2xx | refused / timeout (with WorkOS's egress addresses to allow), TLS (self-signed or unknown CA, expired, name mismatch), 401/403, 404/405, 3xx, 5xx, other 4xx |
//! | `stream_splunk` | `GET /services/collector/health`, then one event (`sourcetype` `workos`) with `Authorization: Splunk <token>` | HEC code 0 | HEC unreachable (not enabled), unhealthy, token invalid (expired, deleted) or disabled, invalid data format, incorrect index, plus the transport causes |
//! | `stream_datadog` | `GET /api/v1/validate` on the site's API, then one log to the site's intake | key valid, log accepted (202) | key valid on another site ("wrong region"), key valid nowhere, key without logs write, plus the transport causes |
//! | `stream_s3` | offline: bucket name, region, role ARN and external id formats | all valid | the field at fault |
//!
//! The envelopes, endpoints and Datadog sites are those of [`wire`] (what WorkOS sends, and what
//! is assumed where nothing is documented); audit-testkit keeps its own copy, and a test checks
//! that the two build the same requests.
//!
//! # Security
//!
//! Findings and fixes never contain a token, an API key or a header value: URLs are shown
//! without their query and user info, and any echo of a secret in an answer is replaced by
//! `[redacted]`.

mod datadog;
mod http;
mod s3;
mod splunk;
pub mod wire;

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::report::{CheckId, CheckResult};

use wire::{Destination, Kind};

pub use s3::{WORKOS_AWS_ACCOUNT_PLACEHOLDER, partition_of, s3_policy, s3_trust_relationship};
pub use wire::DatadogSite;

/// The addresses WorkOS streams from (the API reference's list, which includes the guide's six).
pub const WORKOS_EGRESS_IPS: [&str; 9] = [
    "3.217.146.166",
    "23.21.184.92",
    "34.204.154.149",
    "44.213.245.178",
    "44.215.236.82",
    "50.16.203.9",
    "52.1.251.34",
    "52.21.49.187",
    "174.129.36.47",
];

/// The most of an answer a probe reads, in bytes (256 KiB). A destination, or whatever answers at
/// its URL, may send an answer of any size; the probe stops reading here, and a finding that
/// shows the answer says where it was cut.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The characters of an answer kept for findings.
const KEPT_CHARS: usize = 300;

/// A destination to probe: build one with [`StreamProbe::http`], [`StreamProbe::splunk`],
/// [`StreamProbe::datadog`] or [`StreamProbe::s3`].
///
/// # Security
///
/// Holds credentials; `Debug` leaves them out.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamProbe(Target);

#[derive(Clone, PartialEq, Eq)]
enum Target {
    /// A generic HTTP endpoint or a Splunk HEC.
    Destination(Destination),
    Datadog {
        site: DatadogSite,
        api_key: String,
        url: Option<String>,
    },
    S3 {
        bucket: String,
        region: String,
        role_arn: String,
        external_id: String,
    },
}

impl fmt::Debug for StreamProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Target::Destination(d) => f.debug_tuple("StreamProbe").field(d).finish(),
            Target::Datadog { site, url, .. } => f
                .debug_struct("Datadog")
                .field("site", &site.name())
                .field("url", url)
                .finish_non_exhaustive(),
            Target::S3 {
                bucket,
                region,
                role_arn,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("region", region)
                .field("role_arn", role_arn)
                .finish_non_exhaustive(),
        }
    }
}

impl StreamProbe {
    /// A generic HTTP endpoint without headers.
    pub fn http(url: impl Into<String>) -> Self {
        StreamProbe(Target::Destination(Destination::Http {
            url: url.into(),
            headers: Vec::new(),
        }))
    }

    /// Adds a header WorkOS will send to an HTTP endpoint (no effect on the other probes).
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        match self.0 {
            Target::Destination(Destination::Http { url, mut headers }) => {
                headers.push((name.into(), value.into()));
                StreamProbe(Target::Destination(Destination::Http { url, headers }))
            }
            other => StreamProbe(other),
        }
    }

    /// A Splunk HEC URL (e.g. `https://splunk.example.com:8088`) and token.
    pub fn splunk(url: impl Into<String>, token: impl Into<String>) -> Self {
        StreamProbe(Target::Destination(Destination::Splunk {
            url: url.into(),
            token: token.into(),
        }))
    }

    /// A Datadog site and API key.
    pub fn datadog(site: DatadogSite, api_key: impl Into<String>) -> Self {
        StreamProbe(Target::Datadog {
            site,
            api_key: api_key.into(),
            url: None,
        })
    }

    /// Serves every Datadog site from `<base>/<site>` (e.g. `http://127.0.0.1:9000/eu1`) instead
    /// of `https://api.<site>` and `https://http-intake.logs.<site>`, for tests.
    pub fn datadog_url(self, base: impl Into<String>) -> Self {
        match self.0 {
            Target::Datadog { site, api_key, .. } => StreamProbe(Target::Datadog {
                site,
                api_key,
                url: Some(base.into()),
            }),
            other => StreamProbe(other),
        }
    }

    /// An S3 bucket, its region (e.g. `us-east-1`), the IAM role WorkOS assumes
    /// (`arn:aws:iam::123456789012:role/NAME`) and the external id of its trust relationship.
    pub fn s3(
        bucket: impl Into<String>,
        region: impl Into<String>,
        role_arn: impl Into<String>,
        external_id: impl Into<String>,
    ) -> Self {
        StreamProbe(Target::S3 {
            bucket: bucket.into(),
            region: region.into(),
            role_arn: role_arn.into(),
            external_id: external_id.into(),
        })
    }

    /// The check this probe reports as.
    pub fn id(&self) -> CheckId {
        match &self.0 {
            Target::Destination(d) if d.kind() == Kind::Splunk => CheckId::StreamSplunk,
            Target::Destination(_) => CheckId::StreamHttp,
            Target::Datadog { .. } => CheckId::StreamDatadog,
            Target::S3 { .. } => CheckId::StreamS3,
        }
    }

    fn secrets(&self) -> Vec<&str> {
        match &self.0 {
            Target::Destination(d) => d.credentials(),
            Target::Datadog { api_key, .. } => vec![api_key.as_str()],
            Target::S3 { .. } => Vec::new(),
        }
    }

    /// Runs the probe; every problem is a FAIL (or WARN) of the result, never a panic.
    pub async fn run(&self, timeout: Duration) -> CheckResult {
        self.run_with_roots(timeout, &[]).await
    }

    /// [`StreamProbe::run`], also trusting these CA certificates (PEM); see
    /// [`VerifyOptions::stream_trust_root`](crate::VerifyOptions::stream_trust_root).
    pub async fn run_with_roots(&self, timeout: Duration, roots: &[Vec<u8>]) -> CheckResult {
        let client = match Probe::client(timeout, roots) {
            Ok(c) => c,
            Err(e) => {
                return CheckResult::fail(
                    self.id(),
                    format!("no HTTP client: {e}"),
                    "report this as a bug of audit-verify",
                );
            }
        };
        let p = Probe {
            client,
            timeout,
            // Findings never include a secret on purpose; this only catches an echo in an answer.
            secrets: self.secrets().into_iter().map(str::to_owned).collect(),
        };
        if let Target::Destination(d) = &self.0
            && let Err(e) = d.validate()
        {
            let fix = match d.kind() {
                Kind::Splunk => "pass the HEC URL (https://HOST:8088) and its token",
                _ => "pass an http(s) URL and headers as 'Name: value'",
            };
            return CheckResult::fail(self.id(), format!("the destination cannot be used: {e}"), fix);
        }
        let result = match &self.0 {
            Target::Destination(d) if d.kind() == Kind::Splunk => splunk::probe(&p, d).await,
            Target::Destination(d) => http::probe(&p, d).await,
            Target::Datadog { site, api_key, url } => {
                datadog::probe(&p, *site, api_key, url.as_deref()).await
            }
            Target::S3 {
                bucket,
                region,
                role_arn,
                external_id,
            } => s3::check(bucket, region, role_arn, external_id),
        };
        p.scrub(result)
    }
}

/// The sample event a probe sends: the stored-event shape WorkOS streams.
pub(crate) fn sample_event() -> Value {
    let now = time::OffsetDateTime::now_utc();
    let at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T00:00:00Z".to_owned());
    let event = json!({
        "action": "verify.stream_probe",
        "occurred_at": at,
        "version": 1,
        "actor": {"id": "audit-verify", "type": "system", "name": "audit-verify destination probe"},
        "targets": [{"id": "stream_probe", "type": "log_stream"}],
        "context": {"location": "127.0.0.1", "user_agent": concat!("audit-verify/", env!("CARGO_PKG_VERSION"))},
        "metadata": {"probe": "true"},
    });
    let id = format!("audit_log_event_probe_{}", now.unix_timestamp());
    wire::streamed_event(&id, "org_verify_stream_probe", &event)
}

/// A URL without user info and query (they may hold credentials).
pub(crate) fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// An answer, or why there was none.
pub(crate) enum Sent {
    Answer {
        status: u16,
        body: Body,
        location: Option<String>,
    },
    Failed(Transport),
}

/// The start of an answer's body, read up to [`MAX_ANSWER_BYTES`].
pub(crate) struct Body {
    /// The first [`KEPT_CHARS`] characters, trimmed (invalid UTF-8 replaced).
    text: String,
    /// Set when the answer was longer than [`MAX_ANSWER_BYTES`]: the bytes read before the cut.
    cut_at: Option<usize>,
}

impl Body {
    /// Reads at most [`MAX_ANSWER_BYTES`] of `res`'s body; a body that fails midway keeps what
    /// arrived.
    async fn read(mut res: reqwest::Response) -> Body {
        let mut buf: Vec<u8> = Vec::new();
        let mut cut_at = None;
        while let Ok(Some(chunk)) = res.chunk().await {
            let room = MAX_ANSWER_BYTES - buf.len();
            if chunk.len() > room {
                buf.extend_from_slice(&chunk[..room]);
                cut_at = Some(buf.len());
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        let text: String = String::from_utf8_lossy(&buf).chars().take(KEPT_CHARS).collect();
        Body {
            text: text.trim().to_owned(),
            cut_at,
        }
    }

    /// The kept text (a prefix when the answer was long).
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// For a finding: `empty answer`, or `answer: <the first 120 characters>`, saying where a
    /// long answer was cut.
    pub(crate) fn excerpt(&self) -> String {
        let shown = if self.text.is_empty() {
            "empty answer".to_owned()
        } else {
            let s: String = self.text.chars().take(120).collect();
            format!("answer: {s}")
        };
        match self.cut_at {
            Some(n) => format!(
                "{shown}; the answer was cut after {n} bytes, the most a probe reads (audit_verify::streams::MAX_ANSWER_BYTES)"
            ),
            None => shown,
        }
    }
}

/// Why a request got no answer.
pub(crate) enum Transport {
    Refused(String),
    Timeout,
    Dns(String),
    Tls(TlsProblem, String),
    Other(String),
}

/// What is wrong with a destination's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsProblem {
    Untrusted,
    Expired,
    NameMismatch,
    Other,
}

pub(crate) struct Probe {
    client: reqwest::Client,
    timeout: Duration,
    secrets: Vec<String>,
}

impl Probe {
    fn client(timeout: Duration, roots: &[Vec<u8>]) -> reqwest::Result<reqwest::Client> {
        // rustls with the public web PKI, whatever TLS backends the rest of the build enables
        // (features unify: with audit-core's `native-tls`, reqwest would otherwise default to
        // OpenSSL, whose verdicts and texts differ).
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true);
        for pem in roots {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        b.timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("audit-verify/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Replaces every secret in a result's texts.
    fn scrub(&self, r: CheckResult) -> CheckResult {
        let known: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        r.redacted(&known)
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Sent {
        let mut req = self.client.request(method, url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let location = res
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(display_url_or_path);
                Sent::Answer {
                    status,
                    body: Body::read(res).await,
                    location,
                }
            }
            Err(e) => Sent::Failed(classify(&e)),
        }
    }

    /// The FAIL of a request that got no answer, with the fix for its cause.
    pub(crate) fn transport_failure(
        &self,
        id: CheckId,
        url: &str,
        t: &Transport,
        extra_fix: &str,
    ) -> CheckResult {
        let shown = display_url(url);
        let allow = format!(
            "if it sits behind a firewall or an IP allowlist, allow WorkOS's addresses: {}",
            WORKOS_EGRESS_IPS.join(", ")
        );
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let (finding, fix) = match t {
            Transport::Refused(detail) => (
                format!("{shown} refused the connection ({detail})"),
                format!("make sure the destination listens on that host and port and is reachable from the internet{extra_fix}; {allow}"),
            ),
            Transport::Timeout => (
                format!("{shown} did not answer within {} s", self.timeout.as_secs_f64()),
                format!("a firewall may be dropping the traffic; {allow}"),
            ),
            Transport::Dns(detail) => (
                format!("the host of {shown} could not be resolved ({detail})"),
                "check the host name in the URL; it must resolve in public DNS".to_owned(),
            ),
            Transport::Tls(TlsProblem::Untrusted, detail) => (
                format!("the certificate of {shown} is not signed by a trusted authority (self-signed or a private CA: {detail})"),
                "WorkOS verifies certificates: serve a certificate from a public CA (e.g. Let's Encrypt) with its full chain".to_owned(),
            ),
            Transport::Tls(TlsProblem::Expired, detail) => (
                format!("the certificate of {shown} has expired or is not yet valid ({detail})"),
                "renew the certificate (and check the server's clock)".to_owned(),
            ),
            Transport::Tls(TlsProblem::NameMismatch, detail) => (
                format!("the certificate of {shown} is not valid for {host} ({detail})"),
                format!("serve a certificate whose names include {host}, or use a host name the certificate names"),
            ),
            Transport::Tls(TlsProblem::Other, detail) => (
                format!("the TLS handshake with {shown} failed ({detail})"),
                "serve TLS 1.2 or 1.3 with a certificate from a public CA; test with `curl -v` from another network".to_owned(),
            ),
            Transport::Other(detail) => (
                format!("{shown} could not be reached ({detail})"),
                format!("check the URL and the network path{extra_fix}; {allow}"),
            ),
        };
        CheckResult::fail(id, finding, fix)
    }
}

fn display_url_or_path(v: &str) -> String {
    if v.starts_with('/') {
        v.split('?').next().unwrap_or(v).to_owned()
    } else {
        display_url(v)
    }
}

/// The error and its sources, joined with `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = c.source();
    }
    parts.join(": ")
}

fn classify(e: &reqwest::Error) -> Transport {
    if e.is_timeout() {
        return Transport::Timeout;
    }
    // The top-level text names the URL (which may hold credentials): keep only the causes.
    let text = match std::error::Error::source(e) {
        Some(src) => chain(src),
        None => "no details".to_owned(),
    };
    let lower = text.to_ascii_lowercase();
    // The innermost cause is the most telling.
    let short = text.rsplit(": ").next().unwrap_or(&text).to_owned();
    if lower.contains("connection refused") {
        Transport::Refused(short)
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
    {
        Transport::Dns(short)
    } else if crate::api::is_tls_failure(&lower) {
        let kind = if lower.contains("expired")
            || lower.contains("notvalidyet")
            || lower.contains("not valid yet")
        {
            TlsProblem::Expired
        } else if lower.contains("notvalidforname")
            || lower.contains("not valid for name")
            || lower.contains("hostname mismatch")
        {
            TlsProblem::NameMismatch
        } else if lower.contains("unknownissuer")
            || lower.contains("unknown issuer")
            || lower.contains("self-signed")
            || lower.contains("selfsigned")
        {
            TlsProblem::Untrusted
        } else {
            TlsProblem::Other
        };
        Transport::Tls(kind, text)
    } else {
        Transport::Other(short)
    }
}
