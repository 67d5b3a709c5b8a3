//! Dead letters: events the emitter gave up on, kept whole with the reason.
//!
//! An event becomes a [`DeadLetter`] when WorkOS refuses it for good (400, 404, 409, 422), when
//! its retry window ends, or when [`Emitter::shutdown`](super::Emitter::shutdown) reaches its
//! deadline with the event still pending. The dead letter keeps the organization, the whole event,
//! its idempotency key, the reason, what WorkOS said and how many attempts were made.
//!
//! Destinations implement [`DeadLetterSink`]: a callback ([`CallbackDeadLetters`], or any
//! `Fn(DeadLetter)` closure through [`EmitterBuilder::on_dead_letter`](super::EmitterBuilder::on_dead_letter)),
//! a JSON-lines file ([`JsonlDeadLetters`]) and an in-memory collector for tests
//! ([`MemoryDeadLetters`]). A destination reports whether it recorded the letter; the event leaves
//! the emitter only once one did, and otherwise stays and is tried again.
//!
//! Without any configured destination, and as the last resort for an event no destination could
//! record, the whole dead letter (event and key) is logged with `tracing::error!` after
//! [`DEAD_LETTER_LOG_MARKER`], in the JSON that [`DeadLetter::read_log`] and
//! [`Emitter::replay_log`](super::Emitter::replay_log) read back.
//!
//! # Replaying
//!
//! [`Emitter::replay_dead_letters`](super::Emitter::replay_dead_letters) reads a JSON-lines file and
//! emits every line again with its **original idempotency key**: an event that in fact reached
//! WorkOS before it was dead-lettered (an answer lost to a timeout, a shutdown deadline) is not
//! stored twice as long as the replay happens within the 24 hours WorkOS remembers keys.
//!
//! # Security
//!
//! Dead letters contain the whole event, metadata included: treat the file (and, without a
//! destination, the log) like the audit log itself. They never contain the API key.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::event::rfc3339_millis;
use crate::{Error, Event, OrganizationId};

pub use crate::delivery::DeadLetterReason;

/// The last error of a dead-lettered event, in a form that can be written and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetterError {
    /// The error's text (no secrets: the API key never appears in an [`Error`]).
    pub message: String,
    /// The HTTP status WorkOS answered with, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// WorkOS's `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// WorkOS's `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_message: Option<String>,
    /// WorkOS's field errors, each as text (`/metadata/ip_address`, `event.action (required)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_errors: Vec<String>,
    /// The `X-Request-ID` of the response, to quote to WorkOS support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl From<&Error> for DeadLetterError {
    fn from(e: &Error) -> Self {
        let api = e.api();
        Self {
            message: e.to_string(),
            status: e.status(),
            code: api.and_then(|a| a.code.clone()),
            api_message: api.and_then(|a| a.message.clone()),
            field_errors: api
                .map(|a| a.errors.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            request_id: e.request_id().map(str::to_owned),
        }
    }
}

/// An event the emitter gave up on, with everything needed to understand and replay it.
///
/// Serialized as one JSON object: `organization_id`, `event` (exactly the WorkOS JSON),
/// `idempotency_key`, `reason`, `error`, `attempts`, `first_attempt_at`, `last_attempt_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The organization the event belongs to.
    pub organization_id: OrganizationId,
    /// The whole event.
    pub event: Event,
    /// The idempotency key sent with every attempt; keep it when replaying.
    pub idempotency_key: String,
    /// Why the event was given up.
    pub reason: DeadLetterReason,
    /// The last error, when an attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeadLetterError>,
    /// How many attempts were made (0 when none was).
    pub attempts: u32,
    /// When the first attempt was made.
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<OffsetDateTime>,
    /// When the last attempt was made.
    #[serde(default, with = "opt_time", skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<OffsetDateTime>,
}

mod opt_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::rfc3339_millis::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::rfc3339_millis::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

pub(crate) fn system_time(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// What precedes a dead letter's JSON in a log line written when no destination is configured
/// (or as the last resort when every destination failed); [`DeadLetter::read_log`] and
/// [`Emitter::replay_log`](super::Emitter::replay_log) look for it.
pub const DEAD_LETTER_LOG_MARKER: &str = "audit dead letter: ";

impl DeadLetter {
    /// Reads a JSON-lines file written by [`JsonlDeadLetters`]: one entry per non-empty line,
    /// each the dead letter or the reason the line could not be read (with its 1-based number).
    ///
    /// A record cut short by an interrupted write (a full disk, a crash) is an
    /// [`UnreadableDeadLetter`] with [`torn`](UnreadableDeadLetter::torn) set, logged with a
    /// warning and skipped; the records after it are read normally. A log line holding
    /// [`DEAD_LETTER_LOG_MARKER`] is read from the JSON after the marker.
    pub fn read_jsonl(
        path: impl AsRef<Path>,
    ) -> std::io::Result<Vec<Result<DeadLetter, UnreadableDeadLetter>>> {
        Self::read_lines(path.as_ref(), false)
    }

    /// Reads the dead letters of a log: every line holding [`DEAD_LETTER_LOG_MARKER`] (written
    /// when no dead-letter destination is configured, or when every destination failed), with
    /// the JSON after it; other lines are ignored. Works with `tracing-subscriber`'s text
    /// formats, which print the message as it is.
    pub fn read_log(
        path: impl AsRef<Path>,
    ) -> std::io::Result<Vec<Result<DeadLetter, UnreadableDeadLetter>>> {
        Self::read_lines(path.as_ref(), true)
    }

    fn read_lines(path: &Path, log: bool) -> std::io::Result<Vec<Result<DeadLetter, UnreadableDeadLetter>>> {
        let mut reader = BufReader::new(File::open(path)?);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut number = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            number += 1;
            let line = String::from_utf8_lossy(&buf);
            let json = match line.find(DEAD_LETTER_LOG_MARKER) {
                Some(at) => &line[at + DEAD_LETTER_LOG_MARKER.len()..],
                None if log => continue,
                None => &line[..],
            };
            let json = json.trim();
            if json.is_empty() {
                continue;
            }
            // The first JSON value of the line (a log line may go on after it).
            let mut values = serde_json::Deserializer::from_str(json).into_iter::<DeadLetter>();
            match values.next() {
                Some(Ok(letter)) => out.push(Ok(letter)),
                Some(Err(e)) => out.push(Err(UnreadableDeadLetter::new(path, number, &e))),
                None => {}
            }
        }
        Ok(out)
    }

    /// The dead letter as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Serializing this struct cannot fail: every field is a string, number or plain object.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Writes the whole dead letter (event and key included) to the log with `tracing::error!`:
    /// `why`, then [`DEAD_LETTER_LOG_MARKER`] and the letter's JSON, which
    /// [`DeadLetter::read_log`] and [`Emitter::replay_log`](super::Emitter::replay_log) read back.
    ///
    /// # Security
    /// The line holds the event's metadata: keep the log as private as the audit log itself. It
    /// never holds the API key.
    pub fn log(&self, why: &str) {
        tracing::error!(
            "{why} (organization {}, action {}, reason {}); {DEAD_LETTER_LOG_MARKER}{}",
            self.organization_id,
            self.event.action,
            self.reason,
            self.to_json_line()
        );
    }
}

/// A line of a dead-letter file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dead-letter line {line}: {message}")]
#[non_exhaustive]
pub struct UnreadableDeadLetter {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
    /// The line is a record cut short by an interrupted write (a full disk, a crash): it was
    /// skipped with a warning. Its event may be in the log (see [`DeadLetter::read_log`]).
    pub torn: bool,
}

impl UnreadableDeadLetter {
    fn new(path: &Path, line: usize, e: &serde_json::Error) -> Self {
        let torn = e.is_eof();
        if torn {
            tracing::warn!(
                path = %path.display(),
                line,
                "a dead-letter record was cut short by an interrupted write; skipping it"
            );
        }
        Self {
            line,
            message: if torn {
                format!("torn record (an interrupted write), skipped: {e}")
            } else {
                e.to_string()
            },
            torn,
        }
    }
}

/// A destination for dead letters.
///
/// Called once per dead letter by the emitter's one dead-letter writer, on a blocking thread
/// (never on a runtime thread), one letter at a time: it may do blocking I/O (an fsync), but
/// while it runs the other dead letters wait (senders hold their events, `DropOldest` refuses
/// new events once the writer's bounded queue is full). It reports whether the letter was recorded: an
/// event leaves the emitter (and its spool row) only once a destination recorded it. On an
/// error the event stays and the write is tried again later; an event that no destination could
/// record by shutdown is written whole to the log as the last resort ([`DeadLetter::log`]). A
/// panic counts as an error.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Records one dead letter; `Err` when it could not be recorded.
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()>;
}

impl<T: DeadLetterSink + ?Sized> DeadLetterSink for Arc<T> {
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()> {
        (**self).dead_letter(letter)
    }
}

/// Hands every dead letter to a callback. The callback cannot fail except by panicking, which
/// counts as a failed write (see [`DeadLetterSink`]).
#[derive(Clone)]
pub struct CallbackDeadLetters(Arc<dyn Fn(DeadLetter) + Send + Sync>);

impl CallbackDeadLetters {
    /// A destination calling `f` with each dead letter.
    pub fn new(f: impl Fn(DeadLetter) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for CallbackDeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackDeadLetters(..)")
    }
}

impl DeadLetterSink for CallbackDeadLetters {
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()> {
        (self.0)(letter.clone());
        Ok(())
    }
}

/// Appends every dead letter to a JSON-lines file, one object per line: each record is written
/// whole with one write and made durable with an fsync before its event leaves the emitter.
///
/// A write that fails part-way (a full disk) may leave a torn record at the end of the file; the
/// next record starts on a new line, and [`DeadLetter::read_jsonl`] skips the torn one with a
/// warning. The event of a failed write is not lost: it stays in the emitter and the write is
/// tried again (see [`DeadLetterSink`]).
///
/// Read it back with [`DeadLetter::read_jsonl`]; re-emit it with
/// [`Emitter::replay_dead_letters`](super::Emitter::replay_dead_letters).
///
/// # Security
/// The file holds whole events including metadata; create it somewhere only the service can read.
#[derive(Debug)]
pub struct JsonlDeadLetters {
    path: PathBuf,
    file: Mutex<JsonlFile>,
}

#[derive(Debug)]
struct JsonlFile {
    file: File,
    /// The file may end inside a record (a failed write, or found so at open): the next record
    /// starts with a newline so that it is not glued to the torn one.
    torn: bool,
}

impl JsonlDeadLetters {
    /// Opens (creating if needed) `path` for appending.
    pub fn new(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let torn = ends_inside_a_line(&path);
        Ok(Self {
            path,
            file: Mutex::new(JsonlFile { file, torn }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether a regular file's last byte is not a newline (a record cut short).
fn ends_inside_a_line(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return false,
    };
    if len == 0 || file.seek(SeekFrom::Start(len - 1)).is_err() {
        return false;
    }
    let mut last = [0u8; 1];
    file.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

impl DeadLetterSink for JsonlDeadLetters {
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()> {
        let mut out = crate::sync::lock(&self.file);
        let mut record = Vec::with_capacity(1024);
        if out.torn {
            record.push(b'\n');
        }
        serde_json::to_writer(&mut record, letter).map_err(std::io::Error::other)?;
        record.push(b'\n');
        // One write of the whole record, then an fsync: recorded means on the disk.
        let written = out.file.write_all(&record).and_then(|()| out.file.sync_data());
        out.torn = written.is_err();
        written
    }
}

/// Keeps dead letters in memory, for tests. Cloning shares the collection.
#[derive(Debug, Clone, Default)]
pub struct MemoryDeadLetters(Arc<Mutex<Vec<DeadLetter>>>);

impl MemoryDeadLetters {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every dead letter so far, oldest first.
    pub fn letters(&self) -> Vec<DeadLetter> {
        crate::sync::lock(&self.0).clone()
    }

    /// How many dead letters there are.
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.0).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeadLetterSink for MemoryDeadLetters {
    fn dead_letter(&self, letter: &DeadLetter) -> std::io::Result<()> {
        crate::sync::lock(&self.0).push(letter.clone());
        Ok(())
    }
}

/// What [`Emitter::replay_dead_letters`](super::Emitter::replay_dead_letters) did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Lines emitted again (with their original idempotency keys).
    pub replayed: usize,
    /// Lines that could not be read.
    pub unreadable: Vec<UnreadableDeadLetter>,
    /// Lines the emitter refused, with their 1-based position among the readable entries.
    pub refused: Vec<(usize, super::EmitError)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Actor, Context};

    #[test]
    fn a_dead_letter_round_trips_through_a_jsonl_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let sink = JsonlDeadLetters::new(&path).unwrap();
        let err = Error::Api(Box::new(crate::ApiError::from_response(
            422,
            Some("req_9".into()),
            None,
            br#"{"message":"Validation failed.","errors":[{"code":"required","field":"event.action"}]}"#,
        )));
        let letter = DeadLetter {
            organization_id: OrganizationId::new("org_1").unwrap(),
            event: Event::new(
                Action::new("user.signed_in").unwrap(),
                Actor::new("u", "user"),
                Context::new("1.2.3.4"),
            )
            .occurred_at(system_time(SystemTime::UNIX_EPOCH))
            .meta("k", 1),
            idempotency_key: "key-1".into(),
            reason: DeadLetterReason::Rejected,
            error: Some((&err).into()),
            attempts: 1,
            first_attempt_at: Some(system_time(SystemTime::UNIX_EPOCH)),
            last_attempt_at: Some(system_time(SystemTime::UNIX_EPOCH)),
        };
        sink.dead_letter(&letter).unwrap();
        sink.dead_letter(&letter).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["reason"], "rejected");
        assert_eq!(first["error"]["status"], 422);
        assert_eq!(first["error"]["request_id"], "req_9");
        assert_eq!(first["event"]["action"], "user.signed_in");
        assert_eq!(first["first_attempt_at"], "1970-01-01T00:00:00.000Z");
        let read = DeadLetter::read_jsonl(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].as_ref().unwrap(), &letter);
        assert_eq!(read[2].as_ref().unwrap_err().line, 3);
    }
}
