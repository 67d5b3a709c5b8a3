//! `audit-testkit`: run the WorkOS-compatible Audit Logs server from the command line.
//!
//! The first line on stdout is machine-readable:
//! `{"url":"http://127.0.0.1:PORT","organization_id":"org_..."}`.

use audit_testkit::{Destination, TestKit};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A WorkOS-compatible local Audit Logs server for tests, local development and CI.
#[derive(Parser, Debug)]
#[command(name = "audit-testkit", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8787")]
    addr: SocketAddr,
    /// Register an organization (repeatable). With none, one is generated and printed.
    #[arg(long = "org", value_name = "ID")]
    orgs: Vec<String>,
    /// Accept any organization id.
    #[arg(long)]
    any_org: bool,
    /// Accept only this API key (repeatable). Default: any key starting with `sk_`.
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// Validate events against the registered schema of their action and version.
    #[arg(long)]
    require_schemas: bool,
    /// How long an export stays pending (humantime: `200ms`, `1s`, `0s`).
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_delay)]
    export_delay: Duration,
    /// Per-key rate limit: a count per period (humantime), e.g. `6000/60s`, `6000/1m`, `10/500ms`.
    #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate)]
    rate_limit: Option<(u64, Duration)>,
    /// Report a log stream `TYPE:STATE` in the configuration endpoint, e.g. `Datadog:active`.
    #[arg(long, value_name = "TYPE:STATE", value_parser = parse_stream)]
    log_stream: Option<(String, String)>,
    /// Stream every organization's events to this HTTP endpoint (POST, generic envelope).
    #[arg(long, value_name = "URL", conflicts_with_all = ["stream_splunk", "stream_datadog_url"])]
    stream_http: Option<String>,
    /// An extra header of `--stream-http`, e.g. `Authorization: Bearer abc` (repeatable).
    #[arg(long, value_name = "NAME: VALUE", requires = "stream_http", value_parser = parse_header)]
    stream_header: Vec<(String, String)>,
    /// Stream every organization's events to this Splunk HTTP Event Collector.
    #[arg(
        long,
        value_name = "URL",
        requires = "stream_splunk_token",
        conflicts_with = "stream_datadog_url"
    )]
    stream_splunk: Option<String>,
    /// The HEC token of `--stream-splunk`.
    #[arg(long, value_name = "TOKEN", requires = "stream_splunk")]
    stream_splunk_token: Option<String>,
    /// Stream every organization's events to Datadog's logs intake at this base URL.
    #[arg(long, value_name = "URL", requires = "stream_datadog_key")]
    stream_datadog_url: Option<String>,
    /// The Datadog API key of `--stream-datadog-url`.
    #[arg(long, value_name = "KEY", requires = "stream_datadog_url")]
    stream_datadog_key: Option<String>,
    /// Attempts per streamed event before it is given up (the stream then reports `error`).
    #[arg(long, value_name = "N", default_value_t = 5)]
    stream_attempts: u32,
    /// Milliseconds to wait after a stream's first failed attempt (doubling after each).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    stream_backoff_ms: u64,
    /// Keep state in this SQLite file across restarts.
    #[arg(long = "data", value_name = "FILE")]
    data: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Also answer requests addressed to this host (repeatable): `NAME` (any port) or
    /// `NAME:PORT`, e.g. `testkit:8787` or `host.docker.internal`. By default only the bound
    /// address, loopback addresses and `localhost` are answered (a guard against DNS rebinding).
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Require this token on `/_testkit/*` and the viewer (`Authorization: Bearer TOKEN`; the
    /// browser asks for it as a password). For a testkit reachable beyond loopback.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AUDIT_TESTKIT_CONTROL_TOKEN",
        hide_env_values = true
    )]
    control_token: Option<String>,
    /// How many exports to keep; creating one more drops the oldest.
    #[arg(long, value_name = "N", default_value_t = audit_testkit::DEFAULT_MAX_EXPORTS)]
    max_exports: usize,
    /// The largest CSV of one export in bytes; a larger export is refused.
    #[arg(long, value_name = "BYTES", default_value_t = audit_testkit::DEFAULT_MAX_EXPORT_BYTES)]
    max_export_bytes: usize,
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad duration '{s}': {e} (a duration such as 200ms, 1s, 0s)"))
}

fn parse_rate(s: &str) -> Result<(u64, Duration), String> {
    let (n, per) = s.split_once('/').ok_or("expected N/PERIOD, e.g. 6000/60s")?;
    let n: u64 = n.trim().parse().map_err(|_| format!("bad count '{n}'"))?;
    let per = per.trim();
    let d = humantime::parse_duration(per)
        .map_err(|e| format!("bad period '{per}': {e} (a duration such as 60s, 1m, 500ms)"))?;
    if n == 0 || d.is_zero() {
        return Err("count and period must be positive".into());
    }
    Ok((n, d))
}

fn parse_stream(s: &str) -> Result<(String, String), String> {
    let (t, st) = s.split_once(':').unwrap_or((s, "active"));
    if t.is_empty() {
        return Err("expected TYPE:STATE, e.g. Datadog:active".into());
    }
    Ok((t.to_owned(), st.to_owned()))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or("expected 'Name: value', e.g. 'Authorization: Bearer abc'")?;
    let name = name.trim();
    if name.is_empty() {
        return Err("the header name is empty".into());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

impl Args {
    /// The destination the `--stream-*` flags describe, if any.
    fn destination(&self) -> Option<Destination> {
        if let Some(url) = &self.stream_http {
            let mut d = Destination::http(url);
            for (k, v) in &self.stream_header {
                d = d.header(k, v);
            }
            return Some(d);
        }
        if let (Some(url), Some(token)) = (&self.stream_splunk, &self.stream_splunk_token) {
            return Some(Destination::splunk(url, token));
        }
        if let (Some(url), Some(key)) = (&self.stream_datadog_url, &self.stream_datadog_key) {
            return Some(Destination::datadog(url, key));
        }
        None
    }
}

fn main() {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
                // The exposure warning is printed below, whatever the filter.
                .add_directive("audit_testkit::exposure=off".parse().expect("a valid directive")),
        )
        .try_init();
    let mut b = TestKit::builder()
        .addr(args.addr)
        .any_org(args.any_org)
        .require_schemas(args.require_schemas)
        .export_delay(args.export_delay)
        .max_body_bytes(args.max_body_bytes)
        .max_exports(args.max_exports)
        .max_export_bytes(args.max_export_bytes)
        .stream_retries(
            args.stream_attempts,
            Duration::from_millis(args.stream_backoff_ms),
        );
    for o in &args.orgs {
        b = b.org(o);
    }
    for k in &args.api_keys {
        b = b.api_key(k);
    }
    if let Some((n, per)) = args.rate_limit {
        b = b.rate_limit(n, per);
    }
    if let Some((t, s)) = &args.log_stream {
        b = b.log_stream(t, s);
    }
    if let Some(d) = &args.data {
        b = b.data_path(d);
    }
    for h in &args.allowed_hosts {
        b = b.allowed_host(h);
    }
    if let Some(t) = &args.control_token {
        b = b.control_token(t);
    }
    let kit = match b.start_blocking() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("audit-testkit: {e}");
            std::process::exit(1);
        }
    };
    if let Some(dest) = args.destination() {
        for org in kit.organization_ids() {
            if let Err(e) = kit.set_stream(org, dest.clone()) {
                eprintln!("audit-testkit: --stream-*: {e}");
                std::process::exit(2);
            }
        }
    }
    // Written by hand to keep the key order `url`, `organization_id`.
    let first = format!(
        "{{\"url\":{},\"organization_id\":{}}}",
        serde_json::Value::from(kit.url()),
        serde_json::Value::from(kit.organization_id())
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{first}");
    let _ = writeln!(
        out,
        "audit-testkit listening on {} (organizations: {}). Inspect with GET {}/_testkit/events. Ctrl-C to stop.",
        kit.url(),
        kit.organization_ids().join(", "),
        kit.url()
    );
    let _ = out.flush();
    drop(out);
    if let Some(w) = kit.exposure_warning() {
        eprintln!("audit-testkit: {w}");
    }

    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("audit-testkit: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    });
    kit.shutdown();
    eprintln!("audit-testkit stopped");
}
