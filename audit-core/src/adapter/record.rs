//! The per-request record ([`RequestAudit`]) and the decision it ends in ([`Decision`]).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;

use crate::event::{Action, Actor, Context, Event, Metadata, MetadataValue, OrganizationId, Target};
use crate::request::{AuditPolicy, MissingActor, Outcomes, SkipReason};

/// What the adapter knows of a request before the handler runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The client's location for `context.location`, chosen by the client-IP rules.
    pub location: String,
    /// The `User-Agent`, already made [`carriable`] (bounded, no control characters).
    pub user_agent: Option<String>,
    /// The request id (`x-request-id`), when the request carries one, made [`carriable`] within
    /// [`MAX_CAPTURED_VALUE_BYTES`]. The adapters capture it only when
    /// [`AuditPolicy::request_metadata`] is on.
    pub request_id: Option<String>,
    /// The HTTP method, made [`carriable`] within [`MAX_CAPTURED_VALUE_BYTES`] (an extension
    /// method can be any token; captured by the adapters only with
    /// [`AuditPolicy::request_metadata`]).
    pub method: Option<String>,
    /// The matched route pattern (`/teams/{id}`), when the adapter knows it, made [`carriable`]
    /// within [`MAX_CAPTURED_VALUE_BYTES`] (captured by the adapters only with
    /// [`AuditPolicy::request_metadata`]).
    pub route: Option<String>,
    /// When the request arrived; becomes the event's `occurred_at`.
    pub received_at: OffsetDateTime,
    /// Which of these values were changed to be carriable.
    changed: Changed,
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
            changed: Changed::default(),
        }
    }

    /// Sets the user agent, made [`carriable`] within
    /// [`DEFAULT_MAX_USER_AGENT_LEN`](crate::request::DEFAULT_MAX_USER_AGENT_LEN) bytes.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        let mut user_agent = user_agent.into();
        let changed = make_carriable(&mut user_agent, crate::request::DEFAULT_MAX_USER_AGENT_LEN);
        self.changed.set(Changed::USER_AGENT, changed);
        self.user_agent = Some(user_agent);
        self
    }

    /// Sets the user agent from raw header bytes: invalid UTF-8 is replaced, and the value made
    /// [`carriable`] within `max_len` bytes.
    pub fn user_agent_bytes(mut self, raw: &[u8], max_len: usize) -> Self {
        // Valid UTF-8 (the common case) is checked without the lossy decoder's chunking.
        let lossy = match std::str::from_utf8(raw) {
            Ok(valid) => Cow::Borrowed(valid),
            Err(_) => String::from_utf8_lossy(raw),
        };
        let changed = carriable(&lossy, max_len);
        self.changed.set(Changed::USER_AGENT, changed.is_some());
        self.user_agent = Some(changed.unwrap_or_else(|| lossy.into_owned()));
        self
    }

    /// Sets the request id, made [`carriable`] within [`MAX_CAPTURED_VALUE_BYTES`].
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        let mut id = id.into();
        let changed = make_carriable(&mut id, MAX_CAPTURED_VALUE_BYTES);
        self.changed.set(Changed::REQUEST_ID, changed);
        self.request_id = Some(id);
        self
    }

    /// Sets the HTTP method, made [`carriable`] within [`MAX_CAPTURED_VALUE_BYTES`] like the
    /// other request metadata.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        let mut method = method.into();
        let changed = make_carriable(&mut method, MAX_CAPTURED_VALUE_BYTES);
        self.changed.set(Changed::METHOD, changed);
        self.method = Some(method);
        self
    }

    /// Sets the matched route pattern, made [`carriable`] within [`MAX_CAPTURED_VALUE_BYTES`].
    pub fn route(mut self, route: impl Into<String>) -> Self {
        let mut route = route.into();
        let changed = make_carriable(&mut route, MAX_CAPTURED_VALUE_BYTES);
        self.changed.set(Changed::ROUTE, changed);
        self.route = Some(route);
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

/// The longest value kept from a request (a path parameter, the request id, the method, the
/// route), and from a handler's targets and actor, in bytes; a longer one is cut and marked (see
/// [`carriable`]). WorkOS bounds metadata strings at [`Metadata::MAX_STRING_CHARS`] characters
/// and publishes no bound for ids and names; this one keeps an event far inside the request
/// budget.
pub const MAX_CAPTURED_VALUE_BYTES: usize = Metadata::MAX_STRING_CHARS;

/// The metadata key that says which values of a middleware's event were made carriable
/// ([`carriable`]): a comma-separated list of the fields, e.g.
/// `/context/user_agent,/targets/id`. Absent when nothing was changed.
pub const SANITIZED_METADATA_KEY: &str = "audit_sanitized";

/// The start of the marker that ends a value cut by [`carriable`]; the marker is
/// `…[truncated crc32:1a2b3c4d]`, the CRC-32 of the whole original value in hex, so that the
/// original can be recognised.
pub const TRUNCATION_MARKER: &str = "…[truncated crc32:";

/// The longest marker [`carriable`] appends, in bytes.
const MARKER_BYTES: usize = TRUNCATION_MARKER.len() + 9;

/// `s` made carriable to WorkOS and to a PostgreSQL outbox, or `None` when it already is (the
/// common case: one fast scan, no allocation).
///
/// Control characters (U+0000 to U+001F, U+007F to U+009F) become U+FFFD, and a value longer
/// than `max_bytes` bytes is cut at a character boundary and ends with the visible marker
/// [`TRUNCATION_MARKER`]`<crc32 of the original>]`, the whole at most `max_bytes` bytes (at least
/// the marker). The middleware applies it to every value a client controls (path parameters that
/// become targets, the user agent, the request id, the method, the route) and to the handler's
/// targets, actor and metadata strings, and lists what it changed under
/// [`SANITIZED_METADATA_KEY`]: a request always leaves a record, and the record says it was
/// altered. Events an application builds itself are never reshaped: the emitter refuses them with
/// the field named.
///
/// ```
/// use audit_core::adapter::carriable;
///
/// assert_eq!(carriable("team_1", 100), None);
/// assert_eq!(carriable("a\0b", 100).as_deref(), Some("a\u{fffd}b"));
/// let cut = carriable(&"x".repeat(1000), 100).unwrap();
/// assert!(cut.len() <= 100 && cut.contains("…[truncated crc32:"));
/// ```
pub fn carriable(s: &str, max_bytes: usize) -> Option<String> {
    if s.len() <= max_bytes && !may_hold_control(s.as_bytes()) {
        return None;
    }
    let clean: Cow<'_, str> = if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    };
    if clean.len() <= max_bytes {
        // Control characters, or a byte that only looked like the start of one (U+0080 to
        // U+00BF share a first byte with U+0080 to U+009F).
        return match clean {
            Cow::Owned(clean) => Some(clean),
            Cow::Borrowed(_) => None,
        };
    }
    let keep = max_bytes.saturating_sub(MARKER_BYTES);
    let mut end = keep.min(clean.len());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + MARKER_BYTES);
    out.push_str(&clean[..end]);
    out.push_str(TRUNCATION_MARKER);
    out.push_str(&format!("{:08x}]", crc32fast::hash(s.as_bytes())));
    Some(out)
}

/// Replaces `s` with its [`carriable`] form when it needs one; whether it did.
fn make_carriable(s: &mut String, max_bytes: usize) -> bool {
    match carriable(s, max_bytes) {
        Some(clean) => {
            *s = clean;
            true
        }
        None => false,
    }
}

/// Whether `bytes` may hold a control character: a byte below 0x20, 0x7F, or 0xC2 (the first
/// byte of U+0080 to U+00BF, which holds the C1 controls). Reads eight bytes at a time.
#[inline]
fn may_hold_control(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    #[inline]
    fn has_byte(w: u64, b: u8) -> u64 {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x
    }
    #[inline]
    fn may_hold(w: u64) -> bool {
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        (below_space | has_byte(w, 0x7f) | has_byte(w, 0xc2)) & HIGHS != 0
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if may_hold(u64::from_ne_bytes(word)) {
            return true;
        }
    }
    let rest = chunks.remainder();
    !rest.is_empty() && may_hold(crate::validate::padded_word(rest))
}

/// Which values of a request were made carriable, for [`SANITIZED_METADATA_KEY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Changed(u16);

impl Changed {
    const USER_AGENT: u16 = 1;
    const REQUEST_ID: u16 = 1 << 1;
    const METHOD: u16 = 1 << 2;
    const ROUTE: u16 = 1 << 3;
    const TARGET_ID: u16 = 1 << 4;
    const TARGET_NAME: u16 = 1 << 5;
    const ACTOR_ID: u16 = 1 << 6;
    const ACTOR_NAME: u16 = 1 << 7;
    const METADATA: u16 = 1 << 8;
    /// The field each bit stands for, as a JSON pointer without indices.
    const NAMES: [(u16, &'static str); 9] = [
        (Self::ACTOR_ID, "/actor/id"),
        (Self::ACTOR_NAME, "/actor/name"),
        (Self::TARGET_ID, "/targets/id"),
        (Self::TARGET_NAME, "/targets/name"),
        (Self::USER_AGENT, "/context/user_agent"),
        (Self::REQUEST_ID, "/metadata/request_id"),
        (Self::METHOD, "/metadata/http_method"),
        (Self::ROUTE, "/metadata/http_route"),
        (Self::METADATA, "/metadata"),
    ];

    fn set(&mut self, bit: u16, changed: bool) {
        if changed {
            self.0 |= bit;
        }
    }

    fn describe(self) -> String {
        let mut out = String::new();
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(name);
            }
        }
        out
    }
}

/// What the adapter knows of the response.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ResponseInfo {
    /// The HTTP status code (0 for a cancelled request, which has none).
    pub status: u16,
    /// The response future was dropped before the response existed (the client went away, a
    /// timeout layer fired): the handler may have made its change, nothing was answered.
    pub cancelled: bool,
}

impl ResponseInfo {
    /// Response information with a status.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            cancelled: false,
        }
    }

    /// A request whose response future was dropped before the response existed.
    pub fn cancelled() -> Self {
        Self {
            status: 0,
            cancelled: true,
        }
    }
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

#[derive(Debug, Default, Clone)]
struct Fields {
    action: Option<Action>,
    actor: Option<Actor>,
    organization: Option<OrganizationId>,
    targets: Vec<Target>,
    metadata: Metadata,
    suppressed: bool,
    finished: bool,
    /// Stored elsewhere by the handler (see [`RequestAudit::mark_written`]): the adapter emits
    /// nothing more.
    written: bool,
    /// The idempotency key the event was last stored under elsewhere, kept when the mark is
    /// cleared, so that a retried write reuses it.
    written_key: Option<String>,
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
    fields: Mutex<Fields>,
}

impl RequestAudit {
    /// A fresh record for a request.
    pub fn new(info: RequestInfo) -> Self {
        Self::captured(info, None, None)
    }

    /// A record for a request whose actor and organization are already known (from the request
    /// extensions or the adapter's resolvers).
    pub fn captured(info: RequestInfo, actor: Option<Actor>, organization: Option<OrganizationId>) -> Self {
        Self {
            inner: Arc::new(Inner {
                info,
                fields: Mutex::new(Fields {
                    actor,
                    organization,
                    ..Fields::default()
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Fields> {
        // A panic while holding this lock cannot leave the record half-written in a way that
        // matters more than losing the request's audit data, so recover from poisoning.
        crate::sync::lock(&self.inner.fields)
    }

    /// What the adapter captured before the handler ran.
    pub fn info(&self) -> &RequestInfo {
        &self.inner.info
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
        let mut fields = self.lock();
        for &(kind, name) in targets {
            match param(name) {
                Some(value) => fields.targets.push(Target::new(value, kind)),
                None => tracing::warn!(
                    action = %action,
                    param = name,
                    target_type = kind,
                    "audit: #[action] names a path parameter the route does not have; the target is left out",
                ),
            }
        }
        fields.action = Some(action);
    }

    /// Takes the actor and organization found in request extensions for whichever of the two is
    /// still unset (cloning only those), in one lock: a handler's explicit choice wins over
    /// values found in extensions.
    pub fn fill_if_unset(&self, actor: Option<&Actor>, organization: Option<&OrganizationId>) {
        if actor.is_none() && organization.is_none() {
            return;
        }
        let mut fields = self.lock();
        if let Some(actor) = actor
            && fields.actor.is_none()
        {
            fields.actor = Some(actor.clone());
        }
        if let Some(organization) = organization
            && fields.organization.is_none()
        {
            fields.organization = Some(organization.clone());
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
        let (fields, info) = match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                let fields = crate::sync::into_inner(inner.fields);
                if fields.finished || fields.written {
                    return Decision::Skip(SkipReason::Suppressed);
                }
                (fields, std::borrow::Cow::Owned(inner.info))
            }
            Err(inner) => {
                shared = inner;
                let mut guard = crate::sync::lock(&shared.fields);
                if guard.finished || guard.written {
                    guard.finished = true;
                    return Decision::Skip(SkipReason::Suppressed);
                }
                let fields = std::mem::take(&mut *guard);
                guard.finished = true;
                (fields, std::borrow::Cow::Borrowed(&shared.info))
            }
        };
        decide(fields, info, policy, response)
    }

    /// What [`finish`](Self::finish) would decide now, without using the record up: for a
    /// handler that stores the request's event itself (a database outbox writing it in the
    /// handler's transaction). Once the event is stored, [`mark_written`](Self::mark_written)
    /// tells the adapter to emit nothing more; a handler that retries its transaction previews
    /// (and writes) the same event again. [`SkipReason::Suppressed`] once the record is finished.
    pub fn preview(&self, policy: &AuditPolicy, response: &ResponseInfo) -> Decision {
        let fields = {
            let guard = self.lock();
            if guard.finished {
                return Decision::Skip(SkipReason::Suppressed);
            }
            guard.clone()
        };
        decide(
            fields,
            std::borrow::Cow::Borrowed(&self.inner.info),
            policy,
            response,
        )
    }

    /// Records that the request's event was stored elsewhere under `idempotency_key`: the
    /// adapter then emits nothing for the request ([`finish`](Self::finish) decides
    /// [`SkipReason::Suppressed`]), while [`preview`](Self::preview) still builds the event.
    pub fn mark_written(&self, idempotency_key: &str) {
        let mut fields = self.lock();
        fields.written = true;
        fields.written_key = Some(idempotency_key.to_owned());
    }

    /// Clears [`mark_written`](Self::mark_written) after a write that failed: the adapter emits
    /// the event after the response as usual. The key is kept for
    /// [`written_key`](Self::written_key).
    pub fn unmark_written(&self) {
        self.lock().written = false;
    }

    /// The idempotency key of the last [`mark_written`](Self::mark_written), if any.
    pub fn written_key(&self) -> Option<String> {
        self.lock().written_key.clone()
    }
}

/// [`RequestAudit::finish`] once the fields are taken (the request information is moved out of
/// the record when nobody else holds it, copied otherwise).
fn decide(
    fields: Fields,
    info: std::borrow::Cow<'_, RequestInfo>,
    policy: &AuditPolicy,
    response: &ResponseInfo,
) -> Decision {
    let Fields {
        action,
        actor,
        organization,
        targets,
        mut metadata,
        suppressed,
        finished: _,
        written: _,
        written_key: _,
    } = fields;
    let Some(action) = action else {
        return Decision::Skip(SkipReason::NotAnnotated);
    };
    if suppressed {
        return Decision::Skip(SkipReason::Suppressed);
    }
    let success = (200..400).contains(&response.status);
    // A cancelled request has no outcome: the handler may have done its work, so the outcome
    // policy does not apply (the adapters emit it only under `CancelledRequests::Emit`).
    if !success && !response.cancelled && policy.outcomes == Outcomes::SuccessOnly {
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
    let mut changed = info.changed;
    let mut actor = actor;
    let mut targets = targets;
    changed.set(
        Changed::ACTOR_ID,
        make_carriable(&mut actor.id, MAX_CAPTURED_VALUE_BYTES),
    );
    if let Some(name) = &mut actor.name {
        changed.set(
            Changed::ACTOR_NAME,
            make_carriable(name, MAX_CAPTURED_VALUE_BYTES),
        );
    }
    for target in &mut targets {
        changed.set(
            Changed::TARGET_ID,
            make_carriable(&mut target.id, MAX_CAPTURED_VALUE_BYTES),
        );
        if let Some(name) = &mut target.name {
            changed.set(
                Changed::TARGET_NAME,
                make_carriable(name, MAX_CAPTURED_VALUE_BYTES),
            );
        }
    }
    changed.set(Changed::METADATA, carriable_metadata(&mut metadata));
    let mut context = Context::new(info.location);
    context.user_agent = info.user_agent;
    if response.cancelled {
        // The trail shows the attempt, and that no response was given.
        metadata.insert("outcome", "cancelled");
    } else if policy.outcomes == Outcomes::All {
        metadata.insert("outcome", if success { "success" } else { "failure" });
        metadata.insert("http_status", response.status);
    }
    if policy.request_metadata {
        if let Some(id) = info.request_id {
            metadata.insert("request_id", id);
        }
        if let Some(method) = info.method {
            metadata.insert("http_method", method);
        }
        if let Some(route) = info.route {
            metadata.insert("http_route", route);
        }
        if !response.cancelled {
            metadata.insert("http_status", response.status);
        }
    }
    if changed != Changed::default() {
        metadata.insert(SANITIZED_METADATA_KEY, changed.describe());
    }
    // Built whole rather than through `Event::new`, which would read the clock for a time that
    // the arrival time replaces.
    let event = Event {
        action,
        occurred_at: info.received_at,
        version: None,
        actor,
        targets,
        context,
        metadata: (!metadata.is_empty()).then_some(metadata),
    };
    Decision::Emit { organization, event }
}

/// Makes the handler's metadata strings [`carriable`]: control characters replaced, and a value
/// over WorkOS's [`Metadata::MAX_STRING_CHARS`] characters cut and marked. Whether any changed.
fn carriable_metadata(metadata: &mut Metadata) -> bool {
    let mut changed = false;
    for value in metadata.values_mut() {
        if let MetadataValue::String(s) = value {
            // Only a string over the limit in characters is cut (500 characters may be more
            // bytes); any other only loses its control characters.
            let max_bytes =
                if s.len() > Metadata::MAX_STRING_CHARS && s.chars().count() > Metadata::MAX_STRING_CHARS {
                    Metadata::MAX_STRING_CHARS
                } else {
                    usize::MAX
                };
            changed |= make_carriable(s, max_bytes);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::DEFAULT_MAX_USER_AGENT_LEN;

    fn org() -> OrganizationId {
        OrganizationId::new("org_1").unwrap()
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
    fn the_http_method_is_bounded_like_the_other_metadata() {
        let long = "X".repeat(Metadata::MAX_STRING_CHARS * 4);
        let info = RequestInfo::new("1.2.3.4").method(long);
        let method = info.method.unwrap();
        assert!(method.len() <= MAX_CAPTURED_VALUE_BYTES);
        assert!(method.contains(TRUNCATION_MARKER), "{method}");
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
    fn request_id_and_route_are_bounded_when_captured() {
        let long = "é".repeat(400); // 800 bytes
        let info = RequestInfo::new("1.2.3.4")
            .request_id(long.clone())
            .route(long.clone());
        let marker = format!("{TRUNCATION_MARKER}{:08x}]", crc32fast::hash(long.as_bytes()));
        for s in [info.request_id.as_deref(), info.route.as_deref()] {
            let s = s.unwrap();
            assert!(s.len() <= MAX_CAPTURED_VALUE_BYTES, "{}", s.len());
            assert!(s.starts_with("ééé") && s.ends_with(&marker), "{s}");
        }
        let short = RequestInfo::new("1.2.3.4").request_id("req-1");
        assert_eq!(short.request_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn carriable_changes_only_what_must_change() {
        for fine in ["", "team_42", "é€😀 and \u{a0}\u{bf}", &"x".repeat(100)] {
            assert_eq!(carriable(fine, 100), None, "{fine:?}");
        }
        assert_eq!(
            carriable("a\0b\u{1}c\u{7f}d\u{85}e\n", 100).as_deref(),
            Some("a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e\u{fffd}")
        );
        let original = "é".repeat(300);
        let cut = carriable(&original, 100).unwrap();
        assert!(cut.len() <= 100, "{}", cut.len());
        assert_eq!(
            cut,
            format!(
                "{}{TRUNCATION_MARKER}{:08x}]",
                "é".repeat(35),
                crc32fast::hash(original.as_bytes())
            )
        );
        // Tiny bounds still mark the cut.
        assert!(carriable("abcdef", 2).unwrap().starts_with(TRUNCATION_MARKER));
    }

    #[test]
    fn a_request_with_client_values_that_cannot_be_carried_still_emits_and_says_so() {
        let a = RequestAudit::new(
            RequestInfo::new("198.51.100.4")
                .user_agent_bytes(b"curl\0/8", 512)
                .request_id("req\0-1"),
        );
        a.annotate_route(Action::from_static("team.viewed"), &[("team", "id")], |_| {
            Some("t\0x")
        });
        a.set_actor(Actor::new("u1", "user"));
        a.set_organization(org());
        a.add_metadata("note", "x".repeat(600));
        a.add_metadata("count", 3);
        let p = AuditPolicy::default().request_metadata(true);
        let e = emitted(a.finish(&p, &ResponseInfo::new(200)));
        assert!(e.validate().is_ok(), "{:?}", e.validate());
        assert_eq!(e.targets[0].id, "t\u{fffd}x");
        assert_eq!(e.context.user_agent.as_deref(), Some("curl\u{fffd}/8"));
        let m = e.metadata.unwrap();
        assert_eq!(m.get("request_id"), Some(&MetadataValue::from("req\u{fffd}-1")));
        assert_eq!(
            m.get(SANITIZED_METADATA_KEY),
            Some(&MetadataValue::from(
                "/targets/id,/context/user_agent,/metadata/request_id,/metadata"
            ))
        );
        let MetadataValue::String(note) = m.get("note").unwrap() else {
            panic!()
        };
        assert!(note.chars().count() <= Metadata::MAX_STRING_CHARS && note.contains(TRUNCATION_MARKER));
        // A clean request carries no mark.
        let clean = emitted(annotated().finish(&p, &ResponseInfo::new(200)));
        assert!(clean.metadata.unwrap().get(SANITIZED_METADATA_KEY).is_none());
    }
}
