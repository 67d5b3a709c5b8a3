//! The handler-facing extractors: [`AuditCtx`] and the action annotation's hidden argument.

use std::fmt;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use audit_core::Action;
use audit_core::adapter::{RequestAudit, handler_record};
use audit_core::request::AuditHandle;
use futures_util::future::{Ready, ready};

/// Runs annotated handlers without [`AuditMiddleware`], recording nothing.
///
/// Register it as app data (`App::new().app_data(AuditDisabled)`, the actix idiom) or insert it
/// into the request extensions where audit is switched off on purpose (by configuration, or to
/// measure what the middleware costs): `#[action]` and [`AuditCtx`] then accept the request and
/// every call on them does nothing. Without the middleware and without this marker they reject the
/// request ([`MissingAuditMiddleware`]).
///
/// [`AuditMiddleware`]: crate::AuditMiddleware
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditDisabled;

audit_core::adapter_extractor_types! {
    /// The handler's access to its request's audit event: it dereferences to
    /// [`AuditHandle`](audit_core::request::AuditHandle), whose methods add targets and metadata, set
    /// the actor or organization, or suppress the event.
    ///
    /// ```
    /// use actix_web::{HttpResponse, web};
    /// use audit_actix::AuditCtx;
    /// use audit_actix::Target;
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
    /// wrapped by [`AuditMiddleware`](crate::AuditMiddleware); with [`AuditDisabled`] every call does
    /// nothing.
    ctx: AuditCtx;
    /// The rejection of `#[action]` handlers and of [`AuditCtx`] when the request did not pass
    /// through [`AuditMiddleware`]: `500 Internal Server Error` with a body naming the middleware, so
    /// that a forgotten `.wrap(..)` fails in the first test that calls the route instead of silently
    /// emitting nothing.
    ///
    /// [`AuditMiddleware`]: crate::AuditMiddleware
    missing: MissingAuditMiddleware (status: StatusCode) {
        action: "audit: #[action] handler called without AuditMiddleware; add \
                 `.wrap(audit_middleware)` (audit_actix::AuditMiddleware) to the App, Scope or Resource \
                 that serves this route",
        ctx: "audit: AuditCtx extractor used without AuditMiddleware; add `.wrap(audit_middleware)` \
              (audit_actix::AuditMiddleware) to the App, Scope or Resource that serves this route",
    }
}

impl ResponseError for MissingAuditMiddleware {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!("{}", self.body_text());
        HttpResponse::build(self.status())
            .content_type("text/plain; charset=utf-8")
            .body(self.body_text())
    }
}

/// The request's audit record, with an `Actor`/`OrganizationId` found in the request extensions
/// copied in (an auth middleware that runs inside the audit middleware still counts); `None` when
/// audit is switched off with [`AuditDisabled`].
fn record(
    req: &HttpRequest,
    missing: MissingAuditMiddleware,
) -> Result<Option<RequestAudit>, MissingAuditMiddleware> {
    let extensions = req.extensions();
    match handler_record(extensions.get(), extensions.get(), extensions.get()) {
        Some(audit) => Ok(Some(audit)),
        None if extensions.get::<AuditDisabled>().is_some() || req.app_data::<AuditDisabled>().is_some() => {
            Ok(None)
        }
        None => Err(missing),
    }
}

impl FromRequest for AuditCtx {
    type Error = MissingAuditMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(record(req, MissingAuditMiddleware::AuditCtx).map(|r| AuditCtx(AuditHandle::new(r))))
    }
}

/// The hidden first argument `#[action]` adds to a handler. Not public API.
#[doc(hidden)]
pub struct Annotation {
    audit: Option<RequestAudit>,
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
    pub fn apply(self, action: Action, targets: &[(&'static str, &str)]) {
        let Some(audit) = self.audit else { return };
        let params = self.req.match_info();
        audit.annotate_route(action, targets, |name| params.get(name));
    }
}

impl FromRequest for Annotation {
    type Error = MissingAuditMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            record(req, MissingAuditMiddleware::Action).map(|audit| Annotation {
                audit,
                req: req.clone(),
            }),
        )
    }
}
