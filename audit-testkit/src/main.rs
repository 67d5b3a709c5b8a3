//! `audit-testkit`: run the WorkOS-compatible Audit Logs server from the command line.
//!
//! The first line on stdout is machine-readable:
//! `{"url":"http://127.0.0.1:PORT","organization_id":"org_..."}`.

use audit_testkit::TestKit;
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
    /// Milliseconds an export stays pending.
    #[arg(long, value_name = "N", default_value_t = 200)]
    export_delay_ms: u64,
    /// Per-key rate limit: a count per period (humantime), e.g. `6000/60s`, `6000/1m`, `10/500ms`.
    #[arg(long, value_name = "N/PERIOD", value_parser = parse_rate)]
    rate_limit: Option<(u64, Duration)>,
    /// Report a log stream `TYPE:STATE` in the configuration endpoint, e.g. `Datadog:active`.
    #[arg(long, value_name = "TYPE:STATE", value_parser = parse_stream)]
    log_stream: Option<(String, String)>,
    /// Keep state in this SQLite file across restarts.
    #[arg(long = "data", value_name = "FILE")]
    data: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
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

fn main() {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let mut b = TestKit::builder()
        .addr(args.addr)
        .any_org(args.any_org)
        .require_schemas(args.require_schemas)
        .export_delay(Duration::from_millis(args.export_delay_ms))
        .max_body_bytes(args.max_body_bytes);
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
    let kit = match b.start_blocking() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("audit-testkit: {e}");
            std::process::exit(1);
        }
    };
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
