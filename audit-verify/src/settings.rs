//! Checks `api_key`, `client_id` and `organization`: the settings, wherever they come from.

use super::env::{EnvLayers, Found, Source, holds_secret_key, mask_key};
use super::report::{CheckId, CheckResult, Status};
use audit_core::event::OrganizationId;

/// The environment variable naming the organization the checks use.
pub const ENV_ORGANIZATION_ID: &str = "WORKOS_ORGANIZATION_ID";
/// The environment variable holding the WorkOS client id (`client_…`).
pub const ENV_CLIENT_ID: &str = "WORKOS_CLIENT_ID";
/// The environment variable holding the API key.
pub const ENV_API_KEY: &str = audit_core::client::ENV_API_KEY;

const KEY_FIX: &str = "create or copy a secret key in the WorkOS Dashboard → API Keys (it starts with \"sk_test_\" or \"sk_live_\") and set WORKOS_API_KEY in the environment, .env.local or .env (in CI: a repository secret)";

fn not_set(layers: &EnvLayers, key: &str) -> String {
    let empty = layers.empty_in(key);
    let mut s = format!("{key} is not set (looked in: {})", layers.consulted());
    if !empty.is_empty() {
        let names: Vec<&str> = empty.iter().map(|s| s.as_str()).collect();
        s.push_str(&format!("; it is empty in {}", names.join(", ")));
    }
    s
}

fn with_problems(mut finding: String, layers: &EnvLayers) -> String {
    for p in &layers.problems {
        finding.push_str(&format!("; {p}"));
    }
    finding
}

/// What the finding of a live key adds when the checks that write are held back.
const LIVE_WRITES_HELD: &str = "the checks that write into the organization's audit log (event, schema_validation) are skipped: pass --allow-live-writes (VerifyOptions::allow_live_writes) to run them";

/// Check `api_key`; the key when it can be used for the API checks. `allow_live_writes`: whether
/// the checks that write run with a live key.
pub(crate) fn api_key(
    layers: &EnvLayers,
    ci: bool,
    allow_live_writes: bool,
) -> (CheckResult, Option<String>) {
    let id = CheckId::ApiKey;
    let Some(found) = layers.get(ENV_API_KEY) else {
        let finding = with_problems(not_set(layers, ENV_API_KEY), layers);
        return (CheckResult::fail(id, finding, KEY_FIX), None);
    };
    let origin = found.origin();
    let value = found.value;
    let masked = mask_key(&value);
    if value.trim() != value || value.contains(char::is_whitespace) {
        let finding = format!("{ENV_API_KEY} {masked} {origin} contains whitespace");
        return (
            CheckResult::fail(
                id,
                finding,
                "remove the spaces, quotes or line breaks around the key",
            ),
            None,
        );
    }
    if !value.starts_with("sk_") {
        let finding = format!(
            "{ENV_API_KEY} {masked} {origin} does not start with \"sk_\": it is not a WorkOS secret key"
        );
        return (
            CheckResult::fail(
                id,
                finding,
                format!("{KEY_FIX}; a client id (client_…) or publishable key is not an API key"),
            ),
            None,
        );
    }
    let result = if value.starts_with("sk_test_") {
        CheckResult::pass(id, with_problems(format!("test key {masked} {origin}"), layers))
    } else if value.starts_with("sk_live_") {
        let mut finding = format!("live (production) key {masked} {origin}");
        if ci {
            finding.push_str(", in CI");
        }
        if !allow_live_writes {
            finding.push_str(&format!("; {LIVE_WRITES_HELD}"));
        }
        let finding = with_problems(finding, layers);
        if ci {
            let why = if allow_live_writes {
                "every run writes test events into the organization's production audit log, which its customers can see"
            } else {
                "a production key in CI is one more place it can leak from"
            };
            CheckResult::warn(
                id,
                finding,
                Some(format!(
                    "use a test key (sk_test_…) and a test organization in CI: {why}"
                )),
            )
        } else {
            CheckResult::pass(id, finding)
        }
    } else {
        CheckResult::warn(
            id,
            with_problems(
                format!("{masked} {origin} is neither a test (sk_test_) nor a live (sk_live_) key"),
                layers,
            ),
            Some("check the key in the WorkOS Dashboard → API Keys".into()),
        )
    };
    // A file that could not be read or parsed may hold the setting that was meant to win.
    let result = if result.status == Status::Pass && !layers.problems.is_empty() {
        CheckResult::warn(
            id,
            result.finding,
            Some("fix or remove the lines named: each must be KEY=VALUE (quotes allowed)".into()),
        )
    } else {
        result
    };
    (result, Some(value))
}

/// Check `client_id`.
pub(crate) fn client_id(layers: &EnvLayers) -> CheckResult {
    let id = CheckId::ClientId;
    match layers.get(ENV_CLIENT_ID) {
        None => CheckResult::skip(
            id,
            format!("{ENV_CLIENT_ID} is not set (only needed for SSO or AuthKit)"),
        ),
        Some(f) if holds_secret_key(&f.value) => CheckResult::fail(
            id,
            format!(
                "{ENV_CLIENT_ID} {} does not start with \"client_\": it holds what looks like a secret key (sk_…), not shown",
                f.origin()
            ),
            SWAPPED_KEY_FIX,
        ),
        Some(f) if f.value.starts_with("client_") => {
            CheckResult::pass(id, format!("{} {}", f.value, f.origin()))
        }
        Some(f) => CheckResult::fail(
            id,
            format!(
                "{ENV_CLIENT_ID} {:?} {} does not start with \"client_\"",
                shorten(&f.value),
                f.origin()
            ),
            "copy the Client ID from the WorkOS Dashboard → API Keys (it starts with \"client_\"), or remove the variable if you do not use SSO or AuthKit",
        ),
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        let head: String = s.chars().take(40).collect();
        format!("{head}…")
    } else {
        s.to_owned()
    }
}

/// The fix when a secret key was found in a setting other than `WORKOS_API_KEY`.
const SWAPPED_KEY_FIX: &str = "put the secret key in WORKOS_API_KEY only, and the value this setting expects in its place; if the key was shown or logged anywhere, roll it in the WorkOS Dashboard → API Keys";

const ORG_FIX: &str = "use the id shown in the WorkOS Dashboard → Organizations: \"org_\" followed by 26 characters, in the environment of your API key";

/// Check `organization`; the id when it can be used for the API checks.
pub(crate) fn organization(
    option: Option<&str>,
    layers: &EnvLayers,
) -> (CheckResult, Option<OrganizationId>) {
    let id = CheckId::Organization;
    let found = match option.filter(|o| !o.trim().is_empty()) {
        Some(o) => Found {
            value: o.to_owned(),
            source: Source::Option,
            shadowed: Vec::new(),
        },
        None => match layers.get(ENV_ORGANIZATION_ID) {
            Some(f) => f,
            None => {
                return (
                    CheckResult::fail(
                        id,
                        format!(
                            "no organization: --org not given and {}",
                            not_set(layers, ENV_ORGANIZATION_ID)
                        ),
                        format!(
                            "pass --org org_… or set {ENV_ORGANIZATION_ID} to an organization of your WorkOS environment (Dashboard → Organizations)"
                        ),
                    ),
                    None,
                );
            }
        },
    };
    let origin = found.origin();
    if holds_secret_key(&found.value) {
        let what = match found.source {
            Source::Option => "the organization".to_owned(),
            _ => ENV_ORGANIZATION_ID.to_owned(),
        };
        return (
            CheckResult::fail(
                id,
                format!(
                    "{what} {origin} is not an organization id: it holds what looks like a secret key (sk_…), not shown"
                ),
                format!("{SWAPPED_KEY_FIX}; {ORG_FIX}"),
            ),
            None,
        );
    }
    match OrganizationId::new(found.value.trim()) {
        Err(e) => (
            CheckResult::fail(
                id,
                format!(
                    "{:?} {origin} is not an organization id: {}",
                    shorten(&found.value),
                    e.rule()
                ),
                ORG_FIX,
            ),
            None,
        ),
        Ok(org) if org.looks_like_workos_id() => {
            (CheckResult::pass(id, format!("{org} {origin}")), Some(org))
        }
        Ok(org) => (
            CheckResult::new(
                id,
                Status::Warn,
                format!(
                    "{org} {origin} is not \"org_\" followed by a 26-character ULID, the shape of WorkOS ids"
                ),
                Some(ORG_FIX.to_owned()),
            ),
            Some(org),
        ),
    }
}
