//! [`AuditLayer`]: the settings, shared by every service it wraps.

use std::sync::Arc;

use audit_core::adapter::{Adapter, Builder, Middleware, Resolver, Settings};
use audit_core::emitter::Emitter;
use audit_core::request::SkipCounters;
use audit_core::{Actor, OrganizationId};
use tower_layer::Layer;

use crate::service::AuditService;

/// Finds the actor of a request from its head (for example from a session cookie or a verified
/// token), for [`Builder::actor_resolver`].
pub type ActorResolver = Resolver<http::request::Parts, Actor>;

/// Finds the organization of a request from its head, for [`Builder::organization_resolver`].
pub type OrganizationResolver = Resolver<http::request::Parts, OrganizationId>;

/// The settings of an [`AuditLayer`] ([`AuditLayer::builder`]): audit-core's
/// [`Builder`], the one type both adapters are built with.
pub type AuditLayerBuilder = Builder<AuditLayer>;

/// The audit middleware's [`Layer`]: settings only, cheap to clone.
///
/// Wrap an axum `Router` (or any tower service taking `http::Request`) with it; annotate the
/// handlers whose requests are audited with [`action`](crate::action). See the
/// [crate documentation](crate) for a complete example.
///
/// Built from an [`Emitter`](crate::Emitter) handle: [`AuditLayer::new`] with the defaults, or
/// [`AuditLayer::builder`] with settings. The settings are audit-core's
/// [`Builder`](audit_core::adapter::Builder), the same type that builds audit-actix's middleware:
/// every field of [`AuditPolicy`](crate::AuditPolicy) and the resolvers, with the same defaults
/// and docs.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use audit_core::emitter::MemorySink;
/// use audit_tower::{AuditLayer, Emitter, Outcomes};
///
/// let emitter = Emitter::builder(MemorySink::new()).start();
/// let layer = AuditLayer::builder(emitter)
///     .trusted_proxies(["10.0.0.0/8"])?    // default: none, the socket peer is the location
///     .outcomes(Outcomes::All)              // default: only 2xx and 3xx responses emit
///     .build();
/// let counters = layer.skip_counters();     // requests that emitted nothing, by reason
/// # let _ = counters; Ok(()) }
/// ```
///
/// # Security
///
/// The event's `context.location` is chosen by audit-core's client-IP rules
/// ([`ClientIpConfig`](crate::ClientIpConfig)): by default the socket peer, with every forwarding
/// header ignored. Call [`Builder::trusted_proxies`] only with ranges of proxies you operate; any
/// client that can connect from a trusted range can choose its recorded address.
#[derive(Clone, Debug)]
pub struct AuditLayer {
    middleware: Arc<Middleware<http::request::Parts>>,
}

impl Adapter for AuditLayer {
    type Request = http::request::Parts;

    fn from_middleware(middleware: Arc<Middleware<http::request::Parts>>) -> Self {
        Self { middleware }
    }
}

impl AuditLayer {
    /// Hands events to `emitter` with the default settings (see [`Builder::new`]).
    pub fn new(emitter: Emitter) -> Self {
        Self::builder(emitter).build()
    }

    /// The settings of a layer handing events to `emitter`; [`Builder::build`] makes it.
    pub fn builder(emitter: Emitter) -> Builder<Self> {
        Builder::new(emitter)
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings<http::request::Parts> {
        self.middleware.settings()
    }

    /// Counters of requests that emitted nothing, by [`SkipReason`](crate::SkipReason), and of
    /// events the emitter refused. Shared by every clone.
    pub fn skip_counters(&self) -> Arc<SkipCounters> {
        Arc::clone(self.middleware.hand_off().counters())
    }

    /// The emitter events are handed to.
    pub fn emitter(&self) -> &Emitter {
        self.middleware.hand_off().emitter()
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService::new(inner, Arc::clone(&self.middleware))
    }
}
