//! The README's actix-web quickstart as a program: `cargo run -p example-actix --bin minimal-actix`,
//! then `curl -X POST localhost:3000/teams`. Without `WORKOS_API_KEY` it starts audit-testkit (a
//! WorkOS-compatible server) in-process. `LISTEN_ADDR` (default `127.0.0.1:3000`); Ctrl-C stops it
//! and prints the delivery report.

use std::time::Duration;

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, delete, post};
use audit_actix::{Actor, AuditCtx, AuditMiddleware, Client, Emitter, OrganizationId, Target, action};
use audit_testkit::TestKit;

#[action("team.created")]
#[post("/teams")]
async fn create_team(audit: AuditCtx) -> HttpResponse {
    audit.target(Target::new("team_42", "team").name("Platform"));
    HttpResponse::Created().finish()
}

#[action("team.deleted", targets(team = "id"))]
#[delete("/teams/{id}")]
async fn delete_team() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// The organization of every request: with a WorkOS key, one of yours.
const ORG: &str = "org_01EHWNCE74X7JSDV0X3SZ3KJNY";

#[actix_web::main]
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
    let emitter = Emitter::builder(client).start();
    let audit = AuditMiddleware::builder(emitter.clone())
        .trusted_proxies(["10.0.0.0/8"])?
        .build();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(audit.clone())
            .wrap_fn(|req, srv| {
                // your own auth: the actor and the organization go into the extensions
                req.extensions_mut().insert(Actor::new("user_01", "user"));
                req.extensions_mut().insert(OrganizationId::new(ORG).unwrap());
                srv.call(req)
            })
            .service(create_team)
            .service(delete_team)
    })
    .bind(std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into()))?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await?; // stops gracefully on SIGINT/SIGTERM
    let report = emitter.shutdown(Duration::from_secs(10)).await;
    println!("{report:?}");
    Ok(())
}
