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

#[test]
fn a_live_key_writes_nothing_unless_the_flag_is_given() {
    const ORG: &str = "org_01EHWNCE74X7JSDV0X3SZ3KJNY";
    let kit = audit_testkit::TestKit::builder()
        .org(ORG)
        .start_blocking()
        .expect("testkit starts");
    // An empty directory: no .env of this repository is read.
    let env_dir = std::env::temp_dir().join(format!("verify-cli-live-{}", std::process::id()));
    std::fs::create_dir_all(&env_dir).expect("temp dir");
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--checks", "api_key,event", "--env-dir"];
        args.push(env_dir.to_str().expect("a UTF-8 path"));
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(&args)
            .env("WORKOS_API_KEY", "sk_live_QzXvRtYpWmKjHgFdSaLe")
            .env("WORKOS_ORGANIZATION_ID", ORG)
            .env("WORKOS_BASE_URL", kit.url())
            .output()
            .expect("the xtask binary runs")
    };

    let out = verify(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("SKIP   event"), "{stdout}");
    assert!(stdout.contains("pass --allow-live-writes"), "{stdout}");
    assert!(kit.events(ORG).is_empty(), "a live key wrote without the flag");

    let out = verify(&["--allow-live-writes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS   event"), "{stdout}");
    assert_eq!(kit.events(ORG).len(), 1);
    let _ = std::fs::remove_dir_all(&env_dir);
}

#[test]
fn local_schemas_exit_zero_for_both_examples() {
    let out = xtask(&["verify", "--local", "--schemas", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["passed"], true);
    let apps = v["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 2);
    for app in apps {
        // The binary itself lists the examples' actions: their code is linked into it.
        assert_eq!(
            app["report"]["checked"].as_array().map(Vec::len),
            Some(5),
            "{app}"
        );
    }
}

#[test]
fn schemas_not_registered_exit_one_with_each_action_named() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let kit = rt
        .block_on(audit_testkit::TestKit::builder().start())
        .expect("testkit starts");
    let out = xtask(&["verify", "--schemas", "--base-url", &kit.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL   invoice.paid [not_registered]: `invoice.paid` is not registered in WorkOS"),
        "{stdout}"
    );
    assert!(stdout.contains("SchemaRegistry::sync_declared"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("examples/axum (5 findings), examples/actix (5 findings)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(kit);
}
