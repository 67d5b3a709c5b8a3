//! The actix-web middleware: [`AuditMiddleware`] (the [`Transform`]) and
//! [`AuditMiddlewareService`] (the per-worker service it builds).
//!
//! For every request the middleware:
//!
//! 1. before the inner service runs: chooses the client's location with audit-core's client-IP
//!    rules (the socket peer from [`ServiceRequest::peer_addr`] by default), bounds the
//!    `User-Agent`, notes the arrival time (the event's `occurred_at`) and, with
//!    [`request_metadata`](AuditMiddleware::request_metadata), the `x-request-id`, method and
//!    matched route pattern; creates a [`RequestAudit`], fills in an [`Actor`] and an
//!    [`OrganizationId`] found in the request extensions (put there by an auth middleware that
//!    runs before this one) or returned by the resolvers, and inserts the record into the request
//!    extensions;
//! 2. calls the inner service;
//! 3. once the inner service produced the response head (or an [`actix_web::Error`]), decides
//!    under the [`AuditPolicy`] whether an event is due and hands it to the [`Emitter`] with the
//!    non-blocking [`Emitter::try_emit`]. The response, its status and its headers are returned
//!    untouched; a refused event is counted ([`SkipCounters::emit_failures`]) and logged at a
//!    bounded rate, never returned to the client.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::USER_AGENT;
use actix_web::{Error, HttpMessage, HttpRequest};
use audit_core::client_ip::{ClientIpConfig, ForwardedHeader, InvalidTrustedProxy};
use audit_core::emitter::Emitter;
use audit_core::request::{
    AuditPolicy, HandOff, MissingActor, Outcomes, RequestAudit, RequestInfo, SkipCounters, bounded_lossy,
};
use audit_core::{Actor, Metadata, OrganizationId};
use futures_util::future::{LocalBoxFuture, Ready, ready};

/// A closure that finds the actor of a request from its head (headers, extensions, path).
pub type ActorResolver = Arc<dyn Fn(&HttpRequest) -> Option<Actor> + Send + Sync>;

/// A closure that finds the organization of a request from its head.
pub type OrganizationResolver = Arc<dyn Fn(&HttpRequest) -> Option<OrganizationId> + Send + Sync>;

/// Set once the "no socket peer" warning was logged (process-wide: it is a deployment problem).
static WARNED_NO_PEER: AtomicBool = AtomicBool::new(false);

#[derive(Clone)]
struct Config {
    policy: AuditPolicy,
    actor_resolver: Option<ActorResolver>,
    organization_resolver: Option<OrganizationResolver>,
    /// Emits, counts and logs what a finished request decided.
    hand_off: Arc<HandOff>,
}

/// The audit middleware for actix-web: wrap an `App`, a `Scope`, a `Resource` or a `Route`.
///
/// Configuration only, cheap to clone (`Send + Sync`, so it can be moved into the
/// `HttpServer::new` factory closure and cloned into every worker). Each setter takes and returns
/// the middleware by value; clones share the [`Emitter`] and the [`SkipCounters`].
///
/// ```no_run
/// use actix_web::{App, HttpResponse, HttpServer, post};
/// use audit_actix::AuditMiddleware;
/// use audit_core::emitter::Emitter;
///
/// #[audit_actix::action("team.created")]
/// #[post("/teams")]
/// async fn create_team() -> HttpResponse {
///     HttpResponse::Created().finish()
/// }
///
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let client = audit_core::client::Client::from_env().expect("WORKOS_API_KEY");
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
/// ([`ClientIpConfig::resolve`]) applied to the socket peer ([`ServiceRequest::peer_addr`]) and,
/// only when that peer is a configured trusted proxy, to one forwarding header. It never comes
/// from actix-web's [`ConnectionInfo::realip_remote_addr`](actix_web::dev::ConnectionInfo::realip_remote_addr),
/// which returns the leftmost `Forwarded`/`X-Forwarded-For` value whoever sent it: any client
/// could write any address into the audit log with it. See
/// [`trusted_proxies`](Self::trusted_proxies).
#[derive(Clone)]
pub struct AuditMiddleware {
    config: Arc<Config>,
}

impl std::fmt::Debug for AuditMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditMiddleware")
            .field("policy", &self.config.policy)
            .field("actor_resolver", &self.config.actor_resolver.is_some())
            .field(
                "organization_resolver",
                &self.config.organization_resolver.is_some(),
            )
            .finish_non_exhaustive()
    }
}

impl AuditMiddleware {
    /// A middleware handing events to `emitter`, with the default [`AuditPolicy`]: only 2xx/3xx
    /// responses of annotated routes emit, requests without actor or organization are skipped
    /// (and counted), the socket peer is the client's location, no request metadata.
    pub fn new(emitter: Emitter) -> Self {
        Self::with_policy(emitter, AuditPolicy::default())
    }

    /// A middleware with an explicit policy.
    pub fn with_policy(emitter: Emitter, policy: AuditPolicy) -> Self {
        Self {
            config: Arc::new(Config {
                policy,
                actor_resolver: None,
                organization_resolver: None,
                hand_off: Arc::new(HandOff::new(emitter, Arc::default())),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Replaces the whole [`AuditPolicy`].
    pub fn policy(self, policy: AuditPolicy) -> Self {
        self.edit(|c| c.policy = policy)
    }

    /// The policy in force.
    pub fn current_policy(&self) -> &AuditPolicy {
        &self.config.policy
    }

    /// Sets the client-IP rules ([`AuditPolicy::client_ip`]).
    ///
    /// # Security
    /// Trust forwarding headers only from proxies you run; see [`ClientIpConfig`].
    pub fn client_ip(self, rules: ClientIpConfig) -> Self {
        self.edit(|c| c.policy.client_ip = rules)
    }

    /// Believes `X-Forwarded-For` when the socket peer is inside one of `ranges` (CIDR ranges or
    /// single addresses); see [`ClientIpConfig::behind_proxies`]. To read another header, use
    /// [`client_ip`](Self::client_ip) with [`ClientIpConfig::header`].
    ///
    /// # Errors
    /// [`InvalidTrustedProxy`] naming the first value that is not a range or an address.
    ///
    /// # Security
    /// Only list proxies you operate: a trusted range that clients can connect from makes the
    /// location forgeable. The default (no trusted proxies) ignores every forwarding header.
    pub fn trusted_proxies<I, S>(self, ranges: I) -> Result<Self, InvalidTrustedProxy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let header = self.config.policy.client_ip.forwarded_header();
        let rules = ClientIpConfig::behind_proxies(ranges)?.header(header);
        Ok(self.client_ip(rules))
    }

    /// The header read from trusted proxies (default `X-Forwarded-For`).
    pub fn forwarded_header(self, header: ForwardedHeader) -> Self {
        self.edit(|c| c.policy.client_ip = c.policy.client_ip.clone().header(header))
    }

    /// The longest user agent kept, in bytes (default
    /// [`DEFAULT_MAX_USER_AGENT_LEN`](audit_core::request::DEFAULT_MAX_USER_AGENT_LEN)).
    pub fn max_user_agent_len(self, len: usize) -> Self {
        self.edit(|c| c.policy.max_user_agent_len = Some(len))
    }

    /// Sets which responses emit ([`AuditPolicy::outcomes`]).
    pub fn outcomes(self, outcomes: Outcomes) -> Self {
        self.edit(|c| c.policy.outcomes = outcomes)
    }

    /// Sets what happens without an actor ([`AuditPolicy::missing_actor`]).
    pub fn missing_actor(self, missing: MissingActor) -> Self {
        self.edit(|c| c.policy.missing_actor = missing)
    }

    /// Sets the organization of requests that set none ([`AuditPolicy::default_organization`]).
    pub fn default_organization(self, organization: OrganizationId) -> Self {
        self.edit(|c| c.policy.default_organization = Some(organization))
    }

    /// Adds `request_id`, `http_method`, `http_route` (from [`HttpRequest::match_pattern`]) and
    /// `http_status` to each event's metadata ([`AuditPolicy::request_metadata`]).
    pub fn request_metadata(self, on: bool) -> Self {
        self.edit(|c| c.policy.request_metadata = on)
    }

    /// Finds the actor from the request head when no `Actor` is in the request extensions.
    ///
    /// Runs before the inner service, for every request. A handler's
    /// [`AuditCtx`](crate::AuditCtx)`.actor(..)` ([`AuditHandle::actor`](audit_core::request::AuditHandle::actor)) still wins.
    pub fn actor_resolver<F>(self, resolver: F) -> Self
    where
        F: Fn(&HttpRequest) -> Option<Actor> + Send + Sync + 'static,
    {
        self.edit(|c| c.actor_resolver = Some(Arc::new(resolver)))
    }

    /// Finds the organization from the request head when no `OrganizationId` is in the request
    /// extensions. Runs before the inner service; the handler's choice still wins.
    pub fn organization_resolver<F>(self, resolver: F) -> Self
    where
        F: Fn(&HttpRequest) -> Option<OrganizationId> + Send + Sync + 'static,
    {
        self.edit(|c| c.organization_resolver = Some(Arc::new(resolver)))
    }

    /// The emitter events are handed to.
    pub fn emitter(&self) -> &Emitter {
        self.config.hand_off.emitter()
    }

    /// Skipped requests by reason and refused events, shared by every clone.
    pub fn skip_counters(&self) -> Arc<SkipCounters> {
        Arc::clone(self.config.hand_off.counters())
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
            config: self.config.clone(),
        }))
    }
}

/// The service [`AuditMiddleware`] wraps around an inner actix-web service.
///
/// Keeps the inner service's response and error types; never changes a response.
pub struct AuditMiddlewareService<S> {
    service: S,
    config: Arc<Config>,
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
        let audit = self.config.start(&req);
        req.extensions_mut().insert(audit.clone());
        let config = self.config.clone();
        let response = self.service.call(req);
        Box::pin(async move {
            let result = response.await;
            let status = match &result {
                Ok(res) => {
                    // The response keeps its request, and so the record's copy in the extensions:
                    // taking it out lets `finish` move the captured strings instead of copying.
                    res.request().extensions_mut().remove::<RequestAudit>();
                    res.status()
                }
                Err(error) => error.as_response_error().status_code(),
            };
            config.hand_off.finish(audit, &config.policy, status.as_u16());
            result
        })
    }
}

impl Config {
    /// The record of a request, before the inner service runs.
    fn start(&self, req: &ServiceRequest) -> RequestAudit {
        let policy = &self.policy;
        let peer: Option<IpAddr> = req.peer_addr().map(|addr| addr.ip());
        if peer.is_none() && !WARNED_NO_PEER.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                location = audit_core::client_ip::UNKNOWN_LOCATION,
                "audit: the request has no socket peer address; audit events get the placeholder \
                 location (logged once)"
            );
        }
        let headers = req.headers();
        let location = policy
            .client_ip
            .resolve(
                peer,
                headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_bytes())),
            )
            .location();
        let mut info = RequestInfo::new(location);
        if let Some(ua) = headers.get(USER_AGENT) {
            info = info.user_agent_bytes(ua.as_bytes(), policy.user_agent_limit());
        }
        if policy.request_metadata {
            if let Some(id) = headers.get("x-request-id") {
                info = info.request_id(bounded_lossy(id.as_bytes(), Metadata::MAX_STRING_CHARS));
            }
            info = info.method(req.method().as_str());
            if let Some(pattern) = req.match_pattern() {
                info = info.route(pattern);
            }
        }
        let audit = RequestAudit::new(info);
        // An outer auth middleware's values first; the resolvers only for what is still missing.
        let (actor, organization) = {
            let extensions = req.extensions();
            (
                extensions.get::<Actor>().cloned(),
                extensions.get::<OrganizationId>().cloned(),
            )
        };
        match actor {
            Some(actor) => audit.set_actor(actor),
            None => {
                if let Some(actor) = self.actor_resolver.as_ref().and_then(|r| r(req.request())) {
                    audit.set_actor(actor);
                }
            }
        }
        match organization {
            Some(organization) => audit.set_organization(organization),
            None => {
                if let Some(org) = self.organization_resolver.as_ref().and_then(|r| r(req.request())) {
                    audit.set_organization(org);
                }
            }
        }
        audit
    }
}
