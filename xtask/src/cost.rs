//! The instructions an audited request adds, counted by valgrind's callgrind: a deterministic cost
//! figure for `cargo xtask cost`, `cargo xtask bench` and the budget check of `cargo xtask ci`.
//!
//! # Method
//!
//! Each example app (`examples/axum`, `examples/actix`, release build) runs under callgrind with
//! `TOKIO_WORKER_THREADS=2` in one of three configurations:
//!
//! - `disabled`: no audit layer or middleware (`AUDIT_DISABLED=1`), the baseline;
//! - `discard`: audit with the in-memory emitter and a sink that only counts events
//!   (`AUDIT_SINK=discard`): capture, decision, validation, queue, senders, no network;
//! - `testkit`: audit with the in-memory emitter delivering over HTTP to an audit-testkit started
//!   in this process (`WORKOS_BASE_URL`), so that the app's whole delivery path is counted (the
//!   client, the JSON body, the connection) but not the testkit's own work.
//!
//! One keep-alive connection sends `n` requests `GET /invoices/inv_1` one after the other (an
//! audited route), waits for every event to be delivered, closes, and stops the app with SIGTERM.
//! A run with `n1` requests and one with `n2` give the instructions per request,
//! `(I(n2) - I(n1)) / (n2 - n1)`: start-up, warm-up and shutdown cancel out. The figure of a
//! configuration minus the `disabled` one is what audit adds to a request.
//!
//! # Why it is repeatable
//!
//! Counting every instruction of the process moves by several hundred instructions per request
//! from run to run, and more with the default linger: how many events one wake-up of a sender
//! serves depends on wall-clock time (the senders linger 2 ms after a wake-up, and the app runs
//! about 50 times slower under callgrind), and so do the timers and idle loops of the runtimes.
//! Two measures remove most of that noise:
//!
//! - **A sender's wake-up is amortised as under load**: the apps run with a linger of 100 ms
//!   (`AUDIT_LINGER`) instead of 2 ms, which under callgrind's slow-down gathers about as many
//!   events per wake-up as the default gathers at a few thousand requests a second natively. With
//!   2 ms, the share of the wake-ups was about 700 instructions per request and moved by a few
//!   hundred between runs.
//! - **Only the runtimes' tasks are counted**: `--toggle-collect=tokio::runtime::task::raw::poll*`.
//!   Every task of both apps runs through that function: under actix-web the connections and
//!   handlers of each worker and, on the system runtime, the emitter's senders, without the
//!   runtimes' idle loops and actix-web's own timers; under axum tokio runs each worker thread as
//!   a task of its blocking pool (callgrind toggles at the outermost call of a function), so the
//!   worker threads are counted whole and the main thread's accept loop is not.
//!
//! Measured on the same binaries (100 and 1,100 requests, repeated), the figures of one
//! configuration stay within about 1 % of each other (a few dozen instructions for actix-web,
//! up to about 350 for axum, whose two workers may or may not free an event on the thread that
//! allocated it); [`Figures::spread`] reports the spread of the repeats of every run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bench::target_dir;
use crate::{cargo, project_root};

/// The budget file, relative to the workspace root.
pub(crate) const BUDGET_FILE: &str = "xtask/cost-budget.toml";

/// The request every run sends (an audited route of both apps).
const REQUEST: &[u8] = b"GET /invoices/inv_1 HTTP/1.1\r\nHost: cost\r\nAuthorization: Bearer user_1\r\nUser-Agent: xtask-cost/1\r\n\r\n";

/// The function whose calls are counted (see the module documentation).
pub(crate) const TOGGLE_COLLECT: &str = "tokio::runtime::task::raw::poll*";

/// The senders' linger under callgrind (see the module documentation).
const LINGER: &str = "100ms";

/// An example app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum App {
    Axum,
    Actix,
}

impl App {
    pub(crate) const ALL: [App; 2] = [App::Axum, App::Actix];

    pub(crate) fn name(self) -> &'static str {
        match self {
            App::Axum => "axum",
            App::Actix => "actix",
        }
    }

    fn package(self) -> &'static str {
        match self {
            App::Axum => "example-axum",
            App::Actix => "example-actix",
        }
    }
}

/// What the app does with audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Config {
    Disabled,
    Discard,
    Testkit,
}

impl Config {
    pub(crate) const ALL: [Config; 3] = [Config::Disabled, Config::Discard, Config::Testkit];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Config::Disabled => "disabled",
            Config::Discard => "discard",
            Config::Testkit => "testkit",
        }
    }
}

/// How much to measure.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) apps: Vec<App>,
    pub(crate) configs: Vec<Config>,
    pub(crate) n1: usize,
    pub(crate) n2: usize,
    /// Measurements of each configuration (each a pair of runs).
    pub(crate) repeats: usize,
    /// Measure the binaries as they are, without `cargo build` first.
    pub(crate) no_build: bool,
}

impl Plan {
    /// The full measurement of `cargo xtask bench` (the 400 and 4,400 requests, three
    /// repeats so that the spread is visible).
    pub(crate) fn full() -> Self {
        Self {
            apps: App::ALL.to_vec(),
            configs: Config::ALL.to_vec(),
            n1: 400,
            n2: 4400,
            repeats: 3,
            no_build: false,
        }
    }

    /// The quick measurement of the CI budget check: the configurations with a budget, fewer
    /// requests, once.
    pub(crate) fn quick() -> Self {
        Self {
            apps: App::ALL.to_vec(),
            configs: vec![Config::Disabled, Config::Discard],
            n1: 100,
            n2: 1100,
            repeats: 1,
            no_build: false,
        }
    }
}

/// The instructions per request of one app in one configuration, for each repeat.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) app: App,
    pub(crate) config: Config,
    pub(crate) per_request: Vec<f64>,
}

impl Figures {
    /// The median of the repeats.
    pub(crate) fn median(&self) -> f64 {
        let mut v = self.per_request.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Largest minus smallest repeat.
    pub(crate) fn spread(&self) -> f64 {
        let max = self.per_request.iter().copied().fold(f64::MIN, f64::max);
        let min = self.per_request.iter().copied().fold(f64::MAX, f64::min);
        max - min
    }
}

/// Builds the example apps (release) and returns the path of each binary.
fn build(root: &Path, apps: &[App], no_build: bool) -> Result<Vec<(App, PathBuf)>, String> {
    let dir = target_dir(root).join("release");
    let bins = apps.iter().map(|&a| (a, dir.join(a.package()))).collect();
    if no_build {
        return Ok(bins);
    }
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "-q"]);
    for app in apps {
        cmd.args(["-p", app.package(), "--bin", app.package()]);
    }
    eprintln!("==> xtask cost: cargo build --release (the example apps)");
    let status = cmd
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the example apps failed ({status})"));
    }
    Ok(bins)
}

/// Whether valgrind can be run.
fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where events go in the `testkit` configuration.
struct Testkit {
    url: String,
    organization: String,
    _runtime: tokio::runtime::Runtime,
    _kit: audit_testkit::TestKit,
}

impl Testkit {
    fn start() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for the testkit: {e}"))?;
        let kit = runtime
            .block_on(audit_testkit::TestKit::builder().max_recorded_requests(0).start())
            .map_err(|e| format!("starting audit-testkit: {e}"))?;
        Ok(Self {
            url: kit.url(),
            organization: kit.organization_id().to_owned(),
            _runtime: runtime,
            _kit: kit,
        })
    }
}

/// One run: the app under callgrind, `n` requests, the instructions counted.
fn run_once(
    bin: &Path,
    config: Config,
    testkit: Option<&Testkit>,
    n: usize,
    out: &Path,
) -> Result<u64, String> {
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "-q"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--toggle-collect={TOGGLE_COLLECT}"))
        .arg(bin)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .env("TOKIO_WORKER_THREADS", "2")
        .env_remove("AUDIT_DISABLED")
        .env_remove("AUDIT_SINK")
        .env_remove("AUDIT_TRUSTED_PROXIES")
        .env_remove("AUDIT_SPOOL")
        .env_remove("WORKOS_API_KEY")
        .env_remove("WORKOS_BASE_URL")
        .env_remove("DATABASE_URL")
        .env("AUDIT_RATE_LIMIT", "none")
        .env("AUDIT_LINGER", LINGER)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    match config {
        Config::Disabled => {
            cmd.env("AUDIT_DISABLED", "1");
        }
        Config::Discard => {
            cmd.env("AUDIT_SINK", "discard");
        }
        Config::Testkit => {
            let kit = testkit.ok_or("the testkit configuration needs a testkit")?;
            cmd.env("WORKOS_BASE_URL", &kit.url)
                .env("WORKOS_API_KEY", "sk_test_cost")
                .env("WORKOS_ORGANIZATION_ID", &kit.organization);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start valgrind: {e}"))?;
    let result = drive(&mut child, config, n);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("waiting for the app: {e}"))?;
    let delivered = result?;
    if !status.success() {
        return Err(format!("the app exited with {status}"));
    }
    if config != Config::Disabled && delivered != Some(n as u64) {
        return Err(format!(
            "{} requests but the app reported {delivered:?} events delivered",
            n
        ));
    }
    total_instructions(out)
}

/// Sends the requests and stops the app; returns the events the app reported delivered.
fn drive(child: &mut Child, config: Config, n: usize) -> Result<Option<u64>, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "the app did not announce its address within 120 s".to_owned())?;
    let announced: Value =
        serde_json::from_str(&first).map_err(|e| format!("the app's first line {first:?}: {e}"))?;
    let addr: SocketAddr = announced["listening"]
        .as_str()
        .and_then(|u| u.trim_start_matches("http://").parse().ok())
        .ok_or_else(|| format!("no address in {first:?}"))?;
    let mut conn = Conn::open(addr)?;
    for i in 0..n {
        let status = conn.request()?;
        if status != 200 {
            return Err(format!("request {} answered {status}", i + 1));
        }
    }
    drop(conn);
    if config != Config::Disabled {
        // Every event gathered by the senders' linger is delivered before the app is stopped
        // (shutdown would deliver it too, but on a path of its own).
        std::thread::sleep(Duration::from_millis(600));
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered = None;
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("{\"shutdown\"") => {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                delivered = v["shutdown"]["delivered"].as_u64();
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(delivered),
        }
    }
    Err("the app did not stop within 120 s of SIGTERM".to_owned())
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// One request and its whole response; the status.
    fn request(&mut self) -> Result<u16, String> {
        self.stream
            .write_all(REQUEST)
            .map_err(|e| format!("sending a request: {e}"))?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|e| e.to_string())?;
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.read(&mut chunk)?;
                }
                return Ok(status);
            }
            self.read(&mut chunk)?;
        }
    }

    fn read(&mut self, chunk: &mut [u8]) -> Result<(), String> {
        let n = self
            .stream
            .read(chunk)
            .map_err(|e| format!("reading a response: {e}"))?;
        if n == 0 {
            return Err("the app closed the connection".to_owned());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The instructions counted in a callgrind output file (its `totals:` or `summary:` line).
fn total_instructions(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .ok_or_else(|| format!("{}: no totals line", path.display()))
}

/// Measures `plan`; each figure is instructions per request.
pub(crate) fn measure(plan: &Plan) -> Result<Vec<Figures>, String> {
    if !valgrind_available() {
        return Err("valgrind is not installed (`bash .ci/install-tools` installs it)".to_owned());
    }
    let root = project_root();
    let bins = build(&root, &plan.apps, plan.no_build)?;
    let dir = target_dir(&root).join("callgrind");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let testkit = if plan.configs.contains(&Config::Testkit) {
        Some(Testkit::start()?)
    } else {
        None
    };
    let mut figures = Vec::new();
    for (app, bin) in &bins {
        for &config in &plan.configs {
            let mut per_request = Vec::new();
            for repeat in 0..plan.repeats {
                let mut counts = [0u64; 2];
                for (count, n) in counts.iter_mut().zip([plan.n1, plan.n2]) {
                    let out = dir.join(format!("{}-{}-{n}-{repeat}.out", app.name(), config.name()));
                    *count = run_once(bin, config, testkit.as_ref(), n, &out)
                        .map_err(|e| format!("{} {} ({n} requests): {e}", app.name(), config.name()))?;
                }
                let per = (counts[1] as f64 - counts[0] as f64) / (plan.n2 - plan.n1) as f64;
                eprintln!(
                    "xtask cost: {} {}: {} and {} instructions for {} and {} requests: {per:.0} per request",
                    app.name(),
                    config.name(),
                    counts[0],
                    counts[1],
                    plan.n1,
                    plan.n2
                );
                per_request.push(per);
            }
            figures.push(Figures {
                app: *app,
                config,
                per_request,
            });
        }
    }
    Ok(figures)
}

/// The instructions a configuration adds per request to the `disabled` one of the same app.
pub(crate) fn added(figures: &[Figures], app: App, config: Config) -> Option<f64> {
    let find = |c| figures.iter().find(|f| f.app == app && f.config == c);
    Some(find(config)?.median() - find(Config::Disabled)?.median())
}

/// The budgets: `[added_instructions_per_request]` entries `<app>.<config> = <n>`.
pub(crate) fn read_budget(root: &Path) -> Result<Vec<(App, Config, f64)>, String> {
    let path = root.join(BUDGET_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_budget(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_budget(text: &str) -> Result<Vec<(App, Config, f64)>, String> {
    let mut section = String::new();
    let mut budgets = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let at = || format!("line {}", i + 1);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{}: expected `key = value`", at()))?;
        if section != "added_instructions_per_request" {
            return Err(format!("{}: unknown section [{section}]", at()));
        }
        let key = key.trim().trim_matches('"');
        let (app, config) = key
            .split_once('.')
            .ok_or_else(|| format!("{}: expected `<app>.<config>`, got {key:?}", at()))?;
        let app = App::ALL
            .into_iter()
            .find(|a| a.name() == app)
            .ok_or_else(|| format!("{}: unknown app {app:?} (axum, actix)", at()))?;
        let config = Config::ALL
            .into_iter()
            .find(|c| c.name() == config && *c != Config::Disabled)
            .ok_or_else(|| format!("{}: unknown configuration {config:?} (discard, testkit)", at()))?;
        let value: f64 = value
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{}: {key}: {e}", at()))?;
        budgets.push((app, config, value));
    }
    if budgets.is_empty() {
        return Err("no budget in [added_instructions_per_request]".to_owned());
    }
    Ok(budgets)
}

/// The JSON records of `figures` (for `cargo xtask bench`), with the budgets as targets.
pub(crate) fn records(figures: &[Figures], budgets: &[(App, Config, f64)]) -> Vec<Value> {
    let mut out = Vec::new();
    for f in figures {
        let mut v = json!({
            "name": format!("cost.{}.{}.instructions_per_request", f.app.name(), f.config.name()),
            "value": f.median().round(),
            "unit": "instructions",
            "spread": f.spread().round(),
            "repeats": f.per_request.iter().map(|x| x.round()).collect::<Vec<_>>(),
            "tool": "callgrind",
        });
        if f.config != Config::Disabled
            && let Some(added) = added(figures, f.app, f.config)
        {
            let baseline = f.median() - added;
            let mut a = json!({
                "name": format!("cost.{}.{}.added_per_request", f.app.name(), f.config.name()),
                "value": added.round(),
                "unit": "instructions",
                "baseline": baseline.round(),
                "ratio": ((f.median() / baseline) * 1000.0).round() / 1000.0,
                "tool": "callgrind",
            });
            if let Some((_, _, budget)) = budgets.iter().find(|(a, c, _)| *a == f.app && *c == f.config) {
                a["target"] = json!(format!("<= {budget} ({BUDGET_FILE})"));
                a["pass"] = json!(added <= *budget);
            }
            out.push(v.take());
            out.push(a);
            continue;
        }
        out.push(v);
    }
    out
}

/// The flags of `cargo xtask cost`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The quick measurement of the CI check (discard and disabled, 100 and 1,100 requests).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Fail when a figure exceeds its budget in xtask/cost-budget.toml.
    #[arg(long)]
    pub(crate) check: bool,
    /// Measurements of each configuration (default: 3, or 1 with --quick).
    #[arg(long, value_name = "N")]
    pub(crate) repeats: Option<usize>,
    /// Only this app (axum or actix).
    #[arg(long, value_name = "APP")]
    pub(crate) app: Option<String>,
    /// With --quick, measure the testkit configuration too.
    #[arg(long)]
    pub(crate) with_testkit: bool,
    /// Measure the release binaries as they are (no `cargo build --release` first).
    #[arg(long)]
    pub(crate) no_build: bool,
}

/// `cargo xtask cost`: measures, prints the records and a summary, and with `--check` compares
/// with the budgets.
pub(crate) fn run(args: &Args) -> Result<(), String> {
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(r) = args.repeats {
        plan.repeats = r.max(1);
    }
    if args.with_testkit && !plan.configs.contains(&Config::Testkit) {
        plan.configs.push(Config::Testkit);
    }
    plan.no_build = args.no_build;
    if let Some(name) = &args.app {
        let app = App::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| format!("--app {name:?}: expected axum or actix"))?;
        plan.apps = vec![app];
    }
    let budgets = read_budget(&project_root())?;
    let figures = measure(&plan)?;
    for r in records(&figures, &budgets) {
        println!("{r}");
    }
    summary(&figures, &budgets);
    if args.check {
        check(&figures, &budgets)
    } else {
        Ok(())
    }
}

/// A readable summary on stderr.
fn summary(figures: &[Figures], budgets: &[(App, Config, f64)]) {
    eprintln!("\ninstructions per GET /invoices/{{id}} (callgrind, median of repeats, spread in brackets)");
    for f in figures {
        let added = (f.config != Config::Disabled)
            .then(|| added(figures, f.app, f.config))
            .flatten();
        let budget = budgets
            .iter()
            .find(|(a, c, _)| *a == f.app && *c == f.config)
            .map(|(_, _, b)| format!(", budget {b}"))
            .unwrap_or_default();
        eprintln!(
            "  {:<6} {:<9} {:>9.0} [{:.0}]{}",
            f.app.name(),
            f.config.name(),
            f.median(),
            f.spread(),
            added
                .map(|a| format!("  added {a:.0}{budget}"))
                .unwrap_or_default()
        );
    }
}

/// Fails when an added figure exceeds its budget, naming each.
pub(crate) fn check(figures: &[Figures], budgets: &[(App, Config, f64)]) -> Result<(), String> {
    let mut over = Vec::new();
    for &(app, config, budget) in budgets {
        let Some(added) = added(figures, app, config) else {
            continue;
        };
        if added > budget {
            over.push(format!(
                "{} {}: {added:.0} instructions added per request, budget {budget} ({BUDGET_FILE})",
                app.name(),
                config.name()
            ));
        }
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(format!("over the cost budget: {}", over.join("; ")))
    }
}

/// The CI step: the quick measurement against the budgets.
pub(crate) fn ci_check() -> Result<(), String> {
    let budgets = read_budget(&project_root())?;
    let figures = measure(&Plan::quick())?;
    summary(&figures, &budgets);
    check(&figures, &budgets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_file_parses_and_names_bad_lines() {
        let root = project_root();
        let budgets = read_budget(&root).expect("the repository's budget file parses");
        assert!(
            budgets
                .iter()
                .any(|(a, c, _)| *a == App::Axum && *c == Config::Discard)
        );
        assert!(
            budgets
                .iter()
                .any(|(a, c, _)| *a == App::Actix && *c == Config::Discard)
        );
        let ok = parse_budget("# c\n[added_instructions_per_request]\naxum.discard = 2_500 # x\n").unwrap();
        assert_eq!(ok, vec![(App::Axum, Config::Discard, 2500.0)]);
        for (bad, needle) in [
            (
                "[added_instructions_per_request]\nflask.discard = 1\n",
                "unknown app",
            ),
            (
                "[added_instructions_per_request]\naxum.disabled = 1\n",
                "unknown configuration",
            ),
            (
                "[added_instructions_per_request]\naxum.discard = many\n",
                "line 2",
            ),
            ("[other]\naxum.discard = 1\n", "unknown section"),
            ("", "no budget"),
        ] {
            let e = parse_budget(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn added_is_the_difference_of_medians_and_the_check_names_the_figure_over_budget() {
        let f = |app, config, v: &[f64]| Figures {
            app,
            config,
            per_request: v.to_vec(),
        };
        let figures = vec![
            f(App::Axum, Config::Disabled, &[20_000.0, 20_010.0, 19_990.0]),
            f(App::Axum, Config::Discard, &[22_400.0, 22_500.0, 22_450.0]),
        ];
        assert_eq!(added(&figures, App::Axum, Config::Discard), Some(2_450.0));
        assert_eq!(figures[0].spread(), 20.0);
        assert!(check(&figures, &[(App::Axum, Config::Discard, 2_500.0)]).is_ok());
        let e = check(&figures, &[(App::Axum, Config::Discard, 2_400.0)]).unwrap_err();
        assert!(e.contains("axum discard: 2450"), "{e}");
        let records = records(&figures, &[(App::Axum, Config::Discard, 2_500.0)]);
        let added = records
            .iter()
            .find(|r| r["name"] == "cost.axum.discard.added_per_request")
            .unwrap();
        assert_eq!(added["value"], 2450.0);
        assert_eq!(added["pass"], true);
    }
}
