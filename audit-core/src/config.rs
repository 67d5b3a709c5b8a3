//! Settings of the client and the emitter from environment variables, or deserialized from the
//! application's own configuration (`config`, `figment`, a TOML file...).
//!
//! | variable | setting | default |
//! |---|---|---|
//! | `WORKOS_API_KEY` | [`api_key`](AuditSettings::api_key): the WorkOS API key, `sk_test_…` or `sk_live_…` | required to build a client |
//! | `WORKOS_BASE_URL` | [`base_url`](AuditSettings::base_url) | `https://api.workos.com` |
//! | `AUDIT_TIMEOUT` | [`timeout`](AuditSettings::timeout) of one attempt | 30 s |
//! | `AUDIT_CONNECT_TIMEOUT` | [`connect_timeout`](AuditSettings::connect_timeout) | 10 s |
//! | `AUDIT_RATE_LIMIT` | [`rate_limit`](AuditSettings::rate_limit): `workos` (6,000 per minute), `none`, `N` (per second) or `N/PERIOD` (`100/1s`, `6000/1m`) | `workos` |
//! | `AUDIT_SENDERS` | [`senders`](AuditSettings::senders): concurrent deliveries | the emitter chooses: 8, growing with WorkOS's latency |
//! | `AUDIT_SPOOL` | [`spool`](AuditSettings::spool): path of a durable spool file (the `spool` feature) | none |
//! | `AUDIT_LINGER` | [`linger`](AuditSettings::linger): how long a sender woken from idle lets a burst gather (`0ms`: none) | 2 ms |
//!
//! Durations use one syntax everywhere, [`humantime`](https://docs.rs/humantime)'s: `500ms`,
//! `10s`, `1m 30s`, `2h`. An empty variable counts as unset.
//!
//! ```
//! use audit_core::config::AuditSettings;
//! use audit_core::emitter::MemorySink;
//!
//! # fn run() -> Result<(), audit_core::Error> {
//! let settings = AuditSettings::from_env()?; // names the variable at fault
//! let client = settings.client()?;           // WORKOS_API_KEY is required here
//! let emitter = settings.emitter(client).start();
//! # Ok(()) }
//! ```
//!
//! The same settings, deserialized (field names are the variables' without their prefix, in
//! lower case; durations are humantime strings; unknown fields are refused):
//!
//! ```
//! use audit_core::config::AuditSettings;
//!
//! let settings: AuditSettings = serde_json::from_value(serde_json::json!({
//!     "api_key": "sk_test_example",
//!     "timeout": "10s",
//!     "rate_limit": "100/1s",
//!     "senders": 4,
//! }))
//! .unwrap();
//! assert_eq!(settings.senders, Some(4));
//! assert!(!format!("{settings:?}").contains("example"));
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::client::{Client, ClientBuilder};
use crate::client::{ENV_API_KEY, ENV_BASE_URL, RedactedKey};
use crate::emitter::{Emitter, EmitterBuilder, RateLimit, Sink};
use crate::error::Error;

/// The variable of the attempt timeout.
pub const ENV_TIMEOUT: &str = "AUDIT_TIMEOUT";
/// The variable of the connect timeout.
pub const ENV_CONNECT_TIMEOUT: &str = "AUDIT_CONNECT_TIMEOUT";
/// The variable of the emitter's rate limit.
pub const ENV_RATE_LIMIT: &str = "AUDIT_RATE_LIMIT";
/// The variable of the emitter's number of concurrent deliveries.
pub const ENV_SENDERS: &str = "AUDIT_SENDERS";
/// The variable of the spool file's path.
pub const ENV_SPOOL: &str = "AUDIT_SPOOL";
/// The variable of the senders' linger.
pub const ENV_LINGER: &str = "AUDIT_LINGER";

/// The settings of a [`Client`] and an [`Emitter`], from [`from_env`](Self::from_env) or
/// deserialized. See the [module documentation](self) for the variables and their syntax.
///
/// # Security
/// The key is held as a [`SecretString`]: `Debug` shows it as `sk_test_[redacted]`,
/// `sk_live_[redacted]` or `[redacted]`, and no error quotes it.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditSettings {
    /// The WorkOS API key (`WORKOS_API_KEY`). Required by [`client`](Self::client).
    pub api_key: Option<SecretString>,
    /// The API's base URL (`WORKOS_BASE_URL`); `None`: `https://api.workos.com`.
    pub base_url: Option<String>,
    /// The timeout of one attempt (`AUDIT_TIMEOUT`); `None`: the client's default, 30 s.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Option<Duration>,
    /// The connect timeout (`AUDIT_CONNECT_TIMEOUT`); `None`: the client's default, 10 s.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Option<Duration>,
    /// The emitter's rate limit (`AUDIT_RATE_LIMIT`); `None`: unlimited (`none`). Default:
    /// [`RateLimit::workos`].
    #[serde(deserialize_with = "de_rate_limit")]
    pub rate_limit: Option<RateLimit>,
    /// A fixed number of concurrent deliveries (`AUDIT_SENDERS`), at least 1. Default (`None`):
    /// the emitter chooses, starting at [`EmitterBuilder::DEFAULT_SENDERS`] and growing with
    /// WorkOS's observed latency up to what the rate limit needs
    /// ([`EmitterBuilder::max_senders`]).
    pub senders: Option<usize>,
    /// A durable spool file (`AUDIT_SPOOL`). Opening it is left to the application (with the
    /// `spool` feature, [`SpoolConfig::new`](crate::emitter::SpoolConfig::new)), which decides
    /// what to do with the events it recovers.
    pub spool: Option<PathBuf>,
    /// How long a sender woken from idle waits for a burst to gather (`AUDIT_LINGER`, zero
    /// allowed); `None`: [`EmitterBuilder::DEFAULT_LINGER`]. See [`EmitterBuilder::linger`].
    #[serde(deserialize_with = "de_linger")]
    pub linger: Option<Duration>,
    /// Whether these came from the environment: errors then name the variables.
    #[serde(skip)]
    from_env: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: None,
            timeout: None,
            connect_timeout: None,
            rate_limit: Some(RateLimit::workos()),
            senders: None,
            spool: None,
            linger: None,
            from_env: false,
        }
    }
}

impl fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSettings")
            .field("api_key", &RedactedKey(self.api_key.as_ref()))
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("rate_limit", &self.rate_limit)
            .field("senders", &self.senders)
            .field("spool", &self.spool)
            .field("linger", &self.linger)
            .finish()
    }
}

impl AuditSettings {
    /// Reads the variables of the [module documentation](self) from the process environment.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when one is not Unicode or does not parse.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name))
    }

    /// Reads the same variables through `lookup` (a map in a test, a secrets store, a prefix of
    /// the application's own): it answers like [`std::env::var`].
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Result<String, std::env::VarError>) -> Result<Self, Error> {
        let var = |name: &'static str| -> Result<Option<String>, Error> {
            match lookup(name) {
                Ok(v) if v.trim().is_empty() => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config {
                    setting: name,
                    message: "is not valid Unicode".into(),
                }),
            }
        };
        let parsed = |name: &'static str, parse: &dyn Fn(&str) -> Result<_, String>| {
            var(name)?
                .map(|v| parse(v.trim()))
                .transpose()
                .map_err(|message| Error::Config {
                    setting: name,
                    message,
                })
        };
        let mut s = Self {
            from_env: true,
            ..Self::default()
        };
        s.api_key = var(ENV_API_KEY)?.map(SecretString::from);
        s.base_url = var(ENV_BASE_URL)?;
        s.timeout = parsed(ENV_TIMEOUT, &parse_duration)?;
        s.connect_timeout = parsed(ENV_CONNECT_TIMEOUT, &parse_duration)?;
        if let Some(v) = var(ENV_RATE_LIMIT)? {
            s.rate_limit = parse_rate_limit(v.trim()).map_err(|message| Error::Config {
                setting: ENV_RATE_LIMIT,
                message,
            })?;
        }
        if let Some(v) = var(ENV_SENDERS)? {
            s.senders = parse_senders(v.trim())
                .map(Some)
                .map_err(|message| Error::Config {
                    setting: ENV_SENDERS,
                    message,
                })?;
        }
        s.spool = var(ENV_SPOOL)?.map(PathBuf::from);
        s.linger = parsed(ENV_LINGER, &parse_linger)?;
        Ok(s)
    }

    /// A [`ClientBuilder`] with the key, base URL and timeouts of these settings; further
    /// settings (retries, a shared `reqwest::Client`) may be chained before `build`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `WORKOS_API_KEY` (or `api_key`) when there is no key.
    pub fn client_builder(&self) -> Result<ClientBuilder, Error> {
        let key = self.api_key.as_ref().ok_or(Error::Config {
            setting: self.name(ENV_API_KEY, "api_key"),
            message: "is not set; set it to your WorkOS API key (sk_…)".into(),
        })?;
        let mut b = ClientBuilder::new().api_key_secret(key.clone(), self.name(ENV_API_KEY, "api_key"));
        if let Some(url) = &self.base_url {
            b = b.base_url_named(url.clone(), self.name(ENV_BASE_URL, "base_url"));
        }
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        if let Some(t) = self.connect_timeout {
            b = b.connect_timeout(t);
        }
        Ok(b)
    }

    /// The [`Client`] of these settings.
    ///
    /// # Errors
    /// As [`client_builder`](Self::client_builder) and [`ClientBuilder::build`], naming the
    /// variable at fault.
    pub fn client(&self) -> Result<Client, Error> {
        self.client_builder()?.build()
    }

    /// An [`EmitterBuilder`] for `sink` with the rate limit and the number of senders of these
    /// settings. Start it inside the runtime that serves the application.
    pub fn emitter(&self, sink: impl Sink) -> EmitterBuilder {
        let builder = Emitter::builder(sink);
        let builder = match self.senders {
            Some(n) => builder.senders(n.max(1)),
            None => builder,
        };
        let builder = match self.linger {
            Some(linger) => builder.linger(linger),
            None => builder,
        };
        match self.rate_limit {
            Some(limit) => builder.rate_limit(limit),
            None => builder.no_rate_limit(),
        }
    }

    fn name(&self, env: &'static str, field: &'static str) -> &'static str {
        if self.from_env { env } else { field }
    }
}

/// A duration in humantime's syntax (`500ms`, `10s`, `1m 30s`), greater than zero.
///
/// # Errors
/// A message quoting the text and showing the expected syntax.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write for example 500ms, 10s, 1m 30s"))?;
    if d.is_zero() {
        return Err(format!("{text:?}: must be greater than zero"));
    }
    Ok(d)
}

/// `workos`, `none`, `N` (per second) or `N/PERIOD` with a humantime period (`6000/1m`);
/// `None` for `none`.
fn parse_rate_limit(text: &str) -> Result<Option<RateLimit>, String> {
    let bad = || format!("{text:?} is not `workos`, `none`, a number per second or N/PERIOD (e.g. 100/1s)");
    match text {
        "workos" => Ok(Some(RateLimit::workos())),
        "none" => Ok(None),
        _ => {
            let (n, per) = match text.split_once('/') {
                Some((n, per)) => (
                    n.trim(),
                    parse_duration(per).map_err(|e| format!("{text:?}: the period {e}"))?,
                ),
                None => (text, Duration::from_secs(1)),
            };
            let n: u32 = n.parse().map_err(|_| bad())?;
            RateLimit::new(n, per).map(Some).ok_or_else(bad)
        }
    }
}

/// A linger: a humantime duration, zero allowed.
fn parse_linger(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write for example 2ms, or 0ms for none"))
}

fn de_linger<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_linger(&s))
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn parse_senders(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive number"))
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_duration(&s))
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn de_rate_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Number(u32),
        Text(String),
    }
    match Text::deserialize(d)? {
        Text::Number(n) => RateLimit::new(n, Duration::from_secs(1))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("rate_limit: must be positive")),
        Text::Text(s) => parse_rate_limit(s.trim()).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<AuditSettings, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AuditSettings::from_lookup(|name| map.get(name).cloned().ok_or(std::env::VarError::NotPresent))
    }

    fn setting(e: Error) -> &'static str {
        match e {
            Error::Config { setting, .. } => setting,
            other => panic!("not a configuration error: {other:?}"),
        }
    }

    #[test]
    fn defaults_without_variables() {
        let s = from(&[]).unwrap();
        assert!(s.api_key.is_none());
        assert_eq!(s.rate_limit, Some(RateLimit::workos()));
        assert_eq!(s.senders, None);
        assert_eq!(setting(s.client().unwrap_err()), "WORKOS_API_KEY");
    }

    #[test]
    fn every_variable_is_read() {
        let s = from(&[
            ("WORKOS_API_KEY", "sk_test_abc"),
            ("WORKOS_BASE_URL", "http://127.0.0.1:9"),
            ("AUDIT_TIMEOUT", "1m 30s"),
            ("AUDIT_CONNECT_TIMEOUT", "500ms"),
            ("AUDIT_RATE_LIMIT", "100/2s"),
            ("AUDIT_SENDERS", "3"),
            ("AUDIT_SPOOL", "/tmp/spool.db"),
            ("AUDIT_LINGER", "100ms"),
        ])
        .unwrap();
        assert_eq!(s.linger, Some(Duration::from_millis(100)));
        assert_eq!(
            from(&[("AUDIT_LINGER", "0ms")]).unwrap().linger,
            Some(Duration::ZERO)
        );
        assert_eq!(s.timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.connect_timeout, Some(Duration::from_millis(500)));
        assert_eq!(s.rate_limit, RateLimit::new(100, Duration::from_secs(2)));
        assert_eq!(s.senders, Some(3));
        assert_eq!(s.spool, Some(PathBuf::from("/tmp/spool.db")));
        let client = s.client().unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:9");
        assert_eq!(client.timeout(), Duration::from_secs(90));
        assert_eq!(from(&[("AUDIT_RATE_LIMIT", "none")]).unwrap().rate_limit, None);
        assert_eq!(
            from(&[("AUDIT_RATE_LIMIT", "50")]).unwrap().rate_limit,
            RateLimit::new(50, Duration::from_secs(1))
        );
        assert_eq!(
            from(&[("AUDIT_RATE_LIMIT", " ")]).unwrap().rate_limit,
            Some(RateLimit::workos())
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("AUDIT_TIMEOUT", "10"),
            ("AUDIT_TIMEOUT", "0s"),
            ("AUDIT_CONNECT_TIMEOUT", "soon"),
            ("AUDIT_RATE_LIMIT", "fast"),
            ("AUDIT_RATE_LIMIT", "0"),
            ("AUDIT_RATE_LIMIT", "10/never"),
            ("AUDIT_SENDERS", "0"),
            ("AUDIT_SENDERS", "-1"),
            ("AUDIT_LINGER", "a while"),
        ] {
            let e = from(&[(name, value)]).unwrap_err();
            assert!(e.to_string().contains(value.trim()), "{e}");
            assert_eq!(setting(e), name, "{name}={value}");
        }
        let s = from(&[
            ("WORKOS_API_KEY", "pk_test_1"),
            ("WORKOS_BASE_URL", "http://example.com"),
        ])
        .unwrap();
        assert_eq!(setting(s.client().unwrap_err()), "WORKOS_API_KEY");
        let s = from(&[
            ("WORKOS_API_KEY", "sk_test_1"),
            ("WORKOS_BASE_URL", "http://example.com"),
        ])
        .unwrap();
        assert_eq!(setting(s.client().unwrap_err()), "WORKOS_BASE_URL");
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        for key in ["sk_test_SECRET123", "sk_live_SECRET123", "SECRET123"] {
            let s = from(&[("WORKOS_API_KEY", key)]).unwrap();
            let d: AuditSettings = serde_json::from_value(serde_json::json!({"api_key": key})).unwrap();
            for text in [
                format!("{s:?}"),
                format!("{s:#?}"),
                format!("{d:?}"),
                format!("{:?}", s.client_builder().unwrap()),
            ] {
                assert!(!text.contains("SECRET123"), "the key leaked: {text}");
                assert!(text.contains("[redacted]"), "{text}");
            }
        }
    }

    #[test]
    fn deserialized_settings_use_the_same_syntax_and_name_fields() {
        let s: AuditSettings = serde_json::from_value(serde_json::json!({
            "api_key": "sk_test_x",
            "base_url": "http://127.0.0.1:9",
            "timeout": "2s",
            "rate_limit": 20,
            "senders": 2,
            "spool": "spool.db",
        }))
        .unwrap();
        assert_eq!(s.timeout, Some(Duration::from_secs(2)));
        assert_eq!(s.rate_limit, RateLimit::new(20, Duration::from_secs(1)));
        assert_eq!(s.client().unwrap().timeout(), Duration::from_secs(2));
        let none: AuditSettings = serde_json::from_value(serde_json::json!({"rate_limit": "none"})).unwrap();
        assert_eq!(none.rate_limit, None);
        assert_eq!(setting(none.client().unwrap_err()), "api_key");
        for bad in [
            serde_json::json!({"timeout": "ten"}),
            serde_json::json!({"rate_limit": "often"}),
            serde_json::json!({"api_kee": "sk_test_x"}),
        ] {
            assert!(
                serde_json::from_value::<AuditSettings>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let e = serde_json::from_value::<AuditSettings>(serde_json::json!({"timeout": "ten"})).unwrap_err();
        assert!(e.to_string().contains("ten"), "{e}");
    }
}
