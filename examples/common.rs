//! What the axum and actix examples share, word for word: their settings from the environment,
//! where their events go, the shutdown report and the signal that stops them. Each example
//! includes this file as a module (`#[path = "../../common.rs"] mod common;`), so the two apps
//! cannot drift apart on anything but their framework.

use std::net::SocketAddr;
use std::time::Duration;

use audit_core::OrganizationId;
use audit_core::client_ip::ClientIpConfig;
use audit_core::config::AuditSettings;
use audit_core::emitter::{
    DiscardSink, Emitter, EmitterBuilder, MemorySink, Overflow, ShutdownReport, Sink, SpoolConfig, Stats,
};
use audit_core::request::{SkipCounters, SkipReason};
use audit_postgres::{Outbox, RateLimitKey, Relay};
use serde_json::json;

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// WorkOS (or any compatible server) at `WORKOS_BASE_URL` with `WORKOS_API_KEY`.
    Workos,
    /// An audit-testkit started inside this process (no `WORKOS_API_KEY`).
    EmbeddedTestkit,
    /// A `MemorySink`, which keeps every event (`AUDIT_SINK=memory`).
    Memory,
    /// A `DiscardSink`, which only counts events (`AUDIT_SINK=discard`, for benchmarks of the
    /// request path).
    Discard,
    /// No audit layer or middleware at all (`AUDIT_DISABLED=1`, for benchmarks).
    Disabled,
}

impl Destination {
    /// The name in the app's first output line.
    pub fn label(self) -> &'static str {
        match self {
            Destination::Workos => "workos",
            Destination::EmbeddedTestkit => "embedded-testkit",
            Destination::Memory => "memory",
            Destination::Discard => "discard",
            Destination::Disabled => "disabled",
        }
    }
}

/// The app's configuration, from the environment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// `LISTEN_ADDR`, default `127.0.0.1:3000`.
    pub listen_addr: SocketAddr,
    /// The client's and the emitter's settings ([`AuditSettings::from_env`]): `WORKOS_API_KEY`
    /// (shown redacted), `WORKOS_BASE_URL`, `AUDIT_TIMEOUT`, `AUDIT_CONNECT_TIMEOUT`,
    /// `AUDIT_RATE_LIMIT`, `AUDIT_SENDERS`, `AUDIT_SPOOL`.
    pub audit: AuditSettings,
    /// `WORKOS_ORGANIZATION_ID`.
    pub organization_id: Option<String>,
    /// `AUDIT_TRUSTED_PROXIES`: comma-separated CIDR ranges, none by default.
    pub client_ip: ClientIpConfig,
    /// `AUDIT_DISABLED=1`: no audit layer or middleware.
    pub disabled: bool,
    /// `AUDIT_SINK`: `memory` (keep every event in memory) or `discard` (count them) instead of
    /// sending them anywhere.
    pub local_sink: Option<Destination>,
    /// `DATABASE_URL` naming a PostgreSQL database (`postgres://` or `postgresql://`): events go
    /// through the audit-postgres outbox, delivered by this instance's relays under one rate
    /// limit for every instance using the database.
    pub database_url: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Reads the environment.
    ///
    /// # Errors
    ///
    /// A message naming the variable at fault.
    pub fn from_env() -> Result<Self, String> {
        let listen_addr = env("LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
            .parse()
            .map_err(|e| format!("LISTEN_ADDR: {e} (expected for example 127.0.0.1:3000)"))?;
        let database_url = match env("DATABASE_URL") {
            None => None,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url),
            Some(_) => {
                return Err(
                    "DATABASE_URL: only a PostgreSQL database (postgres://…) is supported; unset it to keep events in memory"
                        .to_owned(),
                );
            }
        };
        let local_sink = match env("AUDIT_SINK").as_deref() {
            None => None,
            Some("memory") => Some(Destination::Memory),
            Some("discard") => Some(Destination::Discard),
            Some(other) => return Err(format!("AUDIT_SINK: {other:?} is not `memory` or `discard`")),
        };
        Ok(Self {
            listen_addr,
            audit: AuditSettings::from_env().map_err(|e| e.to_string())?,
            organization_id: env("WORKOS_ORGANIZATION_ID"),
            client_ip: ClientIpConfig::from_env().map_err(|e| e.to_string())?,
            disabled: env("AUDIT_DISABLED").is_some_and(|v| v != "0" && v != "false"),
            local_sink,
            database_url,
        })
    }

    /// Where events go under these settings.
    pub fn destination(&self) -> Destination {
        if self.disabled {
            Destination::Disabled
        } else if let Some(local) = self.local_sink {
            local
        } else if self.audit.api_key.is_some() {
            Destination::Workos
        } else {
            Destination::EmbeddedTestkit
        }
    }

    /// An emitter builder for `sink` with these settings' rate limit and senders. Start it inside
    /// the runtime that serves the app (under actix-web, the actix system runtime of
    /// `#[actix_web::main]`): the emitter's senders are spawned on it.
    pub fn emitter(&self, sink: impl Sink) -> EmitterBuilder {
        self.audit.emitter(sink)
    }
}

/// The machine-readable shutdown report: one JSON object.
pub fn shutdown_json(
    report: &ShutdownReport,
    stats: &Stats,
    skipped: &SkipCounters,
    testkit_events: Option<usize>,
) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    json!({
        "shutdown": {
            "accepted": stats.accepted,
            "delivered": report.delivered,
            "dead_lettered": report.dead_lettered,
            "dropped": report.dropped.total(),
            "pending_at_deadline": report.pending_at_deadline,
            "retried": stats.retried,
            "emit_failures": skipped.emit_failures(),
            "invalid_events": skipped.invalid_events(),
            "cancelled": skipped.cancelled(),
            "skipped": {
                "not_annotated": skipped.get(SkipReason::NotAnnotated),
                "suppressed": skipped.get(SkipReason::Suppressed),
                "outcome": skipped.get(SkipReason::Outcome),
                "missing_actor": skipped.get(SkipReason::MissingActor),
                "missing_organization": skipped.get(SkipReason::MissingOrganization),
            },
            "delivery_latency_ms": {"p50": ms(stats.latency_p50), "p90": ms(stats.latency_p90), "p99": ms(stats.latency_p99)},
            "last_error": stats.last_error,
            "rejections": report.rejections.iter().map(|r| json!({
                "action": r.action,
                "reason": r.reason.as_str(),
                "last_hour": r.last_hour,
                "total": r.total,
                "detail": r.detail,
                "fix": r.fix,
            })).collect::<Vec<_>>(),
            "testkit_events": testkit_events,
        }
    })
}

/// A future resolving on SIGTERM or Ctrl-C. The handlers are installed when this function is
/// called (not when the future is first polled), so a signal sent right after the app announced
/// its address is not missed.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {}
                () = wait(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What [`Settings::start_audit`] set up: where events go and the organization of the demo users.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuditSetup {
    /// The emitter, unless audit is disabled.
    pub emitter: Option<Emitter>,
    /// The organization of the demo users.
    pub organization: OrganizationId,
    /// The in-process audit-testkit, when no `WORKOS_API_KEY` was given.
    pub testkit: Option<audit_testkit::TestKit>,
    /// Where events are sent.
    pub workos_base_url: String,
    /// Readable notes for standard output.
    pub notes: Vec<String>,
    /// The PostgreSQL outbox, when `DATABASE_URL` names one.
    pub outbox: Option<Outbox>,
    /// This instance's relays delivering from the outbox.
    pub relay: Option<Relay>,
}

impl Settings {
    /// Starts what these settings ask for: the embedded audit-testkit when there is no key, the
    /// spool, and the emitter (on the current runtime: under actix-web, the actix system runtime).
    ///
    /// # Errors
    ///
    /// A message naming the setting at fault.
    pub async fn start_audit(&self) -> Result<AuditSetup, String> {
        let destination = self.destination();
        let mut notes = Vec::new();
        let mut testkit = None;
        let mut workos_base_url = self
            .audit
            .base_url
            .clone()
            .unwrap_or_else(|| audit_core::client::DEFAULT_BASE_URL.to_owned());
        let organization = match destination {
            Destination::EmbeddedTestkit => {
                let kit = audit_testkit::TestKit::start()
                    .await
                    .map_err(|e| format!("starting the embedded audit-testkit: {e}"))?;
                workos_base_url = kit.url();
                notes.push(format!(
                    "WORKOS_API_KEY is not set: started audit-testkit in-process at {} (events stay in this process)",
                    kit.url()
                ));
                let org = kit.organization_id().to_owned();
                testkit = Some(kit);
                org
            }
            Destination::Workos => self.organization_id.clone().ok_or(
                "WORKOS_ORGANIZATION_ID: required with WORKOS_API_KEY (the organization of the demo users)",
            )?,
            Destination::Memory | Destination::Discard | Destination::Disabled => self
                .organization_id
                .clone()
                .unwrap_or_else(|| "org_01EXAMPLE0000000000000000".to_owned()),
        };
        let organization =
            OrganizationId::new(organization).map_err(|e| format!("WORKOS_ORGANIZATION_ID: {e}"))?;
        let mut spool = match &self.audit.spool {
            Some(path) => {
                let spool = SpoolConfig::new(path)
                    .open()
                    .map_err(|e| format!("AUDIT_SPOOL: {e}"))?;
                notes.push(format!(
                    "durable spool {}: {} events kept from an earlier run",
                    path.display(),
                    spool.recovered()
                ));
                Some(spool)
            }
            None => None,
        };
        let mut start = |builder: EmitterBuilder| match spool.take() {
            Some(spool) => builder.spool(spool).overflow(Overflow::SpillToSpool).start(),
            None => builder.start(),
        };
        let (mut outbox, mut relay) = (None, None);
        let emitter = match destination {
            Destination::Disabled => None,
            Destination::Memory => Some(start(self.emitter(MemorySink::new()))),
            Destination::Discard => Some(start(self.emitter(DiscardSink::new()))),
            Destination::Workos | Destination::EmbeddedTestkit => {
                let (client, key) = if destination == Destination::Workos {
                    let client = self.audit.client().map_err(|e| e.to_string())?;
                    (client, env("WORKOS_API_KEY").unwrap_or_default())
                } else {
                    // The same settings (timeouts), pointed at the in-process testkit with a test key.
                    let mut embedded = self.audit.clone();
                    embedded.api_key = Some("sk_test_embedded".into());
                    embedded.base_url = Some(workos_base_url.clone());
                    let client = embedded.client().map_err(|e| e.to_string())?;
                    (client, "sk_test_embedded".to_owned())
                };
                match &self.database_url {
                    Some(url) => {
                        let (db, relays) = self.start_outbox(url, client, &key).await?;
                        notes.push(format!(
                            "DATABASE_URL: events go through the PostgreSQL outbox (schema {}); this instance's relays deliver them",
                            db.schema()
                        ));
                        let emitter = db.emitter_builder().start();
                        outbox = Some(db);
                        relay = Some(relays);
                        Some(emitter)
                    }
                    None => Some(start(self.emitter(client))),
                }
            }
        };
        Ok(AuditSetup {
            emitter,
            organization,
            testkit,
            workos_base_url,
            notes,
            outbox,
            relay,
        })
    }

    /// Connects to `url`, applies the outbox's migrations and the app's own table, and starts
    /// this instance's relays (sharing `AUDIT_RATE_LIMIT` with every instance using `key`).
    async fn start_outbox(
        &self,
        url: &str,
        client: audit_core::Client,
        key: &str,
    ) -> Result<(Outbox, Relay), String> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .map_err(|e| format!("DATABASE_URL: {e}"))?;
        let outbox = Outbox::new(pool);
        outbox.migrate().await.map_err(|e| format!("DATABASE_URL: {e}"))?;
        sqlx::query(INVOICE_PAYMENTS)
            .execute(outbox.pool())
            .await
            .map_err(|e| format!("DATABASE_URL: creating the app's table: {e}"))?;
        let builder = outbox.relay(client).rate_limit_key(RateLimitKey::api_key(key));
        // `AUDIT_RATE_LIMIT`, read once into `AuditSettings`, limits the whole fleet here.
        let builder = match self.audit.rate_limit {
            Some(limit) => builder.rate_limit(limit),
            None => builder.no_rate_limit(),
        };
        let relay = builder.start().map_err(|e| e.to_string())?;
        Ok((outbox, relay))
    }
}

/// The app's own table, written with its audit event in one transaction by
/// `POST /invoices/{id}/pay` when the outbox is on.
const INVOICE_PAYMENTS: &str = "CREATE TABLE IF NOT EXISTS example_invoice_payments (\
     id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, invoice text NOT NULL, paid_by text NOT NULL, \
     paid_at timestamptz NOT NULL DEFAULT now())";

/// `POST /invoices/{id}/pay` with the outbox: the payment row and its audit event in one
/// transaction, so the event exists if and only if the payment does. Returns the event's
/// idempotency key.
///
/// # Errors
///
/// The database's or the outbox's message.
pub(crate) async fn record_payment(
    outbox: &Outbox,
    audit: &audit_core::request::AuditHandle,
    invoice: &str,
    paid_by: &str,
) -> Result<String, String> {
    use audit_postgres::OutboxAudit;
    let mut tx = outbox.pool().begin().await.map_err(|e| e.to_string())?;
    sqlx::query("INSERT INTO example_invoice_payments (invoice, paid_by) VALUES ($1, $2)")
        .bind(invoice)
        .bind(paid_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let key = audit.write_in(outbox, &mut tx).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(key)
}

/// Logs to standard error, filtered by `RUST_LOG` (default `warn`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}

/// The process's exit code for the app's result, printing the error (which names the setting at
/// fault) after the app's name.
pub fn exit_code(app: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{app}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl AuditSetup {
    /// Prints what the app announces once it listens on `addr`: the first JSON line
    /// `{"listening":…,"workos_base_url":…,"organization_id":…,"audit":…,"trusted_proxies":[…]}`,
    /// the notes, and a readable line.
    pub fn announce(&self, app: &str, addr: SocketAddr, settings: &Settings) {
        let audit = settings.destination().label();
        println!(
            "{}",
            json!({
                "listening": format!("http://{addr}"),
                "workos_base_url": self.workos_base_url,
                "organization_id": self.organization.as_str(),
                "audit": audit,
                "trusted_proxies": settings.client_ip.trusted_ranges().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            })
        );
        for note in &self.notes {
            println!("{note}");
        }
        println!("{app}: listening on http://{addr} (audit: {audit}); Ctrl-C or SIGTERM to stop");
    }

    /// Once the server stopped taking requests: shuts the emitter down (delivering what is
    /// queued, up to 10 s) and prints the report, one JSON line `{"shutdown":{…}}` and a readable
    /// summary. `skipped` are the adapter's counters (`None` when audit is disabled).
    pub async fn finish(self, app: &str, skipped: Option<std::sync::Arc<SkipCounters>>) {
        println!("{app}: stopped taking requests; flushing audit events");
        let (Some(emitter), Some(skipped)) = (self.emitter, skipped) else {
            println!("{}", json!({"shutdown": {"audit": "disabled"}}));
            println!("{app}: audit was disabled; no events");
            return;
        };
        let report = emitter.shutdown(Duration::from_secs(10)).await;
        let stats = emitter.stats();
        if let Some(relay) = self.relay {
            // The emitter's events are in the table now: let the relays deliver what is due
            // (this instance's rows and any other's), up to 10 s, then stop them. Rows left
            // behind are delivered by the next instance that runs relays.
            if let Some(outbox) = &self.outbox {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while std::time::Instant::now() < deadline
                    && outbox.stats().await.map(|s| s.depth > 0).unwrap_or(false)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let relayed = relay.shutdown(Duration::from_secs(10)).await;
            let outbox = match &self.outbox {
                Some(outbox) => outbox.stats().await.ok(),
                None => None,
            };
            println!(
                "{}",
                json!({"outbox": {
                    "relay_delivered": relayed.stats.delivered,
                    "relay_retried": relayed.stats.retried,
                    "relay_dead_lettered": relayed.stats.dead_lettered,
                    "depth": outbox.map(|s| s.depth),
                    "dead_letters": outbox.map(|s| s.dead_letters),
                }})
            );
        }
        let stored = self
            .testkit
            .as_ref()
            .map(|k| k.events(self.organization.as_str()).len());
        println!("{}", shutdown_json(&report, &stats, &skipped, stored));
        println!(
            "{app}: {} events delivered, {} dead-lettered, {} dropped, {} pending at the deadline; \
             {} emit failures",
            report.delivered,
            report.dead_lettered,
            report.dropped.total(),
            report.pending_at_deadline,
            skipped.emit_failures()
        );
        for rejection in &report.rejections {
            println!("{app}: dead letters of {rejection}");
        }
        if let Some(stored) = stored {
            println!("{app}: the embedded audit-testkit stored {stored} events");
        }
    }
}

/// The schemas of the app's actions, declared in code: they register themselves in audit-core's
/// link-time registry (`audit_core::registry`), where `cargo xtask verify --schemas` and
/// `audit_verify::schemas` find them next to the actions the handlers' `#[action]` annotations
/// name. Register them in WorkOS with `SchemaRegistry::sync_declared(&client)`, or create the
/// same in the WorkOS Dashboard.
pub mod schemas {
    use audit_core::{Action, ActionSchema};
    use serde_json::{Value, json};

    /// The event metadata every action of the app may carry: the adapter's `outcome` (a
    /// cancelled request emits `outcome: "cancelled"`), and the request metadata.
    fn metadata() -> Value {
        json!({
            "type": "object",
            "properties": {
                "outcome": {"type": "string", "enum": ["success", "failure", "cancelled"]},
                "http_status": {"type": "integer"},
                "request_id": {"type": "string"},
                "http_method": {"type": "string"},
                "http_route": {"type": "string"}
            }
        })
    }

    fn schema(action: &'static str, target: &str) -> ActionSchema {
        ActionSchema::new(Action::from_static(action))
            .target(target)
            .metadata(metadata())
    }

    audit_core::declare_schema! {
        /// `user.signed_in`: the user is the actor (WorkOS wants at least one target type).
        pub fn user_signed_in() -> ActionSchema { schema("user.signed_in", "user") }
    }
    audit_core::declare_schema! {
        /// `team.created`: the new team.
        pub fn team_created() -> ActionSchema { schema("team.created", "team") }
    }
    audit_core::declare_schema! {
        /// `team.deleted`: the team of the path.
        pub fn team_deleted() -> ActionSchema { schema("team.deleted", "team") }
    }
    audit_core::declare_schema! {
        /// `invoice.viewed`: the invoice of the path.
        pub fn invoice_viewed() -> ActionSchema { schema("invoice.viewed", "invoice") }
    }
    audit_core::declare_schema! {
        /// `invoice.paid`: the invoice of the path.
        pub fn invoice_paid() -> ActionSchema { schema("invoice.paid", "invoice") }
    }
}
