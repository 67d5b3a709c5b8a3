//! The one path of an audited request, shared by the web framework adapters (`audit-tower`,
//! `audit-actix`). Applications need only its [`Builder`], the settings both adapters are built
//! with (`AuditLayer::builder(emitter)`, `AuditMiddleware::builder(emitter)`: the fields of
//! [`AuditPolicy`] and the resolvers), and touch their request through
//! [`AuditHandle`](crate::request::AuditHandle) (the adapters' `AuditCtx`).
//!
//! Whatever the framework, a request goes through the same steps, and an adapter is only the glue
//! that reads its framework's request:
//!
//! 1. **Capture**, before the inner service runs: the adapter presents its request head as a
//!    [`RequestHead`] and calls [`Middleware::capture`], which chooses the client's location with
//!    the client-IP rules (warning once per middleware when the socket peer is unknown), bounds
//!    the user agent, request id and route, notes the arrival time, and takes the actor and the
//!    organization from the request extensions or else from the resolvers. It returns the
//!    per-request [`RequestAudit`] (for the request extensions) and an [`InFlight`] guard.
//! 2. **Fill in**: the `#[action]` annotation ([`RequestAudit::annotate_route`]), an auth layer
//!    inside the middleware ([`RequestAudit::fill_if_unset`]) and the handler
//!    ([`AuditHandle`](crate::request::AuditHandle)) add the action, actor, organization, targets
//!    and metadata.
//! 3. **Hand off**, once the response head exists: [`InFlight::finish`] decides under the policy
//!    ([`RequestAudit::finish`], [`Decision`]) and [`HandOff`] gives a due event to the emitter
//!    without waiting, counts what emitted nothing and logs refusals at a bounded rate.
//!
//! An [`InFlight`] dropped without `finish` (the response future was dropped before the response
//! existed: the client went away, an HTTP/2 stream was reset, a timeout layer fired) is a
//! cancelled request; its `Drop` is the one place where such requests are seen. An annotated one
//! is counted ([`SkipCounters::cancelled`](crate::request::SkipCounters::cancelled)) and, under
//! the default [`CancelledRequests::Emit`], emitted with
//! `outcome: "cancelled"`: the handler may already have made its change.
//!
//! ```
//! use std::borrow::Cow;
//! use std::net::IpAddr;
//! use std::sync::Arc;
//!
//! use audit_core::adapter::{Middleware, RequestHead};
//! use audit_core::emitter::{Emitter, MemorySink};
//! use audit_core::request::AuditPolicy;
//! use audit_core::{Action, Actor, OrganizationId};
//!
//! /// A framework's request head, reduced to what capture reads.
//! struct Head {
//!     headers: Vec<(&'static str, &'static str)>,
//! }
//!
//! impl RequestHead for Head {
//!     type Input = Head; // what the resolvers see
//!     fn input(&self) -> &Head {
//!         self
//!     }
//!     fn peer(&self) -> Option<IpAddr> {
//!         "203.0.113.7".parse().ok()
//!     }
//!     fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
//!         self.headers.iter().map(|(n, v)| (*n, v.as_bytes()))
//!     }
//!     fn header(&self, name: &str) -> Option<&[u8]> {
//!         self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
//!     }
//!     fn method(&self) -> &str {
//!         "POST"
//!     }
//!     fn route(&self) -> Option<Cow<'_, str>> {
//!         Some("/teams".into())
//!     }
//!     fn actor(&self) -> Option<Actor> {
//!         Some(Actor::new("user_1", "user"))
//!     }
//!     fn organization(&self) -> Option<OrganizationId> {
//!         OrganizationId::new("org_1").ok()
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let sink = MemorySink::new();
//! let emitter = Emitter::builder(sink.clone()).start();
//! let middleware = Arc::new(Middleware::<Head>::new(emitter.clone(), AuditPolicy::new()));
//! let head = Head { headers: vec![("user-agent", "curl/8")] };
//! let (audit, in_flight) = middleware.capture(&head);
//! audit.set_action(Action::from_static("team.created")); // the handler's annotation
//! in_flight.finish(201); // after the response head
//! emitter.flush(std::time::Duration::from_secs(5)).await.unwrap();
//! let event = &sink.events()[0].0.event;
//! assert_eq!(event.context.location, "203.0.113.7");
//! assert_eq!(event.context.user_agent.as_deref(), Some("curl/8"));
//! # });
//! ```

mod hand_off;
mod record;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use hand_off::{FAILURE_LOG_INTERVAL, HandOff};
pub use record::{
    Decision, MAX_CAPTURED_VALUE_BYTES, RequestAudit, RequestInfo, ResponseInfo, SANITIZED_METADATA_KEY,
    TRUNCATION_MARKER, bounded_lossy, carriable,
};

use crate::client_ip::{ClientIp, ClientIpConfig, ForwardedHeader, InvalidTrustedProxy, UNKNOWN_LOCATION};
use crate::emitter::Emitter;
use crate::event::{Actor, OrganizationId};
use crate::request::{AuditPolicy, CancelledRequests, MissingActor, Outcomes, TargetOverflow};

/// What capture reads of a framework's request head. An adapter implements it for a thin
/// wrapper around its framework's request.
pub trait RequestHead {
    /// What the adapter's resolvers are given: the framework's own request type
    /// (`http::request::Parts`, actix-web's `HttpRequest`).
    type Input: ?Sized;

    /// The request as the resolvers see it.
    fn input(&self) -> &Self::Input;

    /// The address of the TCP peer, `None` when the framework does not know it.
    ///
    /// # Security
    /// This must be the socket's peer, never a value taken from the request: it decides whether
    /// forwarding headers are believed.
    fn peer(&self) -> Option<IpAddr>;

    /// Every header, in order; a name may repeat.
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])>;

    /// The first value of the header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&[u8]>;

    /// The HTTP method.
    fn method(&self) -> &str;

    /// The matched route pattern (`/teams/{id}`), when the router recorded it.
    fn route(&self) -> Option<Cow<'_, str>>;

    /// An [`Actor`] an outer auth layer put into the request extensions.
    fn actor(&self) -> Option<Actor>;

    /// An [`OrganizationId`] an outer auth layer put into the request extensions.
    fn organization(&self) -> Option<OrganizationId>;
}

/// Finds a value (an [`Actor`], an [`OrganizationId`]) from a request's head, given as the
/// framework's request type `R`.
pub type Resolver<R, T> = Arc<dyn Fn(&R) -> Option<T> + Send + Sync>;

/// An adapter's settings: the framework-neutral [`AuditPolicy`] and the resolvers, which see the
/// framework's request type `R`.
#[non_exhaustive]
pub struct Settings<R: ?Sized> {
    /// Which responses emit, the client-IP rules, the defaults and bounds.
    pub policy: AuditPolicy,
    /// Finds the actor when no outer layer put one into the request extensions.
    pub actor_resolver: Option<Resolver<R, Actor>>,
    /// Finds the organization when no outer layer put one into the request extensions.
    pub organization_resolver: Option<Resolver<R, OrganizationId>>,
}

impl<R: ?Sized> Clone for Settings<R> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            actor_resolver: self.actor_resolver.clone(),
            organization_resolver: self.organization_resolver.clone(),
        }
    }
}

impl<R: ?Sized> fmt::Debug for Settings<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("policy", &self.policy)
            .field("actor_resolver", &self.actor_resolver.is_some())
            .field("organization_resolver", &self.organization_resolver.is_some())
            .finish()
    }
}

/// Everything an adapter's middleware needs, shared by every request: its [`Settings`], the
/// [`HandOff`] (emitter and counters) and the unknown-peer warning. Clones share the hand-off and
/// the warning; an adapter keeps one behind an `Arc`, made by a [`Builder`].
pub struct Middleware<R: ?Sized> {
    settings: Settings<R>,
    hand_off: Arc<HandOff>,
    /// Set once a request without a known socket peer was logged.
    unknown_peer_warned: Arc<AtomicBool>,
}

impl<R: ?Sized> Clone for Middleware<R> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            hand_off: Arc::clone(&self.hand_off),
            unknown_peer_warned: Arc::clone(&self.unknown_peer_warned),
        }
    }
}

impl<R: ?Sized> fmt::Debug for Middleware<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Middleware")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The warning logged the first time a middleware sees a request without a socket peer.
const UNKNOWN_PEER_WARNING: &str = "audit: a request has no known socket peer, so its events get the location \"unknown\" \
     (logged once per middleware); with axum, serve the router with \
     `into_make_service_with_connect_info::<SocketAddr>()` (`MockConnectInfo` in tests, or insert \
     `audit_tower::PeerAddr`); with actix-web, give test requests a `peer_addr`";

impl<R: ?Sized> Middleware<R> {
    /// A middleware handing events to `emitter` under `policy`, without resolvers.
    pub fn new(emitter: Emitter, policy: AuditPolicy) -> Self {
        Self::with_settings(
            emitter,
            Settings {
                policy,
                actor_resolver: None,
                organization_resolver: None,
            },
        )
    }

    /// A middleware handing events to `emitter` under `settings` (what [`Builder::build`]
    /// makes).
    pub fn with_settings(emitter: Emitter, settings: Settings<R>) -> Self {
        Self {
            settings,
            hand_off: Arc::new(HandOff::new(emitter, Arc::default())),
            unknown_peer_warned: Arc::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings<R> {
        &self.settings
    }

    /// The hand-off: the emitter and the counters.
    pub fn hand_off(&self) -> &HandOff {
        &self.hand_off
    }

    /// Captures a request before the inner service runs: the record to put into the request
    /// extensions, and the guard to [`finish`](InFlight::finish) once the response head exists.
    ///
    /// The location comes from the policy's client-IP rules (the first request without a socket
    /// peer is logged, once per middleware); the user agent is cut to the policy's bound; with
    /// [`AuditPolicy::request_metadata`], the method, the `x-request-id` and the route are kept
    /// (bounded to what WorkOS accepts). The actor and the organization are those in the request
    /// extensions, else those the resolvers find.
    pub fn capture<H>(self: &Arc<Self>, head: &H) -> (RequestAudit, InFlight<R>)
    where
        H: RequestHead<Input = R>,
    {
        let policy = &self.settings.policy;
        let client = policy.client_ip.resolve(head.peer(), head.headers());
        if matches!(client, ClientIp::Unknown) && !self.unknown_peer_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(location = UNKNOWN_LOCATION, "{UNKNOWN_PEER_WARNING}");
        }
        let mut info = RequestInfo::new(client.location());
        if let Some(user_agent) = head.header("user-agent") {
            info = info.user_agent_bytes(user_agent, policy.user_agent_limit());
        }
        if policy.request_metadata {
            info = info.method(head.method());
            if let Some(id) = head.header("x-request-id") {
                info = info.request_id(String::from_utf8_lossy(id));
            }
            if let Some(route) = head.route() {
                info = info.route(route);
            }
        }
        // An outer auth layer's values first; the resolvers only for what is still missing.
        let input = head.input();
        let actor = head
            .actor()
            .or_else(|| self.settings.actor_resolver.as_ref().and_then(|r| r(input)));
        let organization = head.organization().or_else(|| {
            self.settings
                .organization_resolver
                .as_ref()
                .and_then(|r| r(input))
        });
        let audit = RequestAudit::captured(info, actor, organization);
        let in_flight = InFlight {
            audit: Some(audit.clone()),
            middleware: Arc::clone(self),
        };
        (audit, in_flight)
    }
}

/// A captured request whose response is not there yet. [`finish`](Self::finish) it with the
/// response's status; dropped unfinished (the response future was dropped: the client went away),
/// it is a cancelled request (see [`CancelledRequests`]).
#[must_use = "an unfinished request counts as cancelled"]
pub struct InFlight<R: ?Sized> {
    audit: Option<RequestAudit>,
    middleware: Arc<Middleware<R>>,
}

impl<R: ?Sized> fmt::Debug for InFlight<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("finished", &self.audit.is_none())
            .finish_non_exhaustive()
    }
}

impl<R: ?Sized> InFlight<R> {
    /// The response head exists with `status` (500 for an error of the inner service): decide
    /// under the policy and hand a due event to the emitter, without waiting.
    ///
    /// Finish after the request's extensions are gone when the framework allows it: the last
    /// handle on the record moves its strings into the event instead of copying them.
    pub fn finish(mut self, status: u16) {
        if let Some(audit) = self.audit.take() {
            let middleware = &self.middleware;
            middleware
                .hand_off
                .finish(audit, &middleware.settings.policy, status);
        }
    }
}

impl<R: ?Sized> Drop for InFlight<R> {
    /// Dropped unfinished: the response future was dropped before the response existed.
    fn drop(&mut self) {
        if let Some(audit) = self.audit.take() {
            let middleware = &self.middleware;
            middleware.hand_off.cancelled(audit, &middleware.settings.policy);
        }
    }
}

/// The record a handler-side extractor hands out: the request's [`RequestAudit`] (`None` when the
/// request did not pass through the middleware), with an [`Actor`] and an [`OrganizationId`]
/// found in the request extensions copied in where the record has none yet (an auth layer inside
/// the middleware ran after capture).
pub fn handler_record(
    record: Option<&RequestAudit>,
    actor: Option<&Actor>,
    organization: Option<&OrganizationId>,
) -> Option<RequestAudit> {
    let record = record?;
    record.fill_if_unset(actor, organization);
    Some(record.clone())
}

/// A framework adapter built around a configured [`Middleware`]: audit-tower's `AuditLayer`,
/// audit-actix's `AuditMiddleware`. Both are built by one [`Builder`], so that they have the same
/// settings, defaults and docs from one definition.
pub trait Adapter: Sized {
    /// The framework's request type the resolvers see (`http::request::Parts`, actix-web's
    /// `HttpRequest`).
    type Request: ?Sized;

    /// The adapter around `middleware`.
    fn from_middleware(middleware: Arc<Middleware<Self::Request>>) -> Self;
}

/// The settings of an adapter `A` (`AuditLayer::builder(emitter)`,
/// `AuditMiddleware::builder(emitter)`): every field of [`AuditPolicy`] and the resolvers, with
/// the defaults of [`AuditPolicy::default`]; [`build`](Self::build) makes the adapter.
///
/// ```
/// use audit_core::adapter::{Adapter, Builder, Middleware};
/// use audit_core::emitter::{Emitter, MemorySink};
/// use audit_core::request::Outcomes;
/// use std::sync::Arc;
///
/// struct MyAdapter(Arc<Middleware<str>>);
///
/// impl Adapter for MyAdapter {
///     type Request = str;
///     fn from_middleware(middleware: Arc<Middleware<str>>) -> Self {
///         MyAdapter(middleware)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let emitter = Emitter::builder(MemorySink::new()).start();
/// let adapter: MyAdapter = Builder::new(emitter)
///     .trusted_proxies(["10.0.0.0/8"])?
///     .outcomes(Outcomes::All)
///     .build();
/// assert_eq!(adapter.0.settings().policy.outcomes, Outcomes::All);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[must_use = "a builder does nothing until `build` makes the adapter"]
pub struct Builder<A: Adapter> {
    emitter: Emitter,
    settings: Settings<A::Request>,
}

impl<A: Adapter> fmt::Debug for Builder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<A: Adapter> Builder<A> {
    /// Settings for an adapter handing events to `emitter`, with the default
    /// [`AuditPolicy`]: only 2xx and 3xx responses of annotated routes emit, requests without
    /// actor or organization are skipped (and counted), the socket peer is the client's location,
    /// no request metadata, cancelled requests emit.
    pub fn new(emitter: Emitter) -> Self {
        Self {
            emitter,
            settings: Settings {
                policy: AuditPolicy::default(),
                actor_resolver: None,
                organization_resolver: None,
            },
        }
    }

    /// The adapter.
    pub fn build(self) -> A {
        A::from_middleware(Arc::new(Middleware::with_settings(self.emitter, self.settings)))
    }

    /// The policy so far.
    pub fn current_policy(&self) -> &AuditPolicy {
        &self.settings.policy
    }

    fn map_policy(mut self, f: impl FnOnce(AuditPolicy) -> AuditPolicy) -> Self {
        self.settings.policy = f(std::mem::take(&mut self.settings.policy));
        self
    }

    /// Replaces the whole [`AuditPolicy`] (every setting below but the resolvers).
    pub fn policy(mut self, policy: AuditPolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Believe `X-Forwarded-For` when the socket peer is inside one of `ranges` (CIDR ranges or
    /// addresses): [`AuditPolicy::trusted_proxies`]. Use
    /// [`forwarded_header`](Self::forwarded_header) or [`client_ip`](Self::client_ip) to read
    /// another header.
    ///
    /// # Errors
    /// [`InvalidTrustedProxy`] naming the first value that is not a range or an address.
    ///
    /// # Security
    /// Only list proxies you operate: a client that can connect from a trusted range can write
    /// any location into the audit log. The default (no trusted proxies) ignores every
    /// forwarding header.
    pub fn trusted_proxies<I, S>(mut self, ranges: I) -> Result<Self, InvalidTrustedProxy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let policy = std::mem::take(&mut self.settings.policy);
        self.settings.policy = policy.trusted_proxies(ranges)?;
        Ok(self)
    }

    /// Sets the client-IP rules, trusted proxies and the header they write
    /// ([`AuditPolicy::client_ip`]).
    ///
    /// # Security
    /// Trust forwarding headers only from proxies you run; see [`ClientIpConfig`].
    pub fn client_ip(self, rules: ClientIpConfig) -> Self {
        self.map_policy(|p| p.client_ip(rules))
    }

    /// The header read from trusted proxies (default `X-Forwarded-For`).
    pub fn forwarded_header(self, header: ForwardedHeader) -> Self {
        self.map_policy(|p| p.forwarded_header(header))
    }

    /// Which responses emit (default [`Outcomes::SuccessOnly`]; [`Outcomes::All`] adds the
    /// metadata `outcome` and `http_status` to every event).
    pub fn outcomes(self, outcomes: Outcomes) -> Self {
        self.map_policy(|p| p.outcomes(outcomes))
    }

    /// What to do with an annotated request without an actor (default: skip and count,
    /// [`MissingActor::Skip`]).
    pub fn missing_actor(self, missing: MissingActor) -> Self {
        self.map_policy(|p| p.missing_actor(missing))
    }

    /// The organization of requests that set none (default: none, such requests are skipped).
    pub fn default_organization(self, organization: OrganizationId) -> Self {
        self.map_policy(|p| p.default_organization(organization))
    }

    /// Add `request_id` (from `x-request-id`), `http_method`, `http_route` (the matched route
    /// pattern) and `http_status` to each event's metadata (default off).
    pub fn request_metadata(self, on: bool) -> Self {
        self.map_policy(|p| p.request_metadata(on))
    }

    /// What an annotated request whose response future is dropped before the response (the
    /// client went away, a timeout layer fired) emits (default [`CancelledRequests::Emit`]: the
    /// event with `outcome: "cancelled"`). Counted either way in
    /// [`SkipCounters::cancelled`](crate::request::SkipCounters::cancelled).
    pub fn cancelled_requests(self, cancelled: CancelledRequests) -> Self {
        self.map_policy(|p| p.cancelled(cancelled))
    }

    /// What a request with more than [`Event::MAX_TARGETS`](crate::Event::MAX_TARGETS) targets
    /// emits (default [`TargetOverflow::Split`]: several events of at most 20 targets each).
    /// Counted either way in
    /// [`SkipCounters::target_overflows`](crate::request::SkipCounters::target_overflows).
    pub fn target_overflow(self, overflow: TargetOverflow) -> Self {
        self.map_policy(|p| p.target_overflow(overflow))
    }

    /// The longest user agent kept, in bytes (default
    /// [`DEFAULT_MAX_USER_AGENT_LEN`](crate::request::DEFAULT_MAX_USER_AGENT_LEN)).
    pub fn max_user_agent_len(self, len: usize) -> Self {
        self.map_policy(|p| p.max_user_agent_len(len))
    }

    /// Finds the actor from the request head when no outer layer put an [`Actor`] into the
    /// request extensions. Runs before the inner service, once per request; a handler's
    /// `AuditCtx::actor` still wins.
    pub fn actor_resolver<F>(mut self, resolve: F) -> Self
    where
        F: Fn(&A::Request) -> Option<Actor> + Send + Sync + 'static,
    {
        self.settings.actor_resolver = Some(Arc::new(resolve));
        self
    }

    /// Finds the organization from the request head when no outer layer put an
    /// [`OrganizationId`] into the request extensions. Runs before the inner service; a
    /// handler's `AuditCtx::organization` still wins.
    pub fn organization_resolver<F>(mut self, resolve: F) -> Self
    where
        F: Fn(&A::Request) -> Option<OrganizationId> + Send + Sync + 'static,
    {
        self.settings.organization_resolver = Some(Arc::new(resolve));
        self
    }
}

/// Defines an adapter's handler-side types from one definition: the `AuditCtx` extractor type (a
/// handle on the request's record that dereferences to
/// [`AuditHandle`](crate::request::AuditHandle)) and the rejection when the middleware is missing
/// (an enum with `Action` and `AuditCtx`, its body text, its `500` status, `Display` and `Error`).
/// The adapter adds its framework's extractor and response impls.
#[doc(hidden)]
#[macro_export]
macro_rules! adapter_extractor_types {
    (
        $(#[$ctx_meta:meta])*
        ctx: $ctx:ident;
        $(#[$missing_meta:meta])*
        missing: $missing:ident (status: $status:ty) {
            action: $action_text:expr,
            ctx: $ctx_text:expr $(,)?
        }
    ) => {
        $(#[$ctx_meta])*
        #[derive(Debug, Clone)]
        pub struct $ctx($crate::request::AuditHandle);

        impl ::std::ops::Deref for $ctx {
            type Target = $crate::request::AuditHandle;

            fn deref(&self) -> &$crate::request::AuditHandle {
                &self.0
            }
        }

        $(#[$missing_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $missing {
            /// An `#[action]` handler.
            Action,
            /// The `AuditCtx` extractor.
            AuditCtx,
        }

        impl $missing {
            /// The response body.
            pub fn body_text(&self) -> &'static str {
                match self {
                    Self::Action => $action_text,
                    Self::AuditCtx => $ctx_text,
                }
            }

            /// The status, `500 Internal Server Error`: the server is misconfigured.
            pub fn status(&self) -> $status {
                <$status>::INTERNAL_SERVER_ERROR
            }
        }

        impl ::std::fmt::Display for $missing {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.body_text())
            }
        }

        impl ::std::error::Error for $missing {}
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::MemorySink;

    struct Probe(Arc<Middleware<()>>);

    impl Adapter for Probe {
        type Request = ();
        fn from_middleware(middleware: Arc<Middleware<()>>) -> Self {
            Probe(middleware)
        }
    }

    /// Every setting has a builder method, and the built adapter holds it. The destructuring of
    /// `Settings` and `AuditPolicy` names every field (no `..`): a new setting stops this test
    /// from compiling until the builder sets it and the test checks it.
    #[tokio::test]
    async fn the_builder_sets_every_setting() {
        let emitter = Emitter::builder(MemorySink::new()).start();
        let org = OrganizationId::new("org_1").unwrap();
        let built = Builder::<Probe>::new(emitter)
            .outcomes(Outcomes::All)
            .missing_actor(MissingActor::Use(Actor::new("anonymous", "anonymous")))
            .default_organization(org.clone())
            .request_metadata(true)
            .trusted_proxies(["10.0.0.0/8"])
            .unwrap()
            .forwarded_header(ForwardedHeader::Single("x-real-ip"))
            .max_user_agent_len(7)
            .cancelled_requests(CancelledRequests::Skip)
            .target_overflow(TargetOverflow::KeepFirst)
            .actor_resolver(|_| Some(Actor::new("user_1", "user")))
            .organization_resolver(|_| OrganizationId::new("org_2").ok())
            .build();
        let Settings {
            policy,
            actor_resolver,
            organization_resolver,
        } = built.0.settings();
        let AuditPolicy {
            outcomes,
            missing_actor,
            default_organization,
            request_metadata,
            client_ip,
            max_user_agent_len,
            cancelled,
            target_overflow,
        } = policy;
        assert_eq!(*outcomes, Outcomes::All);
        assert_eq!(
            *missing_actor,
            MissingActor::Use(Actor::new("anonymous", "anonymous"))
        );
        assert_eq!(default_organization.as_ref(), Some(&org));
        assert!(*request_metadata);
        let rules = ClientIpConfig::behind_proxies(["10.0.0.0/8"])
            .unwrap()
            .header(ForwardedHeader::Single("x-real-ip"));
        assert_eq!(*client_ip, rules);
        assert_eq!(*max_user_agent_len, Some(7));
        assert_eq!(*cancelled, CancelledRequests::Skip);
        assert_eq!(*target_overflow, TargetOverflow::KeepFirst);
        assert_eq!(actor_resolver.as_ref().unwrap()(&()).unwrap().id, "user_1");
        assert_eq!(
            organization_resolver.as_ref().unwrap()(&()).unwrap().as_str(),
            "org_2"
        );
    }

    /// A whole policy replaces what the setters set before it; setters after it change it.
    #[tokio::test]
    async fn a_whole_policy_then_setters() {
        let emitter = Emitter::builder(MemorySink::new()).start();
        let built = Builder::<Probe>::new(emitter)
            .request_metadata(true)
            .policy(AuditPolicy::new().outcomes(Outcomes::All))
            .max_user_agent_len(9)
            .build();
        let policy = &built.0.settings().policy;
        assert!(!policy.request_metadata);
        assert_eq!(policy.outcomes, Outcomes::All);
        assert_eq!(policy.max_user_agent_len, Some(9));
    }
}
