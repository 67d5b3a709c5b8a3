//! [`AuditLayer`]: the settings, shared by every service it wraps.

use std::sync::Arc;

use audit_core::adapter::{Middleware, Resolver};
use audit_core::{Actor, OrganizationId};
use tower_layer::Layer;

use crate::service::AuditService;

/// Finds the actor of a request from its head (for example from a session cookie or a verified
/// token), for [`AuditLayer::actor_resolver`].
pub type ActorResolver = Resolver<http::request::Parts, Actor>;

/// Finds the organization of a request from its head, for [`AuditLayer::organization_resolver`].
pub type OrganizationResolver = Resolver<http::request::Parts, OrganizationId>;

/// The audit middleware's [`Layer`]: settings only, cheap to clone.
///
/// Wrap an axum `Router` (or any tower service taking `http::Request`) with it; annotate the
/// handlers whose requests are audited with [`action`](crate::action). See the
/// [crate documentation](crate) for a complete example.
///
/// Built from an [`Emitter`](crate::Emitter) handle. Its settings are audit-core's
/// [`AuditPolicy`](crate::AuditPolicy), the same as audit-actix's: every one has a builder method
/// here, and [`policy`](Self::policy) sets them all at once:
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use audit_core::emitter::MemorySink;
/// use audit_tower::{AuditLayer, Emitter, Outcomes};
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
/// ([`ClientIpConfig`](crate::ClientIpConfig)): by default the socket peer, with every forwarding
/// header ignored. Call [`trusted_proxies`](Self::trusted_proxies) only with ranges of proxies you
/// operate; any client that can connect from a trusted range can choose its recorded address.
#[derive(Clone, Debug)]
pub struct AuditLayer {
    middleware: Arc<Middleware<http::request::Parts>>,
}

audit_core::adapter_builder!(AuditLayer, middleware, http::request::Parts);

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService::new(inner, Arc::clone(&self.middleware))
    }
}
