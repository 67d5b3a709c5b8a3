//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.
//!
//! 1. `cargo fmt --check`
//! 2. `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//! 3. `cargo test --workspace --all-features`
//!    then `cargo xtask verify --local`: the verification checklist against an in-process audit-testkit,
//!    then `cargo xtask verify --local --schemas`: every action the examples can emit checked
//!    against the schemas registered in it
//! 4. the official WorkOS SDKs (Node and Python) against audit-testkit (`sdk-tests/`)
//! 5. `cargo doc --workspace --no-deps --all-features` with `-D warnings`
//!
//! After step 2: the publishing checks: each feature of every library crate on its own
//! (`cargo hack check --each-feature --no-dev-deps`), no unused dependencies (`cargo shear`),
//! and `cargo package --no-verify -p <each publishable crate>` (the manifest, the metadata and the
//! file list of each package). cargo-hack and cargo-shear are installed by `.ci/install-tools`.
//!
//! After step 3: `xtask/compat/sqlx`, a crate outside the workspace that depends on audit-core
//! (`spool`), audit-testkit (`sqlite`) and sqlx 0.8 (`sqlite`), is checked with the workspace's
//! `Cargo.lock` pins (only one crate in a build may link `sqlite3`).
//!
//! Flags are parsed by clap (unknown ones are refused). `--skip-sdk` leaves out step 4 (for a machine without Node or Python); on CI (`CI=true`) the SDK
//! tests are never skipped silently: missing installs are an error.
//!
//! After step 4: the audit-testkit viewer in headless Chromium (`viewer-tests/`, playwright-core
//! driving Debian's `chromium`); it writes `target/viewer-screenshot.png`. `--skip-browser` leaves
//! it out; without Chromium or `npm ci` it is skipped with a message, on CI an error.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::target_dir;
use crate::{cargo, project_root};

/// The flags of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Leave out the official SDKs' tests (for a machine without Node or Python).
    #[arg(long)]
    pub(crate) skip_sdk: bool,
    /// Leave out the viewer's tests in headless Chromium.
    #[arg(long)]
    pub(crate) skip_browser: bool,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let Args {
        skip_sdk,
        skip_browser,
    } = *args;
    let root = project_root();
    step(
        "fmt",
        Command::new(cargo())
            .args(["fmt", "--all", "--", "--check"])
            .current_dir(&root),
    )?;
    step(
        "clippy",
        Command::new(cargo())
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(&root),
    )?;
    publishing(&root)?;
    step(
        "test",
        Command::new(cargo())
            .args(["test", "--workspace", "--all-features"])
            .current_dir(&root),
    )?;
    // `cargo xtask verify --local`, through cargo: the test step above rebuilt this crate, so the
    // binary this process was started from may no longer exist on disk.
    step(
        "verify",
        Command::new(cargo())
            .args(["run", "--quiet", "--package", "xtask", "--", "verify", "--local"])
            .current_dir(&root),
    )?;
    step(
        "verify schemas",
        Command::new(cargo())
            .args([
                "run",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "verify",
                "--local",
                "--schemas",
            ])
            .current_dir(&root),
    )?;
    compat_sqlx(&root)?;
    if skip_sdk {
        println!("xtask ci: SDK compatibility tests skipped (--skip-sdk)");
    } else {
        sdk_tests(&root)?;
    }
    if skip_browser {
        println!("xtask ci: viewer browser tests skipped (--skip-browser)");
    } else {
        viewer_tests(&root)?;
    }
    step(
        "doc",
        Command::new(cargo())
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings")
            .current_dir(&root),
    )?;
    println!("xtask ci: all checks passed");
    Ok(())
}

fn step(name: &str, command: &mut Command) -> Result<(), String> {
    println!("\n==> xtask ci: {name}");
    let status = command
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

/// The library crates: checked feature by feature, and packaged (they are the publishable ones).
const LIBRARY_CRATES: [&str; 7] = [
    "audit-core",
    "audit-macros",
    "audit-testkit",
    "audit-tower",
    "audit-actix",
    "audit-verify",
    "audit-postgres",
];

/// Each feature on its own, unused dependencies, and the packages of the publishable crates.
fn publishing(root: &Path) -> Result<(), String> {
    let mut hack = Command::new(cargo());
    hack.args(["hack", "check", "--each-feature", "--no-dev-deps"]);
    for krate in LIBRARY_CRATES {
        hack.args(["-p", krate]);
    }
    step("each feature on its own (cargo hack)", hack.current_dir(root))?;
    step(
        "unused dependencies (cargo shear)",
        Command::new(cargo()).arg("shear").current_dir(root),
    )?;
    // The packages are made, not built: every crate is compiled by the other steps, and a
    // package's build would resolve this workspace's crates through a temporary registry whose
    // extracted copies cargo keeps between runs.
    let mut package = Command::new(cargo());
    package.args(["package", "--no-verify", "--allow-dirty"]);
    for krate in LIBRARY_CRATES {
        package.args(["-p", krate]);
    }
    step(
        "cargo package --no-verify (every publishable crate)",
        package.current_dir(root),
    )
}

/// Checks `xtask/compat/sqlx`: audit-core's spool, audit-testkit's persistence and sqlx's SQLite
/// in one build. The crate is its own workspace; it starts from a copy of the project's
/// `Cargo.lock`, so that it resolves to the versions the project is tested with and cargo adds
/// only what sqlx brings. It shares the project's target directory, so most dependencies are
/// already built.
fn compat_sqlx(root: &Path) -> Result<(), String> {
    let dir = root.join("xtask/compat/sqlx");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))
        .map_err(|e| format!("compat sqlx: copying Cargo.lock: {e}"))?;
    let target_dir = target_dir(root);
    step(
        "audit-core (spool) + audit-testkit (sqlite) + sqlx 0.8 (sqlite) in one build",
        Command::new(cargo())
            .arg("check")
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(root),
    )
}

/// Whether the outside dependencies of the optional `suite` are `installed`. When they are not,
/// that is an error on CI (`CI=true` or `CI=1`), which must run every suite; elsewhere the suite
/// is skipped with a notice (`hint` says how to install them) and this returns `Ok(false)`.
fn dependencies_installed(installed: bool, suite: &str, hint: &str) -> Result<bool, String> {
    if installed {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        return Err(format!("the {suite}' dependencies are not installed; {hint}"));
    }
    println!("xtask ci: {suite} skipped: dependencies not installed; {hint}");
    Ok(false)
}

/// Builds the audit-testkit binary (debug, `cli` feature) and returns its path.
fn build_testkit(root: &Path) -> Result<PathBuf, String> {
    step(
        "build audit-testkit",
        Command::new(cargo())
            .args([
                "build",
                "-p",
                "audit-testkit",
                "--features",
                "cli",
                "--bin",
                "audit-testkit",
            ])
            .current_dir(root),
    )?;
    Ok(target_dir(root).join("debug/audit-testkit"))
}

/// Runs the official SDKs' tests against the audit-testkit binary.
fn sdk_tests(root: &Path) -> Result<(), String> {
    let node_modules = root.join("sdk-tests/node/node_modules");
    let python = root.join("sdk-tests/python/.venv/bin/python");
    if !dependencies_installed(
        node_modules.is_dir() && python.is_file(),
        "SDK compatibility tests",
        "install them with `bash .ci/install-sdks` (npm ci and a Python venv)",
    )? {
        return Ok(());
    }
    let bin = build_testkit(root)?;
    step(
        "Node SDK against audit-testkit",
        Command::new("node")
            .args(["--test", "sdk-tests/node/"])
            .env("AUDIT_TESTKIT_BIN", &bin)
            .current_dir(root),
    )?;
    step(
        "Python SDK against audit-testkit",
        Command::new(&python)
            .args(["-m", "pytest", "-q", "sdk-tests/python"])
            .env("AUDIT_TESTKIT_BIN", &bin)
            .current_dir(root),
    )
}

/// Runs the audit-testkit viewer's browser tests (`viewer-tests/`) in headless Chromium.
fn viewer_tests(root: &Path) -> Result<(), String> {
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let driver = root.join("viewer-tests/node_modules/playwright-core");
    if !dependencies_installed(
        Path::new(&chromium).is_file() && driver.is_dir(),
        "viewer browser tests",
        "install them with `bash .ci/install-sdks` (Debian's chromium and npm ci in viewer-tests/)",
    )? {
        return Ok(());
    }
    let bin = build_testkit(root)?;
    step(
        "audit-testkit viewer in headless Chromium",
        Command::new("node")
            .args(["--test", "viewer-tests/"])
            .env("AUDIT_TESTKIT_BIN", &bin)
            .env("CHROMIUM_BIN", &chromium)
            .env(
                "VIEWER_SCREENSHOT",
                target_dir(root).join("viewer-screenshot.png"),
            )
            .current_dir(root),
    )
}
