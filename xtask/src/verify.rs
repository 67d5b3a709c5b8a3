//! `cargo xtask verify`: the WorkOS verification checklist (`audit_verify`).
//!
//! ```text
//! cargo xtask verify                      # against WorkOS, settings from env, .env.local, .env
//! cargo xtask verify --local              # against an in-process audit-testkit: every check runs
//! cargo xtask verify --json               # one JSON document on stdout
//! cargo xtask verify --checks api_key,event --org org_… --action user.signed_in
//! cargo xtask verify --skip dependency --require-stream --export
//! ```
//!
//! The exit status is 1 when any check fails (0 with warnings or skips), 2 for a usage error.
//! `--local` ignores the process environment and the `.env` files: it starts audit-testkit with
//! one organization, a local key and client id, an active log stream, schemas required and a schema registered
//! for the action, so that every check runs (and passes); `cargo xtask ci` runs it.

use std::path::PathBuf;
use std::time::Duration;

use audit_core::client::{Client, CreateSchema, SchemaTarget};
use audit_core::{Action, OrganizationId};
use audit_testkit::TestKit;
use audit_verify::{CheckId, DEFAULT_ACTION, Report, Verifier, VerifyOptions};
use serde_json::json;

use crate::project_root;

/// The organization of `--local` unless `--org` names another.
const LOCAL_ORG: &str = "org_01JVERFYXTASK0CAMRGN000000";
/// The key audit-testkit accepts in `--local` (it is not a WorkOS key).
const LOCAL_KEY: &str = "sk_test_audit_testkit_local_verify";
/// The client id of `--local`, so that its check runs too.
const LOCAL_CLIENT_ID: &str = "client_01JVERFYXTASK0CAMRGN000000";

/// The flags of `cargo xtask verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Checks: dependency, api_key, client_id, organization, event, log_stream, schema_validation, export (opt-in).\n\
                  Settings: WORKOS_API_KEY, WORKOS_ORGANIZATION_ID, WORKOS_CLIENT_ID, WORKOS_BASE_URL, from the environment first, then .env.local, then .env.\n\
                  Exit status: 0 when no check fails, 1 when one does, 2 for a usage error."
)]
pub(crate) struct Args {
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Start audit-testkit in-process and run every check against it.
    #[arg(long)]
    local: bool,
    /// Run only these checks (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
    checks: Vec<String>,
    /// Leave these checks out (comma-separated, repeatable).
    #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
    skip: Vec<String>,
    /// The organization to test (default: WORKOS_ORGANIZATION_ID).
    #[arg(long, value_name = "ORG_ID")]
    org: Option<String>,
    /// The action of the test events.
    #[arg(long, default_value = DEFAULT_ACTION)]
    action: String,
    /// Fail when the organization has no log stream (default: SKIP).
    #[arg(long)]
    require_stream: bool,
    /// Also check that an export of the last day reaches `ready`.
    #[arg(long)]
    export: bool,
    /// How long the export may stay pending (humantime: 60s, 2m).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = audit_core::config::parse_duration)]
    export_timeout: Duration,
    /// The Cargo.toml of the workspace to check (default: this repository's).
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// The directory holding .env.local and .env (default: this repository's root).
    #[arg(long, value_name = "DIR")]
    env_dir: Option<PathBuf>,
    /// The API base URL (default: WORKOS_BASE_URL, else the WorkOS API at api.workos.com).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The timeout of each request (humantime: 15s, 500ms).
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = audit_core::config::parse_duration)]
    timeout: Duration,
}

/// Runs the task; `Err` carries the message and exit status.
pub(crate) fn run(args: Args) -> Result<(), String> {
    match run_with(args) {
        Ok((report, output)) => {
            println!("{output}");
            exit_status(&report)
        }
        Err(Usage(message)) => {
            eprintln!("xtask verify: {}", message.trim_end());
            std::process::exit(2);
        }
    }
}

/// A usage or set-up error (bad flag, testkit could not start).
#[derive(Debug)]
pub(crate) struct Usage(String);

/// Runs the checklist with `args` and renders the report.
pub(crate) fn run_with(args: Args) -> Result<(Report, String), Usage> {
    let parse = |names: &[String]| -> Result<Vec<CheckId>, Usage> {
        names
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.parse::<CheckId>().map_err(|e| Usage(e.to_string())))
            .collect()
    };
    let only = parse(&args.checks)?;
    let skip = parse(&args.skip)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Usage(format!("could not start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let mut options = if args.local {
            VerifyOptions::new().export(!skip.contains(&CheckId::Export))
        } else {
            VerifyOptions::from_env()
                .env_dir(args.env_dir.clone().unwrap_or_else(project_root))
                .export(args.export)
        };
        options = options
            .manifest_path(
                args.manifest_path
                    .clone()
                    .unwrap_or_else(|| project_root().join("Cargo.toml")),
            )
            .action(args.action.clone())
            .require_stream(args.require_stream)
            .timeout(args.timeout)
            .export_timeout(args.export_timeout)
            .skip(skip);
        if args.export {
            options = options.export(true);
        }
        if !only.is_empty() {
            options = options.only(only);
        }
        if let Some(url) = &args.base_url {
            options = options.base_url(url.clone());
        }
        let _kit;
        let mut heading = "WorkOS verification checklist".to_owned();
        if args.local {
            let org = args.org.clone().unwrap_or_else(|| LOCAL_ORG.to_owned());
            let kit = start_local(&org, &args.action).await?;
            heading = format!("{heading}, against audit-testkit at {}", kit.url());
            options = options
                .env_var("WORKOS_API_KEY", LOCAL_KEY)
                .env_var("WORKOS_ORGANIZATION_ID", org)
                .env_var("WORKOS_CLIENT_ID", LOCAL_CLIENT_ID)
                .base_url(kit.url())
                .export_poll_interval(Duration::from_millis(100))
                .ci(false);
            _kit = kit;
        } else if let Some(org) = &args.org {
            options = options.organization_id(org.clone());
        }
        let report = Verifier::new(options).run().await;
        let output = if args.json {
            report.to_json()
        } else {
            format!("{heading}\n\n{report}")
        };
        Ok((report, output))
    })
}

/// The testkit of `--local`: the organization, the local key, an active Datadog stream, schemas
/// required, and a schema for `action` with a required string property.
async fn start_local(org: &str, action: &str) -> Result<TestKit, Usage> {
    OrganizationId::new(org).map_err(|e| Usage(format!("--org: {e}")))?;
    let kit = TestKit::builder()
        .org(org)
        .api_key(LOCAL_KEY)
        .require_schemas(true)
        .log_stream("Datadog", "active")
        .export_delay(Duration::from_millis(200))
        .start()
        .await
        .map_err(|e| Usage(format!("could not start audit-testkit: {e}")))?;
    // An invalid action is left to the checks to report.
    if let Ok(action) = Action::new(action) {
        let client = Client::builder()
            .api_key(LOCAL_KEY)
            .base_url(kit.url())
            .build()
            .map_err(|e| Usage(format!("client for audit-testkit: {e}")))?;
        let schema = CreateSchema::new([SchemaTarget::new("verification")]).metadata(json!({
            "type": "object",
            "properties": {"check": {"type": "string"}, "attempt": {"type": "integer"}},
            "required": ["check"]
        }));
        client
            .create_schema(&action, &schema)
            .await
            .map_err(|e| Usage(format!("registering a schema in audit-testkit: {e}")))?;
    }
    Ok(kit)
}

/// `Ok` when no check failed; the message names the failed checks.
pub(crate) fn exit_status(report: &Report) -> Result<(), String> {
    if report.passed() {
        return Ok(());
    }
    let failed: Vec<&str> = report.failures().map(|c| c.id.as_str()).collect();
    Err(format!(
        "verify: {} check{} failed: {}",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        failed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_verify::{CheckResult, Status};

    fn parse(list: &[&str]) -> Result<Args, clap::Error> {
        let all: Vec<&str> = std::iter::once("verify").chain(list.iter().copied()).collect();
        match crate::parse(&all)?.task {
            Some(crate::Task::Verify(args)) => Ok(args),
            other => panic!("not the verify task: {other:?}"),
        }
    }

    fn args(list: &[&str]) -> Args {
        parse(list).expect("valid flags")
    }

    #[test]
    fn local_run_passes_every_check() {
        let (report, output) = run_with(args(&["--local"])).expect("runs");
        assert!(report.passed(), "{output}");
        for id in CheckId::ALL {
            assert_eq!(
                report.get(id).map(|c| c.status),
                Some(Status::Pass),
                "{id}:\n{output}"
            );
        }
        assert!(output.contains("against audit-testkit at http://127.0.0.1:"));
        assert!(output.contains("PASS   schema_validation"));
        assert!(!output.contains(LOCAL_KEY));
        assert!(exit_status(&report).is_ok());
    }

    #[test]
    fn json_output_is_one_document_with_the_selected_checks() {
        let (report, output) = run_with(args(&[
            "--local",
            "--json",
            "--checks",
            "api_key,event",
            "--skip",
            "event",
        ]))
        .expect("runs");
        let v: serde_json::Value = serde_json::from_str(&output).expect("one JSON document");
        let ids: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["api_key"]);
        assert_eq!(v["passed"], true);
        assert_eq!(v["checks"][0]["status"], "PASS");
        assert!(v["checks"][0]["finding"].as_str().unwrap().contains("sk_test_…"));
        assert!(!output.contains(LOCAL_KEY));
        assert!(report.passed());
    }

    #[test]
    fn a_failed_check_fails_the_task() {
        let (report, output) = run_with(args(&[
            "--local",
            "--checks",
            "event",
            "--action",
            "not an action",
        ]))
        .expect("runs");
        assert_eq!(
            report.get(CheckId::Event).map(|c| c.status),
            Some(Status::Fail),
            "{output}"
        );
        let err = exit_status(&report).expect_err("fails");
        assert_eq!(err, "verify: 1 check failed: event");

        let warn_only = Report::new(vec![CheckResult::new(
            CheckId::ApiKey,
            Status::Warn,
            "live key in CI",
            None,
        )]);
        assert!(exit_status(&warn_only).is_ok());
    }

    #[test]
    fn usage_errors() {
        let Err(Usage(m)) = run_with(args(&["--checks", "nope"])) else {
            panic!("an unknown check is a usage error");
        };
        assert!(m.contains("unknown check \"nope\""), "{m}");
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(run_with(args(&["--local", "--org", "acme"])).is_err());
    }
}
