//! `cargo xtask bench [--quick] [--only <text>]`: every benchmark of the project, in release mode,
//! as JSON lines on stdout and a table at the end.
//!
//! stdout carries only the records; progress, the benches' own output and the closing table go to
//! stderr (so `cargo xtask bench > figures.jsonl` keeps a clean file).
//!
//! Each record is one JSON object with at least `name`, `value` and `unit`, and, where they apply,
//! `baseline`, `ratio`, `target` and `pass`. Records come from two kinds of sources, listed in
//! [`SOURCES`]:
//!
//! - a **measurement binary** (a `harness = false` bench target or an example) run with
//!   `cargo bench`/`cargo run --release`, which prints its records as JSON lines on stdout (other
//!   lines are passed through to stderr);
//! - a **criterion** bench, whose medians are read from `<target>/criterion/<group>/<id>/new/estimates.json`.
//!
//! To add a benchmark, add a [`Source`] entry: a new bench target that prints JSON lines needs no
//! other change here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{cargo, project_root};

/// Where records come from.
enum Source {
    /// `cargo bench -p <package> --bench <bench> -- <args>` printing JSON lines.
    JsonLines {
        package: &'static str,
        bench: &'static str,
        args: &'static [&'static str],
    },
    /// `cargo run --release -p <package> --features <features> --example <example> -- <args>`
    /// printing JSON lines (a measurement that needs a cargo feature, such as the spool).
    Example {
        package: &'static str,
        example: &'static str,
        features: &'static str,
        args: &'static [&'static str],
    },
    /// A criterion bench; each `(id, name, target, limit_ns)` becomes one record of its median
    /// (criterion's: the median of the samples' mean time per iteration) in ns, with `target` and
    /// `pass` (below `limit_ns`) unless the target is empty.
    Criterion {
        package: &'static str,
        bench: &'static str,
        group: &'static str,
        results: &'static [(&'static str, &'static str, &'static str, f64)],
    },
    /// The instructions per request of both example apps under callgrind ([`crate::cost`]), with
    /// the added instructions of each audit configuration against its budget.
    Callgrind,
}

const SOURCES: &[Source] = &[
    // Deterministic: the instructions an audited request adds, both apps, three configurations.
    Source::Callgrind,
    Source::Criterion {
        package: "audit-core",
        bench: "emitter_emit",
        group: "emitter_emit",
        results: &[
            (
                "try_emit_single_thread",
                "emitter.emit.single_thread.criterion",
                "",
                f64::INFINITY,
            ),
            (
                "try_emit_two_threads",
                "emitter.emit.two_threads.criterion",
                "",
                f64::INFINITY,
            ),
        ],
    },
    // Per-call medians of the emit call (robust to preemption on a loaded machine).
    Source::JsonLines {
        package: "audit-core",
        bench: "emitter_delivery",
        args: &["emit"],
    },
    Source::JsonLines {
        package: "audit-core",
        bench: "emitter_delivery",
        args: &["delivery"],
    },
    // Peak RSS is per process: the memory figure gets a process of its own.
    Source::JsonLines {
        package: "audit-core",
        bench: "emitter_delivery",
        args: &["memory"],
    },
    // Recovery at the rate limit: the drain rate of a backlog once WorkOS answers again.
    Source::JsonLines {
        package: "audit-core",
        bench: "emitter_delivery",
        args: &["recovery"],
    },
    // The durable spool: delivery ratio against memory mode, writer commit rate, emit cost.
    Source::Example {
        package: "audit-core",
        example: "spool_bench",
        features: "spool",
        args: &[],
    },
    // The request path of example-axum with and without the audit layer (its own load generator).
    Source::JsonLines {
        package: "example-axum",
        bench: "request_path",
        args: &["throughput"],
    },
    Source::JsonLines {
        package: "example-axum",
        bench: "request_path",
        args: &["e2e"],
    },
    // The pipeline's cost with everything on one thread (the router in a loop, no network).
    Source::JsonLines {
        package: "example-axum",
        bench: "inprocess",
        args: &[],
    },
    // The same two measurements for example-actix (same load generator, `actix.` record names).
    Source::JsonLines {
        package: "example-actix",
        bench: "request_path",
        args: &["throughput"],
    },
    Source::JsonLines {
        package: "example-actix",
        bench: "request_path",
        args: &["e2e"],
    },
    // The PostgreSQL outbox (needs DATABASE_URL; prints nothing without it): the event's cost in
    // the business transaction, the same at 1, 16 and 64 concurrent connections against the
    // transactions without it, the delay from commit to delivery at idle and under load, relay
    // delivery against the in-memory emitter (with the CPU per event in this process and in
    // PostgreSQL), one and three relays when each request takes 20 ms, exactly-once under the
    // emitter bench's fault mix with three relays.
    Source::JsonLines {
        package: "audit-postgres",
        bench: "outbox",
        args: &[],
    },
    // Reading events back (rows/s and peak RSS in a process of its own) and the schema check.
    Source::JsonLines {
        package: "xtask",
        bench: "reader",
        args: &["read"],
    },
    Source::JsonLines {
        package: "xtask",
        bench: "reader",
        args: &["schema"],
    },
];

/// The flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A short run (fewer rounds and samples), for a quick look.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Only the sources whose bench or example name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub(crate) only: Option<String>,
}

pub(crate) fn run(args: &Args) -> Result<(), String> {
    let quick = args.quick;
    let only = args.only.clone();
    let root = project_root();
    let mut records: Vec<Value> = Vec::new();
    let mut failures = Vec::new();
    for source in SOURCES {
        let bench = match source {
            Source::JsonLines { bench, .. } | Source::Criterion { bench, .. } => *bench,
            Source::Example { example, .. } => *example,
            Source::Callgrind => "cost",
        };
        if only.as_deref().is_some_and(|o| !bench.contains(o)) {
            continue;
        }
        let got = match source {
            Source::JsonLines { package, bench, args } => json_lines(&root, package, bench, args, quick),
            Source::Example {
                package,
                example,
                features,
                args,
            } => {
                let mut cmd = Command::new(cargo());
                cmd.args(["run", "--release", "-q", "-p", package, "--features", features])
                    .args(["--example", example, "--"])
                    .args(*args);
                if quick {
                    cmd.arg("--quick");
                }
                eprintln!("==> xtask bench: {example} {}", args.join(" "));
                lines_of(&root, cmd)
            }
            Source::Criterion {
                package,
                bench,
                group,
                results,
            } => criterion(&root, package, bench, group, results, quick),
            Source::Callgrind => callgrind(quick),
        };
        match got {
            Ok(mut r) => records.append(&mut r),
            Err(e) => {
                eprintln!("xtask bench: {bench}: {e}");
                failures.push(format!("{bench}: {e}"));
            }
        }
    }
    print_table(&records);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("benchmarks failed: {}", failures.join("; ")))
    }
}

fn json_lines(
    root: &Path,
    package: &str,
    bench: &str,
    args: &[&str],
    quick: bool,
) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(cargo());
    cmd.args(["bench", "-q", "-p", package, "--bench", bench, "--"])
        .args(args);
    if quick {
        cmd.arg("--quick");
    }
    eprintln!("==> xtask bench: {bench} {}", args.join(" "));
    lines_of(root, cmd)
}

/// Runs a measurement binary and keeps the JSON lines it prints as records.
fn lines_of(root: &Path, mut cmd: Command) -> Result<Vec<Value>, String> {
    let out = cmd
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let mut records = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.get("name").is_some() && v.get("value").is_some() => {
                println!("{v}");
                records.push(v);
            }
            _ => eprintln!("{line}"),
        }
    }
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    Ok(records)
}

/// The callgrind cost figures ([`crate::cost`]): the full plan, or the CI's quick one.
fn callgrind(quick: bool) -> Result<Vec<Value>, String> {
    eprintln!("==> xtask bench: cost (callgrind)");
    let budgets = crate::cost::read_budget(&project_root())?;
    let plan = if quick {
        crate::cost::Plan::quick()
    } else {
        crate::cost::Plan::full()
    };
    let figures = crate::cost::measure(&plan)?;
    let records = crate::cost::records(&figures, &budgets);
    for r in &records {
        println!("{r}");
    }
    Ok(records)
}

fn criterion(
    root: &Path,
    package: &str,
    bench: &str,
    group: &str,
    results: &[(&str, &str, &str, f64)],
    quick: bool,
) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(cargo());
    cmd.args(["bench", "-q", "-p", package, "--bench", bench, "--", "--noplot"]);
    if quick {
        cmd.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    eprintln!("==> xtask bench: {bench} (criterion)");
    // Criterion's own report goes to stderr: stdout carries only records.
    let status = cmd
        .current_dir(root)
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let dir = target_dir(root).join("criterion").join(group);
    let mut records = Vec::new();
    for (id, name, target, limit) in results {
        let path = dir.join(id).join("new").join("estimates.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let estimates: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let median = estimates["median"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("{}: no median", path.display()))?;
        let mut v = json!({"name": name, "value": (median * 10.0).round() / 10.0, "unit": "ns"});
        if !target.is_empty() {
            v["target"] = json!(target);
            v["pass"] = json!(median < *limit);
        }
        println!("{v}");
        records.push(v);
    }
    Ok(records)
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to `root` when relative), else
/// `root/target`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root.join(dir) }
        }
        None => root.join("target"),
    }
}

fn print_table(records: &[Value]) {
    let fmt_num = |v: &Value| match v.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => format!("{x:.3}"),
        None => String::new(),
    };
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r["name"].as_str().unwrap_or("").to_owned(),
                format!("{} {}", fmt_num(&r["value"]), r["unit"].as_str().unwrap_or("")),
                fmt_num(&r["baseline"]),
                fmt_num(&r["ratio"]),
                r["target"].as_str().unwrap_or("").to_owned(),
                match r["pass"].as_bool() {
                    Some(true) => "ok".to_owned(),
                    Some(false) => "MISSED".to_owned(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let header = ["benchmark", "value", "baseline", "ratio", "target", ""];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(&format!("{cell:<w$}"));
        }
        out.trim_end().to_owned()
    };
    eprintln!();
    eprintln!("{}", line(header));
    eprintln!(
        "{}",
        "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
    );
    for row in &rows {
        eprintln!("{}", line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]));
    }
}
