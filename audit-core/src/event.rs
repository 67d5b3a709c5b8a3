//! The WorkOS audit-log event model.
//!
//! An [`Event`] is what happened (an [`Action`]), who did it (an [`Actor`]), what it was done
//! to ([`Target`]s), from where ([`Context`]) and when (`occurred_at`), plus free-form
//! [`Metadata`]. The JSON produced by [`serde`] is exactly what the official WorkOS SDKs send:
//! snake_case keys, optional fields omitted, `occurred_at` as RFC 3339 UTC with milliseconds.
//!
//! ```
//! use audit_core::{Action, Actor, Context, Event, Target};
//!
//! let event = Event::new(
//!     Action::new("team.created").unwrap(),
//!     Actor::new("user_01", "user").name("Jon Smith"),
//!     Context::new("203.0.113.7").user_agent("Mozilla/5.0"),
//! )
//! .target(Target::new("team_01", "team").name("Engineering"))
//! .meta("plan", "enterprise")
//! .meta("seats", 12);
//! assert!(event.validate().is_ok());
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// The longest action name accepted locally, in bytes.
pub const MAX_ACTION_LEN: usize = 128;
/// The longest organization id accepted locally, in bytes.
pub const MAX_ORGANIZATION_ID_LEN: usize = 128;

/// An action name such as `user.signed_in` or `team.created`.
///
/// WorkOS does not publish a grammar for action names; this crate accepts (and documents) the form
/// every WorkOS example uses: one or more segments of ASCII letters, digits, `_` or `-`, separated by
/// single dots, at most [`MAX_ACTION_LEN`] bytes. `user.signed_in`, `team.member-added` and
/// `login` are valid; `user..x`, `.x`, `user signed in` and the empty string are not.
///
/// The rule is a `const fn` ([`Action::is_valid`]), so an action written in code can be checked at
/// compile time (the handler attributes of `audit-tower` and `audit-actix` do this).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action(Cow<'static, str>);

impl Action {
    /// Checks `name` and makes an action of it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidValue> {
        let name = name.into();
        if Self::is_valid(&name) {
            Ok(Self(Cow::Owned(name)))
        } else {
            Err(InvalidValue::action(&name))
        }
    }

    /// An action from a string known at compile time.
    ///
    /// # Panics
    /// In a `const` context this fails to compile, and at run time it panics, when `name` breaks the
    /// rule of [`Action::is_valid`]. Use [`Action::new`] for names that come from input.
    pub const fn from_static(name: &'static str) -> Self {
        assert!(
            Self::is_valid(name),
            "invalid audit action name: use dot-separated segments of ASCII letters, digits, '_' or '-' (at most 128 bytes)"
        );
        Self(Cow::Borrowed(name))
    }

    /// Whether `name` is a valid action name (see the type's documentation for the rule).
    pub const fn is_valid(name: &str) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_ACTION_LEN {
            return false;
        }
        let mut i = 0;
        let mut segment_len = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'.' {
                if segment_len == 0 {
                    return false;
                }
                segment_len = 0;
            } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                segment_len += 1;
            } else {
                return false;
            }
            i += 1;
        }
        segment_len > 0
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reading back is lenient (any string is kept as it is) so that events recorded by other
/// producers can still be read; [`Event::validate`] applies the rule.
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(Cow::Owned(String::deserialize(d)?)))
    }
}

/// A WorkOS organization id such as `org_01EHWNCE74X7JSDV0X3SZ3KJNY`.
///
/// Accepted locally: `org_` followed by one or more ASCII letters or digits, at most
/// [`MAX_ORGANIZATION_ID_LEN`] bytes. Real WorkOS ids are `org_` plus a 26-character ULID;
/// [`OrganizationId::looks_like_workos_id`] tells whether an id has that exact shape (the
/// verification checklist warns when it does not). Whether the organization exists is known
/// only to WorkOS (a 404 there).
///
/// Cloning is cheap (the id is shared, not copied), so an application can keep one per tenant
/// and hand a clone to every request.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrganizationId(Arc<str>);

impl OrganizationId {
    /// Checks `id` and makes an organization id of it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidValue> {
        let id = id.into();
        if Self::is_valid(&id) {
            Ok(Self(id.into()))
        } else {
            Err(InvalidValue::organization_id(&id))
        }
    }

    /// Whether `id` is accepted as an organization id.
    pub fn is_valid(id: &str) -> bool {
        id.len() <= MAX_ORGANIZATION_ID_LEN
            && id
                .strip_prefix("org_")
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
    }

    /// Whether the id has the exact shape of a WorkOS id: `org_` and 26 upper-case ULID characters.
    pub fn looks_like_workos_id(&self) -> bool {
        let rest = &self.0[4..];
        rest.len() == 26
            && rest.bytes().all(|b| {
                b.is_ascii_digit() || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
            })
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for OrganizationId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for OrganizationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OrganizationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// A value refused by a checked constructor such as [`Action::new`] or [`OrganizationId::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct InvalidValue {
    what: &'static str,
    value: String,
    rule: &'static str,
}

impl InvalidValue {
    fn action(value: &str) -> Self {
        Self {
            what: "action",
            value: truncate_for_message(value),
            rule: ACTION_RULE,
        }
    }

    fn organization_id(value: &str) -> Self {
        Self {
            what: "organization id",
            value: truncate_for_message(value),
            rule: ORGANIZATION_RULE,
        }
    }

    /// What kind of value was refused (`"action"`, `"organization id"`).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The rule the value broke.
    pub fn rule(&self) -> &'static str {
        self.rule
    }
}

pub(crate) const ACTION_RULE: &str = "expected dot-separated segments of ASCII letters, digits, '_' or '-', at most 128 bytes (e.g. \"user.signed_in\")";
pub(crate) const ORGANIZATION_RULE: &str = "expected \"org_\" followed by ASCII letters or digits, at most 128 bytes (e.g. \"org_01EHWNCE74X7JSDV0X3SZ3KJNY\")";

fn truncate_for_message(value: &str) -> String {
    const MAX: usize = 80;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// One metadata value: a string, a number or a boolean (WorkOS accepts nothing else).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetadataValue {
    /// A string of at most 500 characters.
    String(String),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction (or beyond `i64`); must be finite.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Serialize for MetadataValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::String(v) => s.serialize_str(v),
            Self::Integer(v) => s.serialize_i64(*v),
            Self::Float(v) => s.serialize_f64(*v),
            Self::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<'de> Deserialize<'de> for MetadataValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MetadataValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MetadataValue::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(MetadataValue::String(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(MetadataValue::Integer(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(MetadataValue::Float(v as f64), MetadataValue::Integer))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(MetadataValue::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(MetadataValue::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(v) => f.write_str(v),
            Self::Integer(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
        }
    }
}

macro_rules! metadata_from {
    ($variant:ident: $($t:ty),*) => {$(
        impl From<$t> for MetadataValue {
            fn from(v: $t) -> Self {
                Self::$variant(v.into())
            }
        }
    )*};
}
metadata_from!(String: String, &str, &String, Box<str>);
metadata_from!(Integer: i64, i32, i16, i8, u32, u16, u8);
metadata_from!(Float: f64, f32);
metadata_from!(Bool: bool);

impl From<Cow<'_, str>> for MetadataValue {
    fn from(v: Cow<'_, str>) -> Self {
        Self::String(v.into_owned())
    }
}

impl From<u64> for MetadataValue {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(Self::Float(v as f64), Self::Integer)
    }
}

impl From<usize> for MetadataValue {
    fn from(v: usize) -> Self {
        Self::from(v as u64)
    }
}

/// Free-form metadata of an event, an actor or a target.
///
/// WorkOS's rules, checked by [`Event::validate`]: at most [`Metadata::MAX_KEYS`] keys, each
/// matching `^[a-zA-Z0-9_-]{0,40}$`, each value a string of at most
/// [`Metadata::MAX_STRING_CHARS`] characters, a finite number or a boolean. Keys are kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, MetadataValue>);

impl Metadata {
    /// The most keys one metadata object may hold.
    pub const MAX_KEYS: usize = 50;
    /// The longest key, in characters.
    pub const MAX_KEY_LEN: usize = 40;
    /// The longest string value, in characters (Unicode scalar values, as WorkOS's validator counts).
    pub const MAX_STRING_CHARS: usize = 500;

    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing any earlier value, and returns the metadata (chainable).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> Option<MetadataValue> {
        self.0.insert(key.into(), value.into())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.0.get(key)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<MetadataValue> {
        self.0.remove(key)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The values, sorted by key, to change in place.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut MetadataValue> {
        self.0.values_mut()
    }

    /// Adds every entry of `other`, replacing values of keys present in both.
    pub fn extend(&mut self, other: Metadata) {
        self.0.extend(other.0);
    }
}

impl<K: Into<String>, V: Into<MetadataValue>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a MetadataValue);
    type IntoIter = std::collections::btree_map::Iter<'a, String, MetadataValue>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

fn metadata_is_empty(m: &Option<Metadata>) -> bool {
    m.as_ref().is_none_or(Metadata::is_empty)
}

/// Who performed the action: a user, an API key, a service, the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Actor {
    /// The actor's id in your system (`user_01…`); must not be empty.
    pub id: String,
    /// The kind of actor (`user`, `api_key`, `system`); must not be empty. Kinds are usually a fixed set of
    /// names: a `&'static str` is kept without a copy.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Metadata about the actor.
    #[serde(default, skip_serializing_if = "metadata_is_empty")]
    pub metadata: Option<Metadata>,
}

impl Actor {
    /// An actor with an id and a type.
    pub fn new(id: impl Into<String>, kind: impl Into<Cow<'static, str>>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            name: None,
            metadata: None,
        }
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds one metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.get_or_insert_with(Metadata::new).insert(key, value);
        self
    }

    /// Replaces the metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// What the action was performed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// The target's id in your system; must not be empty.
    pub id: String,
    /// The kind of target (`team`, `invoice`); must not be empty. Kinds are usually a fixed set of
    /// names: a `&'static str` is kept without a copy.
    #[serde(rename = "type")]
    pub kind: Cow<'static, str>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Metadata about the target.
    #[serde(default, skip_serializing_if = "metadata_is_empty")]
    pub metadata: Option<Metadata>,
}

impl Target {
    /// A target with an id and a type.
    pub fn new(id: impl Into<String>, kind: impl Into<Cow<'static, str>>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            name: None,
            metadata: None,
        }
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds one metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.get_or_insert_with(Metadata::new).insert(key, value);
        self
    }

    /// Replaces the metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }
}

/// Where the action came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Context {
    /// The client's IP address, or another location identifier; must not be empty.
    ///
    /// # Security
    /// When this is an IP address taken from a request, take it from the socket peer or from
    /// forwarding headers set by proxies you trust ([`crate::client_ip`]); a client can write any
    /// `X-Forwarded-For` it likes.
    pub location: String,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Context {
    /// A context with a location.
    pub fn new(location: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            user_agent: None,
        }
    }

    /// Sets the user agent.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }
}

/// One audit-log event, the `event` of WorkOS's create-event request.
///
/// Build it with [`Event::new`] and the chainable setters; check it with [`Event::validate`]
/// (the emitter and the client do this for you before anything is sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// When it happened; sent as RFC 3339 UTC with milliseconds.
    #[serde(with = "rfc3339_millis")]
    pub occurred_at: OffsetDateTime,
    /// Which schema version of the action validates this event (WorkOS assumes 1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Who did it.
    pub actor: Actor,
    /// What it was done to (may be empty).
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Where it came from.
    pub context: Context,
    /// Metadata about the event itself.
    #[serde(default, skip_serializing_if = "metadata_is_empty")]
    pub metadata: Option<Metadata>,
}

impl Event {
    /// The most targets one event may have.
    ///
    /// WorkOS rejects an event with more targets as an invalid audit-log event (400; its schema
    /// says `maxItems: 20`), as reported in production by dust-tt/dust#27021 (bulk invites of
    /// more than 20 users failed). The middleware of `audit-tower` and `audit-actix` splits a
    /// request's targets over several events instead
    /// ([`TargetOverflow`](crate::request::TargetOverflow)).
    pub const MAX_TARGETS: usize = 20;

    /// An event that occurred now, with no targets and no metadata.
    pub fn new(action: Action, actor: Actor, context: Context) -> Self {
        Self {
            action,
            occurred_at: OffsetDateTime::now_utc(),
            version: None,
            actor,
            targets: Vec::new(),
            context,
            metadata: None,
        }
    }

    /// Sets when the event occurred.
    pub fn occurred_at(mut self, at: OffsetDateTime) -> Self {
        self.occurred_at = at;
        self
    }

    /// Sets the schema version.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Adds a target.
    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Adds one metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.get_or_insert_with(Metadata::new).insert(key, value);
        self
    }

    /// Replaces the metadata.
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Checks every rule WorkOS applies, reporting all problems at once, each named by its JSON
    /// pointer: the metadata rules, at most [`Event::MAX_TARGETS`] targets (`/targets`), no
    /// U+0000 in any string (`/actor/name`, `/targets/3/id`, `/metadata/note`, …), and a
    /// create-event request within
    /// [`DEFAULT_MAX_REQUEST_BYTES`](crate::validate::DEFAULT_MAX_REQUEST_BYTES) for any
    /// organization id (the pointer names the largest part). See [`crate::validate`] for where
    /// each figure comes from.
    pub fn validate(&self) -> Result<(), crate::ValidationErrors> {
        crate::validate::validate_event(self)
    }

    /// [`validate`](Self::validate) for a request to `organization` whose body may be at most
    /// `max_request_bytes` bytes of JSON (the emitter applies its
    /// [`max_request_bytes`](crate::emitter::EmitterBuilder::max_request_bytes)).
    pub fn validate_request(
        &self,
        organization: &OrganizationId,
        max_request_bytes: usize,
    ) -> Result<(), crate::ValidationErrors> {
        crate::validate::validate_request(self, organization.as_str().len(), max_request_bytes)
    }
}

/// The body of `POST /audit_logs/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreateEvent {
    /// The organization the event belongs to.
    pub organization_id: OrganizationId,
    /// The event.
    pub event: Event,
}

impl CreateEvent {
    /// A create-event body.
    pub fn new(organization_id: OrganizationId, event: Event) -> Self {
        Self {
            organization_id,
            event,
        }
    }
}

/// RFC 3339 in UTC with exactly three fraction digits and `Z`, as WorkOS and its SDKs write it.
pub mod rfc3339_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    /// Formats `at` as `2024-01-02T03:04:05.678Z` (sub-millisecond digits are dropped).
    pub fn format(at: OffsetDateTime) -> String {
        let at = at.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        )
    }

    /// Parses any RFC 3339 timestamp.
    pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339)
    }

    /// serde: serialize.
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*at))
    }

    /// serde: deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse(&s).map_err(|e| serde::de::Error::custom(format!("occurred_at {s:?} is not RFC 3339: {e}")))
    }

    /// serde helpers for `Option<OffsetDateTime>`.
    pub mod option {
        use super::*;

        /// serde: serialize.
        pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_some(&format(*at)),
                None => s.serialize_none(),
            }
        }

        /// serde: deserialize.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
            let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.map(|s| parse(&s).map_err(serde::de::Error::custom)).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_rule() {
        for ok in ["user.signed_in", "login", "team.member-added", "a.b.c", "A1_b-2"] {
            assert!(Action::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_ACTION_LEN + 1);
        for bad in [
            "",
            ".",
            "user..x",
            ".x",
            "x.",
            "user signed in",
            "ü.x",
            long.as_str(),
        ] {
            let err = Action::new(bad).unwrap_err();
            assert_eq!(err.what(), "action");
        }
        assert!(Action::new("a".repeat(MAX_ACTION_LEN)).is_ok());
    }

    #[test]
    fn action_from_static_is_const() {
        const A: Action = Action::from_static("team.created");
        assert_eq!(A.as_str(), "team.created");
    }

    #[test]
    fn organization_rule() {
        assert!(
            OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY")
                .unwrap()
                .looks_like_workos_id()
        );
        assert!(!OrganizationId::new("org_1").unwrap().looks_like_workos_id());
        for bad in ["", "org_", "org", "team_1", "org_ x", "org_1/2"] {
            assert!(OrganizationId::new(bad).is_err(), "{bad}");
        }
        let err = OrganizationId::new("team_1").unwrap_err().to_string();
        assert!(err.contains("organization id"), "{err}");
        assert!(err.contains("org_"), "{err}");
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let at = rfc3339_millis::parse("2024-01-02T04:04:05.678912+01:00").unwrap();
        assert_eq!(rfc3339_millis::format(at), "2024-01-02T03:04:05.678Z");
        let at = rfc3339_millis::parse("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(rfc3339_millis::format(at), "2024-01-02T03:04:05.000Z");
    }

    #[test]
    fn metadata_values_convert() {
        assert_eq!(
            MetadataValue::from(u64::MAX),
            MetadataValue::Float(u64::MAX as f64)
        );
        assert_eq!(MetadataValue::from(7u64), MetadataValue::Integer(7));
        assert_eq!(MetadataValue::from("x"), MetadataValue::String("x".into()));
        let v: MetadataValue = serde_json::from_str("1.5").unwrap();
        assert_eq!(v, MetadataValue::Float(1.5));
        assert!(serde_json::from_str::<MetadataValue>("null").is_err());
        assert!(serde_json::from_str::<MetadataValue>("[1]").is_err());
        assert!(serde_json::from_str::<MetadataValue>("{}").is_err());
    }
}
