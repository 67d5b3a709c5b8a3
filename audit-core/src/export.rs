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
//! WorkOS does not document the file (reference §3, UNCONFIRMED). Columns are found **by header
//! name**, in any order, and unknown columns are ignored: `action`, `occurred_at`, `actor_id`,
//! `actor_type`, `context_location` (required), `actor_name`, `actor_metadata`,
//! `context_user_agent`, `metadata` (optional), and per target `target_id_<N>`,
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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use time::OffsetDateTime;

use crate::client::{AuditLogExport, Client, CreateExport, ExportState};
use crate::error::Error;
use crate::event::{Action, Actor, Context, Event, Metadata, Target, rfc3339_millis};

/// How far back WorkOS exports events: "events from the past three months can be exported". The
/// longest three calendar months are 92 days; a range starting earlier is refused locally.
pub const EXPORT_LOOKBACK: Duration = Duration::from_secs(92 * 24 * 3600);

/// The largest CSV record (one row, all its cells) the parser accepts, by default: 16 MiB. WorkOS
/// limits metadata to 50 keys of 500 characters per object, so a real row is far smaller.
pub const DEFAULT_MAX_ROW_BYTES: usize = 16 * 1024 * 1024;

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

    /// The largest CSV row accepted (default [`DEFAULT_MAX_ROW_BYTES`]); a larger one ends the
    /// stream with [`ReadError::Row`], bounding the parser's memory.
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
                    Ok((Some(bytes), p)) => Box::pin(parse(bytes, p, max_row_bytes)),
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

// ---- parsing ---------------------------------------------------------------------------------

/// Parses an export's CSV from any stream of byte chunks (a file, a download) into events, with
/// the rules of the [module documentation](self). Memory stays bounded by one chunk, one row and
/// the events of one chunk.
pub fn parse_csv<S, E>(chunks: S) -> EventStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<ReadError> + 'static,
{
    let progress = ReadProgress::default();
    progress.set_phase(Phase::Downloading);
    EventStream {
        inner: Box::pin(parse(chunks, progress.clone(), DEFAULT_MAX_ROW_BYTES)),
        progress,
    }
}

fn parse<S, E>(
    chunks: S,
    progress: ReadProgress,
    max_row_bytes: usize,
) -> impl Stream<Item = Result<Event, ReadError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<ReadError> + 'static,
{
    struct State<S> {
        chunks: Pin<Box<S>>,
        parser: CsvParser,
        queue: VecDeque<Result<Event, ReadError>>,
        done: bool,
        progress: ReadProgress,
    }
    let state = State {
        chunks: Box::pin(chunks),
        parser: CsvParser::new(max_row_bytes),
        queue: VecDeque::new(),
        done: false,
        progress,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                return Some((item, st));
            }
            if st.done {
                st.progress.set_phase(Phase::Done);
                return None;
            }
            match st.chunks.next().await {
                Some(Ok(chunk)) => {
                    st.progress
                        .inner
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    st.parser.feed(&chunk, &mut st.queue, &st.progress);
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.queue.push_back(Err(e.into()));
                }
                None => {
                    st.parser.finish(&mut st.queue, &st.progress);
                    st.done = true;
                }
            }
            if st.parser.stopped {
                st.done = true;
            }
        }
    })
}

/// Column positions, found by header name.
#[derive(Debug)]
struct Columns {
    names: Vec<String>,
    action: usize,
    occurred_at: usize,
    actor_id: usize,
    actor_type: usize,
    actor_name: Option<usize>,
    actor_metadata: Option<usize>,
    location: usize,
    user_agent: Option<usize>,
    metadata: Option<usize>,
    /// Per target number, ascending: id, type, name, metadata.
    targets: Vec<[Option<usize>; 4]>,
}

impl Columns {
    fn from_header(names: Vec<String>) -> Result<Self, ReadError> {
        let find = |name: &str| names.iter().position(|n| n == name);
        let required = |name: &str| {
            find(name).ok_or_else(|| ReadError::Header {
                message: format!("no column named {name:?} (columns: {})", names.join(", ")),
            })
        };
        let mut targets: BTreeMap<u64, [Option<usize>; 4]> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            for (slot, prefix) in ["target_id_", "target_type_", "target_name_", "target_metadata_"]
                .iter()
                .enumerate()
            {
                if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) {
                    targets.entry(n).or_default()[slot] = Some(i);
                }
            }
        }
        Ok(Self {
            action: required("action")?,
            occurred_at: required("occurred_at")?,
            actor_id: required("actor_id")?,
            actor_type: required("actor_type")?,
            location: required("context_location")?,
            actor_name: find("actor_name"),
            actor_metadata: find("actor_metadata"),
            user_agent: find("context_user_agent"),
            metadata: find("metadata"),
            targets: targets.into_values().collect(),
            names,
        })
    }
}

/// An incremental CSV record parser over chunks (`csv-core`), turning records into events.
struct CsvParser {
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    columns: Option<Columns>,
    /// Data rows seen (the header is not counted).
    row: u64,
    /// The line where the current record started.
    record_line: u64,
    max_row_bytes: usize,
    /// A fatal error was emitted; nothing more is parsed.
    stopped: bool,
}

impl CsvParser {
    fn new(max_row_bytes: usize) -> Self {
        Self {
            core: csv_core::Reader::new(),
            out: vec![0; 4096.min(max_row_bytes)],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            columns: None,
            row: 0,
            record_line: 1,
            max_row_bytes,
            stopped: false,
        }
    }

    fn feed(&mut self, mut input: &[u8], sink: &mut VecDeque<Result<Event, ReadError>>, p: &ReadProgress) {
        while !self.stopped {
            let (res, nin, nout, nend) = self.core.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => return,
                csv_core::ReadRecordResult::OutputFull => {
                    if self.out.len() >= self.max_row_bytes {
                        self.stopped = true;
                        sink.push_back(Err(ReadError::Row {
                            row: self.row + 1,
                            line: self.record_line,
                            column: self.current_column(),
                            message: format!("the row is larger than {} bytes", self.max_row_bytes),
                        }));
                        return;
                    }
                    let new_len = (self.out.len() * 2).min(self.max_row_bytes);
                    self.out.resize(new_len, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let new_len = self.ends.len() * 2;
                    self.ends.resize(new_len, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.record(sink, p);
                    self.out_len = 0;
                    self.ends_len = 0;
                    self.record_line = self.core.line();
                }
                csv_core::ReadRecordResult::End => return,
            }
        }
    }

    fn finish(&mut self, sink: &mut VecDeque<Result<Event, ReadError>>, p: &ReadProgress) {
        self.feed(&[], sink, p);
        if self.columns.is_none() && !self.stopped {
            self.stopped = true;
            sink.push_back(Err(ReadError::Header {
                message: "the file is empty (no header row)".into(),
            }));
        }
    }

    fn current_column(&self) -> String {
        let i = self.ends_len;
        self.columns
            .as_ref()
            .and_then(|c| c.names.get(i).cloned())
            .unwrap_or_else(|| format!("#{}", i + 1))
    }

    fn fields(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends[..self.ends_len]
            .iter()
            .map(|&end| {
                let f = &self.out[start..end];
                start = end;
                f
            })
            .collect()
    }

    fn record(&mut self, sink: &mut VecDeque<Result<Event, ReadError>>, p: &ReadProgress) {
        // A blank line is one empty field: skip it.
        if self.ends_len == 1 && self.ends[0] == 0 {
            return;
        }
        let Some(columns) = &self.columns else {
            let names: Result<Vec<String>, _> = self
                .fields()
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    let name = std::str::from_utf8(f).map_err(|_| ReadError::Header {
                        message: format!("column {} is not UTF-8", i + 1),
                    })?;
                    let name = if i == 0 {
                        name.trim_start_matches('\u{feff}')
                    } else {
                        name
                    };
                    Ok(name.trim().to_owned())
                })
                .collect();
            match names.and_then(Columns::from_header) {
                Ok(c) => self.columns = Some(c),
                Err(e) => {
                    self.stopped = true;
                    sink.push_back(Err(e));
                }
            }
            return;
        };
        self.row += 1;
        p.inner.rows.fetch_add(1, Ordering::Relaxed);
        let row = RowView {
            fields: self.fields(),
            columns,
            row: self.row,
            line: self.record_line,
        };
        sink.push_back(row.event());
    }
}

/// One data row with its header, for building an event.
struct RowView<'a> {
    fields: Vec<&'a [u8]>,
    columns: &'a Columns,
    row: u64,
    line: u64,
}

impl RowView<'_> {
    fn error(&self, column: usize, message: impl Into<String>) -> ReadError {
        ReadError::Row {
            row: self.row,
            line: self.line,
            column: self
                .columns
                .names
                .get(column)
                .cloned()
                .unwrap_or_else(|| format!("#{}", column + 1)),
            message: message.into(),
        }
    }

    /// The cell at `i` as text; `None` when empty.
    fn text(&self, i: usize) -> Result<Option<&str>, ReadError> {
        let raw = self.fields.get(i).copied().unwrap_or_default();
        if raw.is_empty() {
            return Ok(None);
        }
        std::str::from_utf8(raw)
            .map(Some)
            .map_err(|_| self.error(i, "not valid UTF-8"))
    }

    fn optional(&self, i: Option<usize>) -> Result<Option<String>, ReadError> {
        match i {
            Some(i) => Ok(self.text(i)?.map(str::to_owned)),
            None => Ok(None),
        }
    }

    fn required(&self, i: usize) -> Result<String, ReadError> {
        self.text(i)?
            .map(str::to_owned)
            .ok_or_else(|| self.error(i, "must not be empty"))
    }

    fn metadata(&self, i: Option<usize>) -> Result<Option<Metadata>, ReadError> {
        let Some(i) = i else { return Ok(None) };
        let Some(text) = self.text(i)? else {
            return Ok(None);
        };
        let metadata: Metadata = serde_json::from_str(text).map_err(|e| {
            self.error(
                i,
                format!("not a JSON object of strings, numbers and booleans: {e}"),
            )
        })?;
        Ok((!metadata.is_empty()).then_some(metadata))
    }

    fn event(&self) -> Result<Event, ReadError> {
        let c = self.columns;
        if self.fields.len() != c.names.len() {
            let column = self.fields.len().min(c.names.len().saturating_sub(1));
            return Err(self.error(
                column,
                format!(
                    "the row has {} cells but the header has {} columns",
                    self.fields.len(),
                    c.names.len()
                ),
            ));
        }
        let action = self.required(c.action)?;
        let action = Action::deserialize(action.as_str().into_deserializer())
            .map_err(|e: serde::de::value::Error| self.error(c.action, e.to_string()))?;
        let occurred_at = self.required(c.occurred_at)?;
        let occurred_at = rfc3339_millis::parse(&occurred_at)
            .map_err(|e| self.error(c.occurred_at, format!("{occurred_at:?} is not RFC 3339: {e}")))?;
        let actor = Actor {
            id: self.required(c.actor_id)?,
            kind: self.required(c.actor_type)?.into(),
            name: self.optional(c.actor_name)?,
            metadata: self.metadata(c.actor_metadata)?,
        };
        let mut targets = Vec::new();
        for [id, kind, name, metadata] in &c.targets {
            let id_text = self.optional(*id)?;
            let kind_text = self.optional(*kind)?;
            let name = self.optional(*name)?;
            let metadata = self.metadata(*metadata)?;
            match (id_text, kind_text) {
                (None, None) if name.is_none() && metadata.is_none() => {}
                (Some(id), Some(kind)) => targets.push(Target {
                    id,
                    kind: kind.into(),
                    name,
                    metadata,
                }),
                (None, _) => {
                    return Err(match id {
                        Some(i) => self.error(*i, "must not be empty when the target has other cells"),
                        None => self.error(kind.unwrap_or(0), "a target without an id column"),
                    });
                }
                (Some(_), None) => {
                    return Err(match kind {
                        Some(i) => self.error(*i, "must not be empty when the target has an id"),
                        None => self.error(id.unwrap_or(0), "a target without a type column"),
                    });
                }
            }
        }
        let context = Context {
            location: self.required(c.location)?,
            user_agent: self.optional(c.user_agent)?,
        };
        Ok(Event {
            action,
            occurred_at,
            version: None,
            actor,
            targets,
            context,
            metadata: self.metadata(c.metadata)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn chunks(text: &str, size: usize) -> impl Stream<Item = Result<Bytes, ReadError>> + Send + 'static {
        let parts: Vec<Result<Bytes, ReadError>> = text
            .as_bytes()
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(parts)
    }

    async fn all(text: &str, size: usize) -> Vec<Result<Event, ReadError>> {
        parse_csv(chunks(text, size)).collect().await
    }

    const CSV: &str = "\u{feff}extra,metadata,target_type_2,occurred_at,action,actor_id,actor_type,context_location,target_id_2,target_id_1,target_type_1\r\n\
        x,\"{\"\"n\"\":1.5,\"\"s\"\":\"\"a,b\"\"}\",team,2024-01-02T03:04:05.678Z,user.signed_in,user_1,user,203.0.113.7,t2,t1,invoice\r\n\
        \n\
        y,,,2024-01-02T03:04:06.000Z,user.signed_out,user_2,user,\"multi\nline\",,,\r\n";

    #[tokio::test]
    async fn columns_by_name_any_chunking() {
        for size in [1, 2, 7, 64, 4096] {
            let events: Vec<Event> = all(CSV, size)
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(events.len(), 2, "chunk size {size}");
            assert_eq!(events[0].action.as_str(), "user.signed_in");
            assert_eq!(events[0].targets.len(), 2);
            assert_eq!(events[0].targets[0].id, "t1");
            assert_eq!(events[0].targets[1].kind, "team");
            assert_eq!(
                events[0].metadata.as_ref().unwrap().get("s"),
                Some(&crate::MetadataValue::String("a,b".into()))
            );
            assert_eq!(events[1].context.location, "multi\nline");
            assert!(events[1].targets.is_empty());
            assert!(events[1].metadata.is_none());
        }
    }

    #[tokio::test]
    async fn a_bad_row_names_row_and_column_and_reading_goes_on() {
        let text = "action,occurred_at,actor_id,actor_type,context_location,metadata\n\
            a.b,2024-01-02T03:04:05Z,u,user,here,\n\
            a.b,yesterday,u,user,here,\n\
            a.b,2024-01-02T03:04:05Z,u,user,here,\"{\"\"k\"\":null}\"\n\
            a.b,2024-01-02T03:04:05Z,u,user\n\
            a.b,2024-01-02T03:04:05Z,u,user,here,\n";
        let out = all(text, 5).await;
        assert_eq!(out.len(), 5);
        assert!(out[0].is_ok());
        match &out[1] {
            Err(ReadError::Row {
                row, line, column, ..
            }) => {
                assert_eq!((*row, *line, column.as_str()), (2, 3, "occurred_at"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[2], Err(ReadError::Row { row: 3, column, .. }) if column == "metadata"));
        assert!(
            matches!(&out[3], Err(ReadError::Row { row: 4, column, .. }) if column == "context_location")
        );
        assert!(out[4].is_ok());
    }

    #[tokio::test]
    async fn header_problems_end_the_stream() {
        let out = all("action,occurred_at\nx,y\n", 3).await;
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Err(ReadError::Header { message }) if message.contains("actor_id")));
        let out = all("", 3).await;
        assert!(matches!(&out[..], [Err(ReadError::Header { .. })]));
    }

    #[tokio::test]
    async fn a_huge_row_is_refused() {
        let mut text = String::from("action,occurred_at,actor_id,actor_type,context_location\n");
        text.push_str(&"x".repeat(3000));
        text.push_str(",2024-01-02T03:04:05Z,u,user,here\n");
        let progress = ReadProgress::new();
        let out: Vec<_> = parse(chunks(&text, 100), progress, 1024).collect().await;
        assert!(
            matches!(&out[..], [Err(ReadError::Row { row: 1, .. })]),
            "{out:?}"
        );
        let ok: Vec<Event> = parse_csv(chunks(&text, 100)).try_collect().await.unwrap();
        assert_eq!(ok[0].action.as_str().len(), 3000);
    }

    #[test]
    fn poll_schedule_doubles_to_its_cap() {
        let waits: Vec<u64> = PollSchedule::new(Duration::from_millis(500), Duration::from_secs(5))
            .take(6)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
    }
}
