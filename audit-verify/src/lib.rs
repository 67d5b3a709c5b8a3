//! The WorkOS verification checklist: is this application's audit logging set up right?
//!
//! A [`Verifier`] runs the checks of the WorkOS integration checklist and returns a [`Report`]:
//! one [`CheckResult`] per check, each `PASS`, `FAIL`, `WARN` or `SKIP`, with a one-line finding
//! and, for every failure, the fix. The checks, in order ([`CheckId`]):
//!
//! | id | checks | PASS | FAIL | WARN / SKIP |
//! |---|---|---|---|---|
//! | `dependency` | `cargo metadata --no-deps` of the manifest: a workspace member depends on `audit-core`, `audit-tower` or `audit-actix` | a normal dependency | none, or `cargo metadata` fails | WARN: only a dev-dependency |
//! | `api_key` | `WORKOS_API_KEY` | `sk_test_…`, or `sk_live_…` outside CI | missing, whitespace, no `sk_` | WARN: `sk_live_` in CI, neither test nor live, or a `.env` line that cannot be parsed |
//! | `client_id` | `WORKOS_CLIENT_ID` | starts with `client_` | anything else (a secret key: named, not shown) | SKIP: not set |
//! | `organization` | `--org`, else `WORKOS_ORGANIZATION_ID` | `org_` + 26-character ULID | missing or malformed (a secret key: named, not shown) | WARN: valid but not the ULID shape |
//! | `event` | `POST /audit_logs/events` with the chosen action (default [`DEFAULT_ACTION`], `verify.checked`) | 200 `{"success":true}` | 401, 403, 404, 429, 400/422, 5xx, unreachable, TLS, an answer that is not WorkOS's (a 2xx other than `{"success":true}`, HTML) | SKIP: a live key without [`VerifyOptions::allow_live_writes`] |
//! | `log_stream` | `GET /organizations/{id}/audit_log_configuration` | stream `active` | `inactive`, `error`, `invalid`; none with `require_stream` | SKIP: no stream |
//! | `schema_validation` | an event violating the action's latest schema | 400 (or 422) | accepted: validation is off | SKIP: no schema, or nothing to violate; a live key without [`VerifyOptions::allow_live_writes`] |
//! | `export` (opt-in) | an export of the last day, polled to `ready` | `ready` in time | `error`, `expired`, still `pending` | WARN: no events yet |
//! | `stream_http`, `stream_splunk`, `stream_datadog`, `stream_s3` | a log-stream destination, when one is given ([`VerifyOptions::stream_probe`]; see [`streams`]) | the destination accepts a sample event (S3: the settings are well-formed) | the cause, with its fix | SKIP: named in `only` without a destination; WARN: plain `http://` to a non-local host, an S3 bucket name with dots |
//!
//! # Where settings come from
//! `WORKOS_API_KEY`, `WORKOS_CLIENT_ID`, `WORKOS_ORGANIZATION_ID` and `WORKOS_BASE_URL` are read
//! from the process environment first, then from `.env.local`, then from `.env` (in
//! [`VerifyOptions::env_dir`]): the **first** source that sets a non-empty value wins, and the
//! finding names it (and any later source it shadows). The environment comes first so that CI
//! secrets override files that happen to be checked out; `.env.local` (a developer's own,
//! never committed) overrides the shared `.env`, as with dotenv-flow, Vite and Next.js. The environment is passed as a map ([`VerifyOptions::env_vars`]), never read
//! behind the caller's back, so tests stay hermetic; [`VerifyOptions::from_env`] takes a
//! snapshot of the process environment.
//!
//! # What the checks write, and a live key
//! `event` records one event (actor `audit-core-verify` of type `system`, location `127.0.0.1`)
//! for the organization; `schema_validation` sends one event that should be refused, and that is
//! recorded when schema validation is off ([`CheckId::writes`]). Run the checklist against a test
//! organization.
//!
//! With a live (`sk_live_`) key those two checks write nothing: they are SKIP, naming the flag
//! that runs them (`--allow-live-writes`, [`VerifyOptions::allow_live_writes`]), and the
//! `api_key` finding says so; the checks that only read (`log_stream`, `export`) run. A live key
//! passes when run by hand (verifying production before go-live is the point of the checklist)
//! but is a WARN in CI (`CI=true` or `CI=1`): use a test key and a test organization there.
//!
//! # Secrets
//! The API key is shown as its prefix and last four characters (`sk_test_…abcd`) at most. A
//! secret key found in another setting (`WORKOS_ORGANIZATION_ID`, `--org`, `WORKOS_CLIENT_ID`,
//! `WORKOS_BASE_URL`, swapped by mistake) fails that setting's check with a finding that names
//! the setting and never shows any part of the value; as a last line of defence, anything that
//! looks like a secret key (`sk_…`) in a finding or fix is replaced by `[redacted]`.
//!
//! # Errors and fixes
//! Every failure names its cause and the fix (from WorkOS's error-recovery guidance): a refused
//! key (401), a key without permission (403), an unknown organization (404), a rate limit (429,
//! with the `Retry-After` wait), an unreachable base URL, a TLS failure, a stream that is inactive
//! or in error, schema validation that is off. When a cause would fail every later API check the
//! same way (401, 403, 404, 429, network, TLS), those checks are reported as SKIP naming the
//! check that failed. A check whose prerequisite (`api_key`, `organization`) failed is SKIP when
//! that prerequisite is in the report, and FAIL with the prerequisite's finding otherwise, so a
//! narrowed selection never passes by accident. Requests are not retried: the first answer is the
//! finding.
//!
//! ```no_run
//! use audit_verify::{Verifier, VerifyOptions};
//!
//! let options = VerifyOptions::from_env().require_stream(true);
//! let report = Verifier::new(options).run_blocking();
//! println!("{report}");
//! std::process::exit(report.exit_code().into());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples (the ten lines of a user's own xtask) compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod api;
mod env;
#[cfg(feature = "local")]
#[cfg_attr(docsrs, doc(cfg(feature = "local")))]
pub mod local;
mod plan;
mod report;
pub mod schemas;
mod settings;
pub mod streams;
mod workspace;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use env::{Source, mask_key};
pub use report::{CheckId, CheckResult, Report, Status, Summary, UnknownCheck};
pub use settings::{ENV_API_KEY, ENV_CLIENT_ID, ENV_ORGANIZATION_ID};
pub use streams::StreamProbe;
pub use workspace::PROJECT_CRATES;

use api::{ApiContext, Failure};
use audit_core::client::{Client, ENV_BASE_URL};
use audit_core::event::Action;
use audit_core::retry::RetryPolicy;
use env::EnvLayers;

/// The action of the test events unless [`VerifyOptions::action`] names another.
pub const DEFAULT_ACTION: &str = "verify.checked";

/// What to check and where the settings come from. Build with [`VerifyOptions::new`] (nothing
/// from the process) or [`VerifyOptions::from_env`] (the process environment and the current
/// directory's `.env` files), then the setters.
///
/// # Security
/// `Debug` shows the names of the environment variables, never their values.
#[derive(Clone)]
#[must_use]
pub struct VerifyOptions {
    env: BTreeMap<String, String>,
    env_dir: Option<PathBuf>,
    manifest_path: Option<PathBuf>,
    organization_id: Option<String>,
    action: String,
    base_url: Option<String>,
    require_stream: bool,
    export: bool,
    allow_live_writes: bool,
    only: Option<BTreeSet<CheckId>>,
    skip: BTreeSet<CheckId>,
    timeout: Duration,
    export_timeout: Duration,
    export_poll_interval: Duration,
    ci: Option<bool>,
    cargo: Option<String>,
    stream_probes: Vec<StreamProbe>,
    stream_roots: Vec<Vec<u8>>,
}

impl fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("env_dir", &self.env_dir)
            .field("manifest_path", &self.manifest_path)
            .field("organization_id", &self.organization_id)
            .field("action", &self.action)
            .field("base_url", &self.base_url)
            .field("require_stream", &self.require_stream)
            .field("export", &self.export)
            .field("allow_live_writes", &self.allow_live_writes)
            .field("only", &self.only)
            .field("skip", &self.skip)
            .field("timeout", &self.timeout)
            .field("export_timeout", &self.export_timeout)
            .field("ci", &self.ci)
            .field("stream_probes", &self.stream_probes)
            .finish_non_exhaustive()
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl VerifyOptions {
    /// Options that read nothing from the process: an empty environment, no `.env` files, the
    /// current directory's workspace, action [`DEFAULT_ACTION`], a 15 s timeout per request, no
    /// export.
    pub fn new() -> Self {
        Self {
            env: BTreeMap::new(),
            env_dir: None,
            manifest_path: None,
            organization_id: None,
            action: DEFAULT_ACTION.to_owned(),
            base_url: None,
            require_stream: false,
            export: false,
            allow_live_writes: false,
            only: None,
            skip: BTreeSet::new(),
            timeout: Duration::from_secs(15),
            export_timeout: Duration::from_secs(60),
            export_poll_interval: Duration::from_secs(1),
            ci: None,
            cargo: None,
            stream_probes: Vec::new(),
            stream_roots: Vec::new(),
        }
    }

    /// [`VerifyOptions::new`] with a snapshot of the process environment (variables that are not
    /// Unicode are left out) and `.env.local` / `.env` read from the current directory.
    pub fn from_env() -> Self {
        Self::new()
            .env_vars(
                std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            )
            .env_dir(".")
    }

    /// Replaces the environment the settings are read from (first in precedence).
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self
    }

    /// Sets one variable of that environment.
    pub fn env_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The directory whose `.env.local` and then `.env` are read (after the environment).
    pub fn env_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.env_dir = Some(dir.into());
        self
    }

    /// Reads no `.env` files.
    pub fn no_env_files(mut self) -> Self {
        self.env_dir = None;
        self
    }

    /// The `Cargo.toml` of the workspace to check (default: `cargo metadata` in the current
    /// directory).
    pub fn manifest_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.manifest_path = Some(path.into());
        self
    }

    /// The organization to test, overriding `WORKOS_ORGANIZATION_ID`.
    pub fn organization_id(mut self, id: impl Into<String>) -> Self {
        self.organization_id = Some(id.into());
        self
    }

    /// The action of the test events (default [`DEFAULT_ACTION`], `verify.checked`). Name an
    /// action with a registered schema to test schema validation.
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self
    }

    /// The API base URL, overriding `WORKOS_BASE_URL` (default `https://api.workos.com`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Whether an organization without a log stream fails `log_stream` (default: SKIP).
    pub fn require_stream(mut self, yes: bool) -> Self {
        self.require_stream = yes;
        self
    }

    /// Whether to run the `export` check (default off: it takes seconds to a minute).
    pub fn export(mut self, yes: bool) -> Self {
        self.export = yes;
        self
    }

    /// Whether the checks that write into the organization's audit log (`event` records a test
    /// event; `schema_validation` sends an event that is recorded when validation is off) run
    /// with a live (`sk_live_`) key. Default off: with a live key they are SKIP, and the
    /// `api_key` finding says so. A test (`sk_test_`) key is not affected.
    ///
    /// # Security
    /// The events land in a production organization's audit log, where its customers (and their
    /// log streams) see them, and cannot be deleted. Turn this on only to verify production on
    /// purpose, before go-live.
    pub fn allow_live_writes(mut self, yes: bool) -> Self {
        self.allow_live_writes = yes;
        self
    }

    /// Runs only these checks (naming `export` here turns it on).
    pub fn only(mut self, checks: impl IntoIterator<Item = CheckId>) -> Self {
        self.only = Some(checks.into_iter().collect());
        self
    }

    /// Leaves these checks out of the run and the report.
    pub fn skip(mut self, checks: impl IntoIterator<Item = CheckId>) -> Self {
        self.skip.extend(checks);
        self
    }

    /// The timeout of each request (default 15 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the export may stay pending (default 60 s).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = timeout;
        self
    }

    /// The first wait between polls of the export; it doubles up to 10 s (default 1 s).
    pub fn export_poll_interval(mut self, interval: Duration) -> Self {
        self.export_poll_interval = interval;
        self
    }

    /// Whether this runs in CI (default: the `CI` variable of the environment is `true` or `1`).
    pub fn ci(mut self, yes: bool) -> Self {
        self.ci = Some(yes);
        self
    }

    /// The cargo binary for the `dependency` check (default: `CARGO` of the environment, else
    /// `cargo`).
    pub fn cargo(mut self, cargo: impl Into<String>) -> Self {
        self.cargo = Some(cargo.into());
        self
    }

    /// Probes this log-stream destination (repeatable; see [`streams`]): its check
    /// (`stream_http`, `stream_splunk`, `stream_datadog` or `stream_s3`) joins the report.
    pub fn stream_probe(mut self, probe: StreamProbe) -> Self {
        self.stream_probes.push(probe);
        self
    }

    /// Also trusts this CA certificate (PEM) in the destination probes, for a test environment
    /// with a private CA.
    ///
    /// # Security
    ///
    /// WorkOS itself trusts only public CAs: a destination that passes only with this root will
    /// fail in WorkOS. Never use it to make a real destination pass.
    pub fn stream_trust_root(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.stream_roots.push(pem.into());
        self
    }

    fn selected(&self, id: CheckId) -> bool {
        !self.skip.contains(&id) && self.only.as_ref().is_none_or(|only| only.contains(&id))
    }

    fn in_ci(&self) -> bool {
        self.ci.unwrap_or_else(|| {
            self.env
                .get("CI")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
        })
    }
}

/// Runs the checklist. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Verifier {
    options: VerifyOptions,
}

impl Verifier {
    /// A verifier with these options.
    pub fn new(options: VerifyOptions) -> Self {
        Self { options }
    }

    /// Runs the selected checks against the configured WorkOS (or audit-testkit), then the
    /// destination probes, and reports. Never fails: every problem is a [`Status::Fail`] in the
    /// report.
    pub async fn run(&self) -> Report {
        let o = &self.options;
        let layers = EnvLayers::load(&o.env, o.env_dir.as_deref());
        let mut results = self.run_checklist(&layers).await;
        results.extend(self.run_probes().await);
        // The last line of defence: whatever setting a secret was put in, and whatever echoed it.
        let key = layers.get(ENV_API_KEY).map(|f| f.value);
        let known: Vec<&str> = key.as_deref().into_iter().collect();
        Report::new(results.into_iter().map(|r| r.redacted(&known)).collect())
    }

    /// The destination probes: each given destination whose check is selected, then a SKIP for
    /// each probe named in [`VerifyOptions::only`] without a destination.
    async fn run_probes(&self) -> Vec<CheckResult> {
        let o = &self.options;
        let mut results = Vec::new();
        for probe in o.stream_probes.iter().filter(|p| o.selected(p.id())) {
            results.push(probe.run_with_roots(o.timeout, &o.stream_roots).await);
        }
        for id in CheckId::PROBES {
            let named = o.only.as_ref().is_some_and(|only| only.contains(&id));
            if named && !o.skip.contains(&id) && !o.stream_probes.iter().any(|p| p.id() == id) {
                results.push(CheckResult::skip(
                    id,
                    "no destination given (see --stream-* / VerifyOptions::stream_probe)",
                ));
            }
        }
        results
    }

    async fn run_checklist(&self, layers: &EnvLayers) -> Vec<CheckResult> {
        let o = &self.options;
        let mut results = Vec::new();

        if o.selected(CheckId::Dependency) {
            let cargo = o
                .cargo
                .clone()
                .or_else(|| o.env.get("CARGO").cloned())
                .unwrap_or_else(|| "cargo".to_owned());
            let manifest = o.manifest_path.clone();
            let result = tokio::task::spawn_blocking(move || workspace::check(&cargo, manifest.as_deref()))
                .await
                .unwrap_or_else(|e| {
                    CheckResult::fail(
                        CheckId::Dependency,
                        format!("the cargo metadata task failed: {e}"),
                        "run `cargo metadata --format-version 1` yourself to see what is wrong",
                    )
                });
            results.push(result);
        }
        let (key_result, key) = settings::api_key(layers, o.in_ci(), o.allow_live_writes);
        let org_option = o.organization_id.as_deref();
        let (org_result, org) = settings::organization(org_option, layers);
        let key_prereq = key_result.clone();
        let org_prereq = org_result.clone();
        if o.selected(CheckId::ApiKey) {
            results.push(key_result);
        }
        if o.selected(CheckId::ClientId) {
            results.push(settings::client_id(layers));
        }
        if o.selected(CheckId::Organization) {
            results.push(org_result);
        }

        let api_checks: Vec<CheckId> = [
            CheckId::Event,
            CheckId::LogStream,
            CheckId::SchemaValidation,
            CheckId::Export,
        ]
        .into_iter()
        .filter(|id| o.selected(*id))
        .collect();
        if api_checks.is_empty() {
            return results;
        }
        let export_requested = o.export
            || o.only
                .as_ref()
                .is_some_and(|only| only.contains(&CheckId::Export));

        // The checks that write hold back with a live key unless allowed.
        let writes_held = !o.allow_live_writes && key.as_deref().is_some_and(|k| k.starts_with("sk_live_"));

        // Prerequisites: a usable key and organization, then a client.
        let mut ready = match (key, org) {
            (None, _) => Prerequisite::Setting(key_prereq),
            (_, None) => Prerequisite::Setting(org_prereq),
            (Some(key), Some(org)) => match self.client(layers, &key) {
                Ok(client) => {
                    let action = Action::new(o.action.clone()).map_err(|e| e.to_string());
                    let mut c = ApiContext::new(client, key, org, action);
                    c.require_stream = o.require_stream;
                    c.export_timeout = o.export_timeout;
                    c.export_poll_interval = o.export_poll_interval;
                    Prerequisite::Ready(Box::new(c))
                }
                Err(fail) => Prerequisite::Client(fail),
            },
        };

        let mut blocker: Option<String> = None;
        for id in api_checks {
            if id == CheckId::Export && !export_requested {
                results.push(CheckResult::skip(
                    id,
                    "opt-in: pass --export (VerifyOptions::export) to run it",
                ));
                continue;
            }
            if let Some(b) = &blocker {
                results.push(CheckResult::skip(id, format!("not run: {b}")));
                continue;
            }
            let ctx = match &mut ready {
                Prerequisite::Ready(_) if writes_held && id.writes() => {
                    results.push(CheckResult::skip(id, live_writes_held(id)));
                    continue;
                }
                Prerequisite::Ready(c) => c,
                Prerequisite::Setting(pre) => {
                    results.push(prerequisite_failed(id, pre, o.selected(pre.id)));
                    continue;
                }
                Prerequisite::Client((finding, fix)) => {
                    blocker = Some(format!("`{id}` failed ({finding})"));
                    results.push(CheckResult::fail(id, finding.clone(), fix.clone()));
                    continue;
                }
            };
            let outcome = match id {
                CheckId::Event => ctx.event().await,
                CheckId::LogStream => ctx.log_stream().await,
                CheckId::SchemaValidation => ctx.schema_validation().await,
                _ => ctx.export().await,
            };
            match outcome {
                Ok(r) => results.push(r),
                Err(Failure { result, blocking }) => {
                    if blocking {
                        blocker = Some(format!("`{id}` failed ({})", result.finding));
                    }
                    results.push(result);
                }
            }
        }
        results
    }

    /// [`Verifier::run`] on a runtime of its own, on a thread of its own (so it may be called from
    /// anywhere, also from inside an async runtime, which it then blocks).
    pub fn run_blocking(&self) -> Report {
        std::thread::scope(|scope| {
            scope
                .spawn(
                    || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt.block_on(self.run()),
                        Err(e) => Report::new(vec![CheckResult::fail(
                            CheckId::Event,
                            format!("could not start a tokio runtime: {e}"),
                            "call Verifier::run from your own runtime",
                        )]),
                    },
                )
                .join()
                .unwrap_or_else(|_| {
                    Report::new(vec![CheckResult::fail(
                        CheckId::Event,
                        "the verification thread panicked",
                        "report this as a bug of audit-core",
                    )])
                })
        })
    }

    /// The client of the API checks: no retries (the first answer is the finding), the
    /// configured timeout.
    fn client(&self, layers: &EnvLayers, key: &str) -> Result<Client, (String, String)> {
        let o = &self.options;
        let (url, origin) = match &o.base_url {
            Some(u) => (Some(u.clone()), "from the --base-url option".to_owned()),
            None => match layers.get(ENV_BASE_URL) {
                Some(f) => {
                    let origin = f.origin();
                    (Some(f.value), origin)
                }
                None => (None, String::new()),
            },
        };
        if url.as_deref().is_some_and(env::holds_secret_key) {
            return Err((
                format!(
                    "the base URL ({origin}) holds what looks like a secret key (sk_…), not shown: it cannot be the API's address"
                ),
                "set WORKOS_BASE_URL to https://api.workos.com (or remove it), or to http://127.0.0.1:PORT for audit-testkit; keep the key in WORKOS_API_KEY only, and roll it in the WorkOS Dashboard → API Keys if it was shown or logged anywhere".to_owned(),
            ));
        }
        let mut builder = Client::builder()
            .api_key(key)
            .retry_policy(RetryPolicy::disabled())
            .timeout(o.timeout)
            .connect_timeout(o.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("audit-core-verify/", env!("CARGO_PKG_VERSION")));
        if let Some(u) = &url {
            builder = builder.base_url(u.clone());
        }
        builder.build().map_err(|e| {
            match (&e, &url) {
                (audit_core::Error::Config { message, .. }, Some(u)) => (
                    format!("the base URL {u:?} ({origin}) cannot be used: {message}"),
                    "set WORKOS_BASE_URL to https://api.workos.com (or remove it), or to http://127.0.0.1:PORT for audit-testkit".to_owned(),
                ),
                _ => (format!("the client could not be built: {e}"), "check WORKOS_API_KEY and WORKOS_BASE_URL".to_owned()),
            }
        })
    }
}

/// The finding of a check that writes, held back because the key is live.
fn live_writes_held(id: CheckId) -> String {
    let what = match id {
        CheckId::Event => "records a test event",
        _ => "sends an event that is recorded when schema validation is off",
    };
    format!(
        "not run: the API key is a live (production) key and this check {what} in the organization's audit log, which its customers see; pass --allow-live-writes (VerifyOptions::allow_live_writes) to run it, or use a test key (sk_test_…) and a test organization"
    )
}

/// Whether the API checks can run.
enum Prerequisite {
    Ready(Box<ApiContext>),
    /// `api_key` or `organization` failed.
    Setting(CheckResult),
    /// The client could not be built: finding and fix.
    Client((String, String)),
}

/// The result of an API check whose prerequisite failed: SKIP when the prerequisite is in the
/// report (its FAIL explains), FAIL with the prerequisite's finding otherwise.
fn prerequisite_failed(id: CheckId, pre: &CheckResult, pre_reported: bool) -> CheckResult {
    if pre_reported {
        CheckResult::skip(id, format!("not run: `{}` failed", pre.id))
    } else {
        CheckResult::new(
            id,
            Status::Fail,
            format!("not run: {}", pre.finding),
            pre.fix.clone(),
        )
    }
}
