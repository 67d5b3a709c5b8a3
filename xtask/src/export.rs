//! `cargo xtask export`: read an organization's events back through a WorkOS CSV export.
//!
//! ```text
//! cargo xtask export --org org_… --since 7d                      # JSON lines on stdout
//! cargo xtask export --org org_… --since 2026-01-01T00:00:00Z --until 24h --format csv --out events.csv
//! cargo xtask export --action user.signed_in --actor-id user_01 --target-type team
//! cargo xtask export --local                                    # against an embedded audit-testkit
//! ```
//!
//! Settings: `WORKOS_API_KEY`, `WORKOS_BASE_URL`, and `WORKOS_ORGANIZATION_ID` unless `--org` is
//! given. `--local` ignores them: it starts audit-testkit in this process, seeds it with a few
//! sample events (and says so), and exports those. A progress line on stderr shows the export
//! while it is pending (polls) and while it downloads (bytes and rows); the events go to stdout
//! or `--out`.
//!
//! `--format jsonl` writes one event per line as WorkOS's create-event JSON (the typed reader's
//! output); `--format csv` writes the CSV exactly as WorkOS produced it, while still reading it to
//! count rows and report malformed ones. Exit status 1 on any error, including a malformed row.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_core::client::CreateExport;
use audit_core::export::{EventReader, Phase, ReadError, ReadProgress, parse_csv};
use audit_core::sync::lock;
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId, Target};
use audit_testkit::TestKit;
use clap::ValueEnum;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

/// The organization of `--local`.
const LOCAL_ORG: &str = "org_01JEXPORTXTASK0LOCAL00000";
/// The key audit-testkit accepts in `--local` (not a WorkOS key).
const LOCAL_KEY: &str = "sk_test_audit_testkit_local_export";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON event per line.
    Jsonl,
    /// The export's CSV as WorkOS produced it.
    Csv,
}

/// The flags of `cargo xtask export`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Times: RFC 3339 (2026-01-02T03:04:05Z) or relative to now (humantime): 90s, 30m, 24h, 7d, 2w, 1d 12h.\n\
                  Settings: WORKOS_API_KEY, WORKOS_BASE_URL, WORKOS_ORGANIZATION_ID (ignored with --local)."
)]
pub(crate) struct Args {
    /// The organization (default: WORKOS_ORGANIZATION_ID).
    #[arg(long, value_name = "ORG_ID")]
    org: Option<String>,
    /// Start of the range: RFC 3339 or a duration before now.
    #[arg(long, default_value = "24h", value_name = "TIME")]
    since: String,
    /// End of the range: RFC 3339 or a duration before now (default: now).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this action (repeatable).
    #[arg(long, value_name = "ACTION")]
    action: Vec<String>,
    /// Only this actor id (repeatable).
    #[arg(long, value_name = "ID")]
    actor_id: Vec<String>,
    /// Only this actor name (repeatable).
    #[arg(long, value_name = "NAME")]
    actor_name: Vec<String>,
    /// Only events with a target of this type (repeatable).
    #[arg(long, value_name = "TYPE")]
    target_type: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// Run against an embedded audit-testkit seeded with sample events.
    #[arg(long)]
    local: bool,
    /// The longest the export may stay pending (humantime: 90s, 10m).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = audit_core::config::parse_duration)]
    max_wait: Duration,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("could not start a tokio runtime: {e}"))?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    let since = parse_time(&args.since, now).map_err(|e| format!("--since: {e}"))?;
    let until = match &args.until {
        Some(t) => parse_time(t, now).map_err(|e| format!("--until: {e}"))?,
        None => now,
    };
    let (_kit, client, org) = if args.local {
        let (kit, client, org) = local(now).await?;
        (Some(kit), client, org)
    } else {
        let client = Client::from_env().map_err(|e| e.to_string())?;
        let org = match &args.org {
            Some(o) => o.clone(),
            None => std::env::var("WORKOS_ORGANIZATION_ID")
                .map_err(|_| "no organization: pass --org or set WORKOS_ORGANIZATION_ID".to_owned())?,
        };
        let org = OrganizationId::new(org).map_err(|e| e.to_string())?;
        (None, client, org)
    };
    let mut query = CreateExport::new(org, since, until);
    for a in &args.action {
        query = query.action(Action::new(a.as_str()).map_err(|e| format!("--action: {e}"))?);
    }
    for id in &args.actor_id {
        query = query.actor_id(id);
    }
    for name in &args.actor_name {
        query = query.actor_name(name);
    }
    for t in &args.target_type {
        query = query.target(t);
    }
    let reader = EventReader::new(client).max_wait(args.max_wait);
    let out: Box<dyn Write + Send> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or(ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    };
    let result = match args.format {
        Format::Jsonl => jsonl(&reader, query, out, &bar).await,
        Format::Csv => csv(&reader, query, out, &bar).await,
    };
    match &result {
        Ok((rows, bytes)) => bar.finish_with_message(format!("done: {rows} events, {} read", human(*bytes))),
        Err(_) => bar.abandon(),
    }
    result.map(drop)
}

/// Refreshes the progress line from `progress` until the returned handle is aborted.
fn show(progress: ReadProgress, bar: &ProgressBar) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let id = progress.export_id().unwrap_or_default();
            let msg = match progress.phase() {
                Phase::Idle | Phase::Creating => "creating the export".to_owned(),
                Phase::Pending => format!("export {id}: pending ({} polls)", progress.polls()),
                _ => format!(
                    "export {id}: downloading, {} received, {} rows",
                    human(progress.bytes()),
                    progress.rows()
                ),
            };
            bar.set_message(msg);
        }
    })
}

async fn jsonl(
    reader: &EventReader,
    query: CreateExport,
    mut out: Box<dyn Write + Send>,
    bar: &ProgressBar,
) -> Result<(u64, u64), String> {
    let mut events = reader.read(query);
    let progress = events.progress();
    let ticker = show(progress.clone(), bar);
    let mut n = 0u64;
    let mut failure = None;
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                n += 1;
                let line = serde_json::to_string(&event).map_err(|e| e.to_string())?;
                writeln!(out, "{line}").map_err(|e| format!("writing: {e}"))?;
            }
            Err(e @ ReadError::Row { .. }) => {
                bar.suspend(|| eprintln!("xtask export: {e}"));
                failure.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                ticker.abort();
                return Err(e.to_string());
            }
        }
    }
    ticker.abort();
    out.flush().map_err(|e| format!("writing: {e}"))?;
    match failure {
        Some(f) => Err(format!("some rows could not be read; the first: {f}")),
        None => Ok((n, progress.bytes())),
    }
}

async fn csv(
    reader: &EventReader,
    query: CreateExport,
    out: Box<dyn Write + Send>,
    bar: &ProgressBar,
) -> Result<(u64, u64), String> {
    let download_progress = ReadProgress::new();
    let ticker = show(download_progress.clone(), bar);
    let bytes = match reader.download(&query, &download_progress).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            ticker.abort();
            return Ok((0, 0));
        }
        Err(e) => {
            ticker.abort();
            return Err(e.to_string());
        }
    };
    ticker.abort();
    // Write each chunk as it arrives and parse it too, for the row count and row errors.
    let out = Arc::new(Mutex::new(out));
    let write_error: Arc<Mutex<Option<String>>> = Arc::default();
    let (o, w) = (out.clone(), write_error.clone());
    let tee = bytes.map(move |chunk| {
        if let Ok(chunk) = &chunk
            && let Err(e) = lock(&o).write_all(chunk)
        {
            lock(&w).get_or_insert(e.to_string());
        }
        chunk
    });
    let mut events = parse_csv(tee);
    let ticker = show(events.progress(), bar);
    let mut n = 0u64;
    let mut failure = None;
    while let Some(item) = events.next().await {
        match item {
            Ok(_) => n += 1,
            Err(e @ ReadError::Row { .. }) => {
                bar.suspend(|| eprintln!("xtask export: {e}"));
                failure.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                ticker.abort();
                return Err(e.to_string());
            }
        }
    }
    ticker.abort();
    if let Some(e) = lock(&write_error).clone() {
        return Err(format!("writing: {e}"));
    }
    lock(&out).flush().map_err(|e| format!("writing: {e}"))?;
    match failure {
        Some(f) => Err(format!("some rows could not be read; the first: {f}")),
        None => Ok((n, download_progress.bytes())),
    }
}

/// Starts audit-testkit with a few sample events of the last hour.
async fn local(now: OffsetDateTime) -> Result<(TestKit, Client, OrganizationId), String> {
    let kit = TestKit::builder()
        .org(LOCAL_ORG)
        .export_delay(Duration::from_millis(1500))
        .start()
        .await
        .map_err(|e| format!("could not start audit-testkit: {e}"))?;
    let client = Client::builder()
        .api_key(LOCAL_KEY)
        .base_url(kit.url())
        .build()
        .map_err(|e| e.to_string())?;
    let org = OrganizationId::new(LOCAL_ORG).map_err(|e| e.to_string())?;
    let samples = sample_events(now);
    for e in &samples {
        client.create_event(&org, e).await.map_err(|e| e.to_string())?;
    }
    eprintln!(
        "xtask export: --local: an embedded audit-testkit at {} seeded with {} sample events for {LOCAL_ORG}",
        kit.url(),
        samples.len()
    );
    Ok((kit, client, org))
}

fn sample_events(now: OffsetDateTime) -> Vec<Event> {
    let at = |minutes: i64| now - time::Duration::minutes(minutes);
    let action = |a: &'static str| Action::from_static(a);
    vec![
        Event::new(
            action("user.signed_in"),
            Actor::new("user_01", "user").name("Ada Lovelace"),
            Context::new("203.0.113.7").user_agent("Mozilla/5.0"),
        )
        .occurred_at(at(50)),
        Event::new(
            action("team.created"),
            Actor::new("user_01", "user")
                .name("Ada Lovelace")
                .meta("role", "admin"),
            Context::new("203.0.113.7"),
        )
        .occurred_at(at(40))
        .target(Target::new("team_01", "team").name("Engineering"))
        .meta("plan", "enterprise")
        .meta("seats", 12),
        Event::new(
            action("invoice.paid"),
            Actor::new("api_key_01", "api_key"),
            Context::new("198.51.100.20"),
        )
        .occurred_at(at(30))
        .target(Target::new("inv_01", "invoice").meta("cost", 129.5))
        .target(Target::new("team_01", "team"))
        .meta("paid", true),
        Event::new(
            action("user.signed_out"),
            Actor::new("user_02", "user").name("Grace Hopper"),
            Context::new("2001:db8::7"),
        )
        .occurred_at(at(10)),
    ]
}

/// RFC 3339, or a duration before `now` in humantime's syntax (`90s`, `30m`, `24h`, `7d`, `2w`,
/// `1d 12h`).
fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = audit_core::event::rfc3339_millis::parse(text) {
        return Ok(t);
    }
    let d = audit_core::config::parse_duration(text)
        .map_err(|e| format!("neither RFC 3339 nor a duration before now: {e}"))?;
    let d = time::Duration::try_from(d).map_err(|_| format!("{text:?} is too long ago"))?;
    now.checked_sub(d)
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The end of `cargo xtask demo`: reads the organization's events of the last hour back from the
/// testkit at `base_url` through [`EventReader`] (a CSV export) and prints them.
#[allow(dead_code, reason = "called at the end of `cargo xtask demo` (demo.rs)")]
pub(crate) fn read_back(rt: &tokio::runtime::Runtime, base_url: &str, org: &str) -> Result<(), String> {
    let client = Client::builder()
        .api_key(LOCAL_KEY)
        .base_url(base_url)
        .build()
        .map_err(|e| e.to_string())?;
    let org = OrganizationId::new(org).map_err(|e| e.to_string())?;
    let now = OffsetDateTime::now_utc();
    let query = CreateExport::new(
        org.clone(),
        now - time::Duration::hours(1),
        now + time::Duration::minutes(1),
    );
    let events: Vec<Event> = rt
        .block_on(
            EventReader::new(client)
                .poll_backoff(Duration::from_millis(50), Duration::from_millis(500))
                .read(query)
                .collect::<Vec<_>>(),
        )
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading the events back: {e}"))?;
    println!(
        "\n==> read back through a CSV export (audit_core::EventReader) for {org}: {} events\n",
        events.len()
    );
    for e in &events {
        let targets: Vec<String> = e.targets.iter().map(|t| format!("{}:{}", t.kind, t.id)).collect();
        println!(
            "    {}  {:<22} {:<24} {:<16} {}",
            audit_core::event::rfc3339_millis::format(e.occurred_at),
            e.action.as_str(),
            format!("{} ({})", e.actor.id, e.actor.kind),
            e.context.location,
            targets.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_relative() {
        let now = audit_core::event::rfc3339_millis::parse("2026-01-10T00:00:00Z").unwrap();
        let t = |s| parse_time(s, now).map(audit_core::event::rfc3339_millis::format);
        assert_eq!(t("24h").unwrap(), "2026-01-09T00:00:00.000Z");
        assert_eq!(t("7d").unwrap(), "2026-01-03T00:00:00.000Z");
        assert_eq!(t("90s").unwrap(), "2026-01-09T23:58:30.000Z");
        assert_eq!(
            t("2026-01-02T03:04:05+01:00").unwrap(),
            "2026-01-02T02:04:05.000Z"
        );
        assert!(t("24").is_err());
        assert_eq!(t("1d 12h").unwrap(), "2026-01-08T12:00:00.000Z");
        assert!(t("3q").is_err());
        assert!(t("0s").is_err());
        assert!(t("yesterday").is_err());
    }
}
