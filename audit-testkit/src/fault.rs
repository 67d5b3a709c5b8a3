//! Scripted faults: make the testkit fail, slow down, drop or hang chosen requests.
//!
//! A [`FaultRule`] matches requests by path prefix (and optionally method), selects the next
//! `times` of them or a seeded random share, and applies a [`FaultAction`] either before the
//! request is processed or after it was processed (and its event stored).
//!
//! The same rule can be posted as JSON to `POST /_testkit/faults`:
//!
//! ```json
//! {"path": "/audit_logs/events", "method": "POST", "times": 2,
//!  "action": {"type": "respond", "status": 500, "body": {"message": "boom"}},
//!  "when": "before"}
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::time::Duration;

/// When a fault applies relative to the normal processing of the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultWhen {
    /// Instead of processing the request: nothing is stored.
    #[default]
    Before,
    /// After the request was processed (the event stored, the idempotency record written):
    /// the client gets the fault instead of the real response.
    After,
}

/// What a fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status, JSON body and optional `Retry-After` header.
    Respond {
        /// HTTP status code.
        status: u16,
        /// JSON body; `{"message": "<reason>"}` when omitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        /// `Retry-After` header value, sent as given (seconds or an HTTP-date).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "de_retry_after"
        )]
        retry_after: Option<String>,
    },
    /// Wait this long, then answer normally (or apply nothing else).
    Latency {
        /// Added latency in milliseconds.
        ms: u64,
    },
    /// Close the TCP connection without sending a response.
    Drop,
    /// Never answer: hold the request until the testkit stops (or `ms` passed, then drop it).
    Hang {
        /// Optional upper bound in milliseconds; the connection is dropped afterwards.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
    },
}

fn de_retry_after<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// A scripted fault. Build one with [`FaultRule::new`] and the chained setters.
///
/// With neither [`times`](FaultRule::times) nor [`share`](FaultRule::share), the rule applies to
/// every matching request until [`TestKit::reset`](crate::TestKit::reset).
///
/// ```
/// use audit_testkit::{FaultRule, FaultWhen};
/// use std::time::Duration;
///
/// // The next two create-event requests get a 500, before anything is stored.
/// let r = FaultRule::new("/audit_logs/events").method("POST").times(2).respond(500);
/// // The next one is stored, then the connection is closed without an answer.
/// let d = FaultRule::new("/audit_logs/events").times(1).drop_connection().when(FaultWhen::After);
/// // A seeded 30 % of requests get 300 ms of extra latency.
/// let l = FaultRule::new("/").share(0.3, 42).latency(Duration::from_millis(300));
/// # let _ = (r, d, l);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Path prefix to match, e.g. `/audit_logs/events`.
    pub path: String,
    /// Optional method to match (case-insensitive), e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Apply to the next N matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Apply to a random share (0.0 to 1.0) of matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Seed of the random share (deterministic `StdRng`); 0 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// What to do.
    pub action: FaultAction,
    /// Before or after processing.
    #[serde(default)]
    pub when: FaultWhen,
}

impl FaultRule {
    /// A rule for requests whose path starts with `path`; by default it answers 500 before
    /// processing, for every matching request.
    pub fn new(path: impl Into<String>) -> Self {
        FaultRule {
            path: path.into(),
            method: None,
            times: None,
            probability: None,
            seed: None,
            action: FaultAction::Respond {
                status: 500,
                body: None,
                retry_after: None,
            },
            when: FaultWhen::Before,
        }
    }

    /// Only match this HTTP method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Apply to the next `n` matching requests only.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    /// Apply to a random share of matching requests, drawn from a `StdRng` seeded with `seed`.
    pub fn share(mut self, probability: f64, seed: u64) -> Self {
        self.probability = Some(probability);
        self.seed = Some(seed);
        self
    }

    /// Answer with `status` and `{"message": "<canonical reason>"}`.
    pub fn respond(mut self, status: u16) -> Self {
        self.action = FaultAction::Respond {
            status,
            body: None,
            retry_after: None,
        };
        self
    }

    /// Answer with `status` and this JSON body.
    pub fn respond_json(mut self, status: u16, body: Value) -> Self {
        self.action = FaultAction::Respond {
            status,
            body: Some(body),
            retry_after: None,
        };
        self
    }

    /// Add a `Retry-After` header (seconds or an HTTP-date, sent as given) to a `respond` action.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        if let FaultAction::Respond { retry_after, .. } = &mut self.action {
            *retry_after = Some(value.into());
        }
        self
    }

    /// Add latency, then answer normally.
    pub fn latency(mut self, d: Duration) -> Self {
        self.action = FaultAction::Latency {
            ms: d.as_millis() as u64,
        };
        self
    }

    /// Close the connection without a response.
    pub fn drop_connection(mut self) -> Self {
        self.action = FaultAction::Drop;
        self
    }

    /// Never answer (until the testkit stops).
    pub fn hang(mut self) -> Self {
        self.action = FaultAction::Hang { ms: None };
        self
    }

    /// Before or after processing.
    pub fn when(mut self, when: FaultWhen) -> Self {
        self.when = when;
        self
    }

    /// Shorthand for `.when(FaultWhen::After)`.
    pub fn after_storage(self) -> Self {
        self.when(FaultWhen::After)
    }
}

/// A rule plus its live state (remaining count, random generator).
#[derive(Debug)]
pub(crate) struct ActiveFault {
    pub(crate) rule: FaultRule,
    remaining: Option<u64>,
    rng: Option<StdRng>,
}

impl ActiveFault {
    pub(crate) fn new(rule: FaultRule) -> Self {
        let rng = rule
            .probability
            .map(|_| StdRng::seed_from_u64(rule.seed.unwrap_or(0)));
        ActiveFault {
            remaining: rule.times,
            rng,
            rule,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        path.starts_with(&self.rule.path)
            && self
                .rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }

    fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Decides whether this rule fires for a matching request, consuming one use if so.
    fn fire(&mut self) -> bool {
        if self.exhausted() {
            return false;
        }
        if let (Some(p), Some(rng)) = (self.rule.probability, self.rng.as_mut())
            && rng.random::<f64>() >= p
        {
            return false;
        }
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
        }
        true
    }
}

/// Picks the first rule that fires for this request, if any; exhausted rules are removed.
pub(crate) fn pick(faults: &mut Vec<ActiveFault>, method: &str, path: &str) -> Option<FaultRule> {
    let mut chosen = None;
    for f in faults.iter_mut() {
        if f.matches(method, path) && f.fire() {
            chosen = Some(f.rule.clone());
            break;
        }
    }
    faults.retain(|f| !f.exhausted());
    chosen
}
