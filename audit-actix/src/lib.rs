//! WorkOS Audit Logs for actix-web: one `.wrap(..)`, one `#[action(..)]` line per handler.
//!
//! [`AuditMiddleware`] is an actix-web [`Transform`](actix_web::dev::Transform) that creates a
//! per-request audit record (in the request extensions) before the handler runs, and after the handler produced its response hands the
//! finished event to audit-core's background [`Emitter`] without
//! waiting for anything. The response, its status and its latency are never changed.
//!
//! ```
//! use actix_web::{App, HttpMessage, HttpResponse, delete, post, web};
//! use audit_actix::{Actor, AuditCtx, AuditMiddleware, Emitter, OrganizationId, Target};
//! use audit_core::emitter::MemorySink;
//!
//! // One line per handler: the action name is checked at compile time, `{id}` becomes a target.
//! #[audit_actix::action("team.deleted", targets(team = "id"))]
//! #[delete("/teams/{id}")]
//! async fn delete_team(path: web::Path<String>) -> HttpResponse {
//!     HttpResponse::NoContent().finish()
//! }
//!
//! // Handlers can enrich (or suppress) the event through the `AuditCtx` extractor.
//! #[audit_actix::action("team.created")]
//! #[post("/teams")]
//! async fn create_team(audit: AuditCtx) -> HttpResponse {
//!     audit.target(Target::new("team_42", "team").name("Platform"));
//!     HttpResponse::Created().finish()
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let emitter = Emitter::builder(MemorySink::new()).start(); // production: a WorkOS `Client`
//! let audit = AuditMiddleware::new(emitter.clone());
//! let app = App::new()
//!     .wrap(audit)
//!     // the app's own auth middleware (outermost) puts the actor and organization in the extensions
//!     .wrap_fn(|req, srv| {
//!         req.extensions_mut().insert(Actor::new("user_01", "user"));
//!         req.extensions_mut().insert(OrganizationId::new("org_01").unwrap());
//!         actix_web::dev::Service::call(srv, req)
//!     })
//!     .service(create_team)
//!     .service(delete_team);
//! # let _ = actix_web::test::init_service(app).await;
//! # });
//! ```
//!
//! See the crate README for the full feature list, the differences with audit-tower and the
//! shutdown pattern, and `examples/actix` for a runnable app.
//!
//! # Runtime
//!
//! actix-web runs each worker on its own single-threaded runtime and its futures are not `Send`.
//! The middleware only touches `Send + Sync` handles ([`Emitter`],
//! the record's `Arc<Mutex<..>>`) and calls the synchronous, non-blocking
//! [`Emitter::try_emit`], so it works unchanged from any
//! worker. Start the emitter once in `main` (its senders run on the main actix system runtime, or
//! on a runtime of your choice with `start_on`), and after `HttpServer::run().await` returns (actix
//! handles SIGINT/SIGTERM with a graceful stop), call
//! [`Emitter::shutdown`] to deliver what is still queued.
//!
//! # Security
//!
//! The client's location comes from audit-core's client-IP rules applied to the socket peer
//! ([`ServiceRequest::peer_addr`](actix_web::dev::ServiceRequest::peer_addr)); forwarding headers
//! are read only when that peer is a configured trusted proxy
//! ([`Builder::trusted_proxies`](audit_core::adapter::Builder::trusted_proxies)). actix-web's own
//! [`ConnectionInfo::realip_remote_addr`](actix_web::dev::ConnectionInfo::realip_remote_addr) is
//! never used: it returns whatever a client put in `Forwarded`/`X-Forwarded-For`.
#![cfg_attr(docsrs, feature(doc_cfg))]

// Lets `#[action]`'s absolute `::audit_actix::..` paths resolve inside this crate too.
#[allow(unused_extern_crates)]
extern crate self as audit_actix;

mod extract;
mod middleware;

// What an app's audit setup touches, so that the quickstart needs this crate only.
pub use audit_core::client::Client;
pub use audit_core::client_ip::{ClientIpConfig, ForwardedHeader};
pub use audit_core::emitter::Emitter;
pub use audit_core::request::{
    AuditHandle, AuditPolicy, CancelledRequests, MissingActor, Outcomes, SkipCounters, SkipReason,
};
pub use audit_core::{Actor, OrganizationId, Target};
pub use extract::{AuditCtx, AuditDisabled, MissingAuditMiddleware};
pub use middleware::{
    ActorResolver, AuditMiddleware, AuditMiddlewareBuilder, AuditMiddlewareService, OrganizationResolver,
};

/// Names a handler's WorkOS action: `#[audit_actix::action("team.deleted", targets(team = "id"))]`.
///
/// Place it above actix's route attribute (`#[post(..)]`, `#[delete(..)]`) or on a handler
/// registered with `web::resource(..).route(..)`. The action name is checked at compile time;
/// `targets(type = "param")` turns the path parameter `{param}` into a target of that type. The
/// attribute adds a hidden first extractor argument that records the action; on a route not
/// wrapped by [`AuditMiddleware`] it answers a 500 naming the middleware
/// ([`MissingAuditMiddleware`]). See the `audit-macros` crate for the full syntax.
pub use audit_macros::actix_action as action;

/// Items the `#[action]` attribute expands to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::extract::Annotation;
    pub use audit_core::Action;
    pub use audit_core::registry::__private as registry;
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
