//! What an application configures and touches of an audited request: the settings shared by
//! both adapters ([`AuditPolicy`]), the handler's side of the request's record ([`AuditHandle`],
//! behind the adapters' `AuditCtx`), and the counters of requests that emitted nothing
//! ([`SkipCounters`]).
//!
//! `audit-tower`'s `AuditLayer` and `audit-actix`'s `AuditMiddleware` are both configured by one
//! [`adapter::Builder`](crate::adapter::Builder): every setter of it sets a field of
//! [`AuditPolicy`], and `policy` takes one whole. How an adapter turns a request into an event is
//! in [`adapter`](crate::adapter).
//!
//! ```
//! use audit_core::OrganizationId;
//! use audit_core::request::{AuditPolicy, MissingActor, Outcomes};
//!
//! let policy = AuditPolicy::new()
//!     .trusted_proxies(["10.0.0.0/8"])?            // default: the socket peer is the location
//!     .outcomes(Outcomes::All)                     // default: only 2xx and 3xx emit
//!     .missing_actor(MissingActor::Skip)           // the default
//!     .default_organization(OrganizationId::new("org_1")?)
//!     .request_metadata(true);                     // request_id, http_method, http_route, http_status
//! assert_eq!(policy.user_agent_limit(), audit_core::request::DEFAULT_MAX_USER_AGENT_LEN);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::adapter::{RequestAudit, RequestInfo};
use crate::client_ip::{ClientIpConfig, ForwardedHeader, InvalidTrustedProxy};
use crate::event::{Action, Actor, MetadataValue, OrganizationId, Target};

/// The longest user agent kept, in bytes; longer ones are cut at a character boundary.
pub const DEFAULT_MAX_USER_AGENT_LEN: usize = 512;

/// Which responses produce an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Outcomes {
    /// Only successful responses (2xx and 3xx). The default: a refused or failed request usually
    /// did not do what its action says.
    #[default]
    SuccessOnly,
    /// Every response of an annotated route. Failures are told apart in WorkOS by the event
    /// metadata `outcome` (`"success"` or `"failure"`) and `http_status`, added to every event.
    All,
}

/// What to do with an annotated request whose actor is unknown.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum MissingActor {
    /// Emit nothing and count the skip ([`SkipReason::MissingActor`]). The default: an audit
    /// event without a real actor is rarely what a compliance reader wants.
    #[default]
    Skip,
    /// Emit with this actor (for example `Actor::new("anonymous", "anonymous")`).
    Use(Actor),
}

/// How requests become events; one per adapter, shared by all requests.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AuditPolicy {
    /// Which responses emit.
    pub outcomes: Outcomes,
    /// What to do without an actor.
    pub missing_actor: MissingActor,
    /// The organization of events whose request set none. Without it such requests are skipped
    /// ([`SkipReason::MissingOrganization`]).
    pub default_organization: Option<OrganizationId>,
    /// Add `request_id`, `http_method`, `http_route` and `http_status` to each event's metadata.
    pub request_metadata: bool,
    /// Which address of a request is the client.
    pub client_ip: ClientIpConfig,
    /// The longest user agent kept, in bytes.
    pub max_user_agent_len: Option<usize>,
    /// What an annotated request whose response future was dropped emits (default
    /// [`CancelledRequests::Emit`]).
    pub cancelled: CancelledRequests,
    /// What a request with more than [`Event::MAX_TARGETS`](crate::Event::MAX_TARGETS) targets
    /// emits (default [`TargetOverflow::Split`]).
    pub target_overflow: TargetOverflow,
}

/// What the middleware does with a request whose handler added more than
/// [`Event::MAX_TARGETS`](crate::Event::MAX_TARGETS) targets (20, WorkOS's limit: it rejects a
/// larger event). Nothing is dropped silently: either way the request is counted
/// ([`SkipCounters::target_overflows`]) and the event says what was done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetOverflow {
    /// Emit several events of at most 20 targets each, in the order the targets were added (the
    /// default: every target reaches the audit trail). They are the same event otherwise, and
    /// share the metadata [`SPLIT_ID_METADATA_KEY`] (a UUID, the correlation id of the request)
    /// and carry [`SPLIT_PART_METADATA_KEY`] (`"2/3"`). Each has its own idempotency key,
    /// derived from the request's one (`<uuid>-1`, `<uuid>-2`, …), so that WorkOS keeps them
    /// all and still stores each once however often it is retried.
    #[default]
    Split,
    /// Emit one event with the first 20 targets and the number of those left out in the
    /// metadata [`OMITTED_TARGETS_METADATA_KEY`].
    KeepFirst,
}

/// The metadata key of the correlation id shared by the events a request was split into
/// ([`TargetOverflow::Split`]).
pub const SPLIT_ID_METADATA_KEY: &str = "audit_split_id";
/// The metadata key of an event's place among the events a request was split into: `"1/3"`
/// ([`TargetOverflow::Split`]).
pub const SPLIT_PART_METADATA_KEY: &str = "audit_split_part";
/// The metadata key of the number of targets left out under [`TargetOverflow::KeepFirst`].
pub const OMITTED_TARGETS_METADATA_KEY: &str = "audit_targets_omitted";

/// What an annotated request emits when its response future is dropped after the handler
/// started and before the response existed: the client went away, an HTTP/2 stream was reset, a
/// timeout layer fired. The handler may already have made its change, so such a request is never
/// invisible: it is counted ([`SkipCounters::cancelled`]) whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelledRequests {
    /// Emit the event with metadata `outcome: "cancelled"` (and no `http_status`), whatever the
    /// outcome policy, so that the trail shows the attempt (the default: an audit trail missing
    /// a change that did happen is worse than one showing an attempt that may not have).
    #[default]
    Emit,
    /// Emit nothing (only count it).
    Skip,
}

impl AuditPolicy {
    /// The default policy: success only, skip without actor or organization, socket peer as the
    /// client address, no request metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`AuditPolicy::outcomes`].
    pub fn outcomes(mut self, outcomes: Outcomes) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// Sets [`AuditPolicy::cancelled`].
    pub fn cancelled(mut self, cancelled: CancelledRequests) -> Self {
        self.cancelled = cancelled;
        self
    }

    /// Sets [`AuditPolicy::target_overflow`].
    pub fn target_overflow(mut self, overflow: TargetOverflow) -> Self {
        self.target_overflow = overflow;
        self
    }

    /// Sets [`AuditPolicy::missing_actor`].
    pub fn missing_actor(mut self, missing: MissingActor) -> Self {
        self.missing_actor = missing;
        self
    }

    /// Sets [`AuditPolicy::default_organization`].
    pub fn default_organization(mut self, organization: OrganizationId) -> Self {
        self.default_organization = Some(organization);
        self
    }

    /// Sets [`AuditPolicy::request_metadata`].
    pub fn request_metadata(mut self, on: bool) -> Self {
        self.request_metadata = on;
        self
    }

    /// Sets [`AuditPolicy::client_ip`].
    ///
    /// # Security
    /// Trust forwarding headers only from proxies you run; see [`ClientIpConfig`].
    pub fn client_ip(mut self, rules: ClientIpConfig) -> Self {
        self.client_ip = rules;
        self
    }

    /// Believe `X-Forwarded-For` (or the header chosen with
    /// [`forwarded_header`](Self::forwarded_header)) when the socket peer is inside one of
    /// `ranges` (CIDR ranges or single addresses); see [`ClientIpConfig::behind_proxies`].
    ///
    /// # Errors
    /// [`InvalidTrustedProxy`] naming the first value that is not a range or an address.
    ///
    /// # Security
    /// Only list proxies you operate: a client that can connect from a trusted range can write
    /// any location into the audit log. The default (no trusted proxies) ignores every
    /// forwarding header. See [`ClientIpConfig::resolve`] for how headers are read.
    pub fn trusted_proxies<I, R>(mut self, ranges: I) -> Result<Self, InvalidTrustedProxy>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<str>,
    {
        let header = self.client_ip.forwarded_header();
        self.client_ip = ClientIpConfig::behind_proxies(ranges)?.header(header);
        Ok(self)
    }

    /// The header read from trusted proxies (default `X-Forwarded-For`); see
    /// [`ClientIpConfig::header`].
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.client_ip = self.client_ip.header(header);
        self
    }

    /// Sets [`AuditPolicy::max_user_agent_len`].
    pub fn max_user_agent_len(mut self, len: usize) -> Self {
        self.max_user_agent_len = Some(len);
        self
    }

    /// The effective user-agent bound.
    pub fn user_agent_limit(&self) -> usize {
        self.max_user_agent_len.unwrap_or(DEFAULT_MAX_USER_AGENT_LEN)
    }
}

/// Why the policy decided that a request emits no event. An event that was due but that the
/// emitter refused is not a skip: see [`SkipCounters::invalid_events`] and
/// [`SkipCounters::emit_failures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The route has no action annotation (this includes routing 404/405 answers).
    NotAnnotated,
    /// The handler suppressed the event.
    Suppressed,
    /// The outcome policy excludes this status.
    Outcome,
    /// No actor was set and the policy skips such requests.
    MissingActor,
    /// No organization was set and there is no default.
    MissingOrganization,
}

/// The handler's side of its request's audit record, behind the adapters' `AuditCtx`
/// extractors (`audit_tower::AuditCtx`, `audit_actix::AuditCtx`), which dereference to it: add
/// targets and metadata, set the actor or organization, or suppress the event.
///
/// Values set here win over those found in request extensions and the adapter's resolvers. When
/// audit is switched off for the request (the adapters' `AuditDisabled`), it holds no record and
/// every call does nothing.
///
/// ```
/// use audit_core::adapter::{RequestAudit, RequestInfo};
/// use audit_core::request::AuditHandle;
/// use audit_core::Target;
///
/// let record = RequestAudit::new(RequestInfo::new("203.0.113.7"));
/// let audit = AuditHandle::new(Some(record.clone()));
/// audit.target(Target::new("team_42", "team")).meta("plan", "pro");
/// assert!(!record.is_suppressed());
/// AuditHandle::new(None).suppress(); // audit off: nothing happens
/// ```
#[derive(Debug, Clone)]
pub struct AuditHandle(Option<RequestAudit>);

impl AuditHandle {
    /// A handle on `record`, or on nothing when audit is off for the request (the adapters'
    /// extractors build it).
    pub fn new(record: Option<RequestAudit>) -> Self {
        Self(record)
    }

    /// Adds a target.
    pub fn target(&self, target: Target) -> &Self {
        if let Some(a) = &self.0 {
            a.add_target(target);
        }
        self
    }

    /// Adds one metadata entry (WorkOS allows 50 keys of up to 40 characters, string values up
    /// to 500 characters; an event breaking the limits is refused by the emitter and counted by
    /// [`SkipCounters::invalid_events`]).
    pub fn meta(&self, key: impl Into<String>, value: impl Into<MetadataValue>) -> &Self {
        if let Some(a) = &self.0 {
            a.add_metadata(key, value);
        }
        self
    }

    /// Sets the actor, replacing one from extensions or resolvers.
    pub fn actor(&self, actor: Actor) -> &Self {
        if let Some(a) = &self.0 {
            a.set_actor(actor);
        }
        self
    }

    /// Sets the organization, replacing one from extensions or resolvers.
    pub fn organization(&self, organization: OrganizationId) -> &Self {
        if let Some(a) = &self.0 {
            a.set_organization(organization);
        }
        self
    }

    /// Sets or replaces the action (for handlers whose action depends on the request; the
    /// `#[action]` attribute is the usual way).
    pub fn action(&self, action: Action) -> &Self {
        if let Some(a) = &self.0 {
            a.set_action(action);
        }
        self
    }

    /// Emits no event for this request, whatever its outcome (counted as
    /// [`SkipReason::Suppressed`]).
    pub fn suppress(&self) {
        if let Some(a) = &self.0 {
            a.suppress();
        }
    }

    /// What the adapter captured before the handler ran (`None` when audit is off).
    pub fn info(&self) -> Option<&RequestInfo> {
        self.0.as_ref().map(RequestAudit::info)
    }

    /// The underlying record (`None` when audit is off).
    pub fn record(&self) -> Option<&RequestAudit> {
        self.0.as_ref()
    }
}

/// Counters of the requests that emitted nothing, shared by an adapter's clones: those the policy
/// skipped, by [`SkipReason`], and the due events the emitter refused, apart: invalid ones
/// ([`invalid_events`](Self::invalid_events)) and those it could not take
/// ([`emit_failures`](Self::emit_failures)).
#[derive(Debug, Default)]
pub struct SkipCounters {
    counts: [AtomicU64; 5],
    invalid_events: AtomicU64,
    emit_failures: AtomicU64,
    cancelled: AtomicU64,
    target_overflows: AtomicU64,
    sanitized: AtomicU64,
}

impl SkipCounters {
    fn slot(reason: SkipReason) -> usize {
        match reason {
            SkipReason::NotAnnotated => 0,
            SkipReason::Suppressed => 1,
            SkipReason::Outcome => 2,
            SkipReason::MissingActor => 3,
            SkipReason::MissingOrganization => 4,
        }
    }

    /// Counts one skip.
    pub fn count(&self, reason: SkipReason) {
        self.counts[Self::slot(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests were skipped for `reason`.
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.counts[Self::slot(reason)].load(Ordering::Relaxed)
    }

    /// Counts a due event the emitter refused because it breaks a WorkOS rule.
    pub fn count_invalid_event(&self) {
        self.invalid_events.fetch_add(1, Ordering::Relaxed);
    }

    /// How many due events the emitter refused because they break a WorkOS rule (an action or
    /// metadata over WorkOS's limits, an empty id; the hand-off logs the errors).
    pub fn invalid_events(&self) -> u64 {
        self.invalid_events.load(Ordering::Relaxed)
    }

    /// Counts a due event the emitter could not take (queue full, shut down).
    pub fn count_emit_failure(&self) {
        self.emit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// How many due events the emitter could not take (queue full, shut down).
    pub fn emit_failures(&self) -> u64 {
        self.emit_failures.load(Ordering::Relaxed)
    }

    /// Counts an annotated request whose response future was dropped before the response.
    pub fn count_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request with more targets than one event may have.
    pub fn count_target_overflow(&self) {
        self.target_overflows.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests had more than [`Event::MAX_TARGETS`](crate::Event::MAX_TARGETS)
    /// targets, and were split or cut as [`AuditPolicy::target_overflow`] says.
    pub fn target_overflows(&self) -> u64 {
        self.target_overflows.load(Ordering::Relaxed)
    }

    /// Counts an event some of whose values were made carriable.
    pub fn count_sanitized(&self) {
        self.sanitized.fetch_add(1, Ordering::Relaxed);
    }

    /// How many emitted events had values changed to be carriable (control characters replaced,
    /// over-long values cut; see [`carriable`](crate::adapter::carriable)), each marked with
    /// [`SANITIZED_METADATA_KEY`](crate::adapter::SANITIZED_METADATA_KEY).
    pub fn sanitized(&self) -> u64 {
        self.sanitized.load(Ordering::Relaxed)
    }

    /// How many annotated requests were cancelled (their response future dropped after the
    /// handler started), whether or not they emitted (see [`CancelledRequests`]).
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_counters_count() {
        let c = SkipCounters::default();
        c.count(SkipReason::Outcome);
        c.count(SkipReason::Outcome);
        c.count_emit_failure();
        c.count_invalid_event();
        assert_eq!(c.get(SkipReason::Outcome), 2);
        assert_eq!(c.get(SkipReason::Suppressed), 0);
        assert_eq!(c.emit_failures(), 1);
        assert_eq!(c.invalid_events(), 1);
    }

    #[test]
    fn trusted_proxies_keep_the_header_and_name_a_bad_range() {
        let policy = AuditPolicy::new()
            .forwarded_header(ForwardedHeader::Forwarded)
            .trusted_proxies(["10.0.0.0/8"])
            .unwrap();
        assert_eq!(policy.client_ip.forwarded_header(), ForwardedHeader::Forwarded);
        let err = AuditPolicy::new()
            .trusted_proxies(["10.0.0.0/8", "not-a-range"])
            .unwrap_err();
        assert!(err.to_string().contains("not-a-range"), "{err}");
    }
}
