//! [`AuditService`]: captures the request before the inner service, decides after it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use audit_core::client_ip::ClientIp;
use audit_core::request::{RequestAudit, RequestInfo};
use audit_core::{Actor, OrganizationId};
use http::{Request, Response};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::Config;

/// The socket peer of a request, for tower stacks outside axum: insert it into the request
/// extensions (for example in a hyper `service_fn` wrapper) before [`AuditService`] runs.
///
/// With the `axum` feature, `axum::extract::ConnectInfo<SocketAddr>` (set by
/// `into_make_service_with_connect_info::<SocketAddr>()`) and `MockConnectInfo<SocketAddr>` (in
/// tests) are read too; `PeerAddr` wins when several are present.
///
/// # Security
///
/// This must be the address of the TCP peer, never a value taken from the request: it decides
/// whether forwarding headers are believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The audit middleware, wrapping an inner service; built by [`AuditLayer`](crate::AuditLayer).
///
/// Before calling the inner service it creates the request's [`RequestAudit`] (client location,
/// user agent, request id, method, matched route, arrival time; the actor and organization from
/// the extensions or the layer's resolvers) and inserts it into the request extensions. When the
/// inner service has produced the response head, it decides under the layer's policy and hands a
/// due event to the emitter without waiting. The response, its status, headers and body are passed
/// through untouched; the inner service's error type is kept.
pub struct AuditService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for AuditService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AuditService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditService")
            .field("inner", &self.inner)
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

impl<S> AuditService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuditService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let audit = capture(&self.config, &mut parts);
        parts.extensions.insert(audit.clone());
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::new(future, audit, Arc::clone(&self.config))
    }
}

/// The socket peer, from the first source present.
fn peer(parts: &http::request::Parts) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = parts.extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    {
        use axum::extract::ConnectInfo;
        use axum::extract::connect_info::MockConnectInfo;
        if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            return Some(*addr);
        }
        if let Some(MockConnectInfo(addr)) = parts.extensions.get::<MockConnectInfo<SocketAddr>>() {
            return Some(*addr);
        }
    }
    None
}

/// The matched route pattern (`/teams/{id}`), when the router recorded it.
fn route(parts: &http::request::Parts) -> Option<&str> {
    #[cfg(feature = "axum")]
    {
        parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|p| p.as_str())
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = parts;
        None
    }
}

/// Everything known before the inner service runs.
pub(crate) fn capture(config: &Config, parts: &mut http::request::Parts) -> RequestAudit {
    let policy = &config.policy;
    let peer = peer(parts).map(|a| a.ip());
    let client = policy.client_ip.resolve(
        peer,
        parts.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    if let ClientIp::Unknown = client
        && !config
            .warned_unknown_peer
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            location = audit_core::client_ip::UNKNOWN_LOCATION,
            "audit: the socket peer of a request is unknown, its events get the location \"{}\"; \
             serve the router with `into_make_service_with_connect_info::<SocketAddr>()` \
             (or add `MockConnectInfo` in tests, or insert `audit_tower::PeerAddr`)",
            audit_core::client_ip::UNKNOWN_LOCATION,
        );
    }
    let mut info = RequestInfo::new(client.location());
    if let Some(ua) = parts.headers.get(http::header::USER_AGENT) {
        info = info.user_agent_bytes(ua.as_bytes(), policy.user_agent_limit());
    }
    if policy.request_metadata {
        info = info.method(parts.method.as_str());
        if let Some(id) = parts.headers.get("x-request-id") {
            info = info.request_id(audit_core::request::bounded_lossy(
                id.as_bytes(),
                audit_core::Metadata::MAX_STRING_CHARS,
            ));
        }
        if let Some(route) = route(parts) {
            info = info.route(route);
        }
    }
    let audit = RequestAudit::new(info);
    // An outer auth layer's values first; the resolvers only for what is still missing.
    match parts.extensions.get::<Actor>() {
        Some(actor) => audit.set_actor(actor.clone()),
        None => {
            if let Some(actor) = config.actor_resolver.as_ref().and_then(|r| r(parts)) {
                audit.set_actor(actor);
            }
        }
    }
    match parts.extensions.get::<OrganizationId>() {
        Some(org) => audit.set_organization(org.clone()),
        None => {
            if let Some(org) = config.organization_resolver.as_ref().and_then(|r| r(parts)) {
                audit.set_organization(org);
            }
        }
    }
    audit
}
