//! The actix-web middleware: [`AuditMiddleware`] (the [`Transform`]) and
//! [`AuditMiddlewareService`] (the per-worker service it builds).
//!
//! For every request the middleware:
//!
//! 1. before the inner service runs: captures the request with audit-core (the client's location
//!    from the client-IP rules applied to [`ServiceRequest::peer_addr`], the bounded `User-Agent`,
//!    the arrival time and, with [`request_metadata`](Builder::request_metadata), the
//!    `x-request-id`, method and matched route pattern; an [`Actor`] and an [`OrganizationId`]
//!    found in the request extensions, put there by an auth middleware that runs before this one,
//!    or returned by the resolvers) and inserts the request's record into its extensions;
//! 2. calls the inner service;
//! 3. once the inner service produced the response head (or an [`actix_web::Error`]), decides
//!    under the [`AuditPolicy`](crate::AuditPolicy) whether an event is due and hands it to the
//!    emitter without waiting. The response, its status and its headers are returned untouched;
//!    a refused event is counted ([`SkipCounters::emit_failures`](crate::SkipCounters::emit_failures))
//!    and logged at a bounded rate, never returned to the client.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header;
use actix_web::{Error, HttpMessage, HttpRequest};
use audit_core::adapter::{Adapter, Builder, Middleware, RequestAudit, RequestHead, Resolver, Settings};
use audit_core::emitter::Emitter;
use audit_core::request::SkipCounters;
use audit_core::{Actor, OrganizationId};
use futures_util::future::{LocalBoxFuture, Ready, ready};

/// A closure that finds the actor of a request from its head (headers, extensions, path).
pub type ActorResolver = Resolver<HttpRequest, Actor>;

/// A closure that finds the organization of a request from its head.
pub type OrganizationResolver = Resolver<HttpRequest, OrganizationId>;

/// The settings of an [`AuditMiddleware`] ([`AuditMiddleware::builder`]): audit-core's
/// [`Builder`], the one type both adapters are built with.
pub type AuditMiddlewareBuilder = Builder<AuditMiddleware>;

/// The audit middleware for actix-web: wrap an `App`, a `Scope`, a `Resource` or a `Route`.
///
/// Configuration only, cheap to clone (`Send + Sync`, so it can be moved into the
/// `HttpServer::new` factory closure and cloned into every worker); clones share the
/// [`Emitter`](crate::Emitter) and the [`SkipCounters`](crate::SkipCounters). Built with
/// [`AuditMiddleware::new`] (the defaults) or [`AuditMiddleware::builder`]: the settings are
/// audit-core's [`Builder`](audit_core::adapter::Builder), the same type that builds audit-tower's
/// layer (every field of [`AuditPolicy`](crate::AuditPolicy) and the resolvers, with the same
/// defaults and docs).
///
/// ```no_run
/// use actix_web::{App, HttpResponse, HttpServer, post};
/// use audit_actix::{AuditMiddleware, Client, Emitter};
///
/// #[audit_actix::action("team.created")]
/// #[post("/teams")]
/// async fn create_team() -> HttpResponse {
///     HttpResponse::Created().finish()
/// }
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let client = Client::from_env().expect("WORKOS_API_KEY");
///     let emitter = Emitter::builder(client).start();
///     let audit = AuditMiddleware::new(emitter.clone());
///     HttpServer::new(move || App::new().wrap(audit.clone()).service(create_team))
///         .bind("127.0.0.1:3000")?
///         .run()
///         .await?;
///     // The server stopped (SIGINT/SIGTERM handled by actix): deliver what is queued.
///     let report = emitter.shutdown(std::time::Duration::from_secs(10)).await;
///     println!("{report:?}");
///     Ok(())
/// }
/// ```
///
/// # Security
///
/// The event's `context.location` comes from audit-core's client-IP rules
/// ([`ClientIpConfig::resolve`](audit_core::client_ip::ClientIpConfig::resolve)) applied to the socket peer ([`ServiceRequest::peer_addr`]) and,
/// only when that peer is a configured trusted proxy, to one forwarding header. It never comes
/// from actix-web's [`ConnectionInfo::realip_remote_addr`](actix_web::dev::ConnectionInfo::realip_remote_addr),
/// which returns the leftmost `Forwarded`/`X-Forwarded-For` value whoever sent it: any client
/// could write any address into the audit log with it. See
/// [`Builder::trusted_proxies`].
#[derive(Clone, Debug)]
pub struct AuditMiddleware {
    middleware: Arc<Middleware<HttpRequest>>,
}

impl Adapter for AuditMiddleware {
    type Request = HttpRequest;

    fn from_middleware(middleware: Arc<Middleware<HttpRequest>>) -> Self {
        Self { middleware }
    }
}

impl AuditMiddleware {
    /// Hands events to `emitter` with the default settings (see [`Builder::new`]).
    pub fn new(emitter: Emitter) -> Self {
        Self::builder(emitter).build()
    }

    /// The settings of a middleware handing events to `emitter`; [`Builder::build`] makes it.
    pub fn builder(emitter: Emitter) -> Builder<Self> {
        Builder::new(emitter)
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings<HttpRequest> {
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

impl<S, B> Transform<S, ServiceRequest> for AuditMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = AuditMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AuditMiddlewareService {
            service,
            middleware: Arc::clone(&self.middleware),
        }))
    }
}

/// The service [`AuditMiddleware`] wraps around an inner actix-web service.
///
/// Keeps the inner service's response and error types; never changes a response.
pub struct AuditMiddlewareService<S> {
    service: S,
    middleware: Arc<Middleware<HttpRequest>>,
}

impl<S> std::fmt::Debug for AuditMiddlewareService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditMiddlewareService").finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for AuditMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<B>, Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (audit, in_flight) = self.middleware.capture(&Head(&req));
        req.extensions_mut().insert(audit);
        let response = self.service.call(req);
        Box::pin(async move {
            let result = response.await;
            let status = match &result {
                Ok(res) => {
                    // The response keeps its request, and so the record's copy in the extensions:
                    // taking it out lets the hand-off move the captured strings instead of copying.
                    res.request().extensions_mut().remove::<RequestAudit>();
                    res.status()
                }
                Err(error) => error.as_response_error().status_code(),
            };
            in_flight.finish(status.as_u16());
            result
        })
    }
}

const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// What audit-core's capture reads of an actix-web request.
struct Head<'a>(&'a ServiceRequest);

impl RequestHead for Head<'_> {
    type Input = HttpRequest;

    fn input(&self) -> &HttpRequest {
        self.0.request()
    }

    fn peer(&self) -> Option<IpAddr> {
        self.0.peer_addr().map(|addr| addr.ip())
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        // The names capture asks for, as constants: a lookup by string parses the name first.
        let value = match name {
            "user-agent" => self.0.headers().get(header::USER_AGENT),
            "x-request-id" => self.0.headers().get(X_REQUEST_ID),
            _ => self.0.headers().get(name),
        };
        value.map(|v| v.as_bytes())
    }

    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn route(&self) -> Option<Cow<'_, str>> {
        self.0.match_pattern().map(Cow::Owned)
    }

    fn actor(&self) -> Option<Actor> {
        self.0.extensions().get::<Actor>().cloned()
    }

    fn organization(&self) -> Option<OrganizationId> {
        self.0.extensions().get::<OrganizationId>().cloned()
    }
}
