//! The outbox's own versioned migrations, recorded in `<schema>.audit_outbox_migrations`.

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgPool, Row};

use crate::OutboxError;

/// One versioned migration shipped with the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// Its version (1, 2, …), applied in order.
    pub version: i64,
    /// A short name.
    pub name: &'static str,
    /// The SQL, to run with `search_path` set to the outbox's schema.
    pub sql: &'static str,
}

impl Migration {
    /// The SHA-256 of [`sql`](Self::sql), hex: what the runner records to detect a migration
    /// changed after it was applied.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

pub(crate) static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox",
        sql: include_str!("../migrations/0001_outbox.sql"),
    },
    Migration {
        version: 2,
        name: "no_notify_hold",
        sql: include_str!("../migrations/0002_no_notify_hold.sql"),
    },
];

pub(crate) async fn run(pool: &PgPool, schema: &str) -> Result<Vec<i64>, OutboxError> {
    let mut conn = pool.acquire().await?;
    let mut applied_now = Vec::new();
    for migration in MIGRATIONS {
        let mut tx = conn.begin().await?;
        // Instances starting together take turns; the lock ends with the transaction.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("audit_outbox_migrations:{schema}"))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(&format!(
            r#"CREATE SCHEMA IF NOT EXISTS "{schema}";
               SET LOCAL search_path TO "{schema}";
               CREATE TABLE IF NOT EXISTS audit_outbox_migrations (
                   version    bigint      PRIMARY KEY,
                   name       text        NOT NULL,
                   checksum   text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now()
               );"#
        ))
        .execute(&mut *tx)
        .await?;
        let recorded = sqlx::query("SELECT checksum FROM audit_outbox_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?;
        let checksum = migration.checksum();
        match recorded {
            Some(row) => {
                let stored: String = row.try_get(0)?;
                if stored != checksum {
                    return Err(OutboxError::MigrationChanged {
                        schema: schema.to_owned(),
                        version: migration.version,
                        name: migration.name,
                    });
                }
            }
            None => {
                sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO audit_outbox_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                )
                .bind(migration.version)
                .bind(migration.name)
                .bind(checksum)
                .execute(&mut *tx)
                .await?;
                applied_now.push(migration.version);
            }
        }
        tx.commit().await?;
    }
    Ok(applied_now)
}
