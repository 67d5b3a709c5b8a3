//! `cargo xtask demo`: the example app against an embedded audit-testkit.
//!
//! 1. builds the example (`cargo build -p example-axum`, or `example-actix` with `--actix`);
//! 2. starts audit-testkit in this process;
//! 3. runs the example as a child with `WORKOS_BASE_URL` pointing at the testkit,
//!    `LISTEN_ADDR=127.0.0.1:0`, and reads its address from the first line it prints;
//! 4. sends a scripted series of requests: sign in, create a team, delete it, view an invoice,
//!    an unauthenticated request, a failing sign-in, and a request with a forged
//!    `X-Forwarded-For: 6.6.6.6`;
//! 5. stops the child with SIGTERM, waits for its shutdown report (the emitter flushes first);
//! 6. prints the events the testkit stored as a table, and the emitter's report;
//! 7. prints the links of the testkit's event viewer (an Admin Portal link for the organization);
//!    with `--keep-running` the testkit keeps serving them until Ctrl-C.
//!
//! Fails (non-zero exit) when an expected event is missing, an unexpected one was stored, or the
//! forged address became a location.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{cargo, project_root};

const FORGED_IP: &str = "6.6.6.6";
const USER_AGENT: &str = "xtask-demo/1.0";

/// A running example app; killed if dropped before it exited.
struct App {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl App {
    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

/// One request of the script and what it must lead to.
struct Step {
    what: &'static str,
    method: &'static str,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    forged: bool,
    status: u16,
    /// The action of the event this request must produce (`None`: no event).
    event: Option<&'static str>,
}

/// The flags of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Run the actix-web example instead of the axum one.
    #[arg(long)]
    pub(crate) actix: bool,
    /// Keep the testkit (and its event viewer) serving until Ctrl-C.
    #[arg(long)]
    pub(crate) keep_running: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let Args { actix, keep_running } = *args;
    let package = if actix { "example-actix" } else { "example-axum" };
    let started = Instant::now();
    println!("==> building {package}");
    let binary = build(package)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let kit = rt
        .block_on(audit_testkit::TestKit::start())
        .map_err(|e| format!("starting audit-testkit: {e}"))?;
    let org = kit.organization_id().to_owned();
    println!(
        "==> audit-testkit (WorkOS-compatible) listening at {} with organization {org}",
        kit.url()
    );

    let demo_started = Instant::now();
    let app = spawn(&binary, &kit.url(), &org)?;
    let first = app
        .next_line(Duration::from_secs(30))
        .ok_or("the example printed nothing within 30 s")?;
    let announced: Value = serde_json::from_str(&first)
        .map_err(|e| format!("the example's first line is not JSON ({e}): {first}"))?;
    let base = announced["listening"]
        .as_str()
        .ok_or_else(|| format!("the example's first line has no \"listening\": {first}"))?
        .to_owned();
    println!("==> {package} listening at {base}");

    let script = rt.block_on(drive(&base))?;

    println!("==> stopping {package} with SIGTERM");
    let mut app = app;
    terminate(&app.child)?;
    let (status, shutdown) = wait_for_exit(&mut app, Duration::from_secs(30))
        .ok_or_else(|| format!("{package} did not exit within 30 s of SIGTERM"))?;
    if !status.success() {
        return Err(format!("{package} exited with {status}"));
    }
    let result = finish(&kit, &org, &script, shutdown, started, demo_started)
        .and_then(|()| crate::export::read_back(&rt, &kit.url(), &org));
    viewer(&rt, &kit, &org, keep_running);
    result
}

/// Echoes the app's output until it exits; returns its status and its shutdown report.
fn wait_for_exit(app: &mut App, timeout: Duration) -> Option<(std::process::ExitStatus, Option<Value>)> {
    let deadline = Instant::now() + timeout;
    let mut shutdown = None;
    let mut exited = None;
    while Instant::now() < deadline {
        match app.next_line(Duration::from_millis(100)) {
            Some(line) => {
                if line.starts_with("{\"shutdown\"") {
                    shutdown = serde_json::from_str::<Value>(&line).ok();
                }
                println!("    app │ {line}");
            }
            None => {
                if exited.is_some() {
                    // Exited and its output is drained.
                    return exited.map(|s| (s, shutdown));
                }
                if let Ok(Some(status)) = app.child.try_wait() {
                    exited = Some(status);
                }
            }
        }
    }
    exited.map(|s| (s, shutdown))
}

/// Builds `package` and returns the path of its binary.
fn build(package: &str) -> Result<std::path::PathBuf, String> {
    let output = Command::new(cargo())
        .args(["build", "-p", package, "--message-format=json-render-diagnostics"])
        .current_dir(project_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build -p {package} failed ({})", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == package)
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .ok_or_else(|| format!("cargo build -p {package} produced no executable"))
}

fn spawn(binary: &std::path::Path, base_url: &str, org: &str) -> Result<App, String> {
    let mut child = Command::new(binary)
        .env("WORKOS_BASE_URL", base_url)
        .env("WORKOS_API_KEY", "sk_test_demo")
        .env("WORKOS_ORGANIZATION_ID", org)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        // The demo shows the default client-IP rules: no trusted proxies.
        .env_remove("AUDIT_TRUSTED_PROXIES")
        .env_remove("AUDIT_DISABLED")
        .env_remove("AUDIT_SINK")
        .env_remove("AUDIT_SPOOL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().ok_or("the example's stdout is not piped")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(App { child, lines })
}

#[cfg(unix)]
fn terminate(child: &Child) -> Result<(), String> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .map_err(|e| format!("kill -TERM: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -TERM {} failed ({status})", child.id()))
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) -> Result<(), String> {
    Err("the demo stops the example with SIGTERM, which needs a Unix system".to_owned())
}

/// Sends the scripted requests; returns each step with the status it got.
async fn drive(base: &str) -> Result<Vec<(Step, u16)>, String> {
    let http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    println!("==> sending the scripted requests");
    let mut done = Vec::new();
    let mut token = String::new();
    let mut team_id = String::new();
    for n in 0..8 {
        let step = match n {
            0 => Step {
                what: "sign in as ada@example.com",
                method: "POST",
                path: "/sessions".into(),
                token: None,
                body: Some(json!({"email": "ada@example.com", "password": "demo"})),
                forged: false,
                status: 200,
                event: Some("user.signed_in"),
            },
            1 => Step {
                what: "create a team",
                method: "POST",
                path: "/teams".into(),
                token: Some(token.clone()),
                body: Some(json!({"name": "Platform"})),
                forged: false,
                status: 201,
                event: Some("team.created"),
            },
            2 => Step {
                what: "delete the team",
                method: "DELETE",
                path: format!("/teams/{team_id}"),
                token: Some(token.clone()),
                body: None,
                forged: false,
                status: 204,
                event: Some("team.deleted"),
            },
            3 => Step {
                what: "view an invoice",
                method: "GET",
                path: "/invoices/inv_1001".into(),
                token: Some(token.clone()),
                body: None,
                forged: false,
                status: 200,
                event: Some("invoice.viewed"),
            },
            4 => Step {
                what: "view an invoice without signing in (refused by the auth middleware)",
                method: "GET",
                path: "/invoices/inv_1001".into(),
                token: None,
                body: None,
                forged: false,
                status: 401,
                event: None,
            },
            5 => Step {
                what: "sign in with a wrong password (failure: not audited by default)",
                method: "POST",
                path: "/sessions".into(),
                token: None,
                body: Some(json!({"email": "grace@example.com", "password": "guess"})),
                forged: false,
                status: 401,
                event: None,
            },
            6 => Step {
                what: "view an invoice as user_2 with a forged X-Forwarded-For: 6.6.6.6",
                method: "GET",
                path: "/invoices/inv_2002".into(),
                token: Some("user_2".into()),
                body: None,
                forged: true,
                status: 200,
                event: Some("invoice.viewed"),
            },
            _ => Step {
                what: "health check (not audited)",
                method: "GET",
                path: "/health".into(),
                token: None,
                body: None,
                forged: false,
                status: 200,
                event: None,
            },
        };
        let method = reqwest::Method::from_bytes(step.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = http.request(method, format!("{base}{}", step.path));
        if let Some(t) = &step.token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = &step.body {
            request = request.json(b);
        }
        if step.forged {
            request = request.header("x-forwarded-for", FORGED_IP);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{} {}: {e}", step.method, step.path))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match n {
            0 => token = body["token"].as_str().unwrap_or_default().to_owned(),
            1 => team_id = body["id"].as_str().unwrap_or_default().to_owned(),
            _ => {}
        }
        let mark = if status == step.status { "ok" } else { "UNEXPECTED" };
        println!(
            "    {:<6} {:<22} → {status} {mark:<10} {}",
            step.method, step.path, step.what
        );
        if status != step.status {
            return Err(format!(
                "{} {} answered {status}, expected {}",
                step.method, step.path, step.status
            ));
        }
        done.push((step, status));
    }
    Ok(done)
}

fn finish(
    kit: &audit_testkit::TestKit,
    org: &str,
    script: &[(Step, u16)],
    shutdown: Option<Value>,
    started: Instant,
    demo_started: Instant,
) -> Result<(), String> {
    let mut events = kit.events(org);
    // Delivery is concurrent: the testkit stores events in the order their requests completed.
    // Show them in the order they happened.
    events.sort_by(|a, b| {
        let at = |e: &audit_testkit::StoredEvent| e.event["occurred_at"].as_str().unwrap_or("").to_owned();
        at(a).cmp(&at(b))
    });
    println!(
        "\n==> events stored by audit-testkit for {org}: {}\n",
        events.len()
    );
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|stored| {
            let e = &stored.event;
            let actor = match e["actor"]["name"].as_str() {
                Some(name) => format!("{} ({name})", e["actor"]["id"].as_str().unwrap_or("?")),
                None => e["actor"]["id"].as_str().unwrap_or("?").to_owned(),
            };
            let targets = e["targets"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| {
                            format!(
                                "{}:{}",
                                t["type"].as_str().unwrap_or("?"),
                                t["id"].as_str().unwrap_or("?")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            [
                e["occurred_at"].as_str().unwrap_or("?").to_owned(),
                e["action"].as_str().unwrap_or("?").to_owned(),
                actor,
                targets,
                e["context"]["location"].as_str().unwrap_or("?").to_owned(),
                e["context"]["user_agent"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    print_table(
        &["time", "action", "actor", "targets", "location", "user agent"],
        &rows,
    );

    let mut problems = Vec::new();
    let mut expected: Vec<&str> = script.iter().filter_map(|(s, _)| s.event).collect();
    let mut stored: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    // Events of one millisecond may be stored in either order: compare the sets of actions.
    expected.sort_unstable();
    stored.sort_unstable();
    if stored != expected {
        problems.push(format!(
            "expected the events {expected:?}, the testkit stored {stored:?}"
        ));
    }
    let forged: Vec<&[String; 6]> = rows.iter().filter(|r| r[4] == FORGED_IP).collect();
    if !forged.is_empty() {
        problems.push(format!(
            "the forged X-Forwarded-For {FORGED_IP} became the location of {} events",
            forged.len()
        ));
    }
    if let Some(row) = rows.iter().find(|r| r[4] != "127.0.0.1") {
        problems.push(format!(
            "an event has the location {:?}, expected the socket peer 127.0.0.1",
            row[4]
        ));
    }
    if rows.iter().any(|r| r[5] != USER_AGENT) {
        problems.push(format!("an event lacks the user agent {USER_AGENT:?}"));
    }
    let forged_row = rows.iter().find(|r| r[3] == "invoice:inv_2002");
    match forged_row {
        Some(r) if r[4] != FORGED_IP => println!(
            "\nforged X-Forwarded-For: {FORGED_IP} was ignored: the event's location is {} (the socket peer; no \
             trusted proxies are configured)",
            r[4]
        ),
        Some(_) => {}
        None => problems.push("the event of the request with the forged header is missing".to_owned()),
    }

    println!("\n==> the emitter's shutdown report");
    match &shutdown {
        Some(report) => {
            let s = &report["shutdown"];
            println!(
                "    accepted {}, delivered {}, dead-lettered {}, dropped {}, pending at the deadline {}, retried {}",
                s["accepted"],
                s["delivered"],
                s["dead_lettered"],
                s["dropped"],
                s["pending_at_deadline"],
                s["retried"]
            );
            println!(
                "    requests without an event: not annotated {}, outcome policy {}, missing actor {}, \
                 missing organization {}, suppressed {}; refused by the emitter: invalid {}, emit failures {}",
                s["skipped"]["not_annotated"],
                s["skipped"]["outcome"],
                s["skipped"]["missing_actor"],
                s["skipped"]["missing_organization"],
                s["skipped"]["suppressed"],
                s["invalid_events"],
                s["emit_failures"]
            );
            println!(
                "    delivery latency p50 {} ms, p99 {} ms",
                fmt_ms(&s["delivery_latency_ms"]["p50"]),
                fmt_ms(&s["delivery_latency_ms"]["p99"])
            );
            if s["delivered"].as_u64() != Some(expected.len() as u64) {
                problems.push(format!(
                    "the emitter delivered {} events, expected {}",
                    s["delivered"],
                    expected.len()
                ));
            }
        }
        None => problems.push("the example printed no shutdown report".to_owned()),
    }
    println!(
        "\n==> audit-testkit received {} create-event requests; demo took {:.1} s ({:.1} s with the build)",
        kit.requests()
            .iter()
            .filter(|r| r.path == "/audit_logs/events")
            .count(),
        demo_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if problems.is_empty() {
        println!("\ndemo: OK: every expected event was stored once, with the real client address");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("demo: {p}");
        }
        Err(format!("demo failed: {} problem(s)", problems.len()))
    }
}

fn fmt_ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}"))
}

fn print_table(headers: &[&str; 6], rows: &[[String; 6]]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    line(
        widths
            .iter()
            .map(|w| "─".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

// ---- the event viewer ---------------------------------------------------------------------

/// Prints the testkit's viewer links; with `keep_running`, serves them until Ctrl-C.
fn viewer(rt: &tokio::runtime::Runtime, kit: &audit_testkit::TestKit, org: &str, keep_running: bool) {
    let portal = rt.block_on(async {
        let res = reqwest::Client::new()
            .post(format!("{}/portal/generate_link", kit.url()))
            .bearer_auth("sk_test_demo")
            .json(&json!({"organization": org, "intent": "audit_logs"}))
            .send()
            .await
            .ok()?;
        let body: Value = res.json().await.ok()?;
        body["link"].as_str().map(str::to_owned)
    });
    println!("\n==> the events in the browser (audit-testkit's viewer)");
    if let Some(link) = portal {
        println!("    Admin Portal link (audit_logs): {link}");
    }
    println!("    all organizations:              {}/", kit.url());
    if keep_running {
        println!("    serving until Ctrl-C (--keep-running)");
        let _ = rt.block_on(tokio::signal::ctrl_c());
        println!("    stopped");
    } else {
        println!("    (the testkit stops with the demo; add --keep-running to keep it serving until Ctrl-C)");
    }
}
