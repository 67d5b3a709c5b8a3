//! Project tasks, run as `cargo xtask <task>`: `demo`, `verify`, `export`, `ci`, `bench`, `cost`.
//!
//! Arguments are parsed by clap: unknown flags are refused (exit status 2) and every task has
//! `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod bench;
mod ci;
mod cost;
mod demo;
mod export;
mod verify;

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Project tasks")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) task: Option<Task>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Task {
    /// Run the axum example against an embedded audit-testkit and show the events it recorded.
    Demo(demo::Args),
    /// Run the WorkOS verification checklist (--local: against audit-testkit).
    Verify(Box<verify::Args>),
    /// Read events back through a CSV export (--local: an embedded audit-testkit).
    Export(export::Args),
    /// Everything CI checks: fmt, clippy, tests, compatibility builds, SDK tests, docs.
    Ci(ci::Args),
    /// Every benchmark, as JSON lines and a table.
    Bench(bench::Args),
    /// The instructions an audited request adds (callgrind), against the budget file.
    Cost(cost::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with status 0, usage errors to stderr with status 2.
        Err(e) => e.exit(),
    };
    let result = match cli.task {
        Some(Task::Bench(args)) => bench::run(&args),
        Some(Task::Ci(args)) => ci::run(&args),
        Some(Task::Cost(args)) => cost::run(&args),
        Some(Task::Export(args)) => export::run(args),
        Some(Task::Demo(args)) => demo::run(&args),
        Some(Task::Verify(args)) => verify::run(*args),
        None => {
            let _ = Cli::command().print_help();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a command line (without the program name) as `cargo xtask` would, for tests.
#[cfg(test)]
pub(crate) fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_flags_and_tasks_are_refused() {
        for bad in [
            &["ci", "--skip-sdks"][..],
            &["demo", "--axtix"],
            &["bench", "--quik"],
            &["bench", "--only"],
            &["export", "--max-wait", "600"],
            &["verify", "--timeout", "soon"],
            &["cost", "--quik"],
            &["deploy"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?} must be refused"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_task_parses_its_flags() {
        let Some(Task::Ci(ci)) = parse(&["ci", "--skip-sdk", "--skip-browser"]).unwrap().task else {
            panic!("ci");
        };
        assert!(ci.skip_sdk && ci.skip_browser);
        let Some(Task::Demo(demo)) = parse(&["demo", "--actix", "--keep-running"]).unwrap().task else {
            panic!("demo");
        };
        assert!(demo.actix && demo.keep_running);
        let Some(Task::Bench(bench)) = parse(&["bench", "--quick", "--only", "spool"]).unwrap().task else {
            panic!("bench");
        };
        assert!(bench.quick);
        assert_eq!(bench.only.as_deref(), Some("spool"));
        assert!(matches!(
            parse(&["export", "--local", "--max-wait", "90s"]).unwrap().task,
            Some(Task::Export(_))
        ));
        assert!(matches!(
            parse(&["verify", "--local", "--timeout", "15s"]).unwrap().task,
            Some(Task::Verify(_))
        ));
        let Some(Task::Cost(cost)) = parse(&["cost", "--quick", "--check", "--app", "axum"])
            .unwrap()
            .task
        else {
            panic!("cost");
        };
        assert!(cost.quick && cost.check);
        assert_eq!(cost.app.as_deref(), Some("axum"));
        assert!(parse(&[]).unwrap().task.is_none());
        for task in ["ci", "demo", "bench", "export", "verify", "cost"] {
            let e = parse(&[task, "--help"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{task}");
        }
    }
}
