//! Request and response types of the Audit Logs endpoints.
//!
//! Responses are read leniently: unknown fields are ignored and enumerations keep values this
//! version does not know in an `Unknown(String)` variant, so a new WorkOS state or destination does
//! not turn a working call into a decode error.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::event::{Action, OrganizationId, rfc3339_millis};

/// Defines a string enumeration that keeps unknown values.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version of the crate does not know, kept as WorkOS sent it.
            Unknown(String),
        }

        impl $name {
            /// The value as WorkOS writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Unknown(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => Self::$variant, )*
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(Self::from(&*s))
            }
        }
    };
}

// ---- create event ---------------------------------------------------------------------------

/// Options of [`Client::create_event_with`](super::Client::create_event_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateEventOptions {
    /// The `Idempotency-Key` to send (a UUID v4 when `None`). Reuse the same key when sending the
    /// same event again: WorkOS then records it once (keys expire after 24 hours). At most 255
    /// bytes of visible ASCII.
    pub idempotency_key: Option<String>,
}

impl CreateEventOptions {
    /// The defaults: a fresh UUID v4 key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

// ---- exports ---------------------------------------------------------------------------------

/// The body of `POST /audit_logs/exports`: which events of an organization to export as CSV.
///
/// ```
/// use audit_core::client::CreateExport;
/// use audit_core::{Action, OrganizationId};
/// use time::macros::datetime;
///
/// let export = CreateExport::new(
///     OrganizationId::new("org_01EHZNVPK3SFK441A1RGBFSHRT").unwrap(),
///     datetime!(2024-01-01 0:00 UTC),
///     datetime!(2024-02-01 0:00 UTC),
/// )
/// .action(Action::new("user.signed_in").unwrap())
/// .actor_name("Jon Smith");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreateExport {
    /// The organization whose events are exported.
    pub organization_id: OrganizationId,
    /// The start of the range (WorkOS keeps three months of events for export).
    #[serde(with = "rfc3339_millis")]
    pub range_start: OffsetDateTime,
    /// The end of the range; must not be before `range_start` (checked locally).
    #[serde(with = "rfc3339_millis")]
    pub range_end: OffsetDateTime,
    /// Only these actions (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Only events of actors with these names (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_names: Vec<String>,
    /// Only events of actors with these ids (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_ids: Vec<String>,
    /// Only events with targets of these *types* (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

impl CreateExport {
    /// An export of every event of `organization_id` between `range_start` and `range_end`.
    pub fn new(
        organization_id: OrganizationId,
        range_start: OffsetDateTime,
        range_end: OffsetDateTime,
    ) -> Self {
        Self {
            organization_id,
            range_start,
            range_end,
            actions: Vec::new(),
            actor_names: Vec::new(),
            actor_ids: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Adds an action to the filter.
    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Adds an actor name to the filter.
    pub fn actor_name(mut self, name: impl Into<String>) -> Self {
        self.actor_names.push(name.into());
        self
    }

    /// Adds an actor id to the filter.
    pub fn actor_id(mut self, id: impl Into<String>) -> Self {
        self.actor_ids.push(id.into());
        self
    }

    /// Adds a target type to the filter.
    pub fn target(mut self, target_type: impl Into<String>) -> Self {
        self.targets.push(target_type.into());
        self
    }
}

open_enum! {
    /// The state of an export.
    ExportState {
        /// Still being produced; poll again.
        Pending = "pending",
        /// Done; `url` points at the CSV.
        Ready = "ready",
        /// Producing it failed.
        Error = "error",
        /// The CSV is gone.
        Expired = "expired",
    }
}

/// An audit-log export (`AuditLogExport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditLogExport {
    /// The export's id (`audit_log_export_…`).
    pub id: String,
    /// Its state.
    pub state: ExportState,
    /// The CSV's URL, only when ready; it expires after 10 minutes and a new
    /// [`Client::get_export`](super::Client::get_export) issues a new one.
    ///
    /// # Security
    /// A pre-signed URL: anyone holding it can read the export while it is valid.
    #[serde(default)]
    pub url: Option<String>,
    /// When it was created.
    #[serde(with = "rfc3339_millis")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "rfc3339_millis")]
    pub updated_at: OffsetDateTime,
}

// ---- schemas and actions ---------------------------------------------------------------------

/// The JSON Schema for an actor's metadata in a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SchemaActor {
    /// A JSON Schema, usually `{"type":"object","properties":{…}}`.
    pub metadata: Value,
}

impl SchemaActor {
    /// An actor whose metadata must match `metadata` (a JSON Schema).
    pub fn new(metadata: Value) -> Self {
        Self { metadata }
    }
}

/// One target type of a schema, with an optional JSON Schema for its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SchemaTarget {
    /// The target type (`invoice`, `team`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A JSON Schema for the target's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl SchemaTarget {
    /// A target type without a metadata schema.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            metadata: None,
        }
    }

    /// Sets the JSON Schema of the target's metadata.
    pub fn metadata(mut self, schema: Value) -> Self {
        self.metadata = Some(schema);
        self
    }
}

/// The body of `POST /audit_logs/actions/{action}/schemas`.
///
/// WorkOS treats the call as an upsert: it creates the action if missing, returns the latest
/// version when the schema is unchanged, and otherwise creates version n+1. Schemas are immutable.
///
/// ```
/// use audit_core::client::{CreateSchema, SchemaTarget};
/// use serde_json::json;
///
/// let schema = CreateSchema::new([SchemaTarget::new("invoice")
///     .metadata(json!({"type": "object", "properties": {"cost": {"type": "number"}}}))])
///     .metadata(json!({"type": "object", "properties": {"transactionId": {"type": "string"}}}));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreateSchema {
    /// The target types (at least one, checked locally).
    pub targets: Vec<SchemaTarget>,
    /// The actor's metadata schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<SchemaActor>,
    /// The event's metadata schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl CreateSchema {
    /// A schema with these target types.
    pub fn new(targets: impl IntoIterator<Item = SchemaTarget>) -> Self {
        Self {
            targets: targets.into_iter().collect(),
            actor: None,
            metadata: None,
        }
    }

    /// Sets the JSON Schema of the actor's metadata.
    pub fn actor_metadata(mut self, schema: Value) -> Self {
        self.actor = Some(SchemaActor::new(schema));
        self
    }

    /// Sets the JSON Schema of the event's metadata.
    pub fn metadata(mut self, schema: Value) -> Self {
        self.metadata = Some(schema);
        self
    }
}

/// A version of an action's schema (`AuditLogSchema`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditLogSchema {
    /// The version; events name it in [`Event::version`](crate::Event::version).
    pub version: u32,
    /// The actor's metadata schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<SchemaActor>,
    /// The target types.
    #[serde(default)]
    pub targets: Vec<SchemaTarget>,
    /// The event's metadata schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// When this version was created.
    #[serde(with = "rfc3339_millis")]
    pub created_at: OffsetDateTime,
}

/// An action known to WorkOS, with its latest schema (`AuditLogAction`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditLogAction {
    /// The action's name.
    pub name: Action,
    /// Its latest schema.
    pub schema: AuditLogSchema,
    /// When the action was created.
    #[serde(with = "rfc3339_millis")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "rfc3339_millis")]
    pub updated_at: OffsetDateTime,
}

// ---- retention -------------------------------------------------------------------------------

macro_rules! retention_periods {
    ($( $(#[$vmeta:meta])* $variant:ident = $text:literal / $days:literal, )*) => {
        /// A retention period in WorkOS's named form (`retention_period`), `1_MONTH` to `11_MONTHS`
        /// and `1_YEAR` to `10_YEARS`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum RetentionPeriod {
            $( $(#[$vmeta])* $variant, )*
        }

        impl RetentionPeriod {
            /// Every period, shortest first.
            pub const ALL: &'static [RetentionPeriod] = &[$( Self::$variant, )*];

            /// The name as WorkOS writes it (`1_MONTH`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                }
            }

            /// The period in days as WorkOS counts it (a month is 30 days, a year 365).
            pub fn days(self) -> u32 {
                match self {
                    $( Self::$variant => $days, )*
                }
            }

            /// The period with this name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some(Self::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

retention_periods! {
    /// 30 days.
    OneMonth = "1_MONTH" / 30,
    /// 60 days.
    TwoMonths = "2_MONTHS" / 60,
    /// 90 days.
    ThreeMonths = "3_MONTHS" / 90,
    /// 120 days.
    FourMonths = "4_MONTHS" / 120,
    /// 150 days.
    FiveMonths = "5_MONTHS" / 150,
    /// 180 days.
    SixMonths = "6_MONTHS" / 180,
    /// 210 days.
    SevenMonths = "7_MONTHS" / 210,
    /// 240 days.
    EightMonths = "8_MONTHS" / 240,
    /// 270 days.
    NineMonths = "9_MONTHS" / 270,
    /// 300 days.
    TenMonths = "10_MONTHS" / 300,
    /// 330 days.
    ElevenMonths = "11_MONTHS" / 330,
    /// 365 days.
    OneYear = "1_YEAR" / 365,
    /// 730 days.
    TwoYears = "2_YEARS" / 730,
    /// 1095 days.
    ThreeYears = "3_YEARS" / 1095,
    /// 1460 days.
    FourYears = "4_YEARS" / 1460,
    /// 1825 days.
    FiveYears = "5_YEARS" / 1825,
    /// 2190 days.
    SixYears = "6_YEARS" / 2190,
    /// 2555 days.
    SevenYears = "7_YEARS" / 2555,
    /// 2920 days.
    EightYears = "8_YEARS" / 2920,
    /// 3285 days.
    NineYears = "9_YEARS" / 3285,
    /// 3650 days.
    TenYears = "10_YEARS" / 3650,
}

impl fmt::Display for RetentionPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RetentionPeriod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RetentionPeriod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Self::from_name(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown retention period {s:?}")))
    }
}

/// The body of `PUT /organizations/{id}/audit_logs_retention`: one of WorkOS's two forms, so that
/// sending both at once cannot be written.
///
/// `Days` is the older form, and WorkOS's spec lists its values as an enum: 30 and 365 only
/// (the API reference, section 11). The client refuses other numbers before sending; every other
/// period is set with its name ([`Retention::Period`]), which WorkOS accepts from `1_MONTH` to
/// `10_YEARS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// `{"retention_period_in_days": n}`.
    Days(u32),
    /// `{"retention_period": "1_YEAR"}`.
    Period(RetentionPeriod),
}

impl Retention {
    /// The values the `retention_period_in_days` form takes (the OpenAPI spec's enum).
    pub const DOCUMENTED_DAYS: [u32; 2] = [30, 365];

    /// Whether `days` is one of [`Retention::DOCUMENTED_DAYS`] (30 or 365).
    pub fn is_documented_days(days: u32) -> bool {
        Self::DOCUMENTED_DAYS.contains(&days)
    }
}

impl From<RetentionPeriod> for Retention {
    fn from(p: RetentionPeriod) -> Self {
        Self::Period(p)
    }
}

impl Serialize for Retention {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Self::Days(days) => map.serialize_entry("retention_period_in_days", days)?,
            Self::Period(p) => map.serialize_entry("retention_period", p)?,
        }
        map.end()
    }
}

/// An organization's retention, as `GET` and `PUT …/audit_logs_retention` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RetentionSettings {
    /// Days events are kept, `None` when WorkOS has no value for the organization.
    #[serde(default)]
    pub retention_period_in_days: Option<u32>,
}

// ---- configuration ---------------------------------------------------------------------------

open_enum! {
    /// The state of an organization's audit-log configuration.
    ConfigurationState {
        /// Audit logs are on.
        Active = "active",
        /// Audit logs are off.
        Inactive = "inactive",
        /// Audit logs were disabled.
        Disabled = "disabled",
    }
}

open_enum! {
    /// Where a log stream delivers events.
    LogStreamType {
        /// Microsoft Azure Sentinel.
        AzureSentinel = "AzureSentinel",
        /// Datadog.
        Datadog = "Datadog",
        /// A generic HTTPS POST endpoint.
        GenericHttps = "GenericHttps",
        /// Google Cloud Storage.
        GoogleCloudStorage = "GoogleCloudStorage",
        /// Amazon S3.
        S3 = "S3",
        /// Snowflake.
        Snowflake = "Snowflake",
        /// Splunk HEC.
        Splunk = "Splunk",
    }
}

open_enum! {
    /// The state of a log stream.
    LogStreamState {
        /// Delivering.
        Active = "active",
        /// Not delivering.
        Inactive = "inactive",
        /// Delivery fails.
        Error = "error",
        /// The destination's configuration is invalid.
        Invalid = "invalid",
    }
}

/// An organization's log stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogStream {
    /// The stream's id (`als_…`).
    pub id: String,
    /// The destination kind.
    #[serde(rename = "type")]
    pub kind: LogStreamType,
    /// Its state; [`LogStreamState::Active`] means events flow.
    pub state: LogStreamState,
    /// When an event was last delivered, `None` if never.
    #[serde(default, with = "rfc3339_millis::option")]
    pub last_synced_at: Option<OffsetDateTime>,
    /// When the stream was created.
    #[serde(with = "rfc3339_millis")]
    pub created_at: OffsetDateTime,
}

/// An organization's audit-log configuration (`AuditLogConfiguration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditLogConfiguration {
    /// The organization.
    pub organization_id: OrganizationId,
    /// Days events are kept.
    #[serde(default)]
    pub retention_period_in_days: Option<u32>,
    /// Whether audit logs are on.
    pub state: ConfigurationState,
    /// The log stream, if one is configured.
    #[serde(default)]
    pub log_stream: Option<LogStream>,
}

// ---- admin portal ----------------------------------------------------------------------------

/// What an Admin Portal link opens. Only the audit-log intents are offered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PortalIntent {
    /// `audit_logs`: the customer views and exports their events.
    AuditLogs,
    /// `log_streams`: the customer's IT admin sets up a log stream.
    LogStreams,
}

/// The body of `POST /portal/generate_link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GeneratePortalLink {
    /// The organization.
    pub organization: OrganizationId,
    /// What the portal opens.
    pub intent: PortalIntent,
    /// Where your logo in the portal leads (the dashboard's setting when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// Where the admin goes after finishing setup (the dashboard's setting when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_url: Option<String>,
}

impl GeneratePortalLink {
    /// A link for `organization` with `intent`.
    pub fn new(organization: OrganizationId, intent: PortalIntent) -> Self {
        Self {
            organization,
            intent,
            return_url: None,
            success_url: None,
        }
    }

    /// Sets the return URL.
    pub fn return_url(mut self, url: impl Into<String>) -> Self {
        self.return_url = Some(url.into());
        self
    }

    /// Sets the success URL.
    pub fn success_url(mut self, url: impl Into<String>) -> Self {
        self.success_url = Some(url.into());
        self
    }
}

/// An Admin Portal link.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PortalLink {
    /// The ephemeral link (`https://setup.workos.com?token=…`).
    ///
    /// # Security
    /// The link grants access to the organization's portal until it expires: hand it only to that
    /// organization's admin, and do not log it.
    pub link: String,
}

impl fmt::Debug for PortalLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.link.split('?').next().unwrap_or("");
        f.debug_struct("PortalLink")
            .field("link", &format_args!("{shown}?[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_enums_keep_unknown_values() {
        let s: ExportState = serde_json::from_value(json!("ready")).unwrap();
        assert_eq!(s, ExportState::Ready);
        let s: ExportState = serde_json::from_value(json!("archived")).unwrap();
        assert_eq!(s, ExportState::Unknown("archived".into()));
        assert_eq!(serde_json::to_value(&s).unwrap(), json!("archived"));
        let t: LogStreamType = serde_json::from_value(json!("Kafka")).unwrap();
        assert_eq!(t.as_str(), "Kafka");
    }

    #[test]
    fn retention_bodies() {
        assert_eq!(
            serde_json::to_value(Retention::Days(30)).unwrap(),
            json!({"retention_period_in_days": 30})
        );
        assert_eq!(
            serde_json::to_value(Retention::Period(RetentionPeriod::TenYears)).unwrap(),
            json!({"retention_period": "10_YEARS"})
        );
        assert_eq!(RetentionPeriod::ALL.len(), 21);
        assert!(Retention::is_documented_days(365));
        assert!(!Retention::is_documented_days(330));
        assert!(!Retention::is_documented_days(60));
        assert!(!Retention::is_documented_days(31));
        assert!(!Retention::is_documented_days(0));
        for p in RetentionPeriod::ALL {
            assert_eq!(RetentionPeriod::from_name(p.as_str()), Some(*p));
        }
    }

    #[test]
    fn portal_link_debug_hides_the_token() {
        let l = PortalLink {
            link: "https://setup.workos.com?token=abc".into(),
        };
        assert!(!format!("{l:?}").contains("abc"));
    }
}
