//! [`AuditService`]: captures the request before the inner service, decides after it.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use audit_core::adapter::{Middleware, RequestHead};
use audit_core::{Actor, OrganizationId};
use http::{Request, Response};
use tower_service::Service;

use crate::future::ResponseFuture;

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
/// Before calling the inner service it captures the request with audit-core (client location,
/// user agent, request id, method, matched route, arrival time; the actor and organization from
/// the extensions or the layer's resolvers) and inserts the request's record into its extensions. When the
/// inner service has produced the response head, it decides under the layer's policy and hands a
/// due event to the emitter without waiting. The response, its status, headers and body are passed
/// through untouched; the inner service's error type is kept.
pub struct AuditService<S> {
    inner: S,
    middleware: Arc<Middleware<http::request::Parts>>,
}

impl<S: Clone> Clone for AuditService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            middleware: Arc::clone(&self.middleware),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AuditService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditService")
            .field("inner", &self.inner)
            .field("policy", &self.middleware.settings().policy)
            .finish_non_exhaustive()
    }
}

impl<S> AuditService<S> {
    pub(crate) fn new(inner: S, middleware: Arc<Middleware<http::request::Parts>>) -> Self {
        Self { inner, middleware }
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
        let (audit, in_flight) = self.middleware.capture(&Head(&parts));
        parts.extensions.insert(audit);
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::new(future, in_flight)
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

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// What audit-core's capture reads of an `http` request head.
struct Head<'a>(&'a http::request::Parts);

impl RequestHead for Head<'_> {
    type Input = http::request::Parts;

    fn input(&self) -> &http::request::Parts {
        self.0
    }

    fn peer(&self) -> Option<IpAddr> {
        peer(self.0).map(|addr| addr.ip())
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        // The names capture asks for, as constants: a lookup by string parses the name first.
        let value = match name {
            "user-agent" => self.0.headers.get(http::header::USER_AGENT),
            "x-request-id" => self.0.headers.get(X_REQUEST_ID),
            _ => self.0.headers.get(name),
        };
        value.map(|v| v.as_bytes())
    }

    fn method(&self) -> &str {
        self.0.method.as_str()
    }

    fn route(&self) -> Option<Cow<'_, str>> {
        #[cfg(feature = "axum")]
        {
            self.0
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map(|p| Cow::Borrowed(p.as_str()))
        }
        #[cfg(not(feature = "axum"))]
        {
            None
        }
    }

    fn actor(&self) -> Option<Actor> {
        self.0.extensions.get::<Actor>().cloned()
    }

    fn organization(&self) -> Option<OrganizationId> {
        self.0.extensions.get::<OrganizationId>().cloned()
    }
}
