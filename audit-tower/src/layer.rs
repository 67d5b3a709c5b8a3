//! [`AuditLayer`]: the configuration, shared by every service it wraps.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use audit_core::client_ip::{ClientIpConfig, ForwardedHeader, InvalidTrustedProxy};
use audit_core::emitter::Emitter;
use audit_core::request::{AuditPolicy, HandOff, MissingActor, Outcomes, SkipCounters};
use audit_core::{Actor, OrganizationId};
use tower_layer::Layer;

use crate::service::AuditService;

/// Finds the actor of a request from its head (for example from a session cookie or a verified
/// token), for [`AuditLayer::actor_resolver`].
pub type ActorResolver = Arc<dyn Fn(&http::request::Parts) -> Option<Actor> + Send + Sync>;

/// Finds the organization of a request from its head, for [`AuditLayer::organization_resolver`].
pub type OrganizationResolver = Arc<dyn Fn(&http::request::Parts) -> Option<OrganizationId> + Send + Sync>;

/// Everything a request needs; built once, shared through an `Arc`.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) policy: AuditPolicy,
    pub(crate) actor_resolver: Option<ActorResolver>,
    pub(crate) organization_resolver: Option<OrganizationResolver>,
    /// Emits, counts and logs what a finished request decided.
    pub(crate) hand_off: Arc<HandOff>,
    /// Set once the first request without a known socket peer was logged.
    pub(crate) warned_unknown_peer: Arc<AtomicBool>,
}

/// The audit middleware's [`Layer`]: configuration only, cheap to clone.
///
/// Wrap an axum `Router` (or any tower service taking `http::Request`) with it; annotate the
/// handlers whose requests are audited with [`action`](crate::action). See the
/// [crate documentation](crate) for a complete example.
///
/// Built from an [`Emitter`] handle; every setting has a builder method here, and
/// [`policy`](Self::policy) sets them all at once from an [`AuditPolicy`]:
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use audit_core::emitter::{Emitter, MemorySink};
/// use audit_tower::{AuditLayer, Outcomes};
///
/// let emitter = Emitter::builder(MemorySink::new()).start();
/// let layer = AuditLayer::new(emitter)
///     .trusted_proxies(["10.0.0.0/8"])?    // default: none, the socket peer is the location
///     .outcomes(Outcomes::All);             // default: only 2xx and 3xx responses emit
/// let counters = layer.skip_counters();     // requests that emitted nothing, by reason
/// # let _ = counters; Ok(()) }
/// ```
///
/// # Security
///
/// The event's `context.location` is chosen by audit-core's client-IP rules
/// ([`ClientIpConfig`]): by default the socket peer, with every forwarding header ignored. Call
/// [`trusted_proxies`](Self::trusted_proxies) only with ranges of proxies you operate; any
/// client that can connect from a trusted range can choose its recorded address.
#[derive(Clone)]
pub struct AuditLayer {
    pub(crate) config: Arc<Config>,
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer")
            .field("policy", &self.config.policy)
            .field("actor_resolver", &self.config.actor_resolver.is_some())
            .field(
                "organization_resolver",
                &self.config.organization_resolver.is_some(),
            )
            .finish_non_exhaustive()
    }
}

impl AuditLayer {
    /// A layer that hands events to `emitter`, with the default [`AuditPolicy`]: only successful
    /// responses emit, requests without actor or organization are skipped (and counted), the
    /// socket peer is the location.
    pub fn new(emitter: Emitter) -> Self {
        Self::with_policy(emitter, AuditPolicy::default())
    }

    /// A layer with an explicit policy.
    pub fn with_policy(emitter: Emitter, policy: AuditPolicy) -> Self {
        Self {
            config: Arc::new(Config {
                policy,
                actor_resolver: None,
                organization_resolver: None,
                hand_off: Arc::new(HandOff::new(emitter, Arc::default())),
                warned_unknown_peer: Arc::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Replaces the whole policy.
    pub fn policy(mut self, policy: AuditPolicy) -> Self {
        self.config_mut().policy = policy;
        self
    }

    /// The policy in force.
    pub fn current_policy(&self) -> &AuditPolicy {
        &self.config.policy
    }

    /// Believe `X-Forwarded-For` when the socket peer is inside one of `ranges` (CIDR ranges or
    /// addresses). Use [`client_ip`](Self::client_ip) to read another header.
    ///
    /// # Errors
    ///
    /// [`InvalidTrustedProxy`] naming the first value that is not a range or an address.
    ///
    /// # Security
    ///
    /// Only list proxies you operate: a client connecting from a trusted range can write any
    /// location into the audit log. See [`ClientIpConfig::resolve`] for how headers are read.
    pub fn trusted_proxies<I, R>(mut self, ranges: I) -> Result<Self, InvalidTrustedProxy>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<str>,
    {
        let header = self.config.policy.client_ip.forwarded_header();
        self.config_mut().policy.client_ip = ClientIpConfig::behind_proxies(ranges)?.header(header);
        Ok(self)
    }

    /// Sets the client-IP rules (trusted proxies and the header they write).
    ///
    /// # Security
    ///
    /// See [`trusted_proxies`](Self::trusted_proxies).
    pub fn client_ip(mut self, rules: ClientIpConfig) -> Self {
        self.config_mut().policy.client_ip = rules;
        self
    }

    /// The header read from trusted proxies (default `X-Forwarded-For`).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        let rules = self.config.policy.client_ip.clone().header(header);
        self.config_mut().policy.client_ip = rules;
        self
    }

    /// Which responses emit (default [`Outcomes::SuccessOnly`]; [`Outcomes::All`] adds the
    /// metadata `outcome` and `http_status` to every event).
    pub fn outcomes(mut self, outcomes: Outcomes) -> Self {
        self.config_mut().policy.outcomes = outcomes;
        self
    }

    /// What to do with an annotated request without an actor (default: skip and count).
    pub fn missing_actor(mut self, missing: MissingActor) -> Self {
        self.config_mut().policy.missing_actor = missing;
        self
    }

    /// The organization of requests that set none (default: none, such requests are skipped).
    pub fn default_organization(mut self, organization: OrganizationId) -> Self {
        self.config_mut().policy.default_organization = Some(organization);
        self
    }

    /// Add `request_id` (from `x-request-id`), `http_method`, `http_route` and `http_status` to
    /// each event's metadata (default off).
    pub fn request_metadata(mut self, on: bool) -> Self {
        self.config_mut().policy.request_metadata = on;
        self
    }

    /// The longest user agent kept, in bytes (default
    /// [`DEFAULT_MAX_USER_AGENT_LEN`](audit_core::request::DEFAULT_MAX_USER_AGENT_LEN)).
    pub fn max_user_agent_len(mut self, len: usize) -> Self {
        self.config_mut().policy.max_user_agent_len = Some(len);
        self
    }

    /// Finds the actor from the request head when no outer layer put an [`Actor`] into the
    /// request extensions. Runs before the inner service, once per request.
    pub fn actor_resolver<F>(mut self, resolve: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<Actor> + Send + Sync + 'static,
    {
        self.config_mut().actor_resolver = Some(Arc::new(resolve));
        self
    }

    /// Finds the organization from the request head when no outer layer put an
    /// [`OrganizationId`] into the request extensions.
    pub fn organization_resolver<F>(mut self, resolve: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<OrganizationId> + Send + Sync + 'static,
    {
        self.config_mut().organization_resolver = Some(Arc::new(resolve));
        self
    }

    /// Counters of requests that emitted nothing, by [`SkipReason`](crate::SkipReason), and of
    /// events the emitter refused. Shared by every clone of this layer and its services.
    pub fn skip_counters(&self) -> Arc<SkipCounters> {
        Arc::clone(self.config.hand_off.counters())
    }

    /// The emitter events are handed to.
    pub fn emitter(&self) -> &Emitter {
        self.config.hand_off.emitter()
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService::new(inner, Arc::clone(&self.config))
    }
}
