#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The action attribute expands to absolute `::audit_tower::__private` paths; this makes them
// resolve inside this crate's own tests and doctests too.
#[allow(unused_extern_crates)]
extern crate self as audit_tower;

mod future;
mod layer;
mod service;

#[cfg(feature = "axum")]
mod extract;

pub use future::ResponseFuture;
pub use layer::{ActorResolver, AuditLayer, AuditLayerBuilder, OrganizationResolver};
pub use service::{AuditService, PeerAddr};

#[cfg(feature = "axum")]
pub use extract::{AuditCtx, AuditDisabled, MissingAuditLayer};

/// Names the WorkOS action of an axum handler: `#[audit_tower::action("team.deleted")]`.
///
/// The action name is checked at compile time (an invalid name does not compile). Optional
/// `targets(type = "path_param", ...)` turn path parameters into targets:
///
/// ```text
/// #[action("team.created")]
/// #[action("team.deleted", targets(team = "id"))]   // /teams/{id} → Target { id, type: "team" }
/// #[action("member.removed", targets(team = "team_id", user = "user_id"))]
/// ```
///
/// The attribute adds a hidden first argument (an extractor) to the handler. It finds the
/// request's record created by [`AuditLayer`]; if the layer is missing, the handler is not run
/// and the request is answered `500` with a body naming the layer ([`MissingAuditLayer`]), so a
/// forgotten layer fails in the first test that calls the route. Handlers without the attribute
/// emit nothing.
///
/// ```
/// use audit_tower::{action, AuditCtx};
/// use audit_tower::Target;
///
/// #[action("team.deleted", targets(team = "id"))]
/// async fn delete_team(audit: AuditCtx) -> &'static str {
///     audit.meta("reason", "requested by owner");
///     "deleted"
/// }
///
/// let _app: axum::Router = axum::Router::new().route("/teams/{id}", axum::routing::delete(delete_team));
/// ```
#[cfg(feature = "axum")]
pub use audit_macros::tower_action as action;

// What an app's audit setup touches, so that the quickstart needs this crate only.
pub use audit_core::client::Client;
pub use audit_core::client_ip::{ClientIpConfig, ForwardedHeader};
pub use audit_core::emitter::Emitter;
pub use audit_core::request::{
    AuditHandle, AuditPolicy, CancelledRequests, MissingActor, Outcomes, SkipCounters, SkipReason,
};
pub use audit_core::{Actor, OrganizationId, Target};

/// Used by the code `#[action]` generates. Not part of the stable API.
#[doc(hidden)]
#[cfg(feature = "axum")]
pub mod __private {
    pub use crate::extract::Annotation;
    pub use audit_core::Action;
    pub use audit_core::registry::__private as registry;
}
