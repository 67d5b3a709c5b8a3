//! A small axum app whose audited routes become WorkOS Audit Log events.
//!
//! The router ([`router`]) is a library so that the binary, its tests and `cargo xtask bench` run
//! the same app. [`run`] is the whole program: configuration from the environment ([`Settings`]),
//! the emitter (WorkOS, an in-process audit-testkit, or memory), the server and its graceful
//! shutdown with the emitter's report.

/// The repository's README: its axum and actix quickstarts are compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct RootReadme;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::Emitter;
use audit_core::{Actor, OrganizationId, Target};
use audit_tower::{AuditCtx, AuditDisabled, AuditLayer, action};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The demo users: `(id, email, name)`. Every password is `demo`.
pub const USERS: &[(&str, &str, &str)] = &[
    ("user_1", "ada@example.com", "Ada Lovelace"),
    ("user_2", "grace@example.com", "Grace Hopper"),
];

/// The password of every demo user.
pub const PASSWORD: &str = "demo";

/// The app's shared state.
#[derive(Debug)]
pub struct AppState {
    organization: OrganizationId,
    teams: Mutex<BTreeMap<String, String>>,
    next_team: AtomicU64,
    outbox: Option<audit_postgres::Outbox>,
}

impl AppState {
    /// State for an app whose users all belong to `organization`.
    pub fn new(organization: OrganizationId) -> Arc<Self> {
        Self::with_outbox(organization, None)
    }

    /// State for an app with a PostgreSQL outbox (`DATABASE_URL`): `POST /invoices/{id}/pay`
    /// then writes the payment and its audit event in one transaction.
    pub fn with_outbox(organization: OrganizationId, outbox: Option<audit_postgres::Outbox>) -> Arc<Self> {
        Arc::new(Self {
            organization,
            teams: Mutex::default(),
            next_team: AtomicU64::new(1),
            outbox,
        })
    }

    fn teams(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        audit_core::sync::lock(&self.teams)
    }
}

/// The app's routes. With `audit`, every request passes through the audit layer; without it,
/// annotated handlers run with audit switched off ([`AuditDisabled`]).
///
/// | route | action | target |
/// |---|---|---|
/// | `POST /sessions` | `user.signed_in` | |
/// | `POST /teams` | `team.created` | the new team |
/// | `DELETE /teams/{id}` | `team.deleted` | `{id}`, type `team` |
/// | `GET /invoices/{id}` | `invoice.viewed` | `{id}`, type `invoice` |
/// | `POST /invoices/{id}/pay` | `invoice.paid` | `{id}`, type `invoice` |
/// | `GET /health` | none | |
pub fn router(state: Arc<AppState>, audit: Option<AuditLayer>) -> Router {
    let protected = Router::new()
        .route("/teams", post(create_team))
        .route("/teams/{id}", delete(delete_team))
        .route("/invoices/{id}", get(view_invoice))
        .route("/invoices/{id}/pay", post(pay_invoice))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_user));
    let app = Router::new()
        .route("/sessions", post(sign_in))
        .route("/health", get(health))
        .merge(protected)
        .with_state(state);
    match audit {
        Some(layer) => app.layer(layer),
        None => app.layer(Extension(AuditDisabled)),
    }
}

/// The app's own authentication: `Authorization: Bearer user_<id>` (the token `POST /sessions`
/// returns) puts an [`Actor`] and the app's [`OrganizationId`] into the request extensions,
/// where the audit annotation finds them. Anything else is answered `401`.
async fn require_user(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(user) = token.filter(|t| {
        t.strip_prefix("user_")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
    }) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "sign in first: POST /sessions"})),
        )
            .into_response();
    };
    let mut actor = Actor::new(user, "user");
    if let Some((_, _, name)) = USERS.iter().find(|(id, _, _)| *id == user) {
        actor = actor.name(*name);
    }
    req.extensions_mut().insert(actor);
    req.extensions_mut().insert(state.organization.clone());
    next.run(req).await
}

/// `POST /sessions` body.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    /// The user's email.
    pub email: String,
    /// The password (`demo`).
    pub password: String,
}

/// `POST /sessions` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    /// The bearer token.
    pub token: String,
}

#[action("user.signed_in")]
async fn sign_in(
    State(state): State<Arc<AppState>>,
    audit: AuditCtx,
    Json(body): Json<SignIn>,
) -> Result<Json<Session>, StatusCode> {
    let Some((id, _, name)) = USERS.iter().find(|(_, email, _)| *email == body.email) else {
        return Err(StatusCode::UNAUTHORIZED);
    };
    if body.password != PASSWORD {
        return Err(StatusCode::UNAUTHORIZED);
    }
    // No auth layer runs before sign-in: the handler names the actor.
    audit.actor(Actor::new(*id, "user").name(*name));
    audit.organization(state.organization.clone());
    Ok(Json(Session {
        token: (*id).to_owned(),
    }))
}

/// `POST /teams` body.
#[derive(Debug, Deserialize)]
pub struct NewTeam {
    /// The team's name.
    pub name: String,
}

/// A team.
#[derive(Debug, Serialize, Deserialize)]
pub struct Team {
    /// `team_<n>`.
    pub id: String,
    /// The name.
    pub name: String,
}

#[action("team.created", targets(team))]
async fn create_team(
    State(state): State<Arc<AppState>>,
    audit: AuditCtx,
    Json(body): Json<NewTeam>,
) -> Result<(StatusCode, Json<Team>), (StatusCode, &'static str)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "a team name has 1 to 100 characters",
        ));
    }
    let id = format!("team_{}", state.next_team.fetch_add(1, Ordering::Relaxed));
    state.teams().insert(id.clone(), name.to_owned());
    audit.target(Target::new(&id, "team").name(name));
    Ok((
        StatusCode::CREATED,
        Json(Team {
            id,
            name: name.to_owned(),
        }),
    ))
}

#[action("team.deleted", targets(team = "id"))]
async fn delete_team(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> StatusCode {
    match state.teams().remove(&id) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

#[action("invoice.viewed", targets(invoice = "id"))]
async fn view_invoice(Path(id): Path<String>) -> Result<Json<serde_json::Value>, StatusCode> {
    if !id.starts_with("inv_") {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Json(
        json!({"id": id, "amount_cents": 4200, "currency": "usd", "status": "paid"}),
    ))
}

/// With the outbox, the payment row and its audit event are written in one transaction (the
/// layer then emits nothing more); without it, the layer emits the event after the response.
#[action("invoice.paid", targets(invoice = "id"))]
async fn pay_invoice(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Extension(actor): Extension<Actor>,
    audit: AuditCtx,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    if !id.starts_with("inv_") {
        return Err((StatusCode::NOT_FOUND, "no such invoice".to_owned()));
    }
    let Some(outbox) = &state.outbox else {
        return Ok(Json(json!({"id": id, "status": "paid"})));
    };
    let key = common::record_payment(outbox, &audit, &id, &actor.id)
        .await
        .map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("payment not recorded: {e}"),
            )
        })?;
    Ok(Json(
        json!({"id": id, "status": "paid", "audit_idempotency_key": key}),
    ))
}

async fn health() -> &'static str {
    "ok"
}

#[path = "../../common.rs"]
mod common;
pub use common::{
    AuditSetup, Destination, Settings, exit_code, init_tracing, schemas, shutdown_json, shutdown_signal,
};

/// The audit layer of this app, with the configured client-IP rules.
pub fn audit_layer(emitter: Emitter, client_ip: ClientIpConfig) -> AuditLayer {
    AuditLayer::builder(emitter).client_ip(client_ip).build()
}

/// The whole program: read [`Settings`], start the emitter, serve until SIGTERM or Ctrl-C, flush
/// and print the shutdown report.
///
/// Standard output: first one JSON line
/// `{"listening":"http://127.0.0.1:3000","workos_base_url":"…","organization_id":"…","audit":"…"}`,
/// then readable notes; at shutdown one JSON line `{"shutdown":{…}}` and a readable summary.
///
/// # Errors
///
/// A message for a bad setting, a port that cannot be bound, or a failing server.
pub async fn run(settings: Settings) -> Result<(), String> {
    let setup = settings.start_audit().await?;
    let layer = setup
        .emitter
        .clone()
        .map(|e| audit_layer(e, settings.client_ip.clone()));
    let skipped = layer.as_ref().map(AuditLayer::skip_counters);
    // Events written from requests fall back on the layer's policy.
    let outbox = match (&setup.outbox, &layer) {
        (Some(outbox), Some(layer)) => Some(
            outbox
                .clone()
                .with_request_policy(layer.settings().policy.clone()),
        ),
        _ => None,
    };
    let app = router(AppState::with_outbox(setup.organization.clone(), outbox), layer);

    let stop = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .map_err(|e| format!("LISTEN_ADDR {}: {e}", settings.listen_addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    setup.announce("example-axum", addr, &settings);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| format!("server: {e}"))?;
    setup.finish("example-axum", skipped).await;
    Ok(())
}
