//! The durable spool (feature `spool`): accepted events kept in a SQLite file until WorkOS has
//! acknowledged them, so that a crash, a deploy or a WorkOS outage loses nothing.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use audit_core::emitter::{Emitter, Overflow, SpoolConfig, StaleEvents};
//! use audit_core::Client;
//!
//! let spool = SpoolConfig::new("/var/lib/myapp/audit-spool.db")
//!     .max_events(1_000_000)
//!     .stale_events(StaleEvents::SendAnyway)
//!     .open()?; // a clear error here: locked, corrupt, not writable, disk full
//! let emitter = Emitter::builder(Client::from_env()?)
//!     .spool(spool)
//!     .overflow(Overflow::SpillToSpool)
//!     .start();
//! # use audit_core::{Action, Actor, Context, Event, OrganizationId};
//! # let org = OrganizationId::new("org_1")?;
//! # let event = Event::new(Action::new("user.signed_in")?, Actor::new("u", "user"), Context::new("203.0.113.7"));
//! emitter.try_emit(org.clone(), event.clone())?; // still non-blocking: durable within a commit
//! emitter.emit_durable(org, event).await?; // returns once the event is committed to the file
//! emitter.shutdown(Duration::from_secs(10)).await; // what is left stays in the spool
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! With a spool, every accepted event is also written to the file by one writer thread, which
//! commits whatever has queued up since its last commit in one transaction (group commit). The
//! emit call itself does no I/O: it hands a copy of the event to the writer through a channel and
//! returns. Senders still take events from memory; a row is deleted (in a later group commit)
//! only once WorkOS acknowledged the event with a 2xx or the event went to the dead letter. An
//! event delivered before its row was committed is never written at all (its insert and delete
//! cancel out in the same group).
//!
//! On start, every row of the file is delivered again **with its original idempotency key**, in
//! the order it was accepted, so an event that reached WorkOS just before a crash (its answer
//! lost) is not stored twice. At [`Emitter::shutdown`](super::Emitter::shutdown)'s deadline, and
//! when the runtime ends without a shutdown, pending events are not dead-lettered as in memory
//! mode: they stay in the file for the next start.
//!
//! # What is guaranteed
//!
//! - **The commit window.** An event accepted by [`try_emit`](super::Emitter::try_emit) is in
//!   the file once the writer's next group commit ends: the [commit
//!   delay](SpoolConfig::commit_delay) (2 ms by default) plus the time of one commit, under a
//!   millisecond with [`SpoolSync::Normal`] on a local disk, a few milliseconds with
//!   [`SpoolSync::Full`] (an fsync); [`SpoolStats::commit_p99`] shows the latter. A crash inside
//!   that window loses the event. [`Emitter::emit_durable`](super::Emitter::emit_durable) returns only
//!   after the commit, for callers who cannot accept that window.
//! - **Crashes.** With [`SpoolSync::Normal`] (WAL, the default), a committed event survives the
//!   process being killed (SIGKILL, OOM, panic=abort); it can be lost if the machine loses power
//!   or the OS crashes within about a second of the commit. [`SpoolSync::Full`] fsyncs every
//!   group commit and also survives power loss, at the cost of a few milliseconds per commit.
//! - **Checksums.** Each row carries a CRC-32 of its organization, idempotency key, acceptance
//!   time and event JSON, verified when the row is read back. A row that fails it (or whose JSON
//!   no longer decodes) is moved to the table `dead_rows` of the same file, counted in
//!   [`SpoolStats::corrupt`] and logged with `tracing::error!`; it is never silently dropped.
//! - **Duplicates.** None from restarts (original keys). WorkOS forgets a key after 24 hours;
//!   what happens to an older event is [`StaleEvents`].
//! - **A full spool** ([`SpoolConfig::max_events`]) refuses new events: the emit call returns
//!   [`EmitError::Full`](super::EmitError::Full), counted in [`Stats::dropped`](super::Stats::dropped)
//!   and [`SpoolStats::refused`], with a rate-limited warning.
//!
//! Not guaranteed: the loss of the disk itself, or an event inside the commit window of a crash.
//!
//! # Faults
//!
//! [`SpoolConfig::open`] fails with a [`SpoolError`] naming the path and the problem when the file
//! is locked by another emitter ([`SpoolErrorKind::Locked`]: two emitters never share a file; the
//! lock is SQLite's exclusive locking mode, held as long as the emitter runs and released by the
//! OS if the process dies), corrupt or truncated ([`SpoolErrorKind::Corrupt`]), in a directory it
//! cannot write ([`SpoolErrorKind::NotWritable`]) or on a full disk ([`SpoolErrorKind::DiskFull`]).
//! At run time a failing commit (full disk, I/O error) is retried with backoff, counted in
//! [`SpoolStats::write_errors`], logged with `tracing::error!` and shown in
//! [`SpoolStats::failing`]; events keep flowing from memory meanwhile, and once
//! [`SpoolConfig::max_backlog`] events wait for the writer, new ones are refused (counted). On a
//! full disk (or at [`SpoolConfig::max_bytes`]) the rows of delivered events are deleted first,
//! and alone when the new rows still do not fit, so the file frees room as WorkOS catches up.
//!
//! # Security
//!
//! The file holds whole events, metadata included: keep it somewhere only the service can read,
//! like the audit log itself. It never holds the API key.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod db;
mod store;

pub(crate) use store::{Durable, SpoolStore};

/// How hard a group commit pushes data to the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolSync {
    /// SQLite `synchronous=NORMAL` in WAL mode (the default): a commit survives the process
    /// being killed, not necessarily a power loss or OS crash (the WAL is fsynced at checkpoints).
    #[default]
    Normal,
    /// `synchronous=FULL`: every group commit is fsynced and survives a power loss.
    Full,
}

/// What happens to an event whose idempotency key WorkOS may have forgotten (24 hours) by the
/// time it is sent again.
///
/// Age is measured from the event's first recorded attempt, or from its acceptance when no
/// attempt is recorded (an attempt in flight during a crash is not recorded, so acceptance is the
/// safe lower bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleEvents {
    /// Send it anyway (the default): if an earlier attempt did reach WorkOS more than 24 hours
    /// ago without its answer being recorded, WorkOS stores it a second time. That needs both a
    /// lost answer and a day-long gap, and an audit log missing an event is worse than one
    /// showing it twice with the same content, time and key.
    #[default]
    SendAnyway,
    /// Dead-letter it with [`DeadLetterReason::Stale`](super::DeadLetterReason::Stale), for a person to
    /// decide (replay keeps the key).
    DeadLetter,
}

/// The spool's settings. [`open`](Self::open) it, then give it to
/// [`EmitterBuilder::spool`](super::EmitterBuilder::spool).
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub(crate) path: PathBuf,
    pub(crate) max_events: u64,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_backlog: usize,
    pub(crate) max_batch: usize,
    pub(crate) commit_delay: Duration,
    pub(crate) sync: SpoolSync,
    pub(crate) stale: StaleEvents,
}

impl SpoolConfig {
    /// Default [`max_events`](Self::max_events): 1,000,000 events (about 1 GiB at 1 KiB an
    /// event, almost three hours of WorkOS's rate limit).
    pub const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
    /// Default [`max_backlog`](Self::max_backlog): 100,000 events.
    pub const DEFAULT_MAX_BACKLOG: usize = 100_000;
    /// Default [`commit_delay`](Self::commit_delay): 2 ms.
    pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(2);

    /// A spool in the SQLite file `path` (created if missing; its directory must exist and be
    /// writable, SQLite also writes `<path>-wal` next to it).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            max_events: Self::DEFAULT_MAX_EVENTS,
            max_bytes: None,
            max_backlog: Self::DEFAULT_MAX_BACKLOG,
            max_batch: 8_192,
            commit_delay: Self::DEFAULT_COMMIT_DELAY,
            sync: SpoolSync::default(),
            stale: StaleEvents::default(),
        }
    }

    /// The most events the file may hold (at least 1). When it is full, new events are refused
    /// with [`EmitError::Full`](super::EmitError::Full) (counted in
    /// [`Stats::dropped`](super::Stats::dropped) and [`SpoolStats::refused`], warned about).
    pub fn max_events(mut self, max: u64) -> Self {
        self.max_events = max.max(1);
        self
    }

    /// The largest the file may grow, in bytes (default: no limit but the disk). It is enforced
    /// by SQLite (`max_page_count`) and behaves exactly like a full disk: commits that would grow
    /// the file fail, which is counted ([`SpoolStats::write_errors`]), shown
    /// ([`SpoolStats::failing`]) and logged. Deletions of delivered events are still committed,
    /// so the file frees room as WorkOS catches up; meanwhile new events are delivered from
    /// memory without being durable ([`emit_durable`](super::Emitter::emit_durable) answers
    /// [`NotDurable`](super::EmitError::NotDurable)), and once
    /// [`max_backlog`](Self::max_backlog) of them wait for a commit, new events are refused. A file
    /// already larger than the limit keeps its size.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = Some(max);
        self
    }

    /// The most accepted events that may wait for the writer's next commit (at least 1). Only
    /// reached when the disk is slower than the emit rate or a commit keeps failing (a full
    /// disk); new events are then refused like on a full spool, so memory stays bounded.
    pub fn max_backlog(mut self, max: usize) -> Self {
        self.max_backlog = max.max(1);
        self
    }

    /// The most events written in one transaction (default 8,192), which bounds one commit's
    /// duration and so the window between emit and commit.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// How long the writer gathers events before a group commit (default
    /// [`DEFAULT_COMMIT_DELAY`](Self::DEFAULT_COMMIT_DELAY); `Duration::ZERO` commits as soon as
    /// it can). It starts when the first event of the group arrives, so it adds to the window
    /// between emit and commit. In exchange, fewer and larger transactions, and an event that is
    /// delivered within the delay (usual with a nearby server) is never written at all: its
    /// insert and delete cancel out.
    pub fn commit_delay(mut self, delay: Duration) -> Self {
        self.commit_delay = delay;
        self
    }

    /// How hard a commit pushes data to the disk (default [`SpoolSync::Normal`]).
    pub fn sync(mut self, sync: SpoolSync) -> Self {
        self.sync = sync;
        self
    }

    /// What happens to events older than WorkOS's 24-hour idempotency window when they are sent
    /// (default [`StaleEvents::SendAnyway`], whose documentation gives the reason).
    pub fn stale_events(mut self, stale: StaleEvents) -> Self {
        self.stale = stale;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or creates) the file, takes its exclusive lock and checks it.
    ///
    /// Errors name the path and the problem: [`SpoolErrorKind::Locked`] (another emitter, in this
    /// process or another, has it open), [`SpoolErrorKind::Corrupt`] (not a SQLite file, truncated,
    /// failing SQLite's integrity check, or written by an unknown version),
    /// [`SpoolErrorKind::NotWritable`], [`SpoolErrorKind::DiskFull`], [`SpoolErrorKind::Io`].
    pub fn open(self) -> Result<Spool, SpoolError> {
        db::open(self)
    }
}

/// An open spool file, locked for one emitter. Made by [`SpoolConfig::open`] or [`Spool::open`].
pub struct Spool {
    pub(crate) config: SpoolConfig,
    pub(crate) conn: rusqlite::Connection,
    /// Rows found in the file when it was opened.
    pub(crate) rows: u64,
    pub(crate) min_id: i64,
    pub(crate) max_id: i64,
}

impl Spool {
    /// Opens `path` with the default settings (see [`SpoolConfig::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SpoolError> {
        SpoolConfig::new(path).open()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// How many events the file held when it was opened (they are delivered first, with their
    /// original idempotency keys).
    pub fn recovered(&self) -> u64 {
        self.rows
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.config.path)
            .field("recovered", &self.rows)
            .finish_non_exhaustive()
    }
}

/// What kind of problem a [`SpoolError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolErrorKind {
    /// Another emitter (in this process or another one) has the file open.
    Locked,
    /// The file is not a SQLite database, is truncated or damaged, or has an unknown layout.
    Corrupt,
    /// The file or its directory cannot be written (read-only, permissions).
    NotWritable,
    /// The disk (or the file system quota) is full.
    DiskFull,
    /// Another I/O or SQLite error.
    Io,
}

impl SpoolErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Locked => "locked by another emitter (two emitters cannot share one spool file)",
            Self::Corrupt => "corrupt or truncated spool file (move it aside to start with an empty spool)",
            Self::NotWritable => "cannot write the file or its directory",
            Self::DiskFull => "disk full",
            Self::Io => "I/O error",
        }
    }
}

/// The spool file could not be opened or used; names the path and the problem.
#[derive(Debug, thiserror::Error)]
#[error("audit spool {}: {}: {detail}", path.display(), kind.describe())]
#[non_exhaustive]
pub struct SpoolError {
    /// The file.
    pub path: PathBuf,
    /// The kind of problem.
    pub kind: SpoolErrorKind,
    /// SQLite's or the OS's own words.
    pub detail: String,
}

/// The spool's part of [`Stats`](super::Stats).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SpoolStats {
    /// Events in the file or waiting for the writer's next commit (not yet resolved).
    pub depth: u64,
    /// Of those, events kept only in the file because memory was full
    /// ([`Overflow::SpillToSpool`](super::Overflow::SpillToSpool)) or recovered at start and not
    /// yet loaded.
    pub spilled: u64,
    /// Accepted events the writer has not committed yet.
    pub backlog: usize,
    /// Age of the oldest unresolved event (`None` when there is none).
    pub oldest_age: Option<Duration>,
    /// Group commits made.
    pub commits: u64,
    /// Commit duration, 50th percentile.
    pub commit_p50: Option<Duration>,
    /// Commit duration, 99th percentile.
    pub commit_p99: Option<Duration>,
    /// Events recovered from the file when it was opened.
    pub recovered: u64,
    /// Events refused because the spool was full or its backlog was.
    pub refused: u64,
    /// Rows that failed their checksum (or no longer decoded), moved to `dead_rows`.
    pub corrupt: u64,
    /// Failed commits or reads (each retried).
    pub write_errors: u64,
    /// The latest write error while commits are failing; `None` when the last commit succeeded.
    pub failing: Option<String>,
}
