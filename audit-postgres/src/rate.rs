//! The fleet's rate limit: one token bucket row per API key, shared through the database.

use std::time::Duration;

use audit_core::emitter::RateLimit;
use sha2::{Digest, Sha256};

use crate::OutboxError;

/// A request rate limit for every relay of the fleet together: audit-core's
/// [`RateLimit`] (at most `requests` per `per`, in bursts of at most
/// [`max_burst`](Self::max_burst), by default one second's worth), but kept in the database, so
/// three instances configured with WorkOS's 6,000 per minute send 6,000 per minute between them.
///
/// Any [`RateLimit`] converts into one (`From`), so the emitter's setting, for example
/// [`AuditSettings::rate_limit`](audit_core::AuditSettings::rate_limit) read from
/// `AUDIT_RATE_LIMIT`, serves the fleet unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetRateLimit(RateLimit);

impl FleetRateLimit {
    /// At most `requests` per `per`. An error naming the setting when `requests` is 0 or `per` is
    /// zero.
    pub fn new(requests: u32, per: Duration) -> Result<Self, OutboxError> {
        RateLimit::new(requests, per)
            .map(Self)
            .ok_or_else(|| OutboxError::InvalidSetting {
                setting: "rate_limit",
                message: format!(
                    "{requests} requests per {per:?} allows nothing; use no_rate_limit() instead"
                ),
            })
    }

    /// `requests` per second (the unit of `AUDIT_RATE_LIMIT`).
    pub fn per_second(requests: u32) -> Result<Self, OutboxError> {
        Self::new(requests, Duration::from_secs(1))
    }

    /// WorkOS's limit: 6,000 requests per 60 seconds per API key, bursts of 100.
    pub fn workos() -> Self {
        Self(RateLimit::workos())
    }

    /// Sets the largest burst (at least 1).
    pub fn burst(self, burst: u32) -> Self {
        Self(self.0.burst(burst))
    }

    /// The sustained rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.0.per_second()
    }

    /// The largest burst.
    pub fn max_burst(&self) -> u32 {
        self.0.max_burst()
    }
}

impl Default for FleetRateLimit {
    fn default() -> Self {
        Self::workos()
    }
}

impl From<RateLimit> for FleetRateLimit {
    /// The same limit, shared by the fleet.
    fn from(limit: RateLimit) -> Self {
        Self(limit)
    }
}

/// Which bucket a relay draws from: every relay with the same key shares one limit (and one
/// `Retry-After` pause). One per WorkOS API key.
///
/// # Security
/// The key never holds the API key itself: [`api_key`](Self::api_key) stores a SHA-256 hash of
/// it, which cannot be turned back into the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateLimitKey(String);

impl RateLimitKey {
    /// The bucket of this WorkOS API key, named by a SHA-256 hash of it.
    pub fn api_key(api_key: &str) -> Self {
        let digest = Sha256::digest(api_key.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("sha256:{hex}"))
    }

    /// A bucket with a name of the application's choosing (1 to 200 characters), the same in
    /// every instance that uses one API key, for example `"workos-production"`.
    pub fn named(name: &str) -> Result<Self, OutboxError> {
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(OutboxError::InvalidSetting {
                setting: "rate_limit_key",
                message: "a bucket name must be 1 to 200 characters without control characters".into(),
            });
        }
        Ok(Self(format!("name:{name}")))
    }

    /// The key as stored in `audit_outbox_rate_limits.key`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RateLimitKey {
    /// The bucket named `default`.
    fn default() -> Self {
        Self("name:default".into())
    }
}

impl std::fmt::Debug for RateLimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RateLimitKey").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_is_never_stored_as_is() {
        let key = RateLimitKey::api_key("sk_live_abcdef");
        assert!(!key.as_str().contains("sk_live"));
        assert_eq!(key, RateLimitKey::api_key("sk_live_abcdef"));
        assert_ne!(key, RateLimitKey::api_key("sk_live_abcdeg"));
        assert_eq!(key.as_str().len(), "sha256:".len() + 32);
    }

    #[test]
    fn limits_are_checked_and_default_to_a_second_of_burst() {
        assert!(FleetRateLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(FleetRateLimit::new(5, Duration::ZERO).is_err());
        let l = FleetRateLimit::new(6_000, Duration::from_secs(60)).unwrap();
        assert_eq!((l.rate(), l.max_burst()), (100.0, 100));
        let slow = FleetRateLimit::new(1, Duration::from_secs(10)).unwrap();
        assert_eq!(slow.max_burst(), 1);
        assert_eq!(FleetRateLimit::per_second(20).unwrap().burst(0).max_burst(), 1);
        let from_core = FleetRateLimit::from(RateLimit::new(50, Duration::from_millis(500)).unwrap());
        assert_eq!((from_core.rate(), from_core.max_burst()), (100.0, 50));
        assert!(RateLimitKey::named("").is_err());
        assert!(RateLimitKey::named("prod").is_ok());
    }
}
