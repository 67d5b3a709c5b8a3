//! The exit status and output of the `cargo xtask verify` binary.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        // The environment must not matter to `--local`; make sure of it.
        .env("WORKOS_API_KEY", "sk_live_must_not_be_used_0000")
        .env("WORKOS_BASE_URL", "https://api.workos.com")
        .output()
        .expect("the xtask binary runs")
}

#[test]
fn local_run_exits_zero_with_one_json_document() {
    let out = xtask(&["verify", "--local", "--json", "--skip", "dependency"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["passed"], true);
    assert_eq!(v["summary"]["fail"], 0);
    assert_eq!(v["checks"].as_array().map(Vec::len), Some(7));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("must_not_be_used"));
}

#[test]
fn a_failed_check_exits_one_and_names_it() {
    let out = xtask(&[
        "verify",
        "--local",
        "--checks",
        "event",
        "--action",
        "not an action",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL   event"), "{stdout}");
    assert!(stdout.contains("fix: "), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 check failed: event"));
}

#[test]
fn a_usage_error_exits_two() {
    let out = xtask(&["verify", "--checks", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown check \"bogus\""));
    let help = xtask(&["verify", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--require-stream"));
}
