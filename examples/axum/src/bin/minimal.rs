//! The README's axum quickstart as a program: `cargo run -p example-axum --bin minimal-axum`, then
//! `curl -X POST localhost:3000/teams`. Without `WORKOS_API_KEY` it starts audit-testkit (a
//! WorkOS-compatible server) in-process. `LISTEN_ADDR` (default `127.0.0.1:3000`); Ctrl-C stops it
//! and prints the delivery report.

use std::net::SocketAddr;
use std::time::Duration;

use audit_testkit::TestKit;
use audit_tower::{Actor, AuditCtx, AuditLayer, Client, Emitter, OrganizationId, Target, action};
use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, post};

#[action("team.created")] // one line per handler, checked at compile time
async fn create_team(audit: AuditCtx) -> &'static str {
    audit.target(Target::new("team_42", "team").name("Platform"));
    "created"
}

#[action("team.deleted", targets(team = "id"))] // the path's {id} becomes a target of type "team"
async fn delete_team() -> &'static str {
    "deleted"
}

/// The organization of every request: with a WorkOS key, one of yours.
const ORG: &str = "org_01EHWNCE74X7JSDV0X3SZ3KJNY";

// Your own auth layer puts the actor and the organization into the request extensions.
async fn auth(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Actor::new("user_01", "user"));
    req.extensions_mut().insert(OrganizationId::new(ORG).unwrap());
    next.run(req).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without WORKOS_API_KEY: a WorkOS-compatible server (audit-testkit) in this process.
    let kit = match std::env::var_os("WORKOS_API_KEY") {
        Some(_) => None,
        None => Some(TestKit::builder().org(ORG).start().await?),
    };
    let client = match &kit {
        Some(kit) => Client::builder()
            .api_key("sk_test_local")
            .base_url(kit.url())
            .build()?,
        None => Client::from_env()?, // WORKOS_API_KEY, WORKOS_BASE_URL
    };
    let emitter = Emitter::builder(client).start(); // background delivery
    let audit = AuditLayer::builder(emitter.clone()).trusted_proxies(["10.0.0.0/8"])?;
    let app = Router::new()
        .route("/teams", post(create_team))
        .route("/teams/{id}", delete(delete_team))
        .layer(audit.build())
        .layer(middleware::from_fn(auth));
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = emitter.shutdown(Duration::from_secs(10)).await; // flush on the way out
    println!("{report:?}");
    Ok(())
}
