//! Project tasks, run as `cargo xtask <task>`: `demo`, `verify`, `ci`, `bench`.

use std::path::PathBuf;
use std::process::ExitCode;

mod bench;
mod ci;
mod demo;
mod export;
mod verify;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match task.as_deref() {
        Some("bench") => bench::run(&rest),
        Some("ci") => ci::run(&rest),
        Some("export") => export::run(&rest),
        Some("demo") => demo::run(&rest),
        Some("verify") => verify::run(&rest),
        Some("help") | Some("--help") | Some("-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown task {other:?}; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>\n\n\
         tasks:\n  \
         demo     run the axum example against an embedded audit-testkit and show the events it recorded\n  \
         \x20        (--actix: the actix example; --postgres: two instances on the outbox in DATABASE_URL)\n  \
         verify   run the WorkOS verification checklist (add --local to run it against audit-testkit)\n  \
         export   read events back through a CSV export (--local: an embedded audit-testkit)\n  \
         ci       everything CI checks: fmt, clippy, tests, SDK compatibility tests, docs\n  \
         bench    every benchmark, as JSON lines and a table"
    );
}

/// The workspace root.
pub(crate) fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs this task.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
