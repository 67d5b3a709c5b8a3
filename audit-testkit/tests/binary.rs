//! The `audit-testkit` binary: first stdout line, flags, SIGTERM, `--data` across restarts.

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Bin {
    child: Child,
    first: Value,
}

fn spawn(args: &[&str]) -> Bin {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit-testkit"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).expect("first line");
    // Keep draining stdout in the background.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    assert!(line.starts_with("{\"url\":\"http://127.0.0.1:"), "{line}");
    let first: Value = serde_json::from_str(&line).expect("json first line");
    Bin { child, first }
}

impl Bin {
    fn url(&self) -> String {
        self.first["url"].as_str().unwrap().to_owned()
    }
    fn terminate(mut self) -> std::process::ExitStatus {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        #[cfg(not(unix))]
        {
            let _ = self.child.kill();
        }
        self.child.wait().expect("wait")
    }
}

#[tokio::test]
async fn first_line_flags_and_sigterm() {
    let bin = spawn(&[
        "--org",
        "org_A",
        "--org",
        "org_B",
        "--api-key",
        "sk_test_cli",
        "--log-stream",
        "Splunk:error",
        "--rate-limit",
        "100/1s",
        "--export-delay",
        "0s",
    ]);
    assert_eq!(bin.first["organization_id"], "org_A");
    let url = bin.url();
    let c = client();
    let ok = c
        .get(format!("{url}/organizations/org_B/audit_log_configuration"))
        .bearer_auth("sk_test_cli")
        .send()
        .await
        .unwrap();
    let (st, cfg) = parts(ok).await;
    assert_eq!(st, 200);
    assert_eq!(cfg["log_stream"]["type"], "Splunk");
    assert_eq!(cfg["log_stream"]["state"], "error");
    let denied = c
        .get(format!("{url}/audit_logs/actions"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let status = bin.terminate();
    #[cfg(unix)]
    assert!(status.success(), "{status:?}");
    let _ = status;
}

#[tokio::test]
async fn generated_org_and_any_org() {
    let bin = spawn(&["--any-org"]);
    let org = bin.first["organization_id"].as_str().unwrap().to_owned();
    assert!(org.starts_with("org_") && org.len() == 30);
    let c = client();
    let r = post(
        &c,
        &bin.url(),
        "/audit_logs/events",
        &body("org_whatever", event("a.b")),
    )
    .await;
    assert_eq!(r.status(), 200);
    bin.terminate();
}

#[tokio::test]
async fn data_file_survives_a_process_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.sqlite");
    let file = file.to_str().unwrap();
    let c = client();
    let bin = spawn(&["--org", "org_A", "--data", file]);
    let url = bin.url();
    assert_eq!(
        post(&c, &url, "/audit_logs/events", &body("org_A", event("a.b")))
            .await
            .status(),
        200
    );
    assert_eq!(
        post(
            &c,
            &url,
            "/audit_logs/actions/a.b/schemas",
            &json!({"targets": [{"type": "team"}]})
        )
        .await
        .status(),
        201
    );
    bin.terminate();
    let bin = spawn(&["--org", "org_A", "--data", file]);
    let url = bin.url();
    let events: Value = c
        .get(format!("{url}/_testkit/events?organization_id=org_A"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    assert_eq!(events["data"][0]["event"], event("a.b"));
    let (st, list) = parts(get(&c, &url, "/audit_logs/actions").await).await;
    assert_eq!(st, 200);
    assert_eq!(list["data"][0]["name"], "a.b");
    bin.terminate();
}

#[test]
fn bad_flags_fail_cleanly() {
    for args in [
        vec!["--rate-limit", "lots"],
        vec!["--rate-limit", "10/fortnights"],
        vec!["--rate-limit", "0/1s"],
        vec!["--addr", "nope"],
        vec!["--log-stream", ":x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_audit-testkit"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[tokio::test]
async fn stream_flags_deliver_to_a_collector() {
    let collector = audit_testkit::stand_ins::StandIn::collector(200);
    let target = format!("{}/siem", collector.url());
    let bin = spawn(&[
        "--stream-http",
        &target,
        "--stream-header",
        "Authorization: Bearer cli-secret",
    ]);
    let org = bin.first["organization_id"].as_str().unwrap().to_owned();
    let url = bin.url();
    let c = client();
    let res = post(&c, &url, "/audit_logs/events", &body(&org, event("from.cli"))).await;
    assert_eq!(res.status(), 200);
    let got = collector
        .wait_for(1, std::time::Duration::from_secs(20))
        .await
        .expect("delivered");
    assert_eq!(got[0].path, "/siem");
    assert_eq!(got[0].header("authorization"), Some("Bearer cli-secret"));
    assert_eq!(got[0].json()["action"], "from.cli");
    let (_, cfg) = parts(get(&c, &url, &format!("/organizations/{org}/audit_log_configuration")).await).await;
    assert_eq!(cfg["log_stream"]["type"], "GenericHttps");
    let _ = bin.terminate();
}

#[tokio::test]
async fn beyond_loopback_it_warns_and_takes_the_control_token_from_the_environment() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_audit-testkit"))
        .args(["--addr", "0.0.0.0:0", "--allowed-host", "testkit"])
        .env("AUDIT_TESTKIT_CONTROL_TOKEN", "env-ctl-token-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut first).expect("first line");
    let mut warning = String::new();
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    err.read_line(&mut warning).expect("warning line");
    assert!(
        warning.contains("WARNING") && warning.contains("0.0.0.0:"),
        "{warning}"
    );
    assert!(warning.contains("every stored event"), "{warning}");
    assert!(!warning.contains("env-ctl-token-1"), "the token is not printed");
    let first: Value = serde_json::from_str(&first).expect("json first line");
    let url = first["url"].as_str().unwrap().to_owned();
    let c = client();
    let res = c.get(format!("{url}/_testkit/events")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .get(format!("{url}/_testkit/events"))
        .bearer_auth("env-ctl-token-1")
        .header("host", "testkit:1234")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the token and the allowed host");
    let _ = child.kill();
    let _ = child.wait();
}
