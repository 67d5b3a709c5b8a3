//! Scripted faults: make the testkit fail, slow down, drop or hang chosen requests.
//!
//! A [`FaultRule`] matches requests by path prefix (and optionally method and organization),
//! selects the next `times` of them or a seeded random share, and applies a [`FaultAction`]
//! either before the request is processed or after it was processed (and its event stored).
//!
//! The same rule can be posted as JSON to `POST /_testkit/faults`:
//!
//! ```json
//! {"path": "/audit_logs/events", "method": "POST", "times": 2,
//!  "action": {"type": "respond", "status": 500, "body": {"message": "boom"}},
//!  "when": "before"}
//! ```
//!
//! With `"organization": "org_…"` the rule only matches requests about that organization: a
//! JSON body whose top-level `organization_id` (or `organization`) is that id (creating an
//! event, an export, a portal link), or an `organization_id` query parameter (listing actions,
//! retention).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::cell::OnceCell;
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
/// // Every create-event request for one organization is refused; the others are stored.
/// let o = FaultRule::new("/audit_logs/events").organization("org_01EHWNCE74X7JSDV0X3SZ3KJNY").respond(403);
/// # let _ = (r, d, l, o);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Path prefix to match, e.g. `/audit_logs/events`.
    pub path: String,
    /// Optional method to match (case-insensitive), e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Optional organization to match: the request's JSON body has this top-level
    /// `organization_id` (or `organization`), or its query has this `organization_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
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
            organization: None,
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

    /// Only match requests about this organization: its JSON body has this top-level
    /// `organization_id` (or `organization`), or its query has this `organization_id`. A WorkOS
    /// that refuses, slows down or fails one organization's requests while it serves the others.
    pub fn organization(mut self, organization_id: impl Into<String>) -> Self {
        self.organization = Some(organization_id.into());
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

    fn matches(&self, request: &FaultTarget<'_>) -> bool {
        request.path.starts_with(&self.rule.path)
            && self
                .rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(request.method))
            && self
                .rule
                .organization
                .as_deref()
                .is_none_or(|org| request.organization() == Some(org))
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

/// What a rule can match a request on. The organization is read from the body or query only
/// when a rule asks for it, once per request.
pub(crate) struct FaultTarget<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// `None` when the body exceeded the size limit.
    pub(crate) body: Option<&'a [u8]>,
    organization: OnceCell<Option<String>>,
}

impl<'a> FaultTarget<'a> {
    pub(crate) fn new(
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        body: Option<&'a [u8]>,
    ) -> Self {
        FaultTarget {
            method,
            path,
            query,
            body,
            organization: OnceCell::new(),
        }
    }

    /// The organization the request is about: the body's top-level `organization_id` (or
    /// `organization`), else the query's `organization_id`.
    fn organization(&self) -> Option<&str> {
        self.organization
            .get_or_init(|| {
                let from_body = self
                    .body
                    .filter(|b| b.first() == Some(&b'{'))
                    .and_then(|b| serde_json::from_slice::<OrganizationOf>(b).ok())
                    .and_then(|o| o.organization_id.or(o.organization));
                from_body.or_else(|| {
                    serde_urlencoded::from_str::<Vec<(String, String)>>(self.query.unwrap_or(""))
                        .ok()?
                        .into_iter()
                        .find_map(|(k, v)| (k == "organization_id").then_some(v))
                })
            })
            .as_deref()
    }
}

/// The organization fields of a request body; every other field is skipped unread.
#[derive(Deserialize)]
struct OrganizationOf {
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    organization: Option<String>,
}

/// Picks the first rule that fires for this request, if any; exhausted rules are removed.
pub(crate) fn pick(faults: &mut Vec<ActiveFault>, request: &FaultTarget<'_>) -> Option<FaultRule> {
    let mut chosen = None;
    for f in faults.iter_mut() {
        if f.matches(request) && f.fire() {
            chosen = Some(f.rule.clone());
            break;
        }
    }
    faults.retain(|f| !f.exhausted());
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(rule: FaultRule, target: &FaultTarget<'_>) -> bool {
        pick(&mut vec![ActiveFault::new(rule)], target).is_some()
    }

    #[test]
    fn an_organization_rule_matches_only_that_organizations_requests() {
        let rule = || FaultRule::new("/audit_logs/").organization("org_a").respond(403);
        let post =
            |body: &'static str| FaultTarget::new("POST", "/audit_logs/events", None, Some(body.as_bytes()));
        assert!(picked(rule(), &post(r#"{"organization_id":"org_a","event":{}}"#)));
        assert!(!picked(
            rule(),
            &post(r#"{"organization_id":"org_b","event":{}}"#)
        ));
        // Not JSON, no organization, or a body over the limit: no match.
        assert!(!picked(rule(), &post("organization_id=org_a")));
        assert!(!picked(rule(), &post(r#"{"event":{}}"#)));
        assert!(!picked(
            rule(),
            &FaultTarget::new("POST", "/audit_logs/events", None, None)
        ));
        // A portal link names it `organization`; a listing has it in the query.
        let portal = FaultTarget::new(
            "POST",
            "/portal/generate_link",
            None,
            Some(br#"{"organization":"org_a"}"#),
        );
        assert!(picked(FaultRule::new("/portal/").organization("org_a"), &portal));
        let list = FaultTarget::new(
            "GET",
            "/audit_logs/actions",
            Some("limit=5&organization_id=org_a"),
            Some(b""),
        );
        assert!(picked(rule(), &list));
        let other = FaultTarget::new(
            "GET",
            "/audit_logs/actions",
            Some("organization_id=org_b"),
            Some(b""),
        );
        assert!(!picked(rule(), &other));
        // Without an organization, the rule matches every organization.
        assert!(picked(FaultRule::new("/audit_logs/"), &other));
    }
}
