//! The WorkOS Audit Logs API client.
//!
//! A [`Client`] calls every endpoint of WorkOS's Audit Logs API reference: create an event, create
//! and read exports (and stream an export's CSV), create and list schemas, list actions, read and
//! set an organization's retention, read its audit-log configuration, and generate an Admin Portal
//! link. It is cheap to clone (one pooled HTTP client inside, shared) and can be used
//! from many tasks at once.
//!
//! ```no_run
//! # async fn run() -> Result<(), audit_core::Error> {
//! use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
//!
//! let client = Client::from_env()?; // WORKOS_API_KEY, optional WORKOS_BASE_URL
//! let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("a valid id");
//! let event = Event::new(
//!     Action::new("user.signed_in").expect("a valid action"),
//!     Actor::new("user_01", "user"),
//!     Context::new("203.0.113.7"),
//! );
//! client.create_event(&org, &event).await?;
//! # Ok(()) }
//! ```
//!
//! # Retries
//! Every request is retried after 408, 429, 500, 502, 503, 504, a connection failure or a timeout,
//! as the client's [`RetryPolicy`] decides (by default 3 retries with exponential backoff and full
//! jitter, `Retry-After` honoured up to 60 s). Every POST carries an `Idempotency-Key` (a UUID v4
//! unless the caller gives one for an event), the same on every attempt, so a retried POST does not
//! create twice what WorkOS deduplicates. GETs and the retention PUT are idempotent by nature.
//! 400, 401, 403, 404, 409 and 422 are never retried.
//!
//! # Security
//! The API key is kept as a [`secrecy::SecretString`], exposed only to build the
//! `Authorization` header (which is marked sensitive), shown as `[redacted]` by `Debug` and never put
//! into an error or a log line. It is sent only to the configured base URL: the export download
//! ([`Client::download_export_csv`]) goes to a pre-signed URL on another host and carries no key.

mod builder;
mod download;
mod endpoints;
mod pagination;
mod types;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{ApiError, Error};
use crate::event::{CreateEvent, Event, OrganizationId};
use crate::retry::{Decision, Failure, RetryPolicy};

pub(crate) use builder::RedactedKey;
pub use builder::{ClientBuilder, ENV_API_KEY, ENV_BASE_URL};
pub use download::{ByteStream, DOWNLOAD_TIMEOUT};
pub use pagination::{List, ListMetadata, ListOptions, Order};
pub use types::{
    AuditLogAction, AuditLogConfiguration, AuditLogExport, AuditLogSchema, ConfigurationState,
    CreateEventOptions, CreateExport, CreateSchema, ExportState, GeneratePortalLink, LogStream,
    LogStreamState, LogStreamType, PortalIntent, PortalLink, Retention, RetentionPeriod, RetentionSettings,
    SchemaActor, SchemaTarget,
};

/// The default base URL of the WorkOS API.
pub const DEFAULT_BASE_URL: &str = "https://api.workos.com";
/// The default timeout of one attempt (connect, send, receive the whole response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header WorkOS deduplicates POSTs on.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The longest idempotency key accepted locally, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A client for the WorkOS Audit Logs API.
///
/// Build one with [`Client::builder`] or [`Client::from_env`]; clone it freely (clones share one
/// connection pool). See the [module documentation](self) for retries and an example.
///
/// # Security
/// `Debug` shows the key as `sk_test_[redacted]` / `sk_live_[redacted]` / `[redacted]`; the key is
/// never part of an [`Error`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_key: SecretString,
    /// `Bearer <key>`, marked sensitive so that the HTTP stack never logs it (built once).
    authorization: HeaderValue,
    /// `<base>/audit_logs/events`, parsed once: the URL of every delivery attempt.
    events_url: Url,
    /// The base URL as text, without a trailing slash (`https://api.workos.com`, `http://127.0.0.1:9/x`).
    base_url: String,
    timeout: Duration,
    retry: RetryPolicy,
    allow_insecure_http: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &builder::RedactedKey(Some(&self.inner.api_key)))
            .field("timeout", &self.inner.timeout)
            .field("retry_policy", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// One request to send, possibly several times.
struct Request {
    method: reqwest::Method,
    url: Url,
    body: Option<Bytes>,
    idempotency_key: Option<String>,
    /// Whether the API key goes along (false for pre-signed export URLs).
    authorized: bool,
    /// A timeout other than the client's.
    timeout: Option<Duration>,
}

/// A successful response, read whole.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Bytes,
}

impl Client {
    /// A builder; only the API key is required.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client configured from the environment: `WORKOS_API_KEY` (required, `sk_…`) and
    /// `WORKOS_BASE_URL` (optional, default [`DEFAULT_BASE_URL`]). Everything else has its default.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when the key is missing or malformed or the base URL
    /// is not a valid URL. The message never contains the key.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env()?.build()
    }

    /// The base URL requests go to, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The retry policy of direct calls.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    // ---- 1. create event ----------------------------------------------------------------------

    /// Records `event` for `organization` (`POST /audit_logs/events`), with a fresh UUID v4
    /// idempotency key. See [`Client::create_event_with`].
    pub async fn create_event(&self, organization: &OrganizationId, event: &Event) -> Result<(), Error> {
        self.create_event_with(organization, event, CreateEventOptions::new())
            .await
    }

    /// Records `event` for `organization` (`POST /audit_logs/events`).
    ///
    /// The event is validated locally first ([`Event::validate`]); nothing is sent when it breaks a
    /// rule. The request always carries an `Idempotency-Key`, the caller's
    /// ([`CreateEventOptions::idempotency_key`]) or a UUID v4, the same on every retry, so WorkOS
    /// records the event once however often it is sent (for 24 hours).
    ///
    /// # Errors
    /// [`Error::Invalid`] (local validation, with JSON pointers), [`Error::InvalidParameter`] (a
    /// malformed idempotency key), [`Error::Api`] (400 with `instancePath`s, 404 unknown
    /// organization, 422 field list, 429 after the retries), [`Error::Transport`], [`Error::Timeout`],
    /// [`Error::NotWorkOs`] (a 2xx that is not WorkOS's `{"success":true}`: check
    /// `WORKOS_BASE_URL`; not retried).
    pub async fn create_event_with(
        &self,
        organization: &OrganizationId,
        event: &Event,
        options: CreateEventOptions,
    ) -> Result<(), Error> {
        event.validate()?;
        let key = match options.idempotency_key {
            Some(key) => {
                check_idempotency_key(&key)?;
                key
            }
            None => new_idempotency_key(),
        };
        #[derive(Serialize)]
        struct Body<'a> {
            organization_id: &'a OrganizationId,
            event: &'a Event,
        }
        let body = to_body(&Body {
            organization_id: organization,
            event,
        })?;
        let request = self.post_event_request(body, key)?;
        let answer = self.execute(&request, true).await?;
        self.check_created(&request.url, answer)
    }

    /// Sends one create-event request (`POST /audit_logs/events`) exactly once: no local
    /// validation, no retry. For callers with their own retry loop (the background emitter), which
    /// keep `idempotency_key` for every attempt of the same event.
    ///
    /// # Errors
    /// `Ok(())` only on WorkOS's documented success (a 2xx with `{"success":true}`); any other
    /// 2xx is [`Error::NotWorkOs`] (the base URL points at something else). [`Error::Api`] for
    /// any other status, with the status, WorkOS's `code`,
    /// `message`, field errors, `X-Request-ID` and `Retry-After` (seconds or HTTP date);
    /// [`Error::Transport`] or [`Error::Timeout`] when no response arrived;
    /// [`Error::InvalidParameter`] when `idempotency_key` cannot be sent as a header (empty, longer
    /// than [`MAX_IDEMPOTENCY_KEY_LEN`], or not visible ASCII).
    pub async fn send_event_once(&self, body: &CreateEvent, idempotency_key: &str) -> Result<(), Error> {
        check_idempotency_key(idempotency_key)?;
        let body = to_body(body)?;
        let request = self.post_event_request(body, idempotency_key.to_owned())?;
        let answer = self.attempt(&request).await?;
        self.check_created(&request.url, answer)
    }

    /// A create-event answer counts only when it is WorkOS's documented success,
    /// `{"success":true}`; any other 2xx (an HTML page, a `204`, another JSON) comes from
    /// something that is not the WorkOS API and is [`Error::NotWorkOs`].
    fn check_created(&self, url: &Url, answer: Answer) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct Created {
            success: bool,
        }
        match serde_json::from_slice::<Created>(&answer.body) {
            Ok(Created { success: true }) => Ok(()),
            _ => {
                let body = self.scrub_key(answer.body);
                let start = &body[..body.len().min(Error::NOT_WORKOS_BODY_START)];
                Err(Error::NotWorkOs {
                    url: redact_url(url),
                    status: answer.status,
                    content_type: answer.content_type,
                    body_start: String::from_utf8_lossy(start).into_owned(),
                })
            }
        }
    }

    fn post_event_request(&self, body: Bytes, key: String) -> Result<Request, Error> {
        Ok(Request {
            method: reqwest::Method::POST,
            url: self.inner.events_url.clone(),
            body: Some(body),
            idempotency_key: Some(key),
            authorized: true,
            timeout: None,
        })
    }

    // ---- machinery ----------------------------------------------------------------------------

    /// `base_url` + the given (already checked and encoded) path + query.
    fn url<S: AsRef<str>>(&self, segments: &[S], query: &[(&str, String)]) -> Result<Url, Error> {
        let mut text = self.inner.base_url.clone();
        for s in segments {
            text.push('/');
            text.push_str(s.as_ref());
        }
        let mut url = Url::parse(&text).map_err(|e| Error::InvalidParameter {
            field: "path",
            message: format!("the request URL {text:?} is not valid: {e}"),
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, Error> {
        let request = Request {
            method: reqwest::Method::GET,
            url,
            body: None,
            idempotency_key: None,
            authorized: true,
            timeout: None,
        };
        let answer = self.execute(&request, true).await?;
        self.decode(&request.url, &answer)
    }

    async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: Url,
        body: &B,
    ) -> Result<T, Error> {
        let idempotency_key = (method == reqwest::Method::POST).then(new_idempotency_key);
        let request = Request {
            method,
            url,
            body: Some(to_body(body)?),
            idempotency_key,
            authorized: true,
            timeout: None,
        };
        let answer = self.execute(&request, true).await?;
        self.decode(&request.url, &answer)
    }

    /// Sends `request` until it succeeds or the retry policy gives up (`retry` false: once).
    async fn execute(&self, request: &Request, retry: bool) -> Result<Answer, Error> {
        if retry {
            self.retrying(&request.url, || self.attempt(request)).await
        } else {
            self.attempt(request).await
        }
    }

    /// Runs `attempt` until it succeeds or the retry policy gives up, sleeping between attempts.
    async fn retrying<T, F, Fut>(&self, url: &Url, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut number = 1u32;
        loop {
            let err = match attempt().await {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            let Failure::Retryable(outcome) = err.failure() else {
                return Err(err);
            };
            match self.inner.retry.decide(outcome, number, rand::random::<f64>()) {
                Decision::Retry { after } => {
                    tracing::debug!(
                        url = %redact_url(url),
                        attempt = number,
                        wait_ms = after.as_millis() as u64,
                        error = %err,
                        "retrying a WorkOS request"
                    );
                    tokio::time::sleep(after).await;
                    number += 1;
                }
                _ => return Err(err),
            }
        }
    }

    /// Sends `request` once and reads the whole response; a non-2xx status is an [`Error::Api`].
    async fn attempt(&self, request: &Request) -> Result<Answer, Error> {
        let response = self.send(request).await?;
        let response = self.check_status(request, response).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(request, e))?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    /// A 2xx response as it is; any other status read whole into an [`Error::Api`].
    async fn check_status(
        &self,
        request: &Request,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, Error> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let (request_id, retry_after) = response_meta(&response);
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(request, e))?;
        let body = self.scrub_key(body);
        Err(Error::Api(Box::new(ApiError::from_response(
            status,
            request_id,
            retry_after,
            &body,
        ))))
    }

    /// Reads a success body as `T`. A decode error quotes values of the body, so a key echoed
    /// there is scrubbed from the message.
    fn decode<T: DeserializeOwned>(&self, url: &Url, answer: &Answer) -> Result<T, Error> {
        serde_json::from_slice(&answer.body).map_err(|e| {
            let key = self.inner.api_key.expose_secret();
            let text = e.to_string();
            let source: Box<dyn std::error::Error + Send + Sync> = if text.contains(key) {
                Box::new(TransportCause {
                    message: text.replace(key, "[redacted]"),
                    source: None,
                })
            } else {
                Box::new(e)
            };
            Error::Decode {
                url: redact_url(url),
                status: answer.status,
                source,
            }
        })
    }

    /// An error body with every copy of the API key replaced by `[redacted]`, in case a server
    /// or proxy echoes the request's headers back.
    fn scrub_key(&self, body: Bytes) -> Bytes {
        let key = self.inner.api_key.expose_secret().as_bytes();
        if key.is_empty() || !body.windows(key.len()).any(|w| w == key) {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(i) = rest.windows(key.len()).position(|w| w == key) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(b"[redacted]");
            rest = &rest[i + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    /// Sends `request` once and returns the response with its body unread.
    async fn send(&self, request: &Request) -> Result<reqwest::Response, Error> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .header(header::ACCEPT, "application/json");
        if request.authorized {
            builder = builder.header(header::AUTHORIZATION, self.inner.authorization.clone());
        }
        if let Some(key) = &request.idempotency_key {
            let value = HeaderValue::from_str(key).map_err(|_| Error::InvalidParameter {
                field: "idempotency_key",
                message: "must be visible ASCII".into(),
            })?;
            builder = builder.header(IDEMPOTENCY_KEY_HEADER, value);
        }
        // Always per request: a shared application client may have another total timeout.
        builder = builder.timeout(request.timeout.unwrap_or(self.inner.timeout));
        if let Some(body) = &request.body {
            builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        builder.send().await.map_err(|e| self.transport_error(request, e))
    }

    fn transport_error(&self, request: &Request, e: reqwest::Error) -> Error {
        let url = redact_url(&request.url);
        if e.is_timeout() {
            Error::Timeout {
                url,
                timeout: request.timeout.unwrap_or(self.inner.timeout),
            }
        } else {
            // reqwest's message repeats the URL with its query; keep only the cause chain.
            Error::Transport {
                url,
                source: Box::new(TransportCause::from(&e)),
            }
        }
    }
}

/// An error cause kept as text: a transport failure (reqwest's own error type stays private) or a
/// decode error whose message had to be scrubbed.
#[derive(Debug)]
struct TransportCause {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportCause {
    fn from(e: &reqwest::Error) -> Self {
        let kind = if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "reading the response failed"
        } else if e.is_request() {
            "sending the request failed"
        } else {
            "HTTP error"
        };
        let mut chain = Vec::new();
        let mut cur = std::error::Error::source(e);
        while let Some(c) = cur {
            chain.push(c.to_string());
            cur = c.source();
        }
        let source = (!chain.is_empty()).then(|| {
            Box::new(TransportCause {
                message: chain.join(": "),
                source: None,
            }) as Box<dyn std::error::Error + Send + Sync>
        });
        Self {
            message: kind.to_owned(),
            source,
        }
    }
}

impl fmt::Display for TransportCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The URL for error messages: without query or fragment (pre-signed URLs carry tokens there).
fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    let had_query = url.query().is_some();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    let mut text = url.to_string();
    if had_query {
        text.push_str("?…");
    }
    text
}

fn response_meta(response: &reqwest::Response) -> (Option<String>, Option<Duration>) {
    let headers = response.headers();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::retry::parse_retry_after(v, SystemTime::now()));
    (request_id, retry_after)
}

fn to_body<B: Serialize + ?Sized>(body: &B) -> Result<Bytes, Error> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| Error::InvalidParameter {
            field: "body",
            message: format!("could not be serialized as JSON: {e}"),
        })
}

fn new_idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn check_idempotency_key(key: &str) -> Result<(), Error> {
    let message = if key.is_empty() {
        "must not be empty"
    } else if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        "must be at most 255 bytes"
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        "must be visible ASCII without spaces"
    } else {
        return Ok(());
    };
    Err(Error::InvalidParameter {
        field: "idempotency_key",
        message: message.into(),
    })
}

/// Percent-encodes one path segment; refuses empty, `.` and `..` segments.
fn segment(field: &'static str, value: &str) -> Result<String, Error> {
    /// Everything but RFC 3986's unreserved characters is encoded.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    if value.is_empty() || value == "." || value == ".." {
        return Err(Error::InvalidParameter {
            field,
            message: format!("{value:?} cannot be a path segment"),
        });
    }
    Ok(percent_encoding::utf8_percent_encode(value, SEGMENT).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_dot_segments_refused() {
        assert_eq!(segment("id", "user.signed_in").unwrap(), "user.signed_in");
        assert_eq!(segment("id", "a/b c?d#e%").unwrap(), "a%2Fb%20c%3Fd%23e%25");
        assert_eq!(segment("id", "ü").unwrap(), "%C3%BC");
        for bad in ["", ".", ".."] {
            assert!(matches!(
                segment("id", bad),
                Err(Error::InvalidParameter { field: "id", .. })
            ));
        }
        assert_eq!(segment("id", "...").unwrap(), "...");
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(check_idempotency_key("workos-node-4b98b0bb").is_ok());
        assert!(check_idempotency_key(&new_idempotency_key()).is_ok());
        for bad in ["", "a b", "é", "a\nb"] {
            assert!(check_idempotency_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn urls_in_errors_lose_query_and_credentials() {
        let url = Url::parse("https://u:p@exports.example/x.csv?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(redact_url(&url), "https://exports.example/x.csv?…");
    }
}
