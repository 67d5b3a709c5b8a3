//! The request path of an example app, with and without audit, as JSON lines for
//! `cargo xtask bench`; shared by `examples/axum` and `examples/actix` (each bench file names its
//! binary), so that both frameworks are measured the same way by the same load generator.
//!
//! - **throughput**: the maximum requests/s of a closed loop of keep-alive connections
//!   on `GET /invoices/{id}` (an audited route) with audit and an emitter delivering to an
//!   in-memory sink that counts events (`AUDIT_SINK=discard`: the whole pipeline runs, from the
//!   layer through validation, queue and senders, but no network and no growing record), against
//!   the same app without audit (`AUDIT_DISABLED=1`), in the same run: `ratio` (target at least
//!   0.95) and the p99 of both.
//! - **e2e**: a fixed offered load (2,000 requests/s) with every event delivered to an in-process
//!   audit-testkit answering after 30 ms of injected latency, against the app without audit:
//!   p50 and p99 response latency (target: p99 within 10 %) and every event stored.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOAD_GENERATOR: &str = "built-in (examples/request_path_bench.rs: HTTP/1.1 keep-alive over tokio TCP)";

/// The example app under measurement.
pub(crate) struct Subject {
    /// Path of the example's binary.
    pub(crate) bin: &'static str,
    /// Prefix of the record names (`""` for axum, `"actix."` for actix).
    pub(crate) prefix: &'static str,
}

static SUBJECT: std::sync::OnceLock<Subject> = std::sync::OnceLock::new();

fn subject() -> &'static Subject {
    SUBJECT.get().expect("run() sets the subject first")
}

fn name(suffix: &str) -> String {
    format!("{}request_path.{suffix}", subject().prefix)
}
const REQUEST: &[u8] = b"GET /invoices/inv_1 HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer user_1\r\nUser-Agent: request-path-bench/1\r\n\r\n";

struct App {
    child: Child,
    addr: SocketAddr,
    lines: std_mpsc::Receiver<String>,
}

impl App {
    fn start(env: &[(&str, &str)]) -> App {
        let mut cmd = Command::new(subject().bin);
        cmd.env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "error")
            .env_remove("AUDIT_DISABLED")
            .env_remove("AUDIT_SINK")
            .env_remove("AUDIT_TRUSTED_PROXIES")
            .env_remove("WORKOS_API_KEY")
            // The request path with the in-memory emitter: with DATABASE_URL the app would write
            // to a PostgreSQL outbox instead, and its relays deliver after the measurement.
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the example app");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the app announced its address");
        let announced: Value = serde_json::from_str(&first).expect("the first line is JSON");
        let url = announced["listening"].as_str().expect("listening");
        let addr = url.trim_start_matches("http://").parse().expect("an address");
        App { child, addr, lines }
    }

    /// SIGTERM, then the shutdown report.
    fn stop(mut self) -> Option<Value> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut report = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("{\"shutdown\"") => report = serde_json::from_str(&line).ok(),
                Ok(_) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        report
    }
}

/// One keep-alive connection that sends [`REQUEST`] and reads whole responses.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request; returns the status.
    async fn request(&mut self) -> std::io::Result<u16> {
        self.stream.write_all(REQUEST).await?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = &self.buf[..end];
                let status = std::str::from_utf8(head.get(9..12).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let len = content_length(head).unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    if self.read().await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                return Ok(status);
            }
            if self.read().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// The app's CPU time (every thread) over `elapsed`, where the platform tells it.
    app_cpu: Option<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
    /// The app's CPU time per request, in µs.
    fn cpu_us_per_request(&self) -> Option<f64> {
        let cpu = self.app_cpu?;
        (self.requests > 0).then(|| cpu.as_secs_f64() * 1e6 / self.requests as f64)
    }
}

/// CPU time used so far by every thread of process `pid`, from Linux's
/// `/proc/<pid>/task/*/schedstat` (`None` elsewhere).
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Closed loop: `connections` connections for `warmup` + `duration`, counting only `duration`;
/// the app's CPU time is sampled over the same `duration`.
fn closed_loop(app: &App, connections: usize, warmup: Duration, duration: Duration) -> Run {
    let addr = app.addr;
    let pid = app.child.id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let start = Instant::now() + warmup;
        let end = start + duration;
        let cpu = tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let first = cpu_time(pid);
            tokio::time::sleep_until(end.into()).await;
            Some(cpu_time(pid)?.saturating_sub(first?))
        });
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            tasks.spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                let mut latencies = Vec::with_capacity(100_000);
                let mut errors = 0;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let status = conn.request().await;
                    if sent >= start {
                        match status {
                            Ok(200) => latencies.push(sent.elapsed()),
                            _ => errors += 1,
                        }
                    }
                    if status.is_err() {
                        conn = Conn::open(addr).await.expect("reconnect");
                    }
                }
                (latencies, errors)
            });
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        while let Some(Ok((l, e))) = tasks.join_next().await {
            latencies.extend(l);
            errors += e;
        }
        latencies.sort_unstable();
        Run {
            requests: latencies.len(),
            errors,
            elapsed: duration,
            latencies,
            app_cpu: cpu.await.ok().flatten(),
        }
    })
}

/// Open loop: `rate` requests per second for `duration` spread over `connections` connections;
/// each latency counts from the request's scheduled time.
fn open_loop(addr: SocketAddr, rate: u32, connections: usize, duration: Duration) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
        let (tx, rx) = tokio::sync::mpsc::channel::<tokio::time::Instant>(total.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let rx = Arc::clone(&rx);
            tasks.spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let Some(scheduled) = rx.lock().await.recv().await else {
                        break;
                    };
                    match conn.request().await {
                        Ok(200) => latencies.push(scheduled.elapsed()),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            conn = Conn::open(addr).await.expect("reconnect");
                        }
                    }
                }
                (latencies, errors)
            });
        }
        let started = tokio::time::Instant::now();
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        for i in 0..total {
            let at = started + interval * i as u32;
            tokio::time::sleep_until(at).await;
            if tx.send(at).await.is_err() {
                break;
            }
        }
        drop(tx);
        let mut latencies = Vec::new();
        let mut errors = 0;
        while let Some(Ok((l, e))) = tasks.join_next().await {
            latencies.extend(l);
            errors += e;
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Run {
            requests: latencies.len(),
            errors,
            elapsed,
            latencies,
            app_cpu: None,
        }
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn throughput(quick: bool) {
    let (rounds, warmup, duration) = if quick {
        (1, Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (3, Duration::from_secs(1), Duration::from_secs(4))
    };
    let connections = 32;
    let mut best: [Option<Run>; 2] = [None, None];
    for round_no in 0..rounds {
        for (i, env) in [
            vec![("AUDIT_DISABLED", "1")],
            vec![
                ("AUDIT_SINK", "discard"),
                ("AUDIT_RATE_LIMIT", "none"),
                ("AUDIT_SENDERS", "2"),
            ],
        ]
        .into_iter()
        .enumerate()
        {
            let app = App::start(&env);
            let run = closed_loop(&app, connections, warmup, duration);
            let report = app.stop();
            let label = if i == 0 {
                "without audit"
            } else {
                "with audit (discard sink)"
            };
            eprintln!(
                "{}request_path: round {} {label}: {:.0} req/s, p99 {:.3} ms, app CPU {} µs/request, {} errors{}",
                subject().prefix,
                round_no + 1,
                run.rate(),
                ms(run.p(99.0)),
                run.cpu_us_per_request()
                    .map_or_else(|| "unknown".to_owned(), |us| format!("{us:.2}")),
                run.errors,
                report
                    .as_ref()
                    .map(|r| format!(", emitter delivered {}", r["shutdown"]["delivered"]))
                    .unwrap_or_default()
            );
            if best[i].as_ref().is_none_or(|b| run.rate() > b.rate()) {
                best[i] = Some(run);
            }
        }
    }
    let [Some(off), Some(on)] = best else { return };
    let ratio = on.rate() / off.rate();
    println!(
        "{}",
        json!({"name": name("throughput"), "value": on.rate().round(), "unit": "req/s",
               "baseline": off.rate().round(), "ratio": round(ratio, 3), "target": ">= 0.95 of no audit",
               "pass": ratio >= 0.95, "load_generator": LOAD_GENERATOR, "connections": connections,
               "route": "GET /invoices/{id}", "best_of": rounds,
               "sink": "DiscardSink (in memory, counts events)"})
    );
    println!(
        "{}",
        json!({"name": name("throughput.p99"), "value": ms(on.p(99.0)), "unit": "ms",
               "baseline": ms(off.p(99.0)), "ratio": round(ms(on.p(99.0)) / ms(off.p(99.0)).max(0.001), 3),
               "load_generator": LOAD_GENERATOR})
    );
    if let (Some(on_cpu), Some(off_cpu)) = (on.cpu_us_per_request(), off.cpu_us_per_request()) {
        // What the whole pipeline costs the app's process per request (the load generator runs
        // on the same cores: this is the part of the ratio the app is responsible for).
        println!(
            "{}",
            json!({"name": name("throughput.app_cpu_per_request"), "value": round(on_cpu, 3),
                   "unit": "µs", "baseline": round(off_cpu, 3), "ratio": round(on_cpu / off_cpu, 3),
                   "audit_cost_us": round(on_cpu - off_cpu, 3)})
        );
    }
}

fn e2e(quick: bool) {
    let rate = 2000;
    let duration = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let connections = 32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let kit = rt
        .block_on(audit_testkit::TestKit::builder().max_recorded_requests(0).start())
        .expect("testkit");
    kit.fault(audit_testkit::FaultRule::new("/audit_logs/events").latency(Duration::from_millis(30)));
    let org = kit.organization_id().to_owned();
    let url = kit.url();

    // Warm-up of both, then the measured runs.
    let off_app = App::start(&[("AUDIT_DISABLED", "1")]);
    let _ = open_loop(off_app.addr, rate, connections, Duration::from_millis(500));
    let off = open_loop(off_app.addr, rate, connections, duration);
    off_app.stop();

    let on_app = App::start(&[
        ("WORKOS_BASE_URL", url.as_str()),
        ("WORKOS_API_KEY", "sk_test_bench"),
        ("WORKOS_ORGANIZATION_ID", org.as_str()),
        ("AUDIT_RATE_LIMIT", "none"),
        ("AUDIT_SENDERS", "128"),
    ]);
    let warm = open_loop(on_app.addr, rate, connections, Duration::from_millis(500));
    let on = open_loop(on_app.addr, rate, connections, duration);
    let report = on_app.stop();
    let sent = warm.requests + on.requests;
    let stored = kit.events(&org).len();
    let delivered = report
        .as_ref()
        .and_then(|r| r["shutdown"]["delivered"].as_u64())
        .unwrap_or(0);
    eprintln!(
        "{}request_path e2e: {rate} req/s offered for {:?}; without audit p50 {:.3} ms p99 {:.3} ms; with audit \
         (testkit +30 ms) p50 {:.3} ms p99 {:.3} ms; {sent} audited requests answered 200, {stored} events \
         stored, emitter delivered {delivered}; errors {} / {}",
        subject().prefix,
        duration,
        ms(off.p(50.0)),
        ms(off.p(99.0)),
        ms(on.p(50.0)),
        ms(on.p(99.0)),
        off.errors,
        on.errors
    );
    let p99_ratio = ms(on.p(99.0)) / ms(off.p(99.0)).max(0.001);
    println!(
        "{}",
        json!({"name": name("e2e.p50"), "value": ms(on.p(50.0)), "unit": "ms",
               "baseline": ms(off.p(50.0)), "ratio": round(ms(on.p(50.0)) / ms(off.p(50.0)).max(0.001), 3),
               "offered_rps": rate, "workos_latency_ms": 30, "load_generator": LOAD_GENERATOR})
    );
    println!(
        "{}",
        json!({"name": name("e2e.p99"), "value": ms(on.p(99.0)), "unit": "ms",
               "baseline": ms(off.p(99.0)), "ratio": round(p99_ratio, 3), "target": "<= 1.10 of no audit",
               "pass": p99_ratio <= 1.10, "offered_rps": rate, "workos_latency_ms": 30,
               "load_generator": LOAD_GENERATOR})
    );
    println!(
        "{}",
        json!({"name": name("e2e.events_stored"), "value": stored, "unit": "events",
               "baseline": sent, "ratio": round(stored as f64 / (sent.max(1)) as f64, 4),
               "target": "every event", "pass": stored == sent && on.errors == 0})
    );
}

/// Runs the measurements named on the command line (`throughput`, `e2e`, both by default;
/// `--quick` for a short run) against `subject`.
pub(crate) fn run(subject: Subject) {
    if SUBJECT.set(subject).is_err() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let throughput_on = args.iter().any(|a| a == "throughput");
    let e2e_on = args.iter().any(|a| a == "e2e");
    let all = !throughput_on && !e2e_on;
    if throughput_on || all {
        throughput(quick);
    }
    if e2e_on || all {
        e2e(quick);
    }
}
