//! The SQLite file: opening, locking and checking it, its layout, and the checksummed rows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use super::{Spool, SpoolConfig, SpoolError, SpoolErrorKind, SpoolSync};
use crate::{CreateEvent, Event, OrganizationId};

/// The layout version, in SQLite's `user_version`.
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    organization_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    event BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER,
    checksum INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_rows (
    id INTEGER PRIMARY KEY,
    original_id INTEGER,
    organization_id TEXT,
    idempotency_key TEXT,
    event BLOB,
    created_at INTEGER,
    attempts INTEGER,
    checksum INTEGER,
    reason TEXT NOT NULL,
    moved_at INTEGER NOT NULL
);
";

pub(super) fn error(config: &SpoolConfig, e: &rusqlite::Error) -> SpoolError {
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SpoolErrorKind::Locked,
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => SpoolErrorKind::Corrupt,
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            SpoolErrorKind::NotWritable
        }
        Some(ErrorCode::DiskFull) => SpoolErrorKind::DiskFull,
        _ => SpoolErrorKind::Io,
    };
    SpoolError {
        path: config.path.clone(),
        kind,
        detail: e.to_string(),
    }
}

fn corrupt(config: &SpoolConfig, detail: impl Into<String>) -> SpoolError {
    SpoolError {
        path: config.path.clone(),
        kind: SpoolErrorKind::Corrupt,
        detail: detail.into(),
    }
}

pub(super) fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
    if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(SpoolError {
                    path: config.path.clone(),
                    kind: SpoolErrorKind::NotWritable,
                    detail: format!("{} is not a directory", dir.display()),
                });
            }
            Err(e) => {
                return Err(SpoolError {
                    path: config.path.clone(),
                    kind: SpoolErrorKind::NotWritable,
                    detail: format!("directory {}: {e}", dir.display()),
                });
            }
        }
    }
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&config.path, flags).map_err(|e| error(&config, &e))?;
    let fail = |e: rusqlite::Error| error(&config, &e);
    // No waiting on a lock: a second emitter must fail at once, not hang.
    conn.busy_timeout(Duration::ZERO).map_err(fail)?;
    // EXCLUSIVE before the first access to the WAL: the lock is held until the connection closes
    // and no shared-memory index is used (so a crashed process leaves nothing to clean up).
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(fail)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SpoolError {
            path: config.path.clone(),
            kind: SpoolErrorKind::Io,
            detail: format!("SQLite refused WAL mode (journal_mode is {mode})"),
        });
    }
    let sync = match config.sync {
        SpoolSync::Normal => "NORMAL",
        SpoolSync::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(fail)?;
    // Take the write lock now, so that a second emitter fails here rather than later.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;").map_err(fail)?;
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(fail)?;
    if check != "ok" {
        return Err(corrupt(&config, format!("SQLite integrity check: {check}")));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(fail)?;
    let has_tables: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(fail)?
        > 0;
    match (version, has_tables) {
        (0, false) => {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA user_version = {VERSION}; COMMIT;"
            ))
            .map_err(fail)?;
        }
        (VERSION, true) => {}
        (v, _) => {
            return Err(corrupt(
                &config,
                format!("unknown spool layout (user_version {v}); this version reads {VERSION}"),
            ));
        }
    }
    if let Some(max_bytes) = config.max_bytes {
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(fail)?;
        let pages = i64::try_from(max_bytes / u64::try_from(page_size.max(1)).unwrap_or(4096))
            .unwrap_or(i64::MAX)
            .max(1);
        // SQLite keeps the file's current size when it is above the limit (it never shrinks it).
        conn.pragma_update(None, "max_page_count", pages).map_err(fail)?;
    }
    let (rows, min_id, max_id): (i64, Option<i64>, Option<i64>) = conn
        .query_row("SELECT count(*), min(id), max(id) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(fail)?;
    Ok(Spool {
        config,
        conn,
        rows: u64::try_from(rows).unwrap_or(0),
        min_id: min_id.unwrap_or(0),
        max_id: max_id.unwrap_or(0),
    })
}

pub(super) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(super) fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_millis(ms.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// CRC-32 of the immutable part of a row.
pub(super) fn checksum(org: &str, key: &str, created_at: i64, event: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(org.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&created_at.to_le_bytes());
    h.update(event);
    h.finalize()
}

/// A row read back from the file, checked.
pub(super) struct Loaded {
    pub(super) id: i64,
    pub(super) body: CreateEvent,
    pub(super) key: String,
    pub(super) created_at: SystemTime,
    pub(super) attempts: u32,
    pub(super) first_attempt_at: Option<SystemTime>,
    pub(super) last_attempt_at: Option<SystemTime>,
}

/// Reads up to `limit` rows after `after`, in order. Rows that fail their checksum or no longer
/// decode are moved to `dead_rows` and returned as `(id, reason)`.
#[allow(clippy::type_complexity)]
pub(super) fn load(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<(Vec<Loaded>, Vec<(i64, String)>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, organization_id, idempotency_key, event, created_at, attempts, first_attempt_at,
                last_attempt_at, checksum
         FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)])?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        match decode(row) {
            Ok(loaded) => good.push(loaded),
            Err(reason) => bad.push((id, reason)),
        }
    }
    drop(rows);
    drop(stmt);
    if !bad.is_empty() {
        let tx = conn.unchecked_transaction()?;
        for (id, reason) in &bad {
            tx.execute(
                "INSERT INTO dead_rows (original_id, organization_id, idempotency_key, event, created_at,
                                        attempts, checksum, reason, moved_at)
                 SELECT id, CAST(organization_id AS TEXT), CAST(idempotency_key AS TEXT), event,
                        created_at, attempts, checksum, ?2, ?3
                 FROM events WHERE id = ?1",
                params![id, reason, unix_ms(SystemTime::now())],
            )?;
            tx.execute("DELETE FROM events WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
    }
    Ok((good, bad))
}

fn decode(row: &rusqlite::Row<'_>) -> Result<Loaded, String> {
    let text = |i: usize| -> Result<String, String> {
        match row.get_ref(i).map_err(|e| e.to_string())? {
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                String::from_utf8(t.to_vec()).map_err(|_| format!("column {i} is not UTF-8"))
            }
            _ => Err(format!("column {i} has the wrong type")),
        }
    };
    let int = |i: usize| -> Result<Option<i64>, String> {
        match row.get_ref(i).map_err(|e| e.to_string())? {
            rusqlite::types::ValueRef::Integer(n) => Ok(Some(n)),
            rusqlite::types::ValueRef::Null => Ok(None),
            _ => Err(format!("column {i} has the wrong type")),
        }
    };
    let id = int(0)?.ok_or("no id")?;
    let org = text(1)?;
    let key = text(2)?;
    let event = match row.get_ref(3).map_err(|e| e.to_string())? {
        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
        _ => return Err("event column has the wrong type".into()),
    };
    let created_at = int(4)?.ok_or("no created_at")?;
    let attempts = int(5)?.unwrap_or(0);
    let first = int(6)?;
    let last = int(7)?;
    let stored = int(8)?.ok_or("no checksum")?;
    if i64::from(checksum(&org, &key, created_at, &event)) != stored {
        return Err("checksum mismatch".into());
    }
    let organization_id = OrganizationId::new(org).map_err(|e| format!("organization id: {e}"))?;
    let event: Event = serde_json::from_slice(&event).map_err(|e| format!("event JSON: {e}"))?;
    Ok(Loaded {
        id,
        body: CreateEvent::new(organization_id, event),
        key,
        created_at: from_unix_ms(created_at),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_attempt_at: first.map(from_unix_ms),
        last_attempt_at: last.map(from_unix_ms),
    })
}
