//! Runs a minimal example's binary (`src/bin/minimal.rs` of either example app) as a user would,
//! sends the quickstart's two requests over loopback HTTP, stops it with SIGINT (Ctrl-C) and
//! checks what it recorded: one script for both apps. Included by
//! `examples/{axum,actix}/tests/minimal.rs`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use audit_testkit::TestKit;

/// The organization the minimal programs' auth puts on every request.
const ORG: &str = "org_01EHWNCE74X7JSDV0X3SZ3KJNY";

/// The running program and its standard output, line by line.
struct Program {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Program {
    fn spawn(mut command: Command) -> Program {
        let mut child = command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the program starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Program { child, lines }
    }

    /// The next line starting with `prefix` (earlier lines are skipped).
    fn line_starting(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no line starting with {prefix:?}: {e}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Sends the quickstart's requests to the program; returns its shutdown report line.
    async fn run_the_quickstart(mut self) -> String {
        let base = self.line_starting("listening on ")["listening on ".len()..].to_owned();
        let http = reqwest::Client::new();
        let created = http.post(format!("{base}/teams")).send().await.unwrap();
        assert!(created.status().is_success(), "{}", created.status());
        let deleted = http.delete(format!("{base}/teams/team_7")).send().await.unwrap();
        assert!(deleted.status().is_success(), "{}", deleted.status());
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(signalled.success());
        let report = self.line_starting("ShutdownReport");
        assert!(self.child.wait().unwrap().success(), "the program exits 0");
        report
    }
}

/// With a WorkOS key (the testkit's URL as `WORKOS_BASE_URL`): both events reach it, with the
/// actor, organization, targets and location the quickstart sets.
pub(crate) async fn with_a_workos_key(binary: &str) {
    let kit = TestKit::builder().org(ORG).start().await.unwrap();
    let mut command = Command::new(binary);
    command
        .env("WORKOS_API_KEY", "sk_test_minimal")
        .env("WORKOS_BASE_URL", kit.url());
    let report = Program::spawn(command).run_the_quickstart().await;
    assert!(report.contains("delivered: 2,"), "{report}");
    let mut events = kit.events(ORG);
    events.sort_by_key(|e| e.event["action"].as_str().unwrap_or("").to_owned());
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e.event["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["team.created", "team.deleted"]);
    for e in &events {
        assert_eq!(e.event["actor"]["id"], "user_01");
        assert_eq!(e.event["context"]["location"], "127.0.0.1");
    }
    assert_eq!(events[0].event["targets"][0]["id"], "team_42");
    assert_eq!(events[0].event["targets"][0]["name"], "Platform");
    assert_eq!(events[1].event["targets"][0]["id"], "team_7");
    assert_eq!(events[1].event["targets"][0]["type"], "team");
}

/// Without a key: the program starts its own audit-testkit and delivers both events to it.
pub(crate) async fn without_a_key(binary: &str) {
    let mut command = Command::new(binary);
    command.env_remove("WORKOS_API_KEY").env_remove("WORKOS_BASE_URL");
    let report = Program::spawn(command).run_the_quickstart().await;
    assert!(report.contains("delivered: 2,"), "{report}");
    assert!(report.contains("dead_lettered: 0,"), "{report}");
}
