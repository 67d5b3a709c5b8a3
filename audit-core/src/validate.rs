//! Local validation of every rule WorkOS applies to an event.
//!
//! Every problem is reported with the JSON pointer of the offending value inside the event
//! (`/targets/1/metadata/cost`), the form WorkOS's own 400 responses use in `instancePath`, and
//! all problems of an event are reported together.

use std::fmt;

use crate::event::{ACTION_RULE, Action, Event, Metadata, MetadataValue};

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

pub(crate) fn validate_event(event: &Event) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    let mut push = |pointer: String, kind| errors.push(FieldError { pointer, kind });

    if !Action::is_valid(event.action.as_str()) {
        push("/action".into(), FieldErrorKind::InvalidAction);
    }
    if !(0..=9999).contains(&event.occurred_at.to_offset(time::UtcOffset::UTC).year()) {
        push("/occurred_at".into(), FieldErrorKind::TimestampOutOfRange);
    }
    if event.version == Some(0) {
        push("/version".into(), FieldErrorKind::InvalidVersion);
    }
    check_entity(
        || "/actor".to_owned(),
        &event.actor.id,
        &event.actor.kind,
        event.actor.metadata.as_ref(),
        &mut push,
    );
    for (i, target) in event.targets.iter().enumerate() {
        // The pointer is only formatted when something is wrong.
        check_entity(
            || format!("/targets/{i}"),
            &target.id,
            &target.kind,
            target.metadata.as_ref(),
            &mut push,
        );
    }
    if event.context.location.trim().is_empty() {
        push("/context/location".into(), FieldErrorKind::Empty);
    }
    if let Some(metadata) = &event.metadata {
        check_metadata("/metadata", metadata, &mut push);
    }
    match ValidationErrors::new(errors) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn check_entity(
    base: impl Fn() -> String,
    id: &str,
    kind: &str,
    metadata: Option<&Metadata>,
    push: &mut impl FnMut(String, FieldErrorKind),
) {
    if id.trim().is_empty() {
        push(format!("{}/id", base()), FieldErrorKind::Empty);
    }
    if kind.trim().is_empty() {
        push(format!("{}/type", base()), FieldErrorKind::Empty);
    }
    if let Some(metadata) = metadata {
        check_metadata(&format!("{}/metadata", base()), metadata, push);
    }
}

/// Whether `key` matches `^[a-zA-Z0-9_-]{0,40}$`.
pub(crate) fn is_valid_metadata_key(key: &str) -> bool {
    key.len() <= Metadata::MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_metadata(base: &str, metadata: &Metadata, push: &mut impl FnMut(String, FieldErrorKind)) {
    if metadata.len() > Metadata::MAX_KEYS {
        push(
            base.to_owned(),
            FieldErrorKind::TooManyKeys {
                count: metadata.len(),
            },
        );
    }
    for (key, value) in metadata.iter() {
        let pointer = || format!("{base}/{}", escape_pointer_token(key));
        if !is_valid_metadata_key(key) {
            push(pointer(), FieldErrorKind::InvalidKey);
        }
        match value {
            // Byte length bounds the character count from above: count only when it can matter.
            MetadataValue::String(s) if s.len() > Metadata::MAX_STRING_CHARS => {
                let chars = s.chars().count();
                if chars > Metadata::MAX_STRING_CHARS {
                    push(pointer(), FieldErrorKind::StringTooLong { chars });
                }
            }
            MetadataValue::Float(f) if !f.is_finite() => push(pointer(), FieldErrorKind::NonFiniteNumber),
            _ => {}
        }
    }
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

    impl Event {
        fn actor_meta_for_test(mut self, k: &str, v: String) -> Self {
            self.actor = self.actor.meta(k, v);
            self
        }
    }
}
