#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod migrate;
mod rate;
mod relay;
mod request;
mod sink;
mod sql;
mod stats;
mod wake;

use std::sync::{Arc, OnceLock};

use audit_core::emitter::{DeadLetter, EmitOptions, IdempotencyKey};
use audit_core::request::AuditPolicy;
use audit_core::{Event, OrganizationId};
use sqlx::{PgConnection, PgPool, Row};

pub use error::OutboxError;
pub use migrate::Migration;
pub use rate::{FleetRateLimit, RateLimitKey};
pub use relay::{Relay, RelayBuilder, RelayStats, ShutdownReport};
pub use request::OutboxAudit;
pub use sink::OutboxSink;
pub use stats::OutboxStats;

use sql::Queries;

/// The outbox: its tables in one PostgreSQL schema, reached through the application's pool.
///
/// Cheap to clone (clones share everything). See the [crate documentation](crate) for the whole
/// picture.
///
/// # Security
/// The outbox tables hold whole events, metadata included: grant access to them like to the audit
/// log itself. Nothing in them or in the queries made is derived from the WorkOS API key except a
/// SHA-256 hash when [`RateLimitKey::api_key`] is used.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    q: Queries,
    sink: OnceLock<OutboxSink>,
    policy: AuditPolicy,
    wake: Arc<wake::Wake>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

/// A dead letter kept in the outbox's dead-letter table, with the row id to replay it by.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredDeadLetter {
    /// The row's id in `audit_outbox_dead_letters`.
    pub id: i64,
    /// The dead letter: organization, event, original idempotency key, reason, last error.
    pub letter: DeadLetter,
}

/// A dead-letter row that does not read back as a [`DeadLetter`] (see
/// [`Outbox::undecodable_dead_letters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UndecodableDeadLetter {
    /// The row's id in `audit_outbox_dead_letters`.
    pub id: i64,
    /// The row as JSON text.
    pub row: String,
    /// Why it does not read.
    pub error: String,
}

/// The error for a failed insert of the event `json`: [`OutboxError::Refused`] naming the field
/// when PostgreSQL refused a value (SQLSTATE class 22, data exception), the database error
/// otherwise.
pub(crate) fn refused(error: sqlx::Error, json: &str) -> OutboxError {
    let Some(db) = error.as_database_error() else {
        return OutboxError::Database(error);
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    if !code.starts_with("22") {
        return OutboxError::Database(error);
    }
    let field = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| nul_pointer(&v, String::new()))
        .unwrap_or_else(|| "/".to_owned());
    OutboxError::Refused {
        field,
        code,
        message: db.message().to_owned(),
    }
}

/// The JSON pointer of the first string (or key) holding U+0000, which `jsonb` cannot store.
fn nul_pointer(value: &serde_json::Value, at: String) -> Option<String> {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(if at.is_empty() { "/".into() } else { at }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_pointer(v, format!("{at}/{i}"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = format!("{at}/{}", escape(k));
            if k.contains('\0') {
                Some(here)
            } else {
                nul_pointer(v, here)
            }
        }),
        _ => None,
    }
}

impl Outbox {
    /// The outbox in the `public` schema of `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Self::build(pool, "public".to_owned())
    }

    /// The outbox in schema `schema`: 1 to 48 characters, lower-case ASCII letters, digits and
    /// `_`, not starting with a digit. [`migrate`](Self::migrate) creates the schema if needed.
    pub fn with_schema(pool: PgPool, schema: &str) -> Result<Self, OutboxError> {
        let valid = !schema.is_empty()
            && schema.len() <= 48
            && !schema.as_bytes()[0].is_ascii_digit()
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(OutboxError::InvalidSchema {
                schema: schema.to_owned(),
            });
        }
        Ok(Self::build(pool, schema.to_owned()))
    }

    fn build(pool: PgPool, schema: String) -> Self {
        let q = Queries::new(&schema);
        let wake = wake::Wake::for_schema(&schema);
        Self {
            inner: Arc::new(Inner {
                wake,
                pool,
                schema,
                q,
                sink: OnceLock::new(),
                policy: AuditPolicy::default(),
            }),
        }
    }

    /// The outbox with `policy` for events written from requests by
    /// [`OutboxAudit::write_in`]: give it the adapter's policy, so that a missing actor or
    /// organization falls back the same way (default: [`AuditPolicy::default`]).
    pub fn with_request_policy(self, policy: AuditPolicy) -> Self {
        let mut outbox = Self::build(self.inner.pool.clone(), self.inner.schema.clone());
        if let Some(inner) = Arc::get_mut(&mut outbox.inner) {
            inner.policy = policy;
        }
        outbox
    }

    /// The policy for events written from requests (see
    /// [`with_request_policy`](Self::with_request_policy)).
    pub fn request_policy(&self) -> &AuditPolicy {
        &self.inner.policy
    }

    /// The pool the outbox uses.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the outbox's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    pub(crate) fn wake(&self) -> &wake::Wake {
        &self.inner.wake
    }

    pub(crate) fn inner_wake(&self) -> Arc<wake::Wake> {
        self.inner.wake.clone()
    }

    pub(crate) fn queries(&self) -> &Queries {
        &self.inner.q
    }

    /// Applies the migrations this version of the crate ships that the database does not have
    /// yet, each in its own transaction, and returns the versions applied (empty when the schema
    /// was up to date). Safe to call from every instance at start-up: concurrent callers wait
    /// for each other on an advisory lock.
    ///
    /// Applied versions are recorded in `<schema>.audit_outbox_migrations`, never in sqlx's
    /// `_sqlx_migrations`, so the application's own migrations are not disturbed. A migration
    /// whose text changed since it was applied is an [`OutboxError::MigrationChanged`].
    pub async fn migrate(&self) -> Result<Vec<i64>, OutboxError> {
        migrate::run(&self.inner.pool, &self.inner.schema).await
    }

    /// The migrations this crate ships, oldest first, for applications that run their own
    /// migration tool: run each one's [`sql`](Migration::sql) with `search_path` set to the
    /// outbox's schema.
    pub fn migrations() -> &'static [Migration] {
        migrate::MIGRATIONS
    }

    /// Writes `event` for `organization` in the caller's open transaction (or on any connection),
    /// with a new random idempotency key, which it returns. The event is delivered if and only if
    /// the transaction commits.
    ///
    /// The event is checked against WorkOS's rules first; an invalid one is
    /// [`OutboxError::Invalid`] naming every field at fault, and nothing is written.
    ///
    /// ```no_run
    /// # async fn f(pool: sqlx::PgPool, outbox: audit_postgres::Outbox) -> Result<(), Box<dyn std::error::Error>> {
    /// use audit_core::{Action, Actor, Context, Event, OrganizationId};
    /// let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY")?;
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("UPDATE invoices SET paid = true WHERE id = $1").bind(7_i64).execute(&mut *tx).await?;
    /// let event = Event::new(Action::new("invoice.paid")?, Actor::new("user_01", "user"), Context::new("203.0.113.7"));
    /// outbox.write(&mut tx, &org, &event).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write(
        &self,
        conn: &mut PgConnection,
        organization: &OrganizationId,
        event: &Event,
    ) -> Result<String, OutboxError> {
        self.write_with(conn, organization, event, &EmitOptions::new())
            .await
    }

    /// [`write`](Self::write) with options: an [`EmitOptions::idempotency_key`] of the caller's
    /// (1 to 255 visible ASCII characters) instead of a random one.
    pub async fn write_with(
        &self,
        conn: &mut PgConnection,
        organization: &OrganizationId,
        event: &Event,
        options: &EmitOptions,
    ) -> Result<String, OutboxError> {
        event.validate().map_err(OutboxError::Invalid)?;
        let key = match &options.idempotency_key {
            Some(key) => {
                IdempotencyKey::check(key).map_err(OutboxError::InvalidIdempotencyKey)?;
                key.clone()
            }
            None => uuid::Uuid::new_v4().hyphenated().to_string(),
        };
        let json = serde_json::to_string(event).map_err(OutboxError::Encode)?;
        sqlx::query(&self.inner.q.insert_one)
            .bind(organization.as_str())
            .bind(&key)
            .bind(&json)
            .execute(conn)
            .await
            .map_err(|e| refused(e, &json))?;
        self.inner.wake.signal();
        Ok(key)
    }

    /// Writes the event under `key` unless this transaction already wrote that key: `false`
    /// then, and nothing is written. For a request's event, which a handler may write again
    /// when it retries its transaction.
    pub(crate) async fn write_once_in_transaction(
        &self,
        conn: &mut PgConnection,
        organization: &OrganizationId,
        event: &Event,
        key: &str,
    ) -> Result<bool, OutboxError> {
        event.validate().map_err(OutboxError::Invalid)?;
        let json = serde_json::to_string(event).map_err(OutboxError::Encode)?;
        let written = sqlx::query(&self.inner.q.insert_request)
            .bind(organization.as_str())
            .bind(key)
            .bind(&json)
            .execute(conn)
            .await
            .map_err(|e| refused(e, &json))?;
        if written.rows_affected() == 0 {
            return Ok(false);
        }
        self.inner.wake.signal();
        Ok(true)
    }

    /// Starts configuring the relays of this instance, which deliver the outbox's rows through
    /// `sink` (the WorkOS [`Client`](audit_core::Client) in production).
    pub fn relay(&self, sink: impl audit_core::Sink) -> RelayBuilder {
        RelayBuilder::new(self.clone(), Arc::new(sink))
    }

    /// What the outbox holds now: depth, oldest pending age, leases held, dead letters. One
    /// query. With the `metrics` feature the figures are also recorded as gauges.
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        stats::read(self).await
    }

    /// The oldest `limit` dead letters. A row that cannot be read back as a dead letter (edited
    /// by hand, or written by a newer version) does not fail the listing: it is left out, logged
    /// with its id, and listed by [`undecodable_dead_letters`](Self::undecodable_dead_letters).
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<StoredDeadLetter>, OutboxError> {
        let mut letters = Vec::new();
        for (id, json) in self.dead_letter_rows(limit).await? {
            match serde_json::from_str(&json) {
                Ok(letter) => letters.push(StoredDeadLetter { id, letter }),
                Err(e) => tracing::warn!(
                    id,
                    error = %e,
                    "audit outbox: a dead-letter row could not be read; left out of the listing"
                ),
            }
        }
        Ok(letters)
    }

    /// The dead-letter rows among the oldest `limit` that do not read back as a dead letter: their
    /// id, the row as JSON text and why it does not read. Replay or delete them by id.
    pub async fn undecodable_dead_letters(
        &self,
        limit: i64,
    ) -> Result<Vec<UndecodableDeadLetter>, OutboxError> {
        Ok(self
            .dead_letter_rows(limit)
            .await?
            .into_iter()
            .filter_map(|(id, json)| {
                let error = serde_json::from_str::<DeadLetter>(&json).err()?;
                Some(UndecodableDeadLetter {
                    id,
                    row: json,
                    error: error.to_string(),
                })
            })
            .collect())
    }

    async fn dead_letter_rows(&self, limit: i64) -> Result<Vec<(i64, String)>, OutboxError> {
        let rows = sqlx::query(&self.inner.q.list_dead)
            .bind(limit.max(0))
            .fetch_all(&self.inner.pool)
            .await?;
        rows.into_iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Moves every dead letter back into the outbox with its **original idempotency key**, in one
    /// transaction, and returns how many. An event that reached WorkOS before it was
    /// dead-lettered is not stored twice as long as the replay happens within the 24 hours
    /// WorkOS remembers keys. This process's relays are woken at once, others at their next poll.
    pub async fn replay_dead_letters(&self) -> Result<u64, OutboxError> {
        let done = sqlx::query(&self.inner.q.replay_all)
            .execute(&self.inner.pool)
            .await?;
        self.inner.wake.signal();
        Ok(done.rows_affected())
    }

    /// Moves the dead letters with these ids back into the outbox, as
    /// [`replay_dead_letters`](Self::replay_dead_letters) does, and returns how many were found.
    pub async fn replay(&self, ids: &[i64]) -> Result<u64, OutboxError> {
        let done = sqlx::query(&self.inner.q.replay_ids)
            .bind(ids)
            .execute(&self.inner.pool)
            .await?;
        self.inner.wake.signal();
        Ok(done.rows_affected())
    }

    /// The [`Sink`](audit_core::Sink) that writes events into this outbox: what an
    /// [`Emitter`](audit_core::Emitter) built by [`emitter_builder`](Self::emitter_builder) sends
    /// to. Concurrent writes are grouped into one multi-row insert.
    pub fn sink(&self) -> OutboxSink {
        self.inner
            .sink
            .get_or_init(|| OutboxSink::new(self.clone()))
            .clone()
    }

    /// An audit-core [`EmitterBuilder`](audit_core::EmitterBuilder) whose events land in this
    /// outbox: handlers keep calling `try_emit`, and the relays deliver. Change the builder line
    /// and nothing else:
    ///
    /// ```no_run
    /// # async fn f(outbox: audit_postgres::Outbox) {
    /// let emitter = outbox.emitter_builder().start();
    /// # }
    /// ```
    ///
    /// Settings: no local rate limit (the relays limit the fleet), 32 senders (each a pending
    /// insert; they are grouped into one statement), a 1 ms linger. The emitter's memory queue
    /// sits in front of the table: see the crate documentation, "The emitter path", for what that
    /// means for overflow and durability. `emit_durable` returns once the event's row is
    /// committed.
    pub fn emitter_builder(&self) -> audit_core::EmitterBuilder {
        audit_core::Emitter::builder(self.sink())
            .no_rate_limit()
            .senders(32)
            .linger(std::time::Duration::from_millis(1))
    }
}
