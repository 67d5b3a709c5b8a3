//! The handler-facing extractors: [`AuditCtx`] and the action annotation's hidden argument.

use std::fmt;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use audit_core::request::RequestAudit;
use audit_core::{Action, Actor, MetadataValue, OrganizationId, Target};
use futures_util::future::{Ready, ready};

/// The body of the 500 answered when an audit extractor runs without [`AuditMiddleware`].
///
/// [`AuditMiddleware`]: crate::AuditMiddleware
pub const MISSING_MIDDLEWARE_MESSAGE: &str = "audit: #[action] handler or AuditCtx used without \
     AuditMiddleware; add `.wrap(audit_middleware)` to the App, Scope or Resource that serves this route";

/// The error of an audit extractor used on a route that [`AuditMiddleware`] does not wrap.
///
/// Answers `500 Internal Server Error` with [`MISSING_MIDDLEWARE_MESSAGE`] as its body, so the
/// forgotten `.wrap(..)` shows up in the first test that calls the route instead of the route
/// silently emitting nothing.
///
/// [`AuditMiddleware`]: crate::AuditMiddleware
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MissingAuditMiddleware;

impl fmt::Display for MissingAuditMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MISSING_MIDDLEWARE_MESSAGE)
    }
}

impl std::error::Error for MissingAuditMiddleware {}

impl ResponseError for MissingAuditMiddleware {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(MISSING_MIDDLEWARE_MESSAGE)
    }
}

/// The request's audit record, with an `Actor`/`OrganizationId` found in the request extensions
/// copied in (an auth middleware that runs inside the audit middleware still counts).
fn record(req: &HttpRequest) -> Result<RequestAudit, MissingAuditMiddleware> {
    let extensions = req.extensions();
    let audit = extensions
        .get::<RequestAudit>()
        .cloned()
        .ok_or(MissingAuditMiddleware)?;
    if let Some(actor) = extensions.get::<Actor>() {
        audit.set_actor_if_unset(actor.clone());
    }
    if let Some(organization) = extensions.get::<OrganizationId>() {
        audit.set_organization_if_unset(organization.clone());
    }
    Ok(audit)
}

/// The handler's access to its request's audit event: add targets and metadata, set the actor or
/// organization, or suppress the event.
///
/// ```
/// use actix_web::{HttpResponse, web};
/// use audit_actix::AuditCtx;
/// use audit_core::Target;
///
/// #[audit_actix::action("team.created")]
/// async fn create_team(audit: AuditCtx, name: web::Json<String>) -> HttpResponse {
///     let id = "team_42"; // created in the database
///     audit.target(Target::new(id, "team").name(name.as_str()));
///     audit.meta("plan", "pro");
///     HttpResponse::Created().finish()
/// }
/// ```
///
/// Rejects with [`MissingAuditMiddleware`] (a 500 naming the middleware) when the route is not
/// wrapped by [`AuditMiddleware`](crate::AuditMiddleware).
#[derive(Debug, Clone)]
pub struct AuditCtx(RequestAudit);

impl AuditCtx {
    /// Adds a target to the event.
    pub fn target(&self, target: Target) -> &Self {
        self.0.add_target(target);
        self
    }

    /// Adds one metadata entry to the event.
    pub fn meta(&self, key: impl Into<String>, value: impl Into<MetadataValue>) -> &Self {
        self.0.add_metadata(key, value);
        self
    }

    /// Sets the actor, replacing one from extensions or resolvers.
    pub fn actor(&self, actor: Actor) -> &Self {
        self.0.set_actor(actor);
        self
    }

    /// Sets the organization, replacing one from extensions or resolvers.
    pub fn organization(&self, organization: OrganizationId) -> &Self {
        self.0.set_organization(organization);
        self
    }

    /// Sets or replaces the action (normally the route's `#[action]` does this).
    pub fn action(&self, action: Action) -> &Self {
        self.0.set_action(action);
        self
    }

    /// Emits no event for this request, whatever its outcome.
    pub fn suppress(&self) {
        self.0.suppress();
    }

    /// The underlying record.
    pub fn record(&self) -> &RequestAudit {
        &self.0
    }
}

impl FromRequest for AuditCtx {
    type Error = MissingAuditMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(record(req).map(AuditCtx))
    }
}

/// The hidden first argument `#[action]` adds to a handler. Not public API.
#[doc(hidden)]
pub struct Annotation {
    audit: RequestAudit,
    req: HttpRequest,
}

impl fmt::Debug for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Annotation").finish_non_exhaustive()
    }
}

impl Annotation {
    /// Records the route's action and turns the named path parameters into targets:
    /// `targets` holds `(target type, path parameter name)` pairs.
    pub fn apply(self, action: Action, targets: &[(&str, &str)]) {
        self.audit.set_action(action);
        let params = self.req.match_info();
        for (kind, param) in targets {
            match params.get(param) {
                Some(value) => self.audit.add_target(Target::new(value, *kind)),
                None => tracing::warn!(
                    param,
                    target_type = kind,
                    route = ?self.req.match_pattern(),
                    "audit: #[action] names a path parameter the route does not have; no target added"
                ),
            }
        }
    }
}

impl FromRequest for Annotation {
    type Error = MissingAuditMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(record(req).map(|audit| Annotation {
            audit,
            req: req.clone(),
        }))
    }
}
