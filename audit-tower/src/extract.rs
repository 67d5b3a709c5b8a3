//! The axum side: the [`AuditCtx`] extractor and the extractor behind `#[action]`.

use audit_core::Action;
use audit_core::adapter::{RequestAudit, handler_record};
use audit_core::request::AuditHandle;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

/// Runs annotated handlers without [`AuditLayer`](crate::AuditLayer), recording nothing.
///
/// Insert it as a request extension (`.layer(Extension(AuditDisabled))`) where audit is switched
/// off on purpose (by configuration, or to measure what the layer costs): `#[action]` and
/// [`AuditCtx`] then accept the request and every call on them does nothing. Without the layer and
/// without this marker they reject the request ([`MissingAuditLayer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditDisabled;

audit_core::adapter_extractor_types! {
/// The handler's view of the request's audit record: it dereferences to
    /// [`AuditHandle`](audit_core::request::AuditHandle), whose methods add targets and metadata, set
    /// the actor or organization, or suppress the event:
    ///
    /// ```
    /// use audit_tower::Target;
    /// use audit_tower::{action, AuditCtx};
    ///
    /// #[action("team.created")]
    /// async fn create_team(audit: AuditCtx) -> &'static str {
    ///     let team_id = "team_42"; // created by the app
    ///     audit.target(Target::new(team_id, "team").name("Platform"));
    ///     audit.meta("plan", "pro");
    ///     "created"
    /// }
    /// ```
    ///
    /// The values set here win over those found in request extensions and resolvers. Without
    /// [`AuditLayer`](crate::AuditLayer) the extractor rejects the request with
    /// [`MissingAuditLayer`] (a 500 naming the layer); with [`AuditDisabled`] every call does nothing.
    ctx: AuditCtx;
    /// The rejection of `#[action]` handlers and of [`AuditCtx`] when the request did not pass
    /// through [`AuditLayer`](crate::AuditLayer): `500 Internal Server Error` with a body naming the
    /// layer, so that a forgotten layer fails in the first test that calls the route instead of
    /// silently emitting nothing.
    missing: MissingAuditLayer (status: StatusCode) {
        action: "audit: #[action] handler called without AuditLayer; add `.layer(audit_layer)` to the \
                 router (audit_tower::AuditLayer), outside the handler's route",
        ctx: "audit: AuditCtx extractor used without AuditLayer; add `.layer(audit_layer)` to the \
              router (audit_tower::AuditLayer), outside the handler's route",
    }
}

impl IntoResponse for MissingAuditLayer {
    fn into_response(self) -> Response {
        tracing::error!("{}", self.body_text());
        (self.status(), self.body_text()).into_response()
    }
}

/// The request's audit record, or `None` when audit is switched off with [`AuditDisabled`].
fn record(parts: &Parts, missing: MissingAuditLayer) -> Result<Option<RequestAudit>, MissingAuditLayer> {
    let extensions = &parts.extensions;
    match handler_record(extensions.get(), extensions.get(), extensions.get()) {
        Some(audit) => Ok(Some(audit)),
        None if extensions.get::<AuditDisabled>().is_some() => Ok(None),
        None => Err(missing),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditCtx {
    type Rejection = MissingAuditLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        record(parts, MissingAuditLayer::AuditCtx).map(|r| AuditCtx(AuditHandle::new(r)))
    }
}

/// The hidden first argument `#[action]` adds to a handler.
#[doc(hidden)]
#[derive(Debug)]
pub struct Annotation {
    audit: Option<RequestAudit>,
    params: Option<RawPathParams>,
}

impl Annotation {
    /// Records the action and turns the named path parameters into targets: `(type, param)`.
    pub fn apply(self, action: Action, targets: &[(&'static str, &str)]) {
        let Some(audit) = self.audit else { return };
        let params = self.params.as_ref();
        audit.annotate_route(action, targets, |name| {
            params.and_then(|p| p.iter().find(|(n, _)| *n == name).map(|(_, v)| v))
        });
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Annotation {
    type Rejection = MissingAuditLayer;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let audit = record(parts, MissingAuditLayer::Action)?;
        let params = match &audit {
            Some(_) => RawPathParams::from_request_parts(parts, state).await.ok(),
            None => None,
        };
        Ok(Annotation { audit, params })
    }
}
