//! Checks `event`, `log_stream`, `schema_validation` and `export`: what WorkOS itself says.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::env::mask_key;
use super::plan::Plan;
use super::report::{CheckId, CheckResult};
use audit_core::Error;
use audit_core::client::{
    AuditLogSchema, Client, ConfigurationState, CreateExport, ExportState, ListOptions, LogStream,
    LogStreamState, LogStreamType,
};
use audit_core::event::{Action, OrganizationId};

/// The longest wait between two polls of an export.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

const KEY_401_FIX: &str = "the key is wrong, revoked or for the other environment (test vs production): check its status in the WorkOS Dashboard → API Keys, regenerate it if it leaked, and use the key of the environment the organization lives in";
const ORG_404_FIX: &str = "the id must be \"org_\" followed by 26 characters and exist in the environment of the key (a test key sees only test organizations): copy it from the WorkOS Dashboard → Organizations";
const NETWORK_FIX: &str = "check WORKOS_BASE_URL (default https://api.workos.com; http://127.0.0.1:PORT for audit-testkit), DNS, proxy and firewall: outbound HTTPS to api.workos.com must be allowed";
const TLS_FIX: &str = "the server did not complete a TLS handshake with a certificate trusted by the Mozilla root store: use https://api.workos.com (or the plain http:// URL of audit-testkit); behind a TLS-intercepting proxy, let api.workos.com through";
const FOREIGN_FIX: &str = "WORKOS_BASE_URL must point at the WorkOS API (https://api.workos.com) or audit-testkit; a proxy or gateway may be answering instead";
const NOT_WORKOS_FIX: &str = "this is not the WorkOS API: check WORKOS_BASE_URL, which must point at the WorkOS API (https://api.workos.com, or remove it) or audit-testkit; a gateway, proxy or web app answering 2xx makes every event look delivered while nothing is stored";
const SCHEMA_OFF_FIX: &str = "turn on \"Require metadata schema validation\" in the WorkOS Dashboard (Audit Logs → Configuration), then send every event with the `version` of the schema it follows";

/// A failure of a check, and whether it stops the checks after it (the same cause would fail
/// them all: a refused key, an unreachable server, a rate limit, an unknown organization).
pub(crate) struct Failure {
    pub(crate) result: CheckResult,
    pub(crate) blocking: bool,
}

/// What the API checks share.
pub(crate) struct ApiContext {
    pub(crate) client: Client,
    pub(crate) key: String,
    pub(crate) org: OrganizationId,
    pub(crate) action: Result<Action, String>,
    pub(crate) require_stream: bool,
    pub(crate) export_timeout: Duration,
    pub(crate) export_poll_interval: Duration,
    schema: Option<Option<AuditLogSchema>>,
}

impl ApiContext {
    pub(crate) fn new(
        client: Client,
        key: String,
        org: OrganizationId,
        action: Result<Action, String>,
    ) -> Self {
        Self {
            client,
            key,
            org,
            action,
            require_stream: false,
            export_timeout: Duration::from_secs(60),
            export_poll_interval: Duration::from_secs(1),
            schema: None,
        }
    }

    /// The latest registered schema of the action (`None` when it has none), asked once.
    async fn schema(&mut self, action: &Action) -> Result<Option<AuditLogSchema>, Error> {
        if let Some(s) = &self.schema {
            return Ok(s.clone());
        }
        let found = match self
            .client
            .list_schemas(action, &ListOptions::new().limit(ListOptions::MAX_LIMIT))
            .await
        {
            Ok(list) => list.data.into_iter().max_by_key(|s| s.version),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        self.schema = Some(found.clone());
        Ok(found)
    }

    fn action(&self, id: CheckId) -> Result<Action, Failure> {
        self.action.clone().map_err(|rule| Failure {
            result: CheckResult::fail(
                id,
                format!("the action to test is not valid: {rule}"),
                "pass --action with an action name such as user.signed_in (dot-separated segments of letters, digits, '_' or '-')",
            ),
            blocking: false,
        })
    }

    /// Turns a client error into a failed check with the fix for its cause.
    pub(crate) fn failure(&self, id: CheckId, err: &Error, doing: &str) -> Failure {
        let masked = mask_key(&self.key);
        let base = self.client.base_url();
        let (finding, fix, blocking) = match err {
            Error::Api(api) if !matches!(api.status, 401 | 403 | 429) && is_foreign(err) => (
                format!("{base} answered {} with a body that is not the WorkOS API's JSON {doing}", api.status),
                FOREIGN_FIX.to_owned(),
                true,
            ),
            Error::Api(api) => match api.status {
                401 => (
                    format!("WorkOS refused the API key {masked} (401 Unauthorized) {doing}"),
                    KEY_401_FIX.to_owned(),
                    true,
                ),
                403 => (
                    format!("the API key {masked} is not allowed to do this (403 Forbidden) {doing}"),
                    "give the key access to Audit Logs in the WorkOS Dashboard → API Keys, or use a key that has it".to_owned(),
                    true,
                ),
                404 => (
                    format!("organization {} not found (404) {doing}{}", self.org, message_of(err)),
                    ORG_404_FIX.to_owned(),
                    true,
                ),
                429 => {
                    let wait = err
                        .retry_after()
                        .map_or_else(|| "no Retry-After given".to_owned(), |d| format!("Retry-After: wait {}", seconds(d)));
                    (
                        format!("WorkOS rate-limited the request (429) {doing}; {wait}"),
                        format!(
                            "wait {} and run again; if it persists something else is spending the key's limit (6,000 requests per 60 s): batch less, back off, or ask WorkOS support for a higher limit",
                            err.retry_after().map_or_else(|| "a minute".to_owned(), seconds)
                        ),
                        true,
                    )
                }
                s if s >= 500 => (
                    format!("WorkOS answered {s} {doing}{}", request_id(err)),
                    "a problem on WorkOS's side: run again in a few minutes, check https://status.workos.com, and quote the request id to WorkOS support if it persists".to_owned(),
                    false,
                ),
                _ => (
                    format!("WorkOS refused the request {doing}: {api}"),
                    "the errors' instancePath names the field at fault".to_owned(),
                    false,
                ),
            },
            Error::Transport { .. } => {
                let chain = error_chain(err);
                if is_tls_failure(&chain) {
                    (format!("TLS failure talking to {base} {doing}: {chain}"), TLS_FIX.to_owned(), true)
                } else {
                    (format!("could not reach {base} {doing}: {chain}"), NETWORK_FIX.to_owned(), true)
                }
            }
            Error::Timeout { timeout, .. } => (
                format!("{base} did not answer within {} {doing}", seconds(*timeout)),
                NETWORK_FIX.to_owned(),
                true,
            ),
            Error::Decode { status, .. } => (
                format!("{base} answered {status} with something that is not the WorkOS API's JSON {doing}"),
                FOREIGN_FIX.to_owned(),
                true,
            ),
            Error::NotWorkOs {
                status,
                content_type,
                body_start,
                ..
            } => (
                format!(
                    "{base} answered {status} ({}) with a body starting {body_start:?} {doing}: that is not WorkOS's answer ({{\"success\":true}}), so nothing says the event was stored",
                    content_type.as_deref().unwrap_or("no content type")
                ),
                NOT_WORKOS_FIX.to_owned(),
                true,
            ),
            Error::Invalid(v) => (
                format!("the test event was refused locally {doing}: {v}"),
                "pass --action with a valid action name".to_owned(),
                false,
            ),
            other => (format!("{other} {doing}"), NETWORK_FIX.to_owned(), true),
        };
        Failure {
            result: CheckResult::fail(id, finding, fix),
            blocking,
        }
    }

    /// Check `event`.
    pub(crate) async fn event(&mut self) -> Result<CheckResult, Failure> {
        let id = CheckId::Event;
        let action = self.action(id)?;
        let schema = match self.schema(&action).await {
            Ok(s) => s,
            Err(e) if is_blocking(&e) => {
                return Err(self.failure(id, &e, &format!("while looking up the schemas of `{action}`")));
            }
            // Not fatal here: the event is sent without a schema version.
            Err(_) => None,
        };
        let event = Plan::conforming(&action, schema.as_ref()).to_event();
        let version = schema.as_ref().map_or_else(
            || " (no schema registered)".to_owned(),
            |s| format!(" (schema version {})", s.version),
        );
        match self.client.create_event(&self.org, &event).await {
            Ok(()) => Ok(CheckResult::pass(
                id,
                format!(
                    "WorkOS accepted a `{action}` event{version} for {}; it shows in the Dashboard → Audit Logs within about a minute",
                    self.org
                ),
            )),
            Err(e) if matches!(e.status(), Some(400 | 422)) && !is_foreign(&e) => {
                let fix = if schema.is_none() {
                    format!(
                        "WorkOS requires a schema for every action here: register one for `{action}` in the WorkOS Dashboard → Audit Logs (or through Client::create_schema), or pass --action with a registered action; the instancePath names the field at fault"
                    )
                } else {
                    format!(
                        "make the event match the schema of `{action}`: the instancePath names the field; check types (string vs number), required fields, at most 50 metadata keys and 500 characters per value"
                    )
                };
                Err(Failure {
                    result: CheckResult::fail(
                        id,
                        format!("WorkOS refused the test event{version}: {}", api_text(&e)),
                        fix,
                    ),
                    blocking: false,
                })
            }
            Err(e) => Err(self.failure(id, &e, "while sending the test event")),
        }
    }

    /// Check `log_stream`.
    pub(crate) async fn log_stream(&mut self) -> Result<CheckResult, Failure> {
        let id = CheckId::LogStream;
        let config = self
            .client
            .get_audit_log_configuration(&self.org)
            .await
            .map_err(|e| self.failure(id, &e, "while reading the audit-log configuration"))?;
        let Some(stream) = &config.log_stream else {
            let finding = format!("no log stream is configured for {}", self.org);
            return if self.require_stream {
                Err(Failure {
                    result: CheckResult::fail(
                        id,
                        finding,
                        "set up a log stream for the organization in the WorkOS Dashboard → Organizations → Log Streams, or send its IT admin an Admin Portal link with the log_streams intent",
                    ),
                    blocking: false,
                })
            } else {
                Ok(CheckResult::skip(
                    id,
                    format!("{finding} (pass --require-stream to require one)"),
                ))
            };
        };
        let what = format!("the {} log stream {}", stream.kind, stream.id);
        match &stream.state {
            LogStreamState::Active if config.state == ConfigurationState::Active => {
                let synced = stream.last_synced_at.map_or_else(
                    || "never synced yet".to_owned(),
                    |t| format!("last synced {}", audit_core::event::rfc3339_millis::format(t)),
                );
                Ok(CheckResult::pass(id, format!("{what} is active, {synced}")))
            }
            LogStreamState::Active => Ok(CheckResult::warn(
                id,
                format!(
                    "{what} is active, but audit logs of {} are {}",
                    self.org, config.state
                ),
                Some("turn audit logs on for the organization in the WorkOS Dashboard".into()),
            )),
            LogStreamState::Inactive => Err(Failure {
                result: CheckResult::fail(
                    id,
                    format!("{what} is inactive: no events are delivered"),
                    format!(
                        "activate it in the WorkOS Dashboard → Log Streams (Active vs. Inactive); {}",
                        destination_fix(stream)
                    ),
                ),
                blocking: false,
            }),
            LogStreamState::Error => Err(Failure {
                result: CheckResult::fail(
                    id,
                    format!("{what} is in error: WorkOS cannot deliver to the destination"),
                    destination_fix(stream),
                ),
                blocking: false,
            }),
            LogStreamState::Invalid => Err(Failure {
                result: CheckResult::fail(
                    id,
                    format!("{what} has an invalid configuration"),
                    format!(
                        "correct the destination's settings in the WorkOS Dashboard → Log Streams; {}",
                        destination_fix(stream)
                    ),
                ),
                blocking: false,
            }),
            other => Ok(CheckResult::warn(
                id,
                format!("{what} is in state {other:?}, unknown to this version"),
                Some("check the stream's status in the WorkOS Dashboard → Log Streams".into()),
            )),
        }
    }

    /// Check `schema_validation`.
    pub(crate) async fn schema_validation(&mut self) -> Result<CheckResult, Failure> {
        let id = CheckId::SchemaValidation;
        let action = self.action(id)?;
        let schema = match self.schema(&action).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Ok(CheckResult::skip(
                    id,
                    format!(
                        "`{action}` has no registered schema, so there is nothing to violate (pass --action with an action that has one)"
                    ),
                ));
            }
            Err(e) => {
                return Err(self.failure(id, &e, &format!("while looking up the schemas of `{action}`")));
            }
        };
        let plan = Plan::conforming(&action, Some(&schema));
        let Some((bad, violation)) = plan.violating(&schema) else {
            return Ok(CheckResult::skip(
                id,
                format!(
                    "schema version {} of `{action}` declares no typed property, required field or closed object to violate",
                    schema.version
                ),
            ));
        };
        let what = format!("{} ({})", violation.pointer, violation.how);
        match self.client.create_event(&self.org, &bad.to_event()).await {
            Err(e) if matches!(e.status(), Some(400 | 422)) && !is_foreign(&e) => Ok(CheckResult::pass(
                id,
                format!(
                    "WorkOS rejected an event violating schema version {} of `{action}` at {what}: {}",
                    schema.version,
                    api_text(&e)
                ),
            )),
            Ok(()) => Err(Failure {
                result: CheckResult::fail(
                    id,
                    format!(
                        "WorkOS accepted an event violating schema version {} of `{action}` at {what}: schema validation is off",
                        schema.version
                    ),
                    SCHEMA_OFF_FIX,
                ),
                blocking: false,
            }),
            Err(e) => Err(self.failure(id, &e, "while sending the event that violates the schema")),
        }
    }

    /// Check `export`.
    pub(crate) async fn export(&mut self) -> Result<CheckResult, Failure> {
        let id = CheckId::Export;
        let end = OffsetDateTime::now_utc();
        let start = end - time::Duration::days(1);
        let export = match self
            .client
            .create_export(&CreateExport::new(self.org.clone(), start, end))
            .await
        {
            Ok(e) => e,
            Err(e) if e.is_no_events() => {
                return Ok(CheckResult::warn(
                    id,
                    format!("no events of {} in the last day to export yet", self.org),
                    Some("WorkOS indexes events 30 to 60 s after accepting them: run again in a minute (with the event check)".into()),
                ));
            }
            Err(e) => return Err(self.failure(id, &e, "while creating an export of the last day")),
        };
        let started = Instant::now();
        let deadline = started + self.export_timeout;
        let mut interval = self.export_poll_interval;
        let mut current = export;
        loop {
            match &current.state {
                ExportState::Ready => {
                    return Ok(CheckResult::pass(
                        id,
                        format!(
                            "export {} of the last day is ready after {}",
                            current.id,
                            millis(started.elapsed())
                        ),
                    ));
                }
                ExportState::Pending => {}
                other => {
                    return Err(Failure {
                        result: CheckResult::fail(
                            id,
                            format!("export {} ended in state {other}", current.id),
                            "run again; if it persists, give WorkOS support the export id",
                        ),
                        blocking: false,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure {
                    result: CheckResult::fail(
                        id,
                        format!(
                            "export {} still pending after {}",
                            current.id,
                            seconds(self.export_timeout)
                        ),
                        "WorkOS may be slow: run again with a longer export timeout (--export-timeout)",
                    ),
                    blocking: false,
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 2).min(MAX_POLL_INTERVAL);
            current = self
                .client
                .get_export(&current.id)
                .await
                .map_err(|e| self.failure(id, &e, "while polling the export"))?;
        }
    }
}

/// Whether an error response did not come from the WorkOS API: no `code`, `message` or `errors`
/// and a body that is not JSON (an HTML page of a proxy, a gateway, another server).
fn is_foreign(e: &Error) -> bool {
    e.api().is_some_and(|api| {
        api.code.is_none()
            && api.message.is_none()
            && api.errors.is_empty()
            && serde_json::from_str::<serde_json::Value>(&api.body).is_err()
    })
}

/// Whether a schema look-up error would fail the event too (so it is reported right away).
fn is_blocking(e: &Error) -> bool {
    matches!(e.status(), Some(401 | 403 | 429))
        || matches!(
            e,
            Error::Transport { .. } | Error::Timeout { .. } | Error::Decode { .. }
        )
}

fn destination_fix(stream: &LogStream) -> String {
    let specific = match &stream.kind {
        LogStreamType::Datadog => {
            "Datadog: the right region (intake endpoint) and an API key with \"Logs Write\" permission"
        }
        LogStreamType::Splunk => {
            "Splunk: HEC enabled, the HEC token neither expired nor deleted, and a certificate Splunk's clients accept"
        }
        LogStreamType::S3 => {
            "S3: the IAM role's trust relationship and its s3:PutObject permission on the bucket"
        }
        LogStreamType::GenericHttps => {
            "HTTPS: the endpoint must accept POST and answer 2xx (test it with curl) and accept the configured token"
        }
        LogStreamType::GoogleCloudStorage => {
            "Google Cloud Storage: the service account's permission to write to the bucket"
        }
        LogStreamType::AzureSentinel => "Azure Sentinel: the workspace id and key",
        LogStreamType::Snowflake => "Snowflake: the account, user and key",
        _ => "the destination's credentials",
    };
    format!(
        "verify the destination's credentials ({specific}), check the destination's logs for rejected requests, and allow WorkOS's addresses if it has an IP allowlist"
    )
}

/// `WorkOS answered 400 invalid_audit_log_event: … [/metadata/x (type)]` without the request id noise.
fn api_text(e: &Error) -> String {
    match e.api() {
        Some(api) => {
            let mut s = format!("{}", api.status);
            if let Some(code) = &api.code {
                s.push_str(&format!(" {code}"));
            }
            if let Some(m) = &api.message {
                s.push_str(&format!(" \"{m}\""));
            }
            let errors: Vec<String> = api.errors.iter().take(3).map(ToString::to_string).collect();
            if !errors.is_empty() {
                s.push_str(&format!(" [{}]", errors.join(", ")));
            }
            s
        }
        None => e.to_string(),
    }
}

fn message_of(e: &Error) -> String {
    e.api()
        .and_then(|a| a.message.as_deref())
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

fn request_id(e: &Error) -> String {
    e.request_id()
        .map(|r| format!(" (request id {r})"))
        .unwrap_or_default()
}

/// The error and its sources, joined with `: `, without repeats.
fn error_chain(e: &Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// Whether a transport failure's cause chain is a TLS problem.
pub(crate) fn is_tls_failure(chain: &str) -> bool {
    let chain = chain.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
        "unknownissuer",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|k| chain.contains(k))
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_recognised() {
        assert!(is_tls_failure(
            "connection failed: invalid peer certificate: UnknownIssuer"
        ));
        assert!(is_tls_failure(
            "received corrupt message of type InvalidContentType"
        ));
        assert!(!is_tls_failure(
            "tcp connect error: Connection refused (os error 111)"
        ));
    }
}
