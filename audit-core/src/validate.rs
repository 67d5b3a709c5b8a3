//! Local validation of every rule WorkOS applies to an event.
//!
//! Every problem is reported with the JSON pointer of the offending value inside the event
//! (`/targets/1/metadata/cost`), the form WorkOS's own 400 responses use in `instancePath`, and
//! all problems of an event are reported together.
//!
//! # WorkOS's limits, and where each figure comes from
//!
//! | rule | figure | source |
//! |---|---|---|
//! | targets per event | at most [`Event::MAX_TARGETS`] (20) | WorkOS answers more with a 400 invalid audit-log event (`maxItems: 20`), reported in production (dust-tt/dust#27021) |
//! | size of one create-event request | [`DEFAULT_MAX_REQUEST_BYTES`] (100 KiB), configurable | WorkOS answers oversized requests with 413 "request entity too large" and publishes no figure (dust-tt/dust#26412); 100 KiB is the default JSON limit of the Node.js body parser whose error text that is (UNCONFIRMED) |
//! | U+0000 in a string | refused everywhere | PostgreSQL's `jsonb` refuses `\u0000` (SQLSTATE 22P05), so such an event can be neither stored in an outbox nor, probably, by WorkOS (UNCONFIRMED) |
//! | metadata | [`Metadata::MAX_KEYS`] keys, keys `^[a-zA-Z0-9_-]{0,40}$`, strings of [`Metadata::MAX_STRING_CHARS`] characters | WorkOS's OpenAPI specification |

use std::fmt;
use std::io;

use serde::Serialize;

use crate::event::{
    ACTION_RULE, Action, Actor, Context, Event, MAX_ORGANIZATION_ID_LEN, Metadata, MetadataValue, Target,
};

/// The largest create-event request (`{"organization_id":…,"event":…}` as JSON, in bytes) sent
/// by default; a larger event is refused locally ([`FieldErrorKind::RequestTooLarge`]).
///
/// WorkOS answers an oversized request with `413` ("request entity too large") but publishes no
/// limit (UNCONFIRMED; reported in production by dust-tt/dust#26412, where it was the largest
/// source of failed audit events). 100 KiB is the default limit of the Node.js JSON body parser,
/// whose error text that 413 carries: a conservative guess. Change it with
/// [`EmitterBuilder::max_request_bytes`](crate::emitter::EmitterBuilder::max_request_bytes) or
/// [`Event::validate_request`]; audit-testkit applies the same default.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024;

/// One problem with one value of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldError {
    /// JSON pointer of the value inside the event, e.g. `/actor/metadata/role`.
    pub pointer: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldErrorKind {
    /// A required string is empty.
    Empty,
    /// The action name breaks the rule of [`Action::is_valid`].
    InvalidAction,
    /// A metadata object has more than [`Metadata::MAX_KEYS`] keys.
    TooManyKeys {
        /// How many keys it has.
        count: usize,
    },
    /// A metadata key does not match `^[a-zA-Z0-9_-]{0,40}$`.
    InvalidKey,
    /// A metadata string is longer than [`Metadata::MAX_STRING_CHARS`] characters.
    StringTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// A metadata number is NaN or infinite.
    NonFiniteNumber,
    /// `occurred_at` cannot be written as an RFC 3339 timestamp (year outside 0000–9999).
    TimestampOutOfRange,
    /// `version` is 0; schema versions start at 1.
    InvalidVersion,
    /// The event has more than [`Event::MAX_TARGETS`] targets (pointer `/targets`).
    TooManyTargets {
        /// How many it has.
        count: usize,
    },
    /// A string holds U+0000, which WorkOS's JSON storage and a PostgreSQL `jsonb` outbox cannot
    /// take.
    NulCharacter,
    /// The create-event request would be larger than the budget
    /// ([`DEFAULT_MAX_REQUEST_BYTES`] unless configured). The pointer names the largest part of
    /// the event (`/targets`, `/metadata`, `/actor`, …).
    RequestTooLarge {
        /// The size of the request body, in bytes.
        bytes: usize,
        /// The budget, in bytes.
        budget: usize,
        /// The size of the part the pointer names, in bytes.
        part_bytes: usize,
    },
    /// The value does not match the action's registered metadata schema.
    Schema {
        /// The JSON Schema keyword that failed (`type`, `required`, …).
        keyword: String,
        /// The validator's message.
        message: String,
    },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.pointer)?;
        match &self.kind {
            FieldErrorKind::Empty => f.write_str("must not be empty"),
            FieldErrorKind::InvalidAction => write!(f, "invalid action name: {ACTION_RULE}"),
            FieldErrorKind::TooManyKeys { count } => {
                write!(f, "has {count} keys; at most {} are allowed", Metadata::MAX_KEYS)
            }
            FieldErrorKind::InvalidKey => write!(
                f,
                "metadata keys must match ^[a-zA-Z0-9_-]{{0,{}}}$",
                Metadata::MAX_KEY_LEN
            ),
            FieldErrorKind::StringTooLong { chars } => write!(
                f,
                "string of {chars} characters; at most {} are allowed",
                Metadata::MAX_STRING_CHARS
            ),
            FieldErrorKind::NonFiniteNumber => f.write_str("numbers must be finite (no NaN or infinity)"),
            FieldErrorKind::TimestampOutOfRange => f.write_str("the year must be between 0000 and 9999"),
            FieldErrorKind::InvalidVersion => f.write_str("schema versions start at 1"),
            FieldErrorKind::TooManyTargets { count } => write!(
                f,
                "has {count} targets; WorkOS accepts at most {} per event",
                Event::MAX_TARGETS
            ),
            FieldErrorKind::NulCharacter => f.write_str("must not contain U+0000 (NUL)"),
            FieldErrorKind::RequestTooLarge {
                bytes,
                budget,
                part_bytes,
            } => write!(
                f,
                "the request would be {bytes} bytes, over the budget of {budget} bytes \
                 (WorkOS answers 413); this part is the largest, {part_bytes} bytes"
            ),
            FieldErrorKind::Schema { keyword, message } => {
                write!(f, "schema check `{keyword}` failed: {message}")
            }
        }
    }
}

/// Everything wrong with one event; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors {
    errors: Vec<FieldError>,
}

impl ValidationErrors {
    pub(crate) fn new(errors: Vec<FieldError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self { errors })
    }

    /// The problems, in the order of the event's fields.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The JSON pointers of the problems.
    pub fn pointers(&self) -> impl Iterator<Item = &str> {
        self.errors.iter().map(|e| e.pointer.as_str())
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid audit event: ")?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Escapes one JSON-pointer reference token (RFC 6901).
pub(crate) fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// [`Event::validate`]: the default budget, and room for the longest organization id.
pub(crate) fn validate_event(event: &Event) -> Result<(), ValidationErrors> {
    validate_request(event, MAX_ORGANIZATION_ID_LEN, DEFAULT_MAX_REQUEST_BYTES)
}

/// Every rule, with the request-size budget `budget` for a request whose organization id is
/// `organization_len` bytes long.
pub(crate) fn validate_request(
    event: &Event,
    organization_len: usize,
    budget: usize,
) -> Result<(), ValidationErrors> {
    let mut check = Checker::default();

    if !Action::is_valid(event.action.as_str()) {
        check.push("/action".into(), FieldErrorKind::InvalidAction);
    }
    check.size += event.action.as_str().len();
    // Converting to UTC costs a date computation; events made in this crate already are UTC.
    let year = if event.occurred_at.offset().is_utc() {
        event.occurred_at.year()
    } else {
        event.occurred_at.to_offset(time::UtcOffset::UTC).year()
    };
    if !(0..=9999).contains(&year) {
        check.push("/occurred_at".into(), FieldErrorKind::TimestampOutOfRange);
    }
    if event.version == Some(0) {
        check.push("/version".into(), FieldErrorKind::InvalidVersion);
    }
    check.entity(
        || "/actor".to_owned(),
        &event.actor.id,
        &event.actor.kind,
        event.actor.name.as_deref(),
        event.actor.metadata.as_ref(),
    );
    if event.targets.len() > Event::MAX_TARGETS {
        check.push(
            "/targets".into(),
            FieldErrorKind::TooManyTargets {
                count: event.targets.len(),
            },
        );
    }
    for (i, target) in event.targets.iter().enumerate() {
        // The pointer is only formatted when something is wrong.
        check.entity(
            || format!("/targets/{i}"),
            &target.id,
            &target.kind,
            target.name.as_deref(),
            target.metadata.as_ref(),
        );
    }
    if is_blank(&event.context.location) {
        check.push("/context/location".into(), FieldErrorKind::Empty);
    }
    check.string(&event.context.location, || "/context/location".into());
    if let Some(user_agent) = &event.context.user_agent {
        check.string(user_agent, || "/context/user_agent".into());
    }
    if let Some(metadata) = &event.metadata {
        check.metadata("/metadata", metadata);
    }
    // `check.size` bounds the request from above; only an event near the budget is measured.
    if check.size + ENVELOPE_BYTES + organization_len > budget {
        let bytes = ENVELOPE_BYTES + organization_len + json_len(event);
        if bytes > budget {
            let (pointer, part_bytes) = largest_part(event);
            check.push(
                pointer.into(),
                FieldErrorKind::RequestTooLarge {
                    bytes,
                    budget,
                    part_bytes,
                },
            );
        }
    }
    match ValidationErrors::new(check.errors) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `{"organization_id":"","event":}`: the request around the organization id and the event.
const ENVELOPE_BYTES: usize = 31;
/// An upper bound of the JSON of an event without its strings, targets and metadata entries:
/// field names, punctuation, the timestamp and a version.
const EVENT_FIXED_BYTES: usize = 128;
/// An upper bound of the JSON of an actor or a target without its strings and metadata entries.
const ENTITY_FIXED_BYTES: usize = 48;
/// An upper bound of a number or boolean in JSON (`-1.2345678901234567e-308`).
const SCALAR_BYTES: usize = 24;

/// Collects the problems and an upper bound of the event's size as JSON.
struct Checker {
    errors: Vec<FieldError>,
    size: usize,
}

impl Default for Checker {
    fn default() -> Self {
        Self {
            errors: Vec::new(),
            size: EVENT_FIXED_BYTES,
        }
    }
}

impl Checker {
    fn push(&mut self, pointer: String, kind: FieldErrorKind) {
        self.errors.push(FieldError { pointer, kind });
    }

    /// Adds the JSON size of `s` (quoted and escaped) and refuses a U+0000 in it.
    fn string(&mut self, s: &str, pointer: impl FnOnce() -> String) {
        let (escaped, nul) = scan(s);
        self.size += escaped + 2;
        if nul {
            self.push(pointer(), FieldErrorKind::NulCharacter);
        }
    }

    fn entity(
        &mut self,
        base: impl Fn() -> String,
        id: &str,
        kind: &str,
        name: Option<&str>,
        metadata: Option<&Metadata>,
    ) {
        self.size += ENTITY_FIXED_BYTES;
        if is_blank(id) {
            self.push(format!("{}/id", base()), FieldErrorKind::Empty);
        }
        self.string(id, || format!("{}/id", base()));
        if is_blank(kind) {
            self.push(format!("{}/type", base()), FieldErrorKind::Empty);
        }
        self.string(kind, || format!("{}/type", base()));
        if let Some(name) = name {
            self.string(name, || format!("{}/name", base()));
        }
        if let Some(metadata) = metadata {
            self.metadata(&format!("{}/metadata", base()), metadata);
        }
    }

    fn metadata(&mut self, base: &str, metadata: &Metadata) {
        if metadata.len() > Metadata::MAX_KEYS {
            self.push(
                base.to_owned(),
                FieldErrorKind::TooManyKeys {
                    count: metadata.len(),
                },
            );
        }
        for (key, value) in metadata.iter() {
            let pointer = || format!("{base}/{}", escape_pointer_token(key));
            // A key that passes the pattern needs no escaping; one that fails is refused anyway.
            self.size += key.len() + 4;
            if !is_valid_metadata_key(key) {
                self.push(pointer(), FieldErrorKind::InvalidKey);
            }
            match value {
                MetadataValue::String(s) => {
                    // Byte length bounds the character count from above: count only when it can
                    // matter.
                    if s.len() > Metadata::MAX_STRING_CHARS {
                        let chars = s.chars().count();
                        if chars > Metadata::MAX_STRING_CHARS {
                            self.push(pointer(), FieldErrorKind::StringTooLong { chars });
                        }
                    }
                    self.string(s, pointer);
                }
                MetadataValue::Float(f) if !f.is_finite() => {
                    self.push(pointer(), FieldErrorKind::NonFiniteNumber)
                }
                _ => self.size += SCALAR_BYTES,
            }
        }
    }
}

/// Whether `s` is empty or only whitespace (`s.trim().is_empty()`), answered from the first byte
/// in the common case: a visible ASCII character there means it is not blank.
fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(&b) if b > b' ' && b.is_ascii() => false,
        _ => s.trim().is_empty(),
    }
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether any byte of `w` is below 0x20, a `"` or a `\` (exact for the word as a whole).
#[inline]
fn needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let is_quote = quote.wrapping_sub(ONES) & !quote;
    let is_backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | is_quote | is_backslash) & HIGHS != 0
}

/// The length of `s` as the inside of a JSON string (as `serde_json` escapes it), and whether
/// it holds U+0000. Reads eight bytes at a time; only a word holding a byte to escape is looked
/// at byte by byte.
pub(crate) fn scan(s: &str) -> (usize, bool) {
    let bytes = s.as_bytes();
    let mut extra = 0;
    let mut nul = false;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if needs_escape(u64::from_ne_bytes(word)) {
            for &b in chunk {
                extra += escape_extra(b);
                nul |= b == 0;
            }
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() && needs_escape(padded_word(rest)) {
        for &b in rest {
            extra += escape_extra(b);
            nul |= b == 0;
        }
    }
    (bytes.len() + extra, nul)
}

/// The last, shorter part of a string read eight bytes at a time, as one word padded with `a`
/// (a byte no word-wise check looks for): one test of the word instead of one per byte.
#[inline]
pub(crate) fn padded_word(rest: &[u8]) -> u64 {
    let mut word = [b'a'; 8];
    let n = rest.len().min(8);
    word[..n].copy_from_slice(&rest[..n]);
    u64::from_ne_bytes(word)
}

/// How many bytes more than one `b` takes in a JSON string.
#[inline]
fn escape_extra(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
        0..=0x1f => 5,
        _ => 0,
    }
}

/// Counts bytes written.
struct Count(usize);

impl io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The exact size of `value` as the JSON that is sent, without building it.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut count = Count(0);
    // Writing to a counter cannot fail, and every part of an event serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The largest part of an event and its size: the part a message about an oversized request
/// names.
fn largest_part(event: &Event) -> (&'static str, usize) {
    let parts: [(&'static str, usize); 4] = [
        ("/actor", json_len::<Actor>(&event.actor)),
        ("/targets", json_len::<[Target]>(&event.targets)),
        ("/context", json_len::<Context>(&event.context)),
        (
            "/metadata",
            event.metadata.as_ref().map_or(0, json_len::<Metadata>),
        ),
    ];
    parts.into_iter().max_by_key(|(_, len)| *len).unwrap_or(("", 0))
}

/// Whether `key` matches `^[a-zA-Z0-9_-]{0,40}$`.
pub(crate) fn is_valid_metadata_key(key: &str) -> bool {
    key.len() <= Metadata::MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Context, Target};

    fn valid() -> Event {
        Event::new(
            Action::new("team.created").unwrap(),
            Actor::new("user_1", "user"),
            Context::new("203.0.113.7"),
        )
    }

    fn pointers(event: &Event) -> Vec<String> {
        match event.validate() {
            Ok(()) => vec![],
            Err(e) => e.pointers().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn blank_is_trimmed_empty() {
        for s in ["", " ", "\t\n", "\u{a0}", "\u{2003} ", "\u{b}"] {
            assert!(is_blank(s), "{s:?}");
        }
        for s in ["a", " a", "\u{a0}x", "é", "\u{7f}"] {
            assert_eq!(is_blank(s), s.trim().is_empty(), "{s:?}");
            assert!(!is_blank(s), "{s:?}");
        }
    }

    #[test]
    fn minimal_event_passes() {
        assert_eq!(pointers(&valid()), Vec::<String>::new());
    }

    #[test]
    fn empty_ids_and_types_are_named() {
        let mut e = valid()
            .target(Target::new("", "team"))
            .target(Target::new("t", " "));
        e.actor.id = String::new();
        e.actor.kind = "".into();
        e.context.location = String::new();
        assert_eq!(
            pointers(&e),
            [
                "/actor/id",
                "/actor/type",
                "/targets/0/id",
                "/targets/1/type",
                "/context/location"
            ]
        );
    }

    #[test]
    fn invalid_action_from_deserialization_is_caught() {
        let mut json = serde_json::to_value(valid()).unwrap();
        json["action"] = "not valid".into();
        let e: Event = serde_json::from_value(json).unwrap();
        assert_eq!(pointers(&e), ["/action"]);
        assert!(e.validate().unwrap_err().to_string().contains("user.signed_in"));
    }

    #[test]
    fn metadata_key_count() {
        let ok: Metadata = (0..50).map(|i| (format!("k{i}"), i)).collect();
        assert!(valid().metadata(ok).validate().is_ok());
        let bad: Metadata = (0..51).map(|i| (format!("k{i}"), i)).collect();
        let e = valid().metadata(bad);
        assert_eq!(pointers(&e), ["/metadata"]);
        assert!(e.validate().unwrap_err().to_string().contains("51 keys"));
    }

    #[test]
    fn metadata_key_pattern() {
        let ok = valid().meta("", 1).meta("a-B_9", 1).meta("x".repeat(40), 1);
        assert_eq!(pointers(&ok), Vec::<String>::new());
        let bad = valid()
            .meta("x".repeat(41), 1)
            .meta("has space", 1)
            .meta("a/b", 1)
            .meta("ü", 1);
        let mut p = pointers(&bad);
        p.sort();
        let long = format!("/metadata/{}", "x".repeat(41));
        let mut expected = vec![
            "/metadata/a~1b",
            "/metadata/has space",
            long.as_str(),
            "/metadata/ü",
        ];
        expected.sort();
        assert_eq!(p, expected);
    }

    #[test]
    fn metadata_string_length_counts_characters() {
        let ok = valid().meta("s", "é".repeat(500));
        assert!(
            ok.validate().is_ok(),
            "500 two-byte characters are 500 characters"
        );
        let bad = valid().meta("s", "a".repeat(501));
        assert_eq!(pointers(&bad), ["/metadata/s"]);
    }

    #[test]
    fn metadata_numbers_must_be_finite() {
        assert!(
            valid()
                .meta("n", 1.5)
                .meta("i", -3)
                .meta("b", true)
                .validate()
                .is_ok()
        );
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(pointers(&valid().meta("n", v)), ["/metadata/n"]);
        }
    }

    #[test]
    fn actor_and_target_metadata_are_checked_with_their_pointers() {
        let e = valid()
            .target(Target::new("t0", "team"))
            .target(Target::new("t1", "invoice").meta("cost", f64::NAN))
            .actor_meta_for_test("role", "a".repeat(501));
        assert_eq!(pointers(&e), ["/actor/metadata/role", "/targets/1/metadata/cost"]);
    }

    #[test]
    fn version_zero_is_refused() {
        assert_eq!(pointers(&valid().version(0)), ["/version"]);
        assert!(valid().version(1).validate().is_ok());
    }

    #[test]
    fn year_out_of_range_is_refused() {
        let date = time::Date::from_calendar_date(-5, time::Month::January, 1).unwrap();
        let before_year_zero = time::OffsetDateTime::new_utc(date, time::Time::MIDNIGHT);
        assert_eq!(pointers(&valid().occurred_at(before_year_zero)), ["/occurred_at"]);
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let mut e = valid().meta("bad key", 1).meta("n", f64::NAN);
        e.actor.id.clear();
        let err = e.validate().unwrap_err();
        assert_eq!(err.errors().len(), 3);
        let text = err.to_string();
        assert!(
            text.contains("/actor/id") && text.contains("/metadata/bad key") && text.contains("/metadata/n")
        );
    }

    #[test]
    fn at_most_twenty_targets() {
        let mut e = valid();
        for i in 0..Event::MAX_TARGETS {
            e = e.target(Target::new(format!("t{i}"), "team"));
        }
        assert!(e.validate().is_ok());
        let e = e.target(Target::new("t20", "team"));
        assert_eq!(pointers(&e), ["/targets"]);
        let text = e.validate().unwrap_err().to_string();
        assert!(
            text.contains("21 targets") && text.contains("at most 20"),
            "{text}"
        );
    }

    #[test]
    fn nul_is_refused_in_every_string_with_its_pointer() {
        let mut e = valid()
            .target(Target::new("t0", "team"))
            .target(Target::new("t\0", "team").name("n\0").meta("k", "v\0"))
            .meta("foo", "a\0b")
            .meta("fine", "tab\tand \u{1} are escaped, not refused");
        e.actor.name = Some("Jon\0".into());
        e.context.user_agent = Some("ua\0".into());
        e.context.location = "203.0.113.7\0".into();
        assert_eq!(
            pointers(&e),
            [
                "/actor/name",
                "/targets/1/id",
                "/targets/1/name",
                "/targets/1/metadata/k",
                "/context/location",
                "/context/user_agent",
                "/metadata/foo"
            ]
        );
        assert!(e.validate().unwrap_err().to_string().contains("U+0000"));
    }

    #[test]
    fn the_size_bound_matches_serde_for_every_escape() {
        for s in [
            "",
            "plain ascii that is longer than eight bytes",
            "quote\" and back\\slash",
            "\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{0}",
            "é€😀 non-ASCII is written as it is",
            "\u{7f}\u{80}\u{9f} above the C0 range",
        ] {
            let (len, nul) = scan(s);
            assert_eq!(len, serde_json::to_string(s).unwrap().len() - 2, "{s:?}");
            assert_eq!(nul, s.contains('\0'), "{s:?}");
        }
    }

    #[test]
    fn the_upper_bound_is_never_below_the_real_size() {
        let mut e = valid().version(4_000_000_000).meta("f", -1.2345678901234567e-308);
        e = e.meta("i", i64::MIN).meta("b", false).meta("s", "\u{1}\"");
        for i in 0..Event::MAX_TARGETS {
            e = e.target(
                Target::new(format!("t{i}\u{1}"), "team")
                    .name("n")
                    .meta("m", u64::MAX),
            );
        }
        e.actor.name = Some("\\".into());
        e.context.user_agent = Some("\u{2}".into());
        let org = crate::OrganizationId::new("org_1").unwrap();
        let real = serde_json::to_vec(&crate::CreateEvent::new(org.clone(), e.clone()))
            .unwrap()
            .len();
        assert!(
            e.validate_request(&org, real).is_ok(),
            "exactly at the budget passes"
        );
        let err = e.validate_request(&org, real - 1).unwrap_err();
        match &err.errors()[0].kind {
            FieldErrorKind::RequestTooLarge { bytes, budget, .. } => {
                assert_eq!((*bytes, *budget), (real, real - 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_oversized_request_names_its_largest_part() {
        let mut e = valid();
        for i in 0..Event::MAX_TARGETS {
            let mut t = Target::new(format!("t{i}"), "team");
            for k in 0..Metadata::MAX_KEYS {
                t = t.meta(format!("k{k}"), "x".repeat(Metadata::MAX_STRING_CHARS));
            }
            e = e.target(t);
        }
        assert_eq!(pointers(&e), ["/targets"]);
        let text = e.validate().unwrap_err().to_string();
        assert!(text.contains("over the budget of 102400 bytes"), "{text}");
        let big: Metadata = (0..Metadata::MAX_KEYS)
            .map(|k| (format!("k{k}"), "y".repeat(Metadata::MAX_STRING_CHARS)))
            .collect();
        let e = valid().metadata(big);
        assert!(
            e.validate().is_ok(),
            "25 KB of metadata is inside the default budget"
        );
        let org = crate::OrganizationId::new("org_1").unwrap();
        let err = e.validate_request(&org, 10_000).unwrap_err();
        assert_eq!(err.pointers().collect::<Vec<_>>(), ["/metadata"]);
    }

    impl Event {
        fn actor_meta_for_test(mut self, k: &str, v: String) -> Self {
            self.actor = self.actor.meta(k, v);
            self
        }
    }
}
