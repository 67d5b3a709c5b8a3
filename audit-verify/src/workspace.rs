//! Check `dependency`: the user's workspace depends on this project's crates, per `cargo metadata`.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::report::{CheckId, CheckResult};

/// The crates a user's workspace may depend on to use this project.
pub const PROJECT_CRATES: [&str; 3] = ["audit-core", "audit-tower", "audit-actix"];

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    id: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    /// `null` for a normal dependency, `"dev"` or `"build"`.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    req: String,
}

const FIX: &str = "add the crates to your application: `cargo add audit-core` and, for axum or any tower stack, \
`cargo add audit-tower`, for actix-web `cargo add audit-actix`";

/// Runs `cargo metadata --no-deps` for `manifest` (or the current directory) and looks for a
/// workspace member that depends on one of [`PROJECT_CRATES`].
pub(crate) fn check(cargo: &str, manifest: Option<&Path>) -> CheckResult {
    let id = CheckId::Dependency;
    let mut command = Command::new(cargo);
    command.args(["metadata", "--format-version", "1", "--no-deps", "--offline"]);
    if let Some(m) = manifest {
        command.arg("--manifest-path").arg(m);
    }
    let where_ = manifest.map_or_else(|| "the current directory".to_owned(), |m| m.display().to_string());
    let output = match command.output() {
        Ok(o) => o,
        Err(e) => {
            return CheckResult::fail(
                id,
                format!("could not run `{cargo} metadata`: {e}"),
                "install Rust with rustup (https://rustup.rs) or set CARGO to the cargo binary",
            );
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .find(|l| l.trim_start().starts_with("error"))
            .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("no message")
            .trim();
        return CheckResult::fail(
            id,
            format!("`cargo metadata` failed for {where_}: {reason}"),
            "point --manifest-path at your workspace's Cargo.toml",
        );
    }
    let metadata: Metadata = match serde_json::from_slice(&output.stdout) {
        Ok(m) => m,
        Err(e) => {
            return CheckResult::fail(
                id,
                format!("could not read the output of `cargo metadata`: {e}"),
                "run `cargo metadata --format-version 1` yourself to see what is wrong",
            );
        }
    };
    evaluate(&metadata, &where_)
}

fn evaluate(metadata: &Metadata, where_: &str) -> CheckResult {
    let id = CheckId::Dependency;
    let mut normal = Vec::new();
    let mut dev_only = Vec::new();
    for package in metadata
        .packages
        .iter()
        .filter(|p| metadata.workspace_members.contains(&p.id))
    {
        for dep in package
            .dependencies
            .iter()
            .filter(|d| PROJECT_CRATES.contains(&d.name.as_str()))
        {
            let line = format!("{} → {} {}", package.name, dep.name, dep.req);
            if dep.kind.as_deref() == Some("dev") {
                dev_only.push(line);
            } else {
                normal.push(line);
            }
        }
    }
    if !normal.is_empty() {
        CheckResult::pass(id, format!("{} ({where_})", list(&normal)))
    } else if !dev_only.is_empty() {
        CheckResult::warn(
            id,
            format!("only dev-dependencies: {} ({where_})", list(&dev_only)),
            Some(format!("make it a normal dependency of the application: {FIX}")),
        )
    } else {
        let members: Vec<&str> = metadata
            .packages
            .iter()
            .filter(|p| metadata.workspace_members.contains(&p.id))
            .map(|p| p.name.as_str())
            .collect();
        CheckResult::fail(
            id,
            format!(
                "no workspace member ({}) depends on audit-core, audit-tower or audit-actix ({where_})",
                members.join(", ")
            ),
            FIX,
        )
    }
}

fn list(items: &[String]) -> String {
    const SHOWN: usize = 3;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!("{}, and {} more", items[..SHOWN].join(", "), items.len() - SHOWN)
    }
}
