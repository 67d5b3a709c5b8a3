//! SQLite persistence for `--data FILE`: a write-through copy of the testkit's state.

use rusqlite::{Connection, params};
use serde_json::Value;
use std::path::Path;

pub(crate) struct Db {
    conn: Connection,
}

/// Rows loaded at start.
#[derive(Default)]
pub(crate) struct Loaded {
    /// (organization_id, event json, idempotency key, received_at)
    pub(crate) events: Vec<(String, String, Option<String>, String)>,
    /// (key, request json, status, response body, created_at)
    pub(crate) idempotency: Vec<(String, String, u16, Vec<u8>, String)>,
    /// (action, id, version, body json, created_at) in insertion order
    pub(crate) schemas: Vec<(String, String, i64, String, String)>,
    /// export records as JSON
    pub(crate) exports: Vec<String>,
    /// (organization_id, days)
    pub(crate) retention: Vec<(String, Option<i64>)>,
}

const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, organization_id TEXT NOT NULL,
  event TEXT NOT NULL, idempotency_key TEXT, received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, request TEXT NOT NULL, status INTEGER NOT NULL,
  response BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schemas (seq INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, id TEXT NOT NULL,
  version INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exports (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retention (organization_id TEXT PRIMARY KEY, days INTEGER);
";

impl Db {
    pub(crate) fn open(path: &Path) -> rusqlite::Result<(Db, Loaded)> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        let mut loaded = Loaded::default();
        {
            let mut st = conn.prepare(
                "SELECT organization_id, event, idempotency_key, received_at FROM events ORDER BY seq",
            )?;
            loaded.events = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let mut st =
                conn.prepare("SELECT key, request, status, response, created_at FROM idempotency")?;
            loaded.idempotency = st
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut st =
                conn.prepare("SELECT action, id, version, body, created_at FROM schemas ORDER BY seq")?;
            loaded.schemas = st
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut st = conn.prepare("SELECT record FROM exports")?;
            loaded.exports = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            let mut st = conn.prepare("SELECT organization_id, days FROM retention")?;
            loaded.retention = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
        }
        Ok((Db { conn }, loaded))
    }

    fn log(r: rusqlite::Result<usize>) {
        if let Err(e) = r {
            tracing::error!(error = %e, "audit-testkit: writing to the data file failed");
        }
    }

    pub(crate) fn insert_event(&self, org: &str, event: &Value, key: Option<&str>, at: &str) {
        Self::log(self.conn.execute(
            "INSERT INTO events (organization_id, event, idempotency_key, received_at) VALUES (?1, ?2, ?3, ?4)",
            params![org, event.to_string(), key, at],
        ));
    }

    pub(crate) fn insert_idempotency(
        &self,
        key: &str,
        request: &Value,
        status: u16,
        response: &[u8],
        at: &str,
    ) {
        Self::log(self.conn.execute(
            "INSERT OR REPLACE INTO idempotency (key, request, status, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, request.to_string(), status, response, at],
        ));
    }

    pub(crate) fn insert_schema(&self, action: &str, id: &str, version: i64, body: &Value, at: &str) {
        Self::log(self.conn.execute(
            "INSERT INTO schemas (action, id, version, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![action, id, version, body.to_string(), at],
        ));
    }

    pub(crate) fn upsert_export(&self, id: &str, record: &str) {
        Self::log(self.conn.execute(
            "INSERT OR REPLACE INTO exports (id, record) VALUES (?1, ?2)",
            params![id, record],
        ));
    }

    pub(crate) fn delete_export(&self, id: &str) {
        Self::log(
            self.conn
                .execute("DELETE FROM exports WHERE id = ?1", params![id]),
        );
    }

    pub(crate) fn set_retention(&self, org: &str, days: Option<i64>) {
        Self::log(self.conn.execute(
            "INSERT OR REPLACE INTO retention (organization_id, days) VALUES (?1, ?2)",
            params![org, days],
        ));
    }

    pub(crate) fn clear(&self) {
        if let Err(e) = self.conn.execute_batch(
            "DELETE FROM events; DELETE FROM idempotency; DELETE FROM schemas; DELETE FROM exports; DELETE FROM retention;",
        ) {
            tracing::error!(error = %e, "audit-testkit: clearing the data file failed");
        }
    }
}
