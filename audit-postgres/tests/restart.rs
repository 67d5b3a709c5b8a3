//! Restarts: a private PostgreSQL cluster (never the shared server on 5432) is stopped and
//! started again while relays deliver and handlers write. Nothing committed is lost or stored
//! twice, writes fail fast while the database is down, and deliveries resume within seconds.
//!
//! Needs PostgreSQL's server binaries (`/usr/lib/postgresql/<version>/bin`); without them the test
//! says why and passes, except when `CI=true`, where it fails.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_postgres::Outbox;
use common::*;
use sqlx::postgres::PgPoolOptions;

/// The newest installed server's `bin` directory, as `.ci/start-postgres` picks it.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A private cluster in a temporary directory on a free loopback port, stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    root: bool,
}

impl Cluster {
    /// Runs `program` of the server's binaries, as `postgres` when this process is root
    /// (PostgreSQL refuses to run as root), within 60 s.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args);
        let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start_new(bin: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(format!("audit-pg-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = is_root();
        if root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster's directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { bin, dir, port, root };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "audit",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "-t", "30", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://audit@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let path = self.bin.join("pg_ctl");
        let _ = if self.root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output()
        } else {
            Command::new(&path)
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output()
        };
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}

#[derive(Default)]
struct Written {
    /// Committed: must be stored exactly once.
    committed: Vec<String>,
    /// The commit failed without saying whether it happened: stored at most once.
    unknown: Vec<String>,
    /// Writes refused while the database was down, with how long each took to fail.
    failures: Vec<Duration>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_loses_nothing_duplicates_nothing_and_deliveries_resume() {
    let Some(bin) = server_bin() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "no PostgreSQL server binaries under /usr/lib/postgresql, but CI=true: .ci/start-postgres installs them"
        );
        eprintln!(
            "SKIPPED the restart test: no PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin"
        );
        return;
    };
    let cluster = Cluster::start_new(bin);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&cluster.url())
        .await
        .expect("the private cluster answers");
    let outbox = Outbox::with_schema(pool, "t_restart").unwrap();
    outbox.migrate().await.unwrap();
    let kit = kit().await;
    let org = org(&kit);
    let relays: Vec<_> = (0..2)
        .map(|i| {
            relay(&outbox, &kit)
                .database_timeout(Duration::from_secs(1))
                .poll_interval(Duration::from_millis(100))
                .instance_id(format!("restart_{i}"))
                .start()
                .unwrap()
        })
        .collect();

    let written = Arc::new(Mutex::new(Written::default()));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (outbox, org, written, writing) = (outbox.clone(), org.clone(), written.clone(), writing.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let started = Instant::now();
                let attempt = async {
                    let mut tx = outbox.pool().begin().await.map_err(|e| (None, e.to_string()))?;
                    let key = outbox
                        .write(&mut tx, &org, &event(n))
                        .await
                        .map_err(|e| (None, e.to_string()))?;
                    tx.commit()
                        .await
                        .map_err(|e| (Some(key.clone()), e.to_string()))?;
                    Ok::<_, (Option<String>, String)>(key)
                };
                let result = tokio::time::timeout(Duration::from_secs(10), attempt)
                    .await
                    .expect("a write while the database is down fails, it does not hang");
                {
                    let mut w = written.lock().unwrap();
                    match result {
                        Ok(key) => w.committed.push(key),
                        Err((key, _)) => {
                            w.unknown.extend(key);
                            w.failures.push(started.elapsed());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let committed = || written.lock().unwrap().committed.len();
    wait_until(Duration::from_secs(20), "writes before the restart", || async {
        committed() >= 50
    })
    .await;

    cluster.stop();
    wait_until(Duration::from_secs(20), "writes to fail while down", || async {
        written.lock().unwrap().failures.len() >= 3
    })
    .await;
    cluster.start();
    let restarted = Instant::now();
    let before = committed();
    wait_until(Duration::from_secs(30), "writes after the restart", || async {
        committed() >= before + 50
    })
    .await;
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();

    wait_until(
        Duration::from_secs(30),
        "the outbox to drain after the restart",
        || async { outbox.stats().await.is_ok_and(|s| s.depth == 0) },
    )
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "deliveries resumed within seconds"
    );

    let w = std::mem::take(&mut *written.lock().unwrap());
    for took in &w.failures {
        assert!(*took < Duration::from_secs(5), "a write took {took:?} to fail");
    }
    let mut stored: HashMap<String, usize> = HashMap::new();
    for e in kit.events(org.as_str()) {
        *stored.entry(e.idempotency_key.clone().unwrap()).or_default() += 1;
    }
    let dup: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "stored twice: {dup:?}");
    let missing: Vec<_> = w.committed.iter().filter(|k| !stored.contains_key(*k)).collect();
    assert!(missing.is_empty(), "committed but never stored: {missing:?}");
    let allowed: HashSet<&String> = w.committed.iter().chain(&w.unknown).collect();
    assert!(
        stored.keys().all(|k| allowed.contains(k)),
        "stored events nobody wrote"
    );
    drop(w);
    for r in relays {
        let report = r.shutdown(Duration::from_secs(5)).await;
        assert!(report.clean, "{report:?}");
    }
}
