//! Errors of the WorkOS client.
//!
//! An [`Error`] keeps everything WorkOS said: the HTTP status, `code`, `message`, the field errors
//! (both the `instancePath` list of a 400 and the `{field, code}` list of a 422), the
//! `X-Request-ID` and any `Retry-After`. Transport, timeout and decode failures keep their source
//! chain. The API key never appears in an error.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::retry::{Failure, Outcome};

/// An error from the WorkOS API or from talking to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// WorkOS answered with a non-success status.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// The request could not be sent or the response not received (connect, reset, TLS).
    #[error("could not reach WorkOS at {url}: {source}")]
    Transport {
        /// The URL requested (no credentials).
        url: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No response within the configured timeout.
    #[error("WorkOS did not answer {url} within {timeout:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The response could not be read as the expected JSON.
    #[error("could not decode the response of {url} (status {status}): {source}")]
    Decode {
        /// The URL requested.
        url: String,
        /// The HTTP status of the response.
        status: u16,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A create-event request got a success status (2xx) but not WorkOS's documented answer
    /// (`{"success":true}`): whatever answered is not the WorkOS API (a gateway, a web app, a
    /// wrong `WORKOS_BASE_URL`), and nothing says the event was stored.
    ///
    /// The emitter dead-letters such an event with
    /// [`DeadLetterReason::NotWorkOs`](crate::emitter::DeadLetterReason::NotWorkOs) instead of
    /// counting it delivered.
    #[error(
        "{url} answered {status} ({}) with a body starting {body_start:?}: this is not the WorkOS API: check WORKOS_BASE_URL",
        content_type.as_deref().unwrap_or("no content type")
    )]
    NotWorkOs {
        /// The URL requested (no query).
        url: String,
        /// The HTTP status of the answer (a 2xx).
        status: u16,
        /// The `Content-Type` of the answer, when it had one.
        content_type: Option<String>,
        /// The first bytes of the body (at most [`Error::NOT_WORKOS_BODY_START`], lossy UTF-8,
        /// the API key scrubbed).
        body_start: String,
    },
    /// Code called by the background emitter panicked (a [`Sink`](crate::emitter::Sink), a
    /// dead-letter destination, a sender): the emitter caught it, kept the event and went on.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// What panicked (`the sink`, `a dead-letter destination`).
        what: &'static str,
        /// The panic's message.
        message: String,
    },
    /// The event or a request parameter was refused locally, before anything was sent.
    #[error(transparent)]
    Invalid(#[from] crate::ValidationErrors),
    /// A request parameter was refused locally, before anything was sent.
    #[error("invalid {field}: {message}")]
    InvalidParameter {
        /// The parameter's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The client is misconfigured (missing or malformed key, bad base URL).
    #[error("configuration error: {setting}: {message}")]
    Config {
        /// The setting or environment variable at fault (`WORKOS_API_KEY`, `base_url`).
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// The message of WorkOS's 400 answer to an export that would hold no events.
pub const NO_EVENTS_MESSAGE: &str = "No audit log events found";

/// Whether a response with `status` and `message` is WorkOS's 400 `"No audit log events found"`
/// ([`NO_EVENTS_MESSAGE`], in any case, possibly with more text around it): an export that would
/// hold no events, which readers show as an empty result rather than a failure.
pub fn is_no_events_message(status: u16, message: &str) -> bool {
    status == 400
        && message
            .to_ascii_lowercase()
            .contains(&NO_EVENTS_MESSAGE.to_ascii_lowercase())
}

impl Error {
    /// How many bytes of an unexpected body [`Error::NotWorkOs`] quotes.
    pub const NOT_WORKOS_BODY_START: usize = 80;

    /// Whether a success status came from something that is not the WorkOS API
    /// ([`Error::NotWorkOs`]): the base URL points at the wrong server.
    pub fn is_not_workos(&self) -> bool {
        matches!(self, Self::NotWorkOs { .. })
    }

    /// The API error, when WorkOS answered.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The HTTP status WorkOS answered with.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(e) => Some(e.status),
            Self::Decode { status, .. } | Self::NotWorkOs { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long WorkOS asked to wait (`Retry-After`), as given (not capped).
    pub fn retry_after(&self) -> Option<Duration> {
        self.api().and_then(|e| e.retry_after)
    }

    /// The `X-Request-ID` of the response, to quote to WorkOS support.
    pub fn request_id(&self) -> Option<&str> {
        self.api().and_then(|e| e.request_id.as_deref())
    }

    /// 429: too many requests.
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// 400 or 422 on an event: WorkOS refused the event itself; retrying cannot help.
    pub fn is_invalid_event(&self) -> bool {
        matches!(self.status(), Some(400 | 422)) || matches!(self, Self::Invalid(_))
    }

    /// 404: the organization, export or action does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// WorkOS's 400 `"No audit log events found"`: an export would hold no events. Readers treat
    /// it as an empty result, not as a failure ([`is_no_events_message`]).
    pub fn is_no_events(&self) -> bool {
        self.api()
            .is_some_and(|api| is_no_events_message(api.status, api.message.as_deref().unwrap_or("")))
    }

    /// 401: the key is missing, wrong, revoked or for the other environment.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }

    /// 403: the key is valid but lacks permission.
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// Whether sending the same request again may succeed: 408, 429, 500, 502, 503, 504, a
    /// transport failure or a timeout ([`Failure::Retryable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self.failure(), Failure::Retryable(_))
    }

    /// What kind of failure this is: the one reading of an error that the client's retries,
    /// [`Error::is_retryable`] and the delivery decision
    /// ([`delivery::decide`](crate::delivery::decide)) share.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Api(api) => Failure::of_status(api.status, api.retry_after),
            Self::Transport { .. } => Failure::Retryable(Outcome::Transport),
            Self::Timeout { .. } | Self::Panicked { .. } => Failure::Retryable(Outcome::Timeout),
            Self::Decode { status, .. } if *status >= 500 => Failure::Retryable(Outcome::Status {
                status: *status,
                retry_after: None,
            }),
            Self::Decode { status, .. } => Failure::of_status(*status, None),
            Self::NotWorkOs { .. } => Failure::NotWorkOs,
            Self::Invalid(_) | Self::InvalidParameter { .. } | Self::Config { .. } => Failure::Local,
        }
    }
}

/// What WorkOS said when it refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// WorkOS's `code` (`invalid_audit_log_event`, `rate_limit_exceeded`, …).
    pub code: Option<String>,
    /// WorkOS's `message`.
    pub message: Option<String>,
    /// Field errors: `instancePath`s of a 400, `{field, code}`s of a 422.
    pub errors: Vec<ApiFieldError>,
    /// The `X-Request-ID` response header.
    pub request_id: Option<String>,
    /// The `Retry-After` response header, seconds or HTTP date, as a duration from receipt.
    pub retry_after: Option<Duration>,
    /// The response body as received (at most 64 KiB kept).
    pub body: String,
}

/// One entry of an error response's `errors` list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ApiFieldError {
    /// JSON pointer into the event (400 `invalid_audit_log_event`).
    #[serde(rename = "instancePath", default)]
    pub instance_path: Option<String>,
    /// Dotted field name (422 `Validation failed.`), e.g. `event.action`.
    #[serde(default)]
    pub field: Option<String>,
    /// Error code (422), e.g. `required`.
    #[serde(default)]
    pub code: Option<String>,
    /// Validator keyword (400, Ajv's `keyword`).
    #[serde(default)]
    pub keyword: Option<String>,
    /// Human message, when given.
    #[serde(default)]
    pub message: Option<String>,
}

impl fmt::Display for ApiFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = self
            .instance_path
            .as_deref()
            .or(self.field.as_deref())
            .unwrap_or("?");
        f.write_str(place)?;
        if let Some(code) = self.code.as_deref().or(self.keyword.as_deref()) {
            write!(f, " ({code})")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<ApiFieldError>,
}

impl ApiError {
    /// Reads an error response. Bodies that are not WorkOS's JSON shape are kept in `body`.
    pub fn from_response(
        status: u16,
        request_id: Option<String>,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Self {
        const KEEP: usize = 64 * 1024;
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let kept = &body[..body.len().min(KEEP)];
        let (code, message, errors) = match parsed {
            Some(b) => (b.code, b.message, b.errors),
            None => (None, None, Vec::new()),
        };
        Self {
            status,
            code,
            message,
            errors,
            request_id,
            retry_after,
            body: String::from_utf8_lossy(kept).into_owned(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkOS answered {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        for (i, e) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { " [" } else { ", " })?;
            write!(f, "{e}")?;
            if i + 1 == self.errors.len() {
                f.write_str("]")?;
            }
        }
        if self.status == 413 {
            f.write_str(" (the request body was too large)")?;
        }
        if let Some(r) = &self.retry_after {
            write!(f, " (retry after {r:?})")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_400_with_instance_paths() {
        let body = br#"{"message":"Invalid Audit Log event.","code":"invalid_audit_log_event","errors":[{"instancePath":"/metadata/ip_address"}]}"#;
        let e = ApiError::from_response(400, Some("req_1".into()), None, body);
        assert_eq!(e.code.as_deref(), Some("invalid_audit_log_event"));
        assert_eq!(e.errors[0].instance_path.as_deref(), Some("/metadata/ip_address"));
        let text = e.to_string();
        assert!(
            text.contains("400") && text.contains("/metadata/ip_address") && text.contains("req_1"),
            "{text}"
        );
    }

    #[test]
    fn reads_a_422_with_fields() {
        let body =
            br#"{"message":"Validation failed.","errors":[{"code":"required","field":"event.action"}]}"#;
        let e = ApiError::from_response(422, None, None, body);
        assert_eq!(e.errors[0].field.as_deref(), Some("event.action"));
        assert_eq!(e.errors[0].code.as_deref(), Some("required"));
        assert!(e.to_string().contains("event.action (required)"));
    }

    #[test]
    fn keeps_a_body_that_is_not_json() {
        let e = ApiError::from_response(502, None, None, b"<html>bad gateway</html>");
        assert_eq!(e.message, None);
        assert_eq!(e.body, "<html>bad gateway</html>");
    }
}
