//! The result of a run: one [`CheckResult`] per check, rendered as a table or as JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::env::redact;

/// The checks of the verification checklist, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckId {
    /// The workspace depends on `audit-core`, `audit-tower` or `audit-actix` (`cargo metadata`).
    Dependency,
    /// `WORKOS_API_KEY` is set (environment, `.env.local`, `.env`) and looks like a secret key.
    ApiKey,
    /// `WORKOS_CLIENT_ID`, when set, starts with `client_`.
    ClientId,
    /// The organization (`--org` or `WORKOS_ORGANIZATION_ID`) is set and has WorkOS's id shape.
    Organization,
    /// WorkOS accepts a test event for the organization (`POST /audit_logs/events`).
    Event,
    /// The organization's log stream is active (`GET /organizations/{id}/audit_log_configuration`).
    LogStream,
    /// WorkOS rejects an event that violates the action's registered schema.
    SchemaValidation,
    /// An export of the last day reaches `ready` (opt-in).
    Export,
    /// A generic HTTP stream destination accepts a sample event (when one is given).
    StreamHttp,
    /// A Splunk HEC destination is healthy and accepts a sample event with its token.
    StreamSplunk,
    /// A Datadog API key is valid on the chosen site and may send logs.
    StreamDatadog,
    /// An S3 stream's bucket, region, role ARN and external id are well-formed (offline).
    StreamS3,
}

impl CheckId {
    /// Every check, in the order they run.
    pub const ALL: [CheckId; 8] = [
        CheckId::Dependency,
        CheckId::ApiKey,
        CheckId::ClientId,
        CheckId::Organization,
        CheckId::Event,
        CheckId::LogStream,
        CheckId::SchemaValidation,
        CheckId::Export,
    ];

    /// The destination probes, which run only when their destination is given (after the
    /// checks of [`CheckId::ALL`]).
    pub const PROBES: [CheckId; 4] = [
        CheckId::StreamHttp,
        CheckId::StreamSplunk,
        CheckId::StreamDatadog,
        CheckId::StreamS3,
    ];

    /// The check's stable name, as in JSON and on the command line (`api_key`, `log_stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Dependency => "dependency",
            CheckId::ApiKey => "api_key",
            CheckId::ClientId => "client_id",
            CheckId::Organization => "organization",
            CheckId::Event => "event",
            CheckId::LogStream => "log_stream",
            CheckId::SchemaValidation => "schema_validation",
            CheckId::Export => "export",
            CheckId::StreamHttp => "stream_http",
            CheckId::StreamSplunk => "stream_splunk",
            CheckId::StreamDatadog => "stream_datadog",
            CheckId::StreamS3 => "stream_s3",
        }
    }

    /// What the check verifies, in a few words.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::Dependency => "workspace depends on audit-core",
            CheckId::ApiKey => "WORKOS_API_KEY",
            CheckId::ClientId => "WORKOS_CLIENT_ID",
            CheckId::Organization => "organization id",
            CheckId::Event => "test event accepted",
            CheckId::LogStream => "log stream active",
            CheckId::SchemaValidation => "schema validation on",
            CheckId::Export => "export reaches ready",
            CheckId::StreamHttp => "HTTP stream destination",
            CheckId::StreamSplunk => "Splunk HEC destination",
            CheckId::StreamDatadog => "Datadog destination",
            CheckId::StreamS3 => "S3 destination settings",
        }
    }

    /// Whether the check writes into the organization's audit log: `event` records a test event,
    /// `schema_validation` sends an event that is recorded when validation is off. With a live
    /// key they run only when allowed ([`VerifyOptions::allow_live_writes`](crate::VerifyOptions::allow_live_writes)).
    pub fn writes(self) -> bool {
        matches!(self, CheckId::Event | CheckId::SchemaValidation)
    }

    /// Whether the check talks to WorkOS.
    pub fn calls_api(self) -> bool {
        matches!(
            self,
            CheckId::Event | CheckId::LogStream | CheckId::SchemaValidation | CheckId::Export
        )
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`CheckId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown check {name:?}; the checks are: dependency, api_key, client_id, organization, event, log_stream, schema_validation, export, stream_http, stream_splunk, stream_datadog, stream_s3"
)]
pub struct UnknownCheck {
    name: String,
}

impl std::str::FromStr for CheckId {
    type Err = UnknownCheck;

    /// Accepts the names of [`CheckId::as_str`]; `-` may stand for `_` (`log-stream`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().replace('-', "_");
        CheckId::ALL
            .into_iter()
            .chain(CheckId::PROBES)
            .find(|c| c.as_str() == wanted)
            .ok_or_else(|| UnknownCheck { name: s.to_owned() })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum Status {
    /// The setting is right.
    Pass,
    /// The setting is wrong; [`CheckResult::fix`] says what to do.
    Fail,
    /// Works, but deserves a look (a live key in CI, an id of an unusual shape).
    Warn,
    /// Not applicable or not possible (no log stream, no schema, a prerequisite failed).
    Skip,
}

impl Status {
    /// `PASS`, `FAIL`, `WARN` or `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
            Status::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report.
///
/// # Security
/// Findings of a [`Verifier`](crate::Verifier) never contain the API key (at most its environment
/// prefix and last four characters, `sk_test_…abcd`), nor any part of a secret key found in
/// another setting (a key put in `WORKOS_ORGANIZATION_ID`, `WORKOS_CLIENT_ID` or
/// `WORKOS_BASE_URL` is named, never shown), nor a destination's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckResult {
    /// Which check.
    pub id: CheckId,
    /// Its outcome.
    pub status: Status,
    /// What was found, in one line.
    pub finding: String,
    /// What to do about it; set for every [`Status::Fail`], sometimes for [`Status::Warn`].
    pub fix: Option<String>,
}

impl CheckResult {
    /// A result.
    pub fn new(id: CheckId, status: Status, finding: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            id,
            status,
            finding: finding.into(),
            fix,
        }
    }

    pub(crate) fn pass(id: CheckId, finding: impl Into<String>) -> Self {
        Self::new(id, Status::Pass, finding, None)
    }

    pub(crate) fn skip(id: CheckId, finding: impl Into<String>) -> Self {
        Self::new(id, Status::Skip, finding, None)
    }

    pub(crate) fn fail(id: CheckId, finding: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Status::Fail, finding, Some(fix.into()))
    }

    pub(crate) fn warn(id: CheckId, finding: impl Into<String>, fix: Option<String>) -> Self {
        Self::new(id, Status::Warn, finding, fix)
    }

    /// The result with every secret taken out of its finding and fix (see [`redact`]).
    pub(crate) fn redacted(mut self, known: &[&str]) -> Self {
        self.finding = redact(&self.finding, known);
        self.fix = self.fix.map(|f| redact(&f, known));
        self
    }
}

/// Counts of each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Summary {
    /// Checks that passed.
    pub pass: usize,
    /// Checks that failed.
    pub fail: usize,
    /// Checks with a warning.
    pub warn: usize,
    /// Checks skipped.
    pub skip: usize,
}

/// The report of a run: every check that was selected, in order.
///
/// ```
/// use audit_verify::{CheckId, CheckResult, Report, Status};
///
/// let report = Report::new(vec![CheckResult::new(CheckId::ApiKey, Status::Pass, "sk_test_…abcd", None)]);
/// assert!(report.passed());
/// assert_eq!(report.exit_code(), 0);
/// let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
/// assert_eq!(json["checks"][0]["status"], "PASS");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Whether no check failed.
    pub passed: bool,
    /// Counts of each status.
    pub summary: Summary,
    /// Every check, in the order they ran.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// A report of these results.
    pub fn new(checks: Vec<CheckResult>) -> Self {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Fail => summary.fail += 1,
                Status::Warn => summary.warn += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Self {
            passed: summary.fail == 0,
            summary,
            checks,
        }
    }

    /// Whether no check failed (warnings and skips do not fail a run).
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// The result of one check, if it was selected.
    pub fn get(&self, id: CheckId) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The process exit status for this report: 0 when no check failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.passed { 0 } else { 1 }
    }

    /// The report as one pretty-printed JSON document:
    /// `{"passed": bool, "summary": {"pass": n, "fail": n, "warn": n, "skip": n},
    ///   "checks": [{"id", "status", "finding", "fix"}]}`.
    pub fn to_json(&self) -> String {
        // A derived Serialize of strings, numbers and enums cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a text table, one check per line, each fix indented below its check.
    pub fn to_table(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .checks
            .iter()
            .map(|c| c.id.as_str().len())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        writeln!(f, "{:<6} {:<width$}  FINDING", "STATUS", "CHECK")?;
        for c in &self.checks {
            writeln!(
                f,
                "{:<6} {:<width$}  {}",
                c.status.as_str(),
                c.id.as_str(),
                c.finding
            )?;
            if let Some(fix) = &c.fix {
                writeln!(f, "{:<6} {:<width$}  fix: {}", "", "", fix)?;
            }
        }
        let s = &self.summary;
        write!(
            f,
            "\n{}: {} passed, {} failed, {} warnings, {} skipped",
            if self.passed { "OK" } else { "FAILED" },
            s.pass,
            s.fail,
            s.warn,
            s.skip
        )
    }
}
