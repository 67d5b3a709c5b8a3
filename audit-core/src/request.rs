//! The framework-neutral per-request audit record, shared by `audit-tower` and `audit-actix`.
//!
//! A web adapter creates a [`RequestAudit`] before the inner service runs, from what it knows of
//! the request ([`RequestInfo`]: client IP, user agent, request id, method, arrival time), and puts
//! it into the request's extensions. The handler's action annotation, the app's auth layer and the
//! handler itself fill in the action, actor, organization, targets and metadata. After the
//! response head exists, the adapter calls [`RequestAudit::finish`], which decides under the
//! configured [`AuditPolicy`] whether an event is due and builds it. The adapter then hands the
//! event to the emitter without waiting for anything.
//!
//! ```
//! use audit_core::request::{AuditPolicy, Decision, RequestAudit, RequestInfo, ResponseInfo};
//! use audit_core::{Action, Actor, OrganizationId, Target};
//!
//! let policy = AuditPolicy::default();
//! let audit = RequestAudit::new(RequestInfo::new("203.0.113.7").user_agent("curl/8"));
//! // the handler's annotation and the app's auth layer:
//! audit.set_action(Action::from_static("team.created"));
//! audit.set_actor(Actor::new("user_1", "user"));
//! audit.set_organization(OrganizationId::new("org_1").unwrap());
//! audit.add_target(Target::new("team_9", "team"));
//! // after the handler answered 201:
//! match audit.finish(&policy, &ResponseInfo::new(201)) {
//!     Decision::Emit { organization, event } => {
//!         assert_eq!(organization.as_str(), "org_1");
//!         assert_eq!(event.context.location, "203.0.113.7");
//!     }
//!     other => panic!("no event: {other:?}"),
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::client_ip::ClientIpConfig;
use crate::emitter::{EmitError, Emitter};
use crate::event::{Action, Actor, Context, Event, Metadata, MetadataValue, OrganizationId, Target};

/// The longest user agent kept, in bytes; longer ones are cut at a character boundary.
pub const DEFAULT_MAX_USER_AGENT_LEN: usize = 512;

/// What the adapter knows of a request before the handler runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The client's location for `context.location`, chosen by the client-IP rules.
    pub location: String,
    /// The `User-Agent`, already bounded.
    pub user_agent: Option<String>,
    /// The request id (`x-request-id`), when the request carries one. The adapters capture it
    /// only when [`AuditPolicy::request_metadata`] is on.
    pub request_id: Option<String>,
    /// The HTTP method (captured by the adapters only with [`AuditPolicy::request_metadata`]).
    pub method: Option<String>,
    /// The matched route pattern (`/teams/{id}`), when the adapter knows it (captured by the
    /// adapters only with [`AuditPolicy::request_metadata`]).
    pub route: Option<String>,
    /// When the request arrived; becomes the event's `occurred_at`.
    pub received_at: OffsetDateTime,
}

impl RequestInfo {
    /// Request information with a location, arriving now.
    pub fn new(location: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            user_agent: None,
            request_id: None,
            method: None,
            route: None,
            received_at: OffsetDateTime::now_utc(),
        }
    }

    /// Sets the user agent.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets the user agent from raw header bytes: invalid UTF-8 is replaced, the length bounded.
    pub fn user_agent_bytes(mut self, raw: &[u8], max_len: usize) -> Self {
        self.user_agent = Some(bounded_lossy(raw, max_len));
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the HTTP method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Sets the matched route pattern.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the arrival time.
    pub fn received_at(mut self, at: OffsetDateTime) -> Self {
        self.received_at = at;
        self
    }
}

/// Decodes header bytes lossily and cuts them to at most `max_len` bytes at a character boundary.
pub fn bounded_lossy(raw: &[u8], max_len: usize) -> String {
    let raw = &raw[..raw.len().min(max_len)];
    let mut s = String::from_utf8_lossy(raw).into_owned();
    if s.len() > max_len {
        let mut end = max_len;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// What the adapter knows of the response.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ResponseInfo {
    /// The HTTP status code.
    pub status: u16,
}

impl ResponseInfo {
    /// Response information with a status.
    pub fn new(status: u16) -> Self {
        Self { status }
    }
}

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

/// Why a request produced no event.
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
    /// The event broke a WorkOS rule (the adapter logs the errors).
    Invalid,
}

/// The decision for one finished request.
#[derive(Debug, Clone)]
#[non_exhaustive]
// `Emit` is the common case on an audited route: boxing it would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Emit this event for this organization.
    Emit {
        /// The organization.
        organization: OrganizationId,
        /// The event, already built from the request.
        event: Event,
    },
    /// Emit nothing.
    Skip(SkipReason),
}

#[derive(Debug, Default)]
struct Record {
    action: Option<Action>,
    actor: Option<Actor>,
    organization: Option<OrganizationId>,
    targets: Vec<Target>,
    metadata: Metadata,
    suppressed: bool,
    finished: bool,
}

/// The per-request audit record: a cheap, shared handle (one `Arc` around the request
/// information and a `Mutex` that is never held across an `.await`), put into the request's
/// extensions by the adapter.
#[derive(Debug, Clone)]
pub struct RequestAudit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    info: RequestInfo,
    record: Mutex<Record>,
}

impl RequestAudit {
    /// A fresh record for a request.
    pub fn new(info: RequestInfo) -> Self {
        Self {
            inner: Arc::new(Inner {
                info,
                record: Mutex::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panic while holding this lock cannot leave the record half-written in a way that
        // matters more than losing the request's audit data, so recover from poisoning.
        self.inner
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the adapter captured before the handler ran.
    pub fn info(&self) -> &RequestInfo {
        &self.inner.info
    }

    /// Records the route's annotation: the action and the targets taken from the route (one
    /// lock for all of them).
    pub fn annotate(&self, action: Action, targets: impl IntoIterator<Item = Target>) {
        let mut record = self.lock();
        record.targets.extend(targets);
        record.action = Some(action);
    }

    /// Records an `#[action]` annotation: the action, and for each `(target type, path parameter)`
    /// pair a target whose id is the parameter's value as `param` finds it. A parameter the route
    /// does not have is logged and left out.
    pub fn annotate_route<'p>(
        &self,
        action: Action,
        targets: &[(&'static str, &str)],
        param: impl Fn(&str) -> Option<&'p str>,
    ) {
        let mut record = self.lock();
        for &(kind, name) in targets {
            match param(name) {
                Some(value) => record.targets.push(Target::new(value, kind)),
                None => tracing::warn!(
                    action = %action,
                    param = name,
                    target_type = kind,
                    "audit: #[action] names a path parameter the route does not have; the target is left out",
                ),
            }
        }
        record.action = Some(action);
    }

    /// Takes the actor and organization found in request extensions for whichever of the two is
    /// still unset (cloning only those), in one lock: a handler's explicit choice wins over
    /// values found in extensions.
    pub fn fill_if_unset(&self, actor: Option<&Actor>, organization: Option<&OrganizationId>) {
        if actor.is_none() && organization.is_none() {
            return;
        }
        let mut record = self.lock();
        if let Some(actor) = actor
            && record.actor.is_none()
        {
            record.actor = Some(actor.clone());
        }
        if let Some(organization) = organization
            && record.organization.is_none()
        {
            record.organization = Some(organization.clone());
        }
    }

    /// Sets the action (the route's annotation does this).
    pub fn set_action(&self, action: Action) {
        self.lock().action = Some(action);
    }

    /// The action, if the route is annotated.
    pub fn action(&self) -> Option<Action> {
        self.lock().action.clone()
    }

    /// Sets the actor, replacing any earlier one.
    pub fn set_actor(&self, actor: Actor) {
        self.lock().actor = Some(actor);
    }

    /// Sets the organization, replacing any earlier one.
    pub fn set_organization(&self, organization: OrganizationId) {
        self.lock().organization = Some(organization);
    }

    /// Adds a target.
    pub fn add_target(&self, target: Target) {
        self.lock().targets.push(target);
    }

    /// Adds one entry to the event's metadata.
    pub fn add_metadata(&self, key: impl Into<String>, value: impl Into<MetadataValue>) {
        self.lock().metadata.insert(key, value);
    }

    /// Emit no event for this request, whatever its outcome.
    pub fn suppress(&self) {
        self.lock().suppressed = true;
    }

    /// Whether the event was suppressed.
    pub fn is_suppressed(&self) -> bool {
        self.lock().suppressed
    }

    /// Decides whether this request emits, and builds the event. Only the first call on any
    /// clone of the record decides; later calls answer [`SkipReason::Suppressed`] so that one
    /// request never emits twice.
    ///
    /// It consumes this handle: when it is the last one (the adapters call it after the request
    /// and its extensions are gone), the captured strings move into the event instead of being
    /// copied.
    pub fn finish(self, policy: &AuditPolicy, response: &ResponseInfo) -> Decision {
        let shared;
        let (record, info) = match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                let record = inner.record.into_inner().unwrap_or_else(|p| p.into_inner());
                if record.finished {
                    return Decision::Skip(SkipReason::Suppressed);
                }
                (record, std::borrow::Cow::Owned(inner.info))
            }
            Err(inner) => {
                shared = inner;
                let mut guard = shared.record.lock().unwrap_or_else(|p| p.into_inner());
                if guard.finished {
                    return Decision::Skip(SkipReason::Suppressed);
                }
                let record = std::mem::take(&mut *guard);
                guard.finished = true;
                (record, std::borrow::Cow::Borrowed(&shared.info))
            }
        };
        decide(record, info, policy, response)
    }
}

/// [`RequestAudit::finish`] once the record is taken (the request information is moved out of
/// the record when nobody else holds it, copied otherwise).
fn decide(
    record: Record,
    info: std::borrow::Cow<'_, RequestInfo>,
    policy: &AuditPolicy,
    response: &ResponseInfo,
) -> Decision {
    let Record {
        action,
        actor,
        organization,
        targets,
        mut metadata,
        suppressed,
        finished: _,
    } = record;
    let Some(action) = action else {
        return Decision::Skip(SkipReason::NotAnnotated);
    };
    if suppressed {
        return Decision::Skip(SkipReason::Suppressed);
    }
    let success = (200..400).contains(&response.status);
    if !success && policy.outcomes == Outcomes::SuccessOnly {
        return Decision::Skip(SkipReason::Outcome);
    }
    let actor = match (actor, &policy.missing_actor) {
        (Some(actor), _) => actor,
        (None, MissingActor::Use(actor)) => actor.clone(),
        (None, MissingActor::Skip) => return Decision::Skip(SkipReason::MissingActor),
    };
    let Some(organization) = organization.or_else(|| policy.default_organization.clone()) else {
        return Decision::Skip(SkipReason::MissingOrganization);
    };
    let info = info.into_owned();
    let mut context = Context::new(info.location);
    context.user_agent = info.user_agent;
    if policy.outcomes == Outcomes::All {
        metadata.insert("outcome", if success { "success" } else { "failure" });
        metadata.insert("http_status", response.status);
    }
    if policy.request_metadata {
        if let Some(id) = &info.request_id {
            metadata.insert(
                "request_id",
                bounded_lossy(id.as_bytes(), Metadata::MAX_STRING_CHARS),
            );
        }
        if let Some(method) = &info.method {
            metadata.insert("http_method", method.as_str());
        }
        if let Some(route) = &info.route {
            metadata.insert(
                "http_route",
                bounded_lossy(route.as_bytes(), Metadata::MAX_STRING_CHARS),
            );
        }
        metadata.insert("http_status", response.status);
    }
    let mut event = Event::new(action, actor, context).occurred_at(info.received_at);
    event.targets = targets;
    if !metadata.is_empty() {
        event.metadata = Some(metadata);
    }
    Decision::Emit { organization, event }
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
/// use audit_core::request::{AuditHandle, RequestAudit, RequestInfo};
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
    /// A handle on `record`, or on nothing when audit is off for the request.
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
    /// to 500 characters; an event breaking the limits is not emitted and is counted as
    /// [`SkipReason::Invalid`]).
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

/// Counters of skipped requests by reason, shared by an adapter's clones.
#[derive(Debug, Default)]
pub struct SkipCounters {
    counts: [AtomicU64; 6],
    emit_failures: AtomicU64,
}

impl SkipCounters {
    fn slot(reason: SkipReason) -> usize {
        match reason {
            SkipReason::NotAnnotated => 0,
            SkipReason::Suppressed => 1,
            SkipReason::Outcome => 2,
            SkipReason::MissingActor => 3,
            SkipReason::MissingOrganization => 4,
            SkipReason::Invalid => 5,
        }
    }

    /// Counts one skip.
    pub fn record(&self, reason: SkipReason) {
        self.counts[Self::slot(reason)].fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests were skipped for `reason`.
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.counts[Self::slot(reason)].load(Ordering::Relaxed)
    }

    /// Counts an event the emitter refused (queue full, closed, invalid).
    pub fn record_emit_failure(&self) {
        self.emit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// How many events the emitter refused.
    pub fn emit_failures(&self) -> u64 {
        self.emit_failures.load(Ordering::Relaxed)
    }
}

/// The shortest interval between two log lines of a [`HandOff`] about events that were not
/// emitted (refused by the emitter, or breaking a WorkOS rule).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The adapters' last step, shared by `audit-tower` and `audit-actix`: decide a finished request
/// under the policy, hand a due event to the emitter without waiting, count every request that
/// emitted nothing ([`SkipCounters`], by reason, and the events the emitter refused) and log
/// those failures at most once per [`FAILURE_LOG_INTERVAL`], with the number not logged since.
/// Nothing here fails or blocks: audit trouble never reaches the response.
#[derive(Debug)]
pub struct HandOff {
    emitter: Emitter,
    counters: Arc<SkipCounters>,
    started: Instant,
    /// Milliseconds after `started` of the last failure log line, plus one (0: never).
    last_log: AtomicU64,
    /// Failures not logged since the last line.
    unlogged: AtomicU64,
}

impl HandOff {
    /// Hands events to `emitter` and counts into `counters`.
    pub fn new(emitter: Emitter, counters: Arc<SkipCounters>) -> Self {
        Self {
            emitter,
            counters,
            started: Instant::now(),
            last_log: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// The emitter events are handed to.
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// The counters of requests that emitted nothing.
    pub fn counters(&self) -> &Arc<SkipCounters> {
        &self.counters
    }

    /// Finishes the request's record ([`RequestAudit::finish`]) under `policy` with the response's
    /// `status`, and emits, counts or logs the outcome.
    pub fn finish(&self, audit: RequestAudit, policy: &AuditPolicy, status: u16) {
        let (organization, event) = match audit.finish(policy, &ResponseInfo::new(status)) {
            Decision::Emit { organization, event } => (organization, event),
            Decision::Skip(reason) => return self.counters.record(reason),
        };
        let action = event.action.clone();
        match self.emitter.try_emit(organization, event) {
            Ok(_) => {}
            Err(EmitError::Invalid(errors)) => {
                self.counters.record(SkipReason::Invalid);
                if let Some(unlogged) = self.log_slot() {
                    tracing::warn!(
                        action = %action,
                        errors = %errors,
                        not_logged_since_last = unlogged,
                        "audit: event not emitted, it breaks a WorkOS rule",
                    );
                }
            }
            Err(error) => {
                self.counters.record_emit_failure();
                if let Some(unlogged) = self.log_slot() {
                    tracing::warn!(
                        action = %action,
                        error = %error,
                        refused_so_far = self.counters.emit_failures(),
                        not_logged_since_last = unlogged,
                        "audit: the emitter refused an event",
                    );
                }
            }
        }
    }

    /// Whether a failure may be logged now (then the number of failures not logged since the
    /// previous line); otherwise counts it for the next line.
    fn log_slot(&self) -> Option<u64> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_log.load(Ordering::Relaxed);
        let interval = FAILURE_LOG_INTERVAL.as_millis() as u64;
        if (last != 0 && now.saturating_sub(last) < interval)
            || self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrganizationId {
        OrganizationId::new("org_1").unwrap()
    }

    #[tokio::test]
    async fn the_hand_off_emits_counts_and_logs_failures_at_a_bounded_rate() {
        use crate::emitter::MemorySink;

        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let hand_off = HandOff::new(emitter.clone(), Arc::default());
        let policy = AuditPolicy::default();
        hand_off.finish(annotated(), &policy, 201);
        hand_off.finish(RequestAudit::new(RequestInfo::new("198.51.100.4")), &policy, 200);
        hand_off.finish(annotated(), &policy, 500);
        let invalid = annotated();
        invalid.set_actor(Actor::new("", "user"));
        hand_off.finish(invalid, &policy, 200);
        emitter.flush(std::time::Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            sink.events().len(),
            1,
            "only the valid, successful, annotated request"
        );
        let counters = hand_off.counters();
        assert_eq!(counters.get(SkipReason::NotAnnotated), 1);
        assert_eq!(counters.get(SkipReason::Outcome), 1);
        assert_eq!(counters.get(SkipReason::Invalid), 1);
        assert_eq!(counters.emit_failures(), 0);

        // A shut-down emitter refuses: counted, and (within the interval of the invalid event's
        // log line) not logged but counted for the next line.
        emitter.shutdown(std::time::Duration::from_secs(5)).await;
        hand_off.finish(annotated(), &policy, 201);
        assert_eq!(counters.emit_failures(), 1);
        assert_eq!(hand_off.unlogged.load(Ordering::Relaxed), 1);
        assert_eq!(hand_off.log_slot(), None);
        assert_eq!(hand_off.unlogged.load(Ordering::Relaxed), 2);
    }

    fn annotated() -> RequestAudit {
        let a = RequestAudit::new(
            RequestInfo::new("198.51.100.4")
                .user_agent("ua")
                .request_id("req-1")
                .method("POST")
                .route("/teams"),
        );
        a.set_action(Action::from_static("team.created"));
        a.set_actor(Actor::new("u1", "user"));
        a.set_organization(org());
        a
    }

    fn emitted(d: Decision) -> Event {
        match d {
            Decision::Emit { event, .. } => event,
            Decision::Skip(r) => panic!("skipped: {r:?}"),
        }
    }

    #[test]
    fn unannotated_requests_never_emit() {
        let a = RequestAudit::new(RequestInfo::new("1.2.3.4"));
        a.set_actor(Actor::new("u", "user"));
        a.set_organization(org());
        assert!(matches!(
            a.finish(&AuditPolicy::default(), &ResponseInfo::new(200)),
            Decision::Skip(SkipReason::NotAnnotated)
        ));
    }

    #[test]
    fn builds_the_event_from_the_request() {
        let a = annotated();
        a.add_target(Target::new("t1", "team"));
        a.add_metadata("plan", "pro");
        let received_at = a.info().received_at;
        // The last handle moves the request's strings into the event; a handle finishing while
        // another clone is alive copies them. Both build the same event.
        let still_held = annotated();
        still_held.add_target(Target::new("t1", "team"));
        still_held.add_metadata("plan", "pro");
        let other = still_held.clone();
        for (e, received_at) in [
            (
                emitted(a.finish(&AuditPolicy::default(), &ResponseInfo::new(201))),
                received_at,
            ),
            (
                emitted(still_held.finish(&AuditPolicy::default(), &ResponseInfo::new(201))),
                other.info().received_at,
            ),
        ] {
            assert_eq!(e.action.as_str(), "team.created");
            assert_eq!(e.context.location, "198.51.100.4");
            assert_eq!(e.context.user_agent.as_deref(), Some("ua"));
            assert_eq!(e.occurred_at, received_at);
            assert_eq!(e.targets.len(), 1);
            assert_eq!(e.metadata.unwrap().get("plan"), Some(&MetadataValue::from("pro")));
        }
    }

    #[test]
    fn a_request_decides_once() {
        let a = annotated();
        let p = AuditPolicy::default();
        let b = a.clone();
        assert!(matches!(
            a.clone().finish(&p, &ResponseInfo::new(200)),
            Decision::Emit { .. }
        ));
        assert!(matches!(
            b.finish(&p, &ResponseInfo::new(200)),
            Decision::Skip(SkipReason::Suppressed)
        ));
        // The last handle too.
        assert!(matches!(
            a.finish(&p, &ResponseInfo::new(200)),
            Decision::Skip(SkipReason::Suppressed)
        ));
    }

    #[test]
    fn outcome_policy() {
        for status in [200, 204, 302] {
            assert!(matches!(
                annotated().finish(&AuditPolicy::default(), &ResponseInfo::new(status)),
                Decision::Emit { .. }
            ));
        }
        for status in [400, 403, 404, 500] {
            assert!(matches!(
                annotated().finish(&AuditPolicy::default(), &ResponseInfo::new(status)),
                Decision::Skip(SkipReason::Outcome)
            ));
        }
        let all = AuditPolicy::default().outcomes(Outcomes::All);
        let e = emitted(annotated().finish(&all, &ResponseInfo::new(403)));
        let m = e.metadata.unwrap();
        assert_eq!(m.get("outcome"), Some(&MetadataValue::from("failure")));
        assert_eq!(m.get("http_status"), Some(&MetadataValue::Integer(403)));
        let e = emitted(annotated().finish(&all, &ResponseInfo::new(200)));
        assert_eq!(
            e.metadata.unwrap().get("outcome"),
            Some(&MetadataValue::from("success"))
        );
    }

    #[test]
    fn suppression_wins() {
        let a = annotated();
        a.suppress();
        assert!(a.is_suppressed());
        assert!(matches!(
            a.finish(&AuditPolicy::default(), &ResponseInfo::new(200)),
            Decision::Skip(SkipReason::Suppressed)
        ));
    }

    #[test]
    fn missing_actor_and_organization() {
        let a = RequestAudit::new(RequestInfo::new("1.2.3.4"));
        a.set_action(Action::from_static("x.y"));
        a.set_organization(org());
        assert!(matches!(
            a.clone().finish(&AuditPolicy::default(), &ResponseInfo::new(200)),
            Decision::Skip(SkipReason::MissingActor)
        ));
        let b = RequestAudit::new(RequestInfo::new("1.2.3.4"));
        b.set_action(Action::from_static("x.y"));
        let system = AuditPolicy::default().missing_actor(MissingActor::Use(Actor::new("system", "system")));
        assert!(matches!(
            b.finish(&system, &ResponseInfo::new(200)),
            Decision::Skip(SkipReason::MissingOrganization)
        ));
        let c = RequestAudit::new(RequestInfo::new("1.2.3.4"));
        c.set_action(Action::from_static("x.y"));
        let e = emitted(c.finish(&system.default_organization(org()), &ResponseInfo::new(200)));
        assert_eq!(e.actor.id, "system");
    }

    #[test]
    fn first_actor_from_extensions_does_not_override_the_handler() {
        let a = annotated();
        a.fill_if_unset(
            Some(&Actor::new("from-extension", "user")),
            Some(&OrganizationId::new("org_2").unwrap()),
        );
        match a.finish(&AuditPolicy::default(), &ResponseInfo::new(200)) {
            Decision::Emit { organization, event } => {
                assert_eq!(event.actor.id, "u1");
                assert_eq!(organization, org());
            }
            Decision::Skip(r) => panic!("{r:?}"),
        }
    }

    #[test]
    fn request_metadata_is_optional_and_bounded() {
        let p = AuditPolicy::default().request_metadata(true);
        let e = emitted(annotated().finish(&p, &ResponseInfo::new(201)));
        let m = e.metadata.unwrap();
        assert_eq!(m.get("request_id"), Some(&MetadataValue::from("req-1")));
        assert_eq!(m.get("http_method"), Some(&MetadataValue::from("POST")));
        assert_eq!(m.get("http_route"), Some(&MetadataValue::from("/teams")));
        assert_eq!(m.get("http_status"), Some(&MetadataValue::Integer(201)));
        let e = emitted(annotated().finish(&AuditPolicy::default(), &ResponseInfo::new(201)));
        assert!(e.metadata.is_none());
    }

    #[test]
    fn user_agent_is_bounded_and_lossy() {
        assert_eq!(bounded_lossy(b"abc", 2), "ab");
        assert_eq!(bounded_lossy(b"a\xffb", 10), "a\u{fffd}b");
        let s = bounded_lossy("ééé".as_bytes(), 3);
        assert_eq!(s, "é");
        assert!(s.len() <= 4);
        let cut = bounded_lossy(&[b'a'; 1000], DEFAULT_MAX_USER_AGENT_LEN);
        assert_eq!(cut.len(), DEFAULT_MAX_USER_AGENT_LEN);
    }

    #[test]
    fn skip_counters_count() {
        let c = SkipCounters::default();
        c.record(SkipReason::Outcome);
        c.record(SkipReason::Outcome);
        c.record_emit_failure();
        assert_eq!(c.get(SkipReason::Outcome), 2);
        assert_eq!(c.get(SkipReason::Suppressed), 0);
        assert_eq!(c.emit_failures(), 1);
    }
}
