//! `cargo xtask verify`: the WorkOS verification checklist (`audit_verify`).
//!
//! ```text
//! cargo xtask verify                      # against WorkOS, settings from env, .env.local, .env
//! cargo xtask verify --local              # against an in-process audit-testkit: every check runs
//! cargo xtask verify --json               # one JSON document on stdout
//! cargo xtask verify --checks api_key,event --org org_… --action user.signed_in
//! cargo xtask verify --skip dependency --require-stream --export
//! cargo xtask verify --allow-live-writes  # with a sk_live_ key: also send the test events
//! cargo xtask verify --stream-http https://siem.example.com/in --stream-header 'Authorization: Bearer …'
//! cargo xtask verify --stream-splunk https://splunk.example.com:8088 --stream-splunk-token …
//! cargo xtask verify --stream-datadog-site EU1 --stream-datadog-key …
//! cargo xtask verify --stream-s3-bucket b --stream-s3-region us-east-1 --stream-s3-role-arn arn:… --stream-s3-external-id …
//! cargo xtask verify --schemas            # the examples' actions against the schemas registered in WorkOS
//! cargo xtask verify --local --schemas    # … against an audit-testkit holding the schemas they declare
//! ```
//!
//! `--schemas` runs the registered-actions check (`audit_verify::schemas`) instead of the
//! checklist: every action the example apps can emit (their `#[action]` annotations and the
//! schemas they declare, read from audit-core's link-time registry) against WorkOS's actions and
//! schema versions, one report per app. With `--local` the schemas the examples declare are
//! registered in the in-process audit-testkit first; `cargo xtask ci` runs it.
//!
//! The `--stream-*` options probe a log-stream destination before it is configured in WorkOS
//! (`audit_verify::streams`); with the S3 options the filled-in IAM policy and trust
//! relationship are printed after the table.
//!
//! The exit status is 1 when any check fails (0 with warnings or skips), 2 for a usage error.
//! `--local` ignores the process environment and the `.env` files: it starts audit-testkit with
//! one organization, a local key and client id, an active log stream, schemas required and a schema registered
//! for the action, so that every check runs (and passes); `cargo xtask ci` runs it.

use std::path::PathBuf;
use std::time::Duration;

use audit_core::client::Client;
use audit_core::registry;
use audit_testkit::TestKit;
use audit_verify::local::{LOCAL_API_KEY, LOCAL_ORGANIZATION_ID, LocalError, LocalWorkos};
use audit_verify::schemas::{SchemaCheck, SchemaReport};
use audit_verify::streams::{DatadogSite, partition_of, s3_policy, s3_trust_relationship};
use audit_verify::{CheckId, DEFAULT_ACTION, Report, StreamProbe, Verifier, VerifyOptions};
// The example apps are linked for their entries in the registry (`--schemas`).
use example_actix as _;
use example_axum as _;
use serde_json::json;

use crate::project_root;

/// The flags of `cargo xtask verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Checks: dependency, api_key, client_id, organization, event, log_stream, schema_validation, export (opt-in);\n\
                  destination probes (with their --stream-* options): stream_http, stream_splunk, stream_datadog, stream_s3.\n\
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
    /// Check the example apps' actions against the registered schemas instead of running the
    /// checklist.
    #[arg(long)]
    schemas: bool,
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
    /// With a live (sk_live_) key, also run the checks that write into the organization's audit
    /// log (event, schema_validation); without it they are skipped.
    #[arg(long)]
    allow_live_writes: bool,
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
    /// Probe this generic HTTP stream destination with a sample event.
    #[arg(long, value_name = "URL")]
    stream_http: Option<String>,
    /// A header WorkOS will send to `--stream-http`, `'Name: value'` (repeatable).
    #[arg(long, value_name = "NAME: VALUE", requires = "stream_http")]
    stream_header: Vec<String>,
    /// Probe this Splunk HEC URL (health, then one event).
    #[arg(long, value_name = "URL", requires = "stream_splunk_token")]
    stream_splunk: Option<String>,
    /// The HEC token of `--stream-splunk`.
    #[arg(long, value_name = "TOKEN", requires = "stream_splunk")]
    stream_splunk_token: Option<String>,
    /// Probe Datadog on this site: US1, US3, US5, EU1, AP1 or US1-FED.
    #[arg(long, value_name = "SITE", requires = "stream_datadog_key")]
    stream_datadog_site: Option<String>,
    /// The Datadog API key of `--stream-datadog-site`.
    #[arg(long, value_name = "KEY", requires = "stream_datadog_site")]
    stream_datadog_key: Option<String>,
    /// Serve every Datadog site from `URL/<site>` instead of Datadog's hosts (for tests).
    #[arg(long, value_name = "URL", requires = "stream_datadog_site")]
    stream_datadog_url: Option<String>,
    /// Check an S3 stream's bucket name (with the other --stream-s3-* options).
    #[arg(long, value_name = "NAME", requires_all = ["stream_s3_region", "stream_s3_role_arn", "stream_s3_external_id"])]
    stream_s3_bucket: Option<String>,
    /// The S3 bucket's region, e.g. us-east-1.
    #[arg(long, value_name = "REGION", requires = "stream_s3_bucket")]
    stream_s3_region: Option<String>,
    /// The IAM role WorkOS assumes, arn:aws:iam::ACCOUNT:role/NAME.
    #[arg(long, value_name = "ARN", requires = "stream_s3_bucket")]
    stream_s3_role_arn: Option<String>,
    /// The external id of the role's trust relationship.
    #[arg(long, value_name = "ID", requires = "stream_s3_bucket")]
    stream_s3_external_id: Option<String>,
}

impl Args {
    /// The destination probes the `--stream-*` options ask for.
    fn stream_probes(&self) -> Result<Vec<StreamProbe>, Usage> {
        let mut probes = Vec::new();
        if let Some(url) = &self.stream_http {
            let mut p = StreamProbe::http(url);
            for h in &self.stream_header {
                let (name, value) = h.split_once(':').ok_or_else(|| {
                    Usage("--stream-header: expected 'Name: value', got a value without ':'".to_owned())
                })?;
                p = p.header(name.trim(), value.trim());
            }
            probes.push(p);
        }
        if let (Some(url), Some(token)) = (&self.stream_splunk, &self.stream_splunk_token) {
            probes.push(StreamProbe::splunk(url, token));
        }
        if let (Some(site), Some(key)) = (&self.stream_datadog_site, &self.stream_datadog_key) {
            let site = DatadogSite::parse(site).ok_or_else(|| {
                Usage(format!(
                    "--stream-datadog-site: unknown site {site:?}; the sites are US1, US3, US5, EU1, AP1, US1-FED"
                ))
            })?;
            let mut p = StreamProbe::datadog(site, key);
            if let Some(u) = &self.stream_datadog_url {
                p = p.datadog_url(u);
            }
            probes.push(p);
        }
        if let (Some(b), Some(r), Some(a), Some(e)) = (
            &self.stream_s3_bucket,
            &self.stream_s3_region,
            &self.stream_s3_role_arn,
            &self.stream_s3_external_id,
        ) {
            probes.push(StreamProbe::s3(b, r, a, e));
        }
        Ok(probes)
    }

    /// The IAM policy and trust relationship of the S3 options, filled in.
    fn s3_documents(&self) -> Option<String> {
        let (Some(bucket), Some(arn), Some(ext)) = (
            &self.stream_s3_bucket,
            &self.stream_s3_role_arn,
            &self.stream_s3_external_id,
        ) else {
            return None;
        };
        let partition = partition_of(arn);
        Some(format!(
            "IAM policy of the role (from the WorkOS guide):\n{}\n\nTrust relationship of the role (replace WORKOS_AWS_ACCOUNT_ID with the account the WorkOS dashboard shows):\n{}",
            s3_policy(bucket.trim(), partition),
            s3_trust_relationship(ext, partition)
        ))
    }
}

/// Runs the task; `Err` carries the message and exit status.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.schemas {
        return match run_schemas(&args) {
            Ok((reports, output)) => {
                println!("{output}");
                schemas_status(&reports)
            }
            Err(Usage(message)) => {
                eprintln!("xtask verify: {}", message.trim_end());
                std::process::exit(2);
            }
        };
    }
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
            .allow_live_writes(args.allow_live_writes)
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
        for probe in args.stream_probes()? {
            options = options.stream_probe(probe);
        }
        let _kit;
        let mut heading = "WorkOS verification checklist".to_owned();
        if args.local {
            let org = args.org.as_deref().unwrap_or(LOCAL_ORGANIZATION_ID);
            let local = LocalWorkos::start(org, &args.action).await.map_err(|e| match e {
                LocalError::Organization(e) => Usage(format!("--org: {e}")),
                other => Usage(other.to_string()),
            })?;
            heading = format!("{heading}, against audit-testkit at {}", local.url());
            options = local.configure(options);
            _kit = local;
        } else if let Some(org) = &args.org {
            options = options.organization_id(org.clone());
        }
        let report = Verifier::new(options).run().await;
        let output = if args.json {
            report.to_json()
        } else {
            match args.s3_documents() {
                Some(docs) => format!("{heading}\n\n{report}\n\n{docs}"),
                None => format!("{heading}\n\n{report}"),
            }
        };
        Ok((report, output))
    })
}

/// The apps `--schemas` checks: a name for the report and the crate their code is in.
const APPS: [(&str, &str); 2] = [
    ("examples/axum", "example_axum"),
    ("examples/actix", "example_actix"),
];

/// Each app's registered-actions report.
pub(crate) type AppReports = Vec<(&'static str, SchemaReport)>;

/// Runs the registered-actions check of every app in [`APPS`] and renders the reports.
pub(crate) fn run_schemas(args: &Args) -> Result<(AppReports, String), Usage> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Usage(format!("could not start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let crates: Vec<&str> = APPS.iter().map(|(_, c)| *c).collect();
        let _kit;
        let (client, against) = if args.local {
            let kit = TestKit::builder()
                .org(LOCAL_ORGANIZATION_ID)
                .api_key(LOCAL_API_KEY)
                .require_schemas(true)
                .start()
                .await
                .map_err(|e| Usage(format!("could not start audit-testkit: {e}")))?;
            let client = local_client(&kit)?;
            let mut registered = Vec::new();
            for (schema, origin) in registry::declared_schemas() {
                if !crates.contains(&origin.crate_name()) || registered.contains(&schema.action) {
                    continue;
                }
                client
                    .create_schema(&schema.action, &schema.schema)
                    .await
                    .map_err(|e| {
                        Usage(format!(
                            "registering the schema of {} ({origin}) in audit-testkit: {e}",
                            schema.action
                        ))
                    })?;
                registered.push(schema.action);
            }
            let against = format!(
                "audit-testkit at {} ({} schemas declared by the examples registered)",
                kit.url(),
                registered.len()
            );
            _kit = kit;
            (client, against)
        } else {
            let mut builder = audit_core::ClientBuilder::from_env().map_err(|e| Usage(e.to_string()))?;
            if let Some(url) = &args.base_url {
                builder = builder.base_url(url.clone());
            }
            let client = builder.build().map_err(|e| Usage(e.to_string()))?;
            let against = format!("WorkOS at {}", client.base_url());
            (client, against)
        };
        let mut reports = Vec::new();
        let mut output = format!("Registered-actions check, against {against}");
        for (app, krate) in APPS {
            let actions = registry::known_actions_in(&[krate]);
            if actions.is_empty() {
                return Err(Usage(format!(
                    "{app}: the registry holds no action of crate {krate} (is its code linked into xtask?)"
                )));
            }
            let report = SchemaCheck::new(actions)
                .run(&client)
                .await
                .map_err(|e| Usage(format!("{app}: {e}")))?;
            output.push_str(&format!("\n\n{app}\n{report}"));
            reports.push((app, report));
        }
        if args.json {
            let apps: Vec<serde_json::Value> = reports
                .iter()
                .map(|(app, r)| {
                    let report: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap_or_default();
                    json!({"app": app, "report": report})
                })
                .collect();
            output = json!({"passed": reports.iter().all(|(_, r)| r.passed()), "apps": apps}).to_string();
        }
        Ok((reports, output))
    })
}

/// `Ok` when no app has a finding; the message counts them.
pub(crate) fn schemas_status(reports: &[(&str, SchemaReport)]) -> Result<(), String> {
    let failing: Vec<String> = reports
        .iter()
        .filter(|(_, r)| !r.passed())
        .map(|(app, r)| {
            format!(
                "{app} ({} finding{})",
                r.findings.len(),
                if r.findings.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(format!("verify --schemas: {}", failing.join(", ")))
    }
}

fn local_client(kit: &TestKit) -> Result<Client, Usage> {
    Client::builder()
        .api_key(LOCAL_API_KEY)
        .base_url(kit.url())
        .build()
        .map_err(|e| Usage(format!("client for audit-testkit: {e}")))
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
            Some(crate::Task::Verify(args)) => Ok(*args),
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
        assert!(!output.contains(audit_verify::local::LOCAL_API_KEY));
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
        assert!(!output.contains(audit_verify::local::LOCAL_API_KEY));
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
    fn local_run_with_a_stream_destination_exits_by_its_answer() {
        let good = audit_testkit::stand_ins::StandIn::collector(202);
        let url = format!("{}/in", good.url());
        let (report, output) = run_with(args(&[
            "--local",
            "--stream-http",
            &url,
            "--stream-header",
            "Authorization: Bearer collector-secret",
        ]))
        .expect("runs");
        assert_eq!(
            report.get(CheckId::StreamHttp).map(|c| c.status),
            Some(Status::Pass),
            "{output}"
        );
        assert!(exit_status(&report).is_ok(), "{output}");
        assert!(output.contains("PASS   stream_http"));
        assert!(!output.contains("collector-secret"));
        assert_eq!(good.received().len(), 1);

        let refusing = audit_testkit::stand_ins::StandIn::collector(405);
        let (report, output) = run_with(args(&["--local", "--stream-http", &refusing.url()])).expect("runs");
        let probe = report.get(CheckId::StreamHttp).expect("probed");
        assert_eq!(probe.status, Status::Fail, "{output}");
        assert!(probe.fix.as_deref().unwrap_or("").contains("accepts POST"));
        assert_eq!(
            exit_status(&report).expect_err("exit 1"),
            "verify: 1 check failed: stream_http"
        );
    }

    #[test]
    fn s3_options_print_the_filled_in_documents() {
        let (report, output) = run_with(args(&[
            "--checks",
            "stream_s3",
            "--stream-s3-bucket",
            "audit-bucket",
            "--stream-s3-region",
            "eu-west-1",
            "--stream-s3-role-arn",
            "arn:aws:iam::123456789012:role/workos",
            "--stream-s3-external-id",
            "ext-secret-id",
        ]))
        .expect("runs");
        assert!(report.passed(), "{output}");
        assert!(output.contains("arn:aws:s3:::audit-bucket/*"));
        assert!(output.contains("\"sts:ExternalId\": \"ext-secret-id\""));
        assert!(output.contains("s3:PutObjectAcl"));
    }

    #[test]
    fn local_schemas_pass_for_both_examples() {
        let (reports, output) = run_schemas(&args(&["--local", "--schemas"])).expect("runs");
        assert_eq!(reports.len(), 2, "{output}");
        for (app, report) in &reports {
            assert!(report.passed(), "{app}:\n{output}");
            let checked: Vec<(&str, Option<u32>)> =
                report.checked.iter().map(|(a, v)| (a.as_str(), *v)).collect();
            assert_eq!(
                checked,
                [
                    ("invoice.paid", Some(1)),
                    ("invoice.viewed", Some(1)),
                    ("team.created", Some(1)),
                    ("team.deleted", Some(1)),
                    ("user.signed_in", Some(1)),
                ],
                "{app}"
            );
        }
        assert!(
            output.contains("examples/actix\nPASS   invoice.paid (schema version 1)"),
            "{output}"
        );
        assert!(
            output.contains("5 schemas declared by the examples registered"),
            "{output}"
        );
        assert!(schemas_status(&reports).is_ok());
        let (_, json) = run_schemas(&args(&["--local", "--schemas", "--json"])).expect("runs");
        let v: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
        assert_eq!(v["passed"], true);
        assert_eq!(v["apps"][1]["app"], "examples/actix");
    }

    #[test]
    fn live_writes_are_off_unless_the_flag_is_given() {
        assert!(!args(&[]).allow_live_writes);
        assert!(args(&["--allow-live-writes"]).allow_live_writes);
    }

    #[test]
    fn usage_errors() {
        let Err(Usage(m)) = run_with(args(&["--checks", "nope"])) else {
            panic!("an unknown check is a usage error");
        };
        assert!(m.contains("unknown check \"nope\""), "{m}");
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(run_with(args(&["--local", "--org", "acme"])).is_err());
        let Err(Usage(m)) = run_with(args(&[
            "--stream-datadog-site",
            "MARS",
            "--stream-datadog-key",
            "k",
        ])) else {
            panic!("an unknown site is a usage error");
        };
        assert!(m.contains("US1-FED"), "{m}");
        assert!(
            parse(&["--stream-splunk", "https://s:8088"]).is_err(),
            "a token is required"
        );
    }
}
