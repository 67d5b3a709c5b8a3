//! A small actix-web app whose audited routes become WorkOS Audit Log events.
//!
//! The same app as `examples/axum`, in actix-web's idioms: the same routes, status codes,
//! environment variables and standard output. The routes ([`routes`]) are a library so that the
//! binary, its tests and `cargo xtask bench` run the same app. [`run`] is the whole program:
//! configuration from the environment ([`Settings`]), the emitter (WorkOS, an in-process
//! audit-testkit, or memory), the server, and its graceful shutdown with the emitter's report.
//!
//! # Runtime and shutdown
//!
//! actix-web runs each worker on its own single-threaded runtime, and handler futures are not
//! `Send`. The emitter is started once in [`run`], on the main actix system runtime (its sender
//! tasks run there, away from the workers), and every worker gets a clone of the same
//! [`AuditMiddleware`]: the middleware only calls the synchronous, non-blocking
//! `Emitter::try_emit`, which is fine from any thread. On SIGTERM or Ctrl-C the server stops
//! taking requests and finishes the ones in flight (`ServerHandle::stop(true)`);
//! `HttpServer::run().await` then returns and [`run`] calls `Emitter::shutdown`, which delivers
//! what is queued (up to 10 s) and reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, Error, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use audit_actix::{AuditCtx, AuditDisabled, AuditMiddleware, action};
use audit_core::client_ip::ClientIpConfig;
use audit_core::emitter::Emitter;
use audit_core::{Actor, OrganizationId, Target};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The demo users: `(id, email, name)`. Every password is `demo`.
pub const USERS: &[(&str, &str, &str)] = &[
    ("user_1", "ada@example.com", "Ada Lovelace"),
    ("user_2", "grace@example.com", "Grace Hopper"),
];

/// The password of every demo user.
pub const PASSWORD: &str = "demo";

/// The app's shared state (one for all workers, shared through `web::Data`).
#[derive(Debug)]
pub struct AppState {
    organization: OrganizationId,
    teams: Mutex<BTreeMap<String, String>>,
    next_team: AtomicU64,
    outbox: Option<audit_postgres::Outbox>,
}

impl AppState {
    /// State for an app whose users all belong to `organization`.
    pub fn new(organization: OrganizationId) -> web::Data<Self> {
        Self::with_outbox(organization, None)
    }

    /// State for an app with a PostgreSQL outbox (`DATABASE_URL`): `POST /invoices/{id}/pay`
    /// then writes the payment and its audit event in one transaction.
    pub fn with_outbox(
        organization: OrganizationId,
        outbox: Option<audit_postgres::Outbox>,
    ) -> web::Data<Self> {
        web::Data::new(Self {
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

/// The app's routes, for `App::configure`. Wrap the `App` with [`AuditMiddleware`] (or register
/// [`AuditDisabled`] as app data to run without audit), and register the [`AppState`]:
///
/// ```
/// use actix_web::App;
/// use audit_core::OrganizationId;
/// use example_actix::{AppState, routes};
///
/// let state = AppState::new(OrganizationId::new("org_1").unwrap());
/// let _app = App::new().app_data(state).app_data(audit_actix::AuditDisabled).configure(routes);
/// ```
///
/// | route | action | target |
/// |---|---|---|
/// | `POST /sessions` | `user.signed_in` | |
/// | `POST /teams` | `team.created` | the new team |
/// | `DELETE /teams/{id}` | `team.deleted` | `{id}`, type `team` |
/// | `GET /invoices/{id}` | `invoice.viewed` | `{id}`, type `invoice` |
/// | `POST /invoices/{id}/pay` | `invoice.paid` | `{id}`, type `invoice` |
/// | `GET /health` | none | |
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().error_handler(json_error))
        .service(web::resource("/sessions").route(web::post().to(sign_in)))
        .service(web::resource("/health").route(web::get().to(health)))
        .service(
            web::resource("/teams")
                .wrap(from_fn(require_user))
                .route(web::post().to(create_team)),
        )
        .service(
            web::resource("/teams/{id}")
                .wrap(from_fn(require_user))
                .route(web::delete().to(delete_team)),
        )
        .service(
            web::resource("/invoices/{id}")
                .wrap(from_fn(require_user))
                .route(web::get().to(view_invoice)),
        )
        .service(
            web::resource("/invoices/{id}/pay")
                .wrap(from_fn(require_user))
                .route(web::post().to(pay_invoice)),
        );
}

/// JSON body errors with the statuses axum's `Json` uses: 415 without a JSON content type, 422
/// for a well-formed body of the wrong shape, 400 otherwise.
fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> Error {
    let status = match &err {
        JsonPayloadError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonPayloadError::Deserialize(e) if e.is_data() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    actix_web::error::InternalError::from_response(
        err.to_string(),
        HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(err.to_string()),
    )
    .into()
}

/// The app's own authentication: `Authorization: Bearer user_<id>` (the token `POST /sessions`
/// returns) puts an [`Actor`] and the app's [`OrganizationId`] into the request extensions,
/// where the audit annotation finds them. Anything else is answered `401`.
async fn require_user(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| {
            t.strip_prefix("user_")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        })
        .map(str::to_owned);
    let organization = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.organization.clone());
    let (Some(user), Some(organization)) = (user, organization) else {
        let response = HttpResponse::Unauthorized().json(json!({"error": "sign in first: POST /sessions"}));
        return Ok(req.into_response(response).map_into_right_body());
    };
    let mut actor = Actor::new(user.as_str(), "user");
    if let Some((_, _, name)) = USERS.iter().find(|(id, _, _)| *id == user) {
        actor = actor.name(*name);
    }
    req.extensions_mut().insert(actor);
    req.extensions_mut().insert(organization);
    Ok(next.call(req).await?.map_into_left_body())
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
async fn sign_in(state: web::Data<AppState>, audit: AuditCtx, body: web::Json<SignIn>) -> HttpResponse {
    let Some((id, _, name)) = USERS.iter().find(|(_, email, _)| *email == body.email) else {
        return HttpResponse::Unauthorized().finish();
    };
    if body.password != PASSWORD {
        return HttpResponse::Unauthorized().finish();
    }
    // No auth middleware runs before sign-in: the handler names the actor.
    audit.actor(Actor::new(*id, "user").name(*name));
    audit.organization(state.organization.clone());
    HttpResponse::Ok().json(Session {
        token: (*id).to_owned(),
    })
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
async fn create_team(state: web::Data<AppState>, audit: AuditCtx, body: web::Json<NewTeam>) -> HttpResponse {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return HttpResponse::UnprocessableEntity()
            .content_type("text/plain; charset=utf-8")
            .body("a team name has 1 to 100 characters");
    }
    let id = format!("team_{}", state.next_team.fetch_add(1, Ordering::Relaxed));
    state.teams().insert(id.clone(), name.to_owned());
    audit.target(Target::new(&id, "team").name(name));
    HttpResponse::Created().json(Team {
        id,
        name: name.to_owned(),
    })
}

#[action("team.deleted", targets(team = "id"))]
async fn delete_team(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    match state.teams().remove(id.as_str()) {
        Some(_) => HttpResponse::NoContent().finish(),
        None => HttpResponse::NotFound().finish(),
    }
}

#[action("invoice.viewed", targets(invoice = "id"))]
async fn view_invoice(id: web::Path<String>) -> HttpResponse {
    if !id.starts_with("inv_") {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok()
        .json(json!({"id": id.as_str(), "amount_cents": 4200, "currency": "usd", "status": "paid"}))
}

/// With the outbox, the payment row and its audit event are written in one transaction (the
/// middleware then emits nothing more); without it, the middleware emits the event after the
/// response.
#[action("invoice.paid", targets(invoice = "id"))]
async fn pay_invoice(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    audit: AuditCtx,
) -> HttpResponse {
    if !id.starts_with("inv_") {
        return HttpResponse::NotFound().finish();
    }
    let Some(outbox) = &state.outbox else {
        return HttpResponse::Ok().json(json!({"id": id.as_str(), "status": "paid"}));
    };
    let paid_by = req
        .extensions()
        .get::<Actor>()
        .map(|a| a.id.clone())
        .unwrap_or_default();
    match common::record_payment(outbox, &audit, &id, &paid_by).await {
        Ok(key) => HttpResponse::Ok()
            .json(json!({"id": id.as_str(), "status": "paid", "audit_idempotency_key": key})),
        Err(e) => HttpResponse::InternalServerError().body(format!("payment not recorded: {e}")),
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok")
}

#[path = "../../common.rs"]
mod common;
pub use common::{
    AuditSetup, Destination, Settings, exit_code, init_tracing, schemas, shutdown_json, shutdown_signal,
};

/// The audit middleware of this app, with the configured client-IP rules.
pub fn audit_middleware(emitter: Emitter, client_ip: ClientIpConfig) -> AuditMiddleware {
    AuditMiddleware::builder(emitter).client_ip(client_ip).build()
}

/// The whole program: read [`Settings`], start the emitter, serve until SIGTERM or Ctrl-C, flush
/// and print the shutdown report.
///
/// Standard output: first one JSON line
/// `{"listening":"http://127.0.0.1:3000","workos_base_url":"…","organization_id":"…","audit":"…"}`,
/// then readable notes; at shutdown one JSON line `{"shutdown":{…}}` and a readable summary.
///
/// Call it from the actix system runtime (`#[actix_web::main]`): the emitter's senders are
/// spawned on it.
///
/// # Errors
///
/// A message for a bad setting, a port that cannot be bound, or a failing server.
pub async fn run(settings: Settings) -> Result<(), String> {
    let setup = settings.start_audit().await?;
    let audit = setup
        .emitter
        .clone()
        .map(|e| audit_middleware(e, settings.client_ip.clone()));
    let skipped = audit.as_ref().map(AuditMiddleware::skip_counters);
    // Events written from requests fall back on the middleware's policy.
    let outbox = match (&setup.outbox, &audit) {
        (Some(outbox), Some(audit)) => Some(
            outbox
                .clone()
                .with_request_policy(audit.settings().policy.clone()),
        ),
        _ => None,
    };
    let state = AppState::with_outbox(setup.organization.clone(), outbox);

    // Our own signal handling (installed before the address is announced, so a SIGTERM sent
    // right after it is not missed); actix's is switched off with `disable_signals`.
    let stop = shutdown_signal();
    let bind_error = |e: std::io::Error| format!("LISTEN_ADDR {}: {e}", settings.listen_addr);
    // One `HttpServer` per branch: the App types differ, the running servers do not.
    let (server, addrs) = match audit {
        Some(audit) => {
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(audit.clone())
                    .app_data(state.clone())
                    .configure(routes)
            })
            .disable_signals()
            .shutdown_timeout(10)
            .bind(settings.listen_addr)
            .map_err(bind_error)?;
            let addrs = server.addrs();
            (server.run(), addrs)
        }
        None => {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(AuditDisabled)
                    .app_data(state.clone())
                    .configure(routes)
            })
            .disable_signals()
            .shutdown_timeout(10)
            .bind(settings.listen_addr)
            .map_err(bind_error)?;
            let addrs = server.addrs();
            (server.run(), addrs)
        }
    };
    let addr: SocketAddr = addrs
        .first()
        .copied()
        .ok_or_else(|| format!("LISTEN_ADDR {}: no address bound", settings.listen_addr))?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        stop.await;
        // Stop accepting, let the requests in flight finish (up to the shutdown timeout).
        handle.stop(true).await;
    });
    setup.announce("example-actix", addr, &settings);
    server.await.map_err(|e| format!("server: {e}"))?;
    setup.finish("example-actix", skipped).await;
    Ok(())
}
