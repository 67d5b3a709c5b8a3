//! [`ClientBuilder`]: the client's configuration and its checks.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::{Host, Url};

use super::{Client, DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Inner};
use crate::error::Error;
use crate::retry::RetryPolicy;

/// The environment variable holding the API key.
pub const ENV_API_KEY: &str = "WORKOS_API_KEY";
/// The environment variable holding the base URL.
pub const ENV_BASE_URL: &str = "WORKOS_BASE_URL";

/// Configures and builds a [`Client`]. Obtained from [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// use audit_core::{Client, RetryPolicy};
///
/// let client = Client::builder()
///     .api_key("sk_test_example")
///     .base_url("http://127.0.0.1:8787/")
///     .timeout(Duration::from_secs(10))
///     .retry_policy(RetryPolicy::standard().with_max_retries(5))
///     .build()?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:8787");
/// # Ok::<(), audit_core::Error>(())
/// ```
///
/// # Security
/// The key is held as a [`SecretString`] and shown as `[redacted]` by `Debug`.
#[must_use]
pub struct ClientBuilder {
    api_key: Option<SecretString>,
    api_key_setting: &'static str,
    base_url: Option<String>,
    base_url_setting: &'static str,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
    retry: RetryPolicy,
    allow_insecure_http: bool,
    http_client: Option<reqwest::Client>,
    /// Which settings were given explicitly (they conflict with a shared client).
    connect_timeout_set: bool,
    user_agent_set: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &RedactedKey(self.api_key.as_ref()))
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("user_agent", &self.user_agent)
            .field("retry_policy", &self.retry)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("http_client", &self.http_client.as_ref().map(|_| "shared"))
            .finish()
    }
}

/// Shows only which environment a key belongs to.
pub(crate) struct RedactedKey<'a>(pub(crate) Option<&'a SecretString>);

impl fmt::Debug for RedactedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.map(|k| k.expose_secret()) {
            None => f.write_str("None"),
            Some(k) if k.starts_with("sk_test_") => f.write_str("\"sk_test_[redacted]\""),
            Some(k) if k.starts_with("sk_live_") => f.write_str("\"sk_live_[redacted]\""),
            Some(_) => f.write_str("\"[redacted]\""),
        }
    }
}

impl ClientBuilder {
    /// A builder with every default and no key.
    pub fn new() -> Self {
        Self {
            api_key: None,
            api_key_setting: "api_key",
            base_url: None,
            base_url_setting: "base_url",
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent: concat!("audit-core/", env!("CARGO_PKG_VERSION")).to_owned(),
            retry: RetryPolicy::standard(),
            allow_insecure_http: false,
            http_client: None,
            connect_timeout_set: false,
            user_agent_set: false,
        }
    }

    /// A builder with the key from `WORKOS_API_KEY` and, when set, the base URL from
    /// `WORKOS_BASE_URL`. Further settings may be chained before [`ClientBuilder::build`].
    ///
    /// # Errors
    /// [`Error::Config`] with setting `WORKOS_API_KEY` when the variable is unset, empty or not
    /// Unicode.
    pub fn from_env() -> Result<Self, Error> {
        let key = std::env::var(ENV_API_KEY).map_err(|e| Error::Config {
            setting: ENV_API_KEY,
            message: match e {
                std::env::VarError::NotPresent => "is not set; set it to your WorkOS API key (sk_…)".into(),
                std::env::VarError::NotUnicode(_) => "is not valid Unicode".into(),
            },
        })?;
        let mut builder = Self::new().api_key(key);
        builder.api_key_setting = ENV_API_KEY;
        match std::env::var(ENV_BASE_URL) {
            Ok(url) if !url.trim().is_empty() => {
                builder = builder.base_url(url);
                builder.base_url_setting = ENV_BASE_URL;
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::Config {
                    setting: ENV_BASE_URL,
                    message: "is not valid Unicode".into(),
                });
            }
        }
        Ok(builder)
    }

    /// The WorkOS API key (`sk_test_…` or `sk_live_…`). Required.
    ///
    /// # Security
    /// Moved into a [`SecretString`] at once; checked at [`ClientBuilder::build`] without ever being
    /// quoted in the error.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self.api_key_setting = "api_key";
        self
    }

    /// The key, already secret, with the name errors give its setting.
    pub(crate) fn api_key_secret(mut self, key: SecretString, setting: &'static str) -> Self {
        self.api_key = Some(key);
        self.api_key_setting = setting;
        self
    }

    /// The base URL, with the name errors give its setting.
    pub(crate) fn base_url_named(mut self, url: String, setting: &'static str) -> Self {
        self.base_url = Some(url);
        self.base_url_setting = setting;
        self
    }

    /// The base URL of the API (default [`DEFAULT_BASE_URL`]); a trailing slash is ignored and a
    /// path prefix is kept. It must be `https`, or `http` to a loopback address (`localhost`,
    /// `127.0.0.0/8`, `::1`) unless [`ClientBuilder::allow_insecure_http`] is set.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self.base_url_setting = "base_url";
        self
    }

    /// Allows a plain-`http` base URL to a host that is not loopback (a test server in another
    /// container, for example).
    ///
    /// # Security
    /// The API key then travels unencrypted. Never use this with a live key.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The timeout of one attempt: connecting, sending and receiving the whole response
    /// (default 30 s). Retries each get their own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The timeout of establishing a connection (default 10 s). Not with
    /// [`http_client`](Self::http_client), whose own connect timeout applies.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.connect_timeout_set = true;
        self
    }

    /// The `User-Agent` header (default `audit-core/<version>`). Not with
    /// [`http_client`](Self::http_client), whose own user agent applies.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self.user_agent_set = true;
        self
    }

    /// Sends every request through the application's own [`reqwest::Client`] (sharing its
    /// connection pool, TLS setup, proxies and DNS resolver) instead of one built here.
    ///
    /// From the application's client come: TLS (backend, trusted roots, client certificates),
    /// proxies, the connection pool and its idle timeout, the connect timeout, HTTP/2 settings,
    /// default headers, the user agent and the redirect policy. From this builder still come:
    /// the key, the base URL and its checks, the [`retry_policy`](Self::retry_policy) and the
    /// [`timeout`](Self::timeout) of one attempt, which is set on every request and so
    /// replaces the application client's total timeout for this crate's requests.
    /// [`connect_timeout`](Self::connect_timeout) and [`user_agent`](Self::user_agent) cannot
    /// be combined with it ([`build`](Self::build) says so).
    ///
    /// With a shared client, the crate's TLS features are not needed: the application's client
    /// speaks HTTPS however it was built to.
    ///
    /// ```
    /// # use audit_core::Client;
    /// let http = reqwest::Client::builder()
    ///     .user_agent("my-app/1.0")
    ///     .connect_timeout(std::time::Duration::from_secs(3))
    ///     .build()
    ///     .expect("the app's HTTP client");
    /// let client = Client::builder()
    ///     .api_key("sk_test_example")
    ///     .http_client(http.clone())
    ///     .build()?;
    /// # Ok::<(), audit_core::Error>(())
    /// ```
    ///
    /// # Security
    /// This crate's own client never follows redirects. The application's client follows them
    /// if it was built to (reqwest's default: up to 10); reqwest drops the `Authorization`
    /// header when a redirect leaves the host, but a redirect within the API host keeps it.
    /// Build the shared client with `redirect(reqwest::redirect::Policy::none())` to keep
    /// this crate's behaviour. Default headers of the application's client are sent to WorkOS
    /// too.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// How failed requests are retried (default [`RetryPolicy::standard`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Checks the configuration and builds the client.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting (`api_key` or `WORKOS_API_KEY`, `base_url` or
    /// `WORKOS_BASE_URL`, `timeout`, `user_agent`, `connect_timeout`) when the key is missing or
    /// does not start with `sk_`, the URL is invalid, a timeout is zero, a setting that comes from
    /// a shared [`http_client`](Self::http_client) was given as well, or the base URL is `https`
    /// while the crate was built without a TLS feature and no client was shared.
    pub fn build(self) -> Result<Client, Error> {
        let api_key = self.api_key.ok_or(Error::Config {
            setting: self.api_key_setting,
            message: "no API key was given; WorkOS API keys start with \"sk_\"".into(),
        })?;
        check_api_key(api_key.expose_secret()).map_err(|message| Error::Config {
            setting: self.api_key_setting,
            message: message.into(),
        })?;
        let base_url = check_base_url(
            self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            self.allow_insecure_http,
        )
        .map_err(|message| Error::Config {
            setting: self.base_url_setting,
            message,
        })?;
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::Config {
                setting: "timeout",
                message: "timeouts must be greater than zero".into(),
            });
        }
        if reqwest::header::HeaderValue::from_str(&self.user_agent).is_err() {
            return Err(Error::Config {
                setting: "user_agent",
                message: "must be visible ASCII".into(),
            });
        }
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", api_key.expose_secret())).map_err(
                |_| Error::Config {
                    setting: self.api_key_setting,
                    message: "contains characters that cannot be sent in a header".into(),
                },
            )?;
        authorization.set_sensitive(true);
        let events_url = Url::parse(&format!("{base_url}/audit_logs/events")).map_err(|e| Error::Config {
            setting: self.base_url_setting,
            message: format!("cannot be joined with /audit_logs/events: {e}"),
        })?;
        let http = match self.http_client {
            Some(shared) => {
                let conflict = if self.connect_timeout_set {
                    Some("connect_timeout")
                } else if self.user_agent_set {
                    Some("user_agent")
                } else {
                    None
                };
                if let Some(setting) = conflict {
                    return Err(Error::Config {
                        setting,
                        message: "comes from the reqwest::Client given to http_client; set it there".into(),
                    });
                }
                shared
            }
            None => {
                if !TLS_BUILT_IN && base_url.starts_with("https:") {
                    return Err(Error::Config {
                        setting: self.base_url_setting,
                        message: "is https, but audit-core was built without a TLS feature; enable \
                                  `rustls-tls-webpki-roots` (the default), `rustls-tls-native-roots` or \
                                  `native-tls`, or share a client with http_client"
                            .into(),
                    });
                }
                reqwest::Client::builder()
                    .timeout(self.timeout)
                    .connect_timeout(self.connect_timeout)
                    .user_agent(self.user_agent)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| Error::Config {
                        setting: "http_client",
                        message: format!("the HTTP client could not be set up: {e}"),
                    })?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                api_key,
                authorization,
                events_url,
                base_url,
                timeout: self.timeout,
                retry: self.retry,
                allow_insecure_http: self.allow_insecure_http,
            }),
        })
    }
}

/// Whether this build of the crate can speak HTTPS on a client of its own.
const TLS_BUILT_IN: bool = cfg!(any(
    feature = "rustls-tls-webpki-roots",
    feature = "rustls-tls-native-roots",
    feature = "native-tls"
));

/// What is wrong with a key, in words that never quote it.
fn check_api_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        Err("is empty; WorkOS API keys start with \"sk_\"")
    } else if key.trim() != key {
        Err("has leading or trailing whitespace")
    } else if !key.starts_with("sk_") {
        Err(
            "does not start with \"sk_\"; use a WorkOS secret API key (sk_test_… or sk_live_…), not a client id or a publishable key",
        )
    } else if key.len() == 3 {
        Err("has nothing after \"sk_\"")
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        Err("contains characters that are not visible ASCII")
    } else {
        Ok(())
    }
}

/// Parses and checks a base URL; returns it without a trailing slash.
pub(super) fn check_base_url(text: &str, allow_insecure_http: bool) -> Result<String, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
    check_scheme(&url, allow_insecure_http)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `https`, or `http` to loopback (or anywhere when allowed).
pub(super) fn check_scheme(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "plain http is allowed only to a loopback address, not to {:?}; use https",
            url.host_str().unwrap_or("")
        )),
        other => Err(format!("the scheme must be https, not {other:?}")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            check_base_url("https://api.workos.com", false).unwrap(),
            "https://api.workos.com"
        );
        assert_eq!(
            check_base_url("https://api.workos.com/", false).unwrap(),
            "https://api.workos.com"
        );
        assert_eq!(
            check_base_url("http://127.0.0.1:9/p/", false).unwrap(),
            "http://127.0.0.1:9/p"
        );
        assert_eq!(check_base_url("http://[::1]:9", false).unwrap(), "http://[::1]:9");
        assert_eq!(
            check_base_url("http://localhost:9", false).unwrap(),
            "http://localhost:9"
        );
        assert!(check_base_url("http://testkit:9", false).is_err());
        assert!(check_base_url("http://testkit:9", true).is_ok());
        for bad in [
            "",
            "api.workos.com",
            "ftp://x",
            "https://u:p@x",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            assert!(check_base_url(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_keys() {
        assert!(check_api_key("sk_test_abc").is_ok());
        for bad in [
            "",
            "sk_",
            "pk_test_1",
            "client_01",
            " sk_test_1",
            "sk_test_1\n",
            "sk_te st",
        ] {
            assert!(check_api_key(bad).is_err(), "{bad:?}");
        }
    }
}
