//! Reading events back: WorkOS CSV exports as a typed stream of [`Event`]s.
//!
//! WorkOS has no endpoint that lists audit-log events; the only way back through the API is a CSV
//! export (create it, poll it until it is ready, download the file from a pre-signed URL). An
//! [`EventReader`] does that whole dance and yields each row as an [`Event`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use audit_core::client::CreateExport;
//! use audit_core::export::EventReader;
//! use audit_core::{Action, Client, OrganizationId};
//! use futures_util::TryStreamExt;
//! use time::{Duration, OffsetDateTime};
//!
//! let client = Client::from_env()?;
//! let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY")?;
//! let now = OffsetDateTime::now_utc();
//! let query = CreateExport::new(org, now - Duration::days(7), now)
//!     .action(Action::new("user.signed_in")?);
//! let mut events = EventReader::new(client).read(query);
//! while let Some(event) = events.try_next().await? {
//!     println!("{} {} by {}", event.occurred_at, event.action, event.actor.id);
//! }
//! # Ok(()) }
//! ```
//!
//! # What the reader does
//!
//! 1. Refuses a range that starts before WorkOS's export window ([`EXPORT_LOOKBACK`], "events
//!    from the past three months can be exported") with [`ReadError::RangeTooOld`]. The range is
//!    not split into windows: splitting cannot reach events WorkOS no longer exports, and a range
//!    inside the window is exported in one piece. [`EventReader::lookback_limit`] changes or
//!    removes the check.
//! 2. Creates the export. WorkOS's 400 `"No audit log events found"` is an **empty stream**, not
//!    an error.
//! 3. Polls it while `pending`: 500 ms, doubling up to 5 s, for at most 10 minutes in all
//!    ([`EventReader::poll_backoff`], [`EventReader::max_wait`]; tokio's clock). State `error` is
//!    [`ReadError::ExportFailed`]; still pending at the deadline is [`ReadError::PendingTimeout`].
//! 4. Downloads the CSV as a stream. A URL that has expired (403, 404 or 410 from the storage
//!    host) is renewed by reading the export again (each read issues a new URL); an export in state
//!    `expired` is created again. At most [`EventReader::max_renewals`] renewals (default 3), then
//!    [`ReadError::UrlExpired`].
//! 5. Parses the CSV incrementally (`csv-core` over the downloaded chunks): memory holds one
//!    chunk, one record and the events of that chunk not yet taken, never the whole file.
//!
//! # The CSV
//!
//! WorkOS's Audit Logs API documentation does not describe the file (unconfirmed: the columns
//! below are those seen in real exports). Columns are found **by header name**, in any order,
//! and unknown columns are ignored: `action`, `occurred_at`, `actor_id`, `actor_type`,
//! `context_location` (required), `actor_name`, `actor_metadata`, `context_user_agent`,
//! `metadata` (optional), and per target `target_id_<N>`,
//! `target_type_<N>`, `target_name_<N>`, `target_metadata_<N>` for any set of `N` (targets come
//! out in ascending `N`; a target whose cells are all empty is absent). Metadata cells hold JSON
//! objects. A leading UTF-8 byte-order mark is skipped.
//!
//! What a CSV cannot carry comes back normalized: an empty cell is `None` (so an empty
//! `name` or `user_agent` reads back as `None`), empty metadata `{}` is `None`, and `version` is
//! not in the file (always `None`).
//!
//! # Errors in the file
//!
//! A row that cannot be read (a required cell empty, a timestamp that is not RFC 3339, metadata
//! that is not a JSON object of strings, numbers and booleans, a wrong number of cells) yields
//! [`ReadError::Row`] naming the data row (1-based, header excluded), its line and the column;
//! the rows before it have been yielded already, and reading continues with the next row, so the
//! caller chooses to stop (`try_next()?`) or to skip it. A header without a required column
//! ends the stream with [`ReadError::Header`].
//!
//! # Security
//!
//! The download URL is pre-signed: it is never logged or shown in an error (errors show it
//! without its query). Exported rows are your customers' audit data; [`EventReader::read`] keeps
//! nothing after the stream is dropped.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;

use crate::client::{AuditLogExport, Client, CreateExport, ExportState};
use crate::error::Error;
use crate::event::{Event, rfc3339_millis};

mod parser;

pub use parser::parse_csv;

/// How far back WorkOS exports events: "events from the past three months can be exported". The
/// longest three calendar months are 92 days; a range starting earlier is refused locally.
pub const EXPORT_LOOKBACK: Duration = Duration::from_secs(92 * 24 * 3600);

/// The largest CSV record the parser accepts, by default: 16 MiB, counting every allocation the
/// row takes (its cells and the list of where each cell ends). WorkOS limits metadata to 50 keys
/// of 500 characters per object, so a real row is far smaller.
pub const DEFAULT_MAX_ROW_BYTES: usize = 16 * 1024 * 1024;

/// The most cells a CSV row may have: 10,000. A WorkOS export has nine columns plus four per
/// target, so a row this wide is not an export (a line of commas would otherwise grow the
/// parser's list of cells without bound).
pub const MAX_ROW_FIELDS: usize = 10_000;

/// Reads an organization's events back through a WorkOS CSV export. See the
/// [module documentation](self) for the steps, the CSV and the errors.
///
/// Cheap to clone; the settings below have defaults suited to WorkOS.
#[derive(Debug, Clone)]
pub struct EventReader {
    client: Client,
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    poll_initial: Duration,
    poll_max: Duration,
    max_wait: Duration,
    max_renewals: u32,
    lookback: Option<Duration>,
    max_row_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            max_wait: Duration::from_secs(600),
            max_renewals: 3,
            lookback: Some(EXPORT_LOOKBACK),
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
        }
    }
}

/// The waits between polls of a pending export: `initial`, doubling, at most `max`.
///
/// An iterator, so the schedule can be inspected: `PollSchedule::new(500 ms, 5 s)` yields
/// 0.5, 1, 2, 4, 5, 5, … seconds.
#[derive(Debug, Clone)]
pub struct PollSchedule {
    next: Duration,
    max: Duration,
}

impl PollSchedule {
    /// A schedule starting at `initial` (at least 1 ms) and capped at `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            next: initial,
            max: max.max(initial),
        }
    }
}

impl Iterator for PollSchedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(wait)
    }
}

impl EventReader {
    /// A reader using `client` (its base URL, key, timeout and retry policy).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            config: Config::default(),
        }
    }

    /// The waits between polls of a pending export: `initial`, doubling, at most `max` (defaults
    /// 500 ms and 5 s). See [`PollSchedule`].
    pub fn poll_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.poll_initial = initial;
        self.config.poll_max = max;
        self
    }

    /// The longest an export may stay pending, per export (default 10 minutes); then
    /// [`ReadError::PendingTimeout`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// How many times an expired download URL (or expired export) is renewed (default 3); then
    /// [`ReadError::UrlExpired`].
    pub fn max_renewals(mut self, renewals: u32) -> Self {
        self.config.max_renewals = renewals;
        self
    }

    /// How far back a range may start (default [`EXPORT_LOOKBACK`]); `None` sends any range to
    /// WorkOS and lets it decide.
    pub fn lookback_limit(mut self, limit: Option<Duration>) -> Self {
        self.config.lookback = limit;
        self
    }

    /// The largest CSV row accepted (default [`DEFAULT_MAX_ROW_BYTES`]), counting its cells and
    /// the positions of their ends; a larger one, or one with more than [`MAX_ROW_FIELDS`]
    /// cells, ends the stream with [`ReadError::Row`], bounding the parser's memory.
    pub fn max_row_bytes(mut self, bytes: usize) -> Self {
        self.config.max_row_bytes = bytes.max(1024);
        self
    }

    /// The client this reader uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Exports the events `query` selects (organization, range, and the filters: actions, actor
    /// names, actor ids, target types) and streams them, oldest first as WorkOS orders them.
    ///
    /// Nothing happens until the stream is polled. The stream's [`EventStream::progress`] tells
    /// the phase, the bytes downloaded and the rows read.
    pub fn read(&self, query: CreateExport) -> EventStream {
        let progress = ReadProgress::default();
        let reader = self.clone();
        let p = progress.clone();
        let max_row_bytes = self.config.max_row_bytes;
        let stream = futures_util::stream::once(async move { reader.open(&query, &p).await.map(|b| (b, p)) })
            .map(move |opened| -> BoxStream {
                match opened {
                    Ok((Some(bytes), p)) => Box::pin(parser::parse(bytes, p, max_row_bytes)),
                    Ok((None, p)) => {
                        p.set_phase(Phase::Done);
                        Box::pin(futures_util::stream::empty())
                    }
                    Err(e) => Box::pin(futures_util::stream::once(async move { Err(e) })),
                }
            })
            .flatten();
        EventStream {
            inner: Box::pin(stream),
            progress,
        }
    }

    /// Exports like [`read`](Self::read) but hands over the CSV bytes as they arrive, without
    /// parsing them (for saving the file as WorkOS produced it). `Ok(None)` when no event matches.
    ///
    /// # Errors
    /// Every error of [`read`](Self::read) that happens before the first byte.
    pub async fn download(
        &self,
        query: &CreateExport,
        progress: &ReadProgress,
    ) -> Result<Option<CsvBytes>, ReadError> {
        Ok(self.open(query, progress).await?.map(|inner| CsvBytes {
            inner,
            progress: progress.clone(),
        }))
    }

    /// Create, poll, download (with renewals): the CSV's byte stream, or `None` for no events.
    async fn open(
        &self,
        query: &CreateExport,
        progress: &ReadProgress,
    ) -> Result<Option<crate::client::ByteStream>, ReadError> {
        if let Some(limit) = self.config.lookback {
            let earliest = OffsetDateTime::now_utc() - limit;
            if query.range_start < earliest {
                return Err(ReadError::RangeTooOld {
                    range_start: query.range_start,
                    earliest,
                });
            }
        }
        progress.set_phase(Phase::Creating);
        let Some(mut export) = self.create(query).await? else {
            return Ok(None);
        };
        let mut renewals = 0u32;
        // The id of the export created; answers to later reads are trusted for state and URL only.
        let mut id = export.id.clone();
        loop {
            progress.set_export_id(&id);
            export = self.wait_ready(&id, export, progress).await?;
            match &export.state {
                ExportState::Ready => {
                    let Some(url) = export.url.as_deref() else {
                        return Err(ReadError::MissingUrl { export_id: id });
                    };
                    progress.set_phase(Phase::Downloading);
                    match self.client.download_export_csv(url).await {
                        Ok(bytes) => return Ok(Some(bytes)),
                        Err(e) if matches!(e.status(), Some(403 | 404 | 410)) => {
                            renewals += 1;
                            if renewals > self.config.max_renewals {
                                return Err(ReadError::UrlExpired {
                                    export_id: id,
                                    renewals: self.config.max_renewals,
                                    source: Box::new(e),
                                });
                            }
                            tracing::debug!(export_id = %id, renewals, "export URL expired; reading the export again");
                            progress.set_phase(Phase::Pending);
                            export = self.client.get_export(&id).await?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                ExportState::Expired => {
                    renewals += 1;
                    if renewals > self.config.max_renewals {
                        return Err(ReadError::UrlExpired {
                            export_id: id,
                            renewals: self.config.max_renewals,
                            source: Box::new(Error::InvalidParameter {
                                field: "state",
                                message: "the export is expired".into(),
                            }),
                        });
                    }
                    tracing::debug!(export_id = %id, renewals, "export expired; creating it again");
                    progress.set_phase(Phase::Creating);
                    match self.create(query).await? {
                        Some(e) => {
                            id = e.id.clone();
                            export = e;
                        }
                        None => return Ok(None),
                    }
                }
                ExportState::Error => return Err(ReadError::ExportFailed { export_id: id }),
                ExportState::Pending => {
                    return Err(ReadError::PendingTimeout {
                        export_id: id,
                        waited: self.config.max_wait,
                    });
                }
                ExportState::Unknown(state) => {
                    return Err(ReadError::UnexpectedState {
                        state: state.clone(),
                        export_id: id,
                    });
                }
            }
        }
    }

    async fn create(&self, query: &CreateExport) -> Result<Option<AuditLogExport>, ReadError> {
        match self.client.create_export(query).await {
            Ok(export) => Ok(Some(export)),
            Err(e) if e.is_no_events() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Polls while pending; answers the export in its first non-pending state, or pending when
    /// `max_wait` ran out.
    async fn wait_ready(
        &self,
        id: &str,
        mut export: AuditLogExport,
        progress: &ReadProgress,
    ) -> Result<AuditLogExport, ReadError> {
        let deadline = tokio::time::Instant::now() + self.config.max_wait;
        let mut waits = PollSchedule::new(self.config.poll_initial, self.config.poll_max);
        while export.state == ExportState::Pending {
            progress.set_phase(Phase::Pending);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let wait = waits.next().unwrap_or(self.config.poll_max);
            tokio::time::sleep(wait.min(deadline - now)).await;
            progress.inner.polls.fetch_add(1, Ordering::Relaxed);
            export = self.client.get_export(id).await?;
        }
        Ok(export)
    }
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<Event, ReadError>> + Send>>;

/// The events of an export, in file order: a [`Stream`] of `Result<Event, ReadError>`.
///
/// Made by [`EventReader::read`] or [`parse_csv`]. Use `futures_util::TryStreamExt::try_next`
/// to stop at the first error, or `StreamExt::next` to see each row's result.
#[must_use = "an EventStream does nothing unless polled"]
pub struct EventStream {
    inner: BoxStream,
    progress: ReadProgress,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// A live view of the stream's progress, to show from another task.
    pub fn progress(&self) -> ReadProgress {
        self.progress.clone()
    }
}

impl Stream for EventStream {
    type Item = Result<Event, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The raw CSV of an export, chunk by chunk ([`EventReader::download`]); counts its bytes in
/// the [`ReadProgress`] it was made with.
#[must_use = "CsvBytes does nothing unless polled"]
pub struct CsvBytes {
    inner: crate::client::ByteStream,
    progress: ReadProgress,
}

impl fmt::Debug for CsvBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsvBytes").finish_non_exhaustive()
    }
}

impl Stream for CsvBytes {
    type Item = Result<Bytes, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.progress
                    .inner
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.progress.set_phase(Phase::Done);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where a read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Not started (the stream was not polled yet).
    Idle,
    /// Creating the export.
    Creating,
    /// Waiting for the export to be ready.
    Pending,
    /// Downloading and parsing the CSV.
    Downloading,
    /// Finished (also after an error).
    Done,
}

/// A live, shared view of a read's progress: phase, export id, polls, bytes and rows. Cheap to
/// clone; every clone sees the same counters.
#[derive(Clone, Default)]
pub struct ReadProgress {
    inner: Arc<ProgressInner>,
}

#[derive(Default)]
struct ProgressInner {
    phase: AtomicU8,
    polls: AtomicU64,
    bytes: AtomicU64,
    rows: AtomicU64,
    export_id: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for ReadProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadProgress")
            .field("phase", &self.phase())
            .field("export_id", &self.export_id())
            .field("polls", &self.polls())
            .field("bytes", &self.bytes())
            .field("rows", &self.rows())
            .finish()
    }
}

impl ReadProgress {
    /// A fresh progress (phase [`Phase::Idle`], zero counters).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Relaxed) {
            1 => Phase::Creating,
            2 => Phase::Pending,
            3 => Phase::Downloading,
            4 => Phase::Done,
            _ => Phase::Idle,
        }
    }

    /// How many times the export was polled while pending.
    pub fn polls(&self) -> u64 {
        self.inner.polls.load(Ordering::Relaxed)
    }

    /// CSV bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// CSV data rows read so far (good and bad).
    pub fn rows(&self) -> u64 {
        self.inner.rows.load(Ordering::Relaxed)
    }

    /// The id of the export being read, once created.
    pub fn export_id(&self) -> Option<String> {
        crate::sync::lock(&self.inner.export_id).clone()
    }

    fn set_phase(&self, phase: Phase) {
        let n = match phase {
            Phase::Idle => 0,
            Phase::Creating => 1,
            Phase::Pending => 2,
            Phase::Downloading => 3,
            Phase::Done => 4,
        };
        self.inner.phase.store(n, Ordering::Relaxed);
    }

    fn set_export_id(&self, id: &str) {
        *crate::sync::lock(&self.inner.export_id) = Some(id.to_owned());
    }
}

/// Why reading events back failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Creating, reading or downloading the export failed (WorkOS's answer, transport, timeout).
    #[error(transparent)]
    Client(#[from] Error),
    /// The range starts before WorkOS's export window; nothing was sent.
    #[error(
        "range_start {} is before the earliest exportable time {} (WorkOS exports events from the past three months)",
        rfc3339_millis::format(*range_start),
        rfc3339_millis::format(*earliest)
    )]
    RangeTooOld {
        /// The requested start.
        range_start: OffsetDateTime,
        /// The earliest start accepted.
        earliest: OffsetDateTime,
    },
    /// WorkOS reports the export in state `error`.
    #[error("WorkOS could not produce export {export_id} (state `error`); create a new export")]
    ExportFailed {
        /// The export.
        export_id: String,
    },
    /// The export was still `pending` when the reader's `max_wait` ran out.
    #[error("export {export_id} was still pending after {waited:?}")]
    PendingTimeout {
        /// The export.
        export_id: String,
        /// How long the reader waited.
        waited: Duration,
    },
    /// The download URL (or the export) kept expiring.
    #[error("the download URL of export {export_id} expired again after {renewals} renewals: {source}")]
    UrlExpired {
        /// The export.
        export_id: String,
        /// How many renewals were tried.
        renewals: u32,
        /// The last failure.
        #[source]
        source: Box<Error>,
    },
    /// A `ready` export without a `url`.
    #[error("export {export_id} is ready but has no download URL")]
    MissingUrl {
        /// The export.
        export_id: String,
    },
    /// The export is in a state this version does not know.
    #[error("export {export_id} is in an unknown state {state:?}")]
    UnexpectedState {
        /// The state as WorkOS sent it.
        state: String,
        /// The export.
        export_id: String,
    },
    /// The CSV's header lacks a required column (or is missing); the stream ends.
    #[error("the export's CSV header is unusable: {message}")]
    Header {
        /// What is wrong.
        message: String,
    },
    /// One data row could not be read; the rows before it were yielded, the next ones follow.
    #[error("CSV row {row} (line {line}), column {column}: {message}")]
    Row {
        /// The data row, 1-based (the header is row 0).
        row: u64,
        /// The line of the file where the row starts, 1-based.
        line: u64,
        /// The column's header name (or `#<index>` past the header).
        column: String,
        /// What is wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_schedule_doubles_to_its_cap() {
        let waits: Vec<u64> = PollSchedule::new(Duration::from_millis(500), Duration::from_secs(5))
            .take(6)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
    }
}
