//! Relays: the tasks of one instance that claim due rows, deliver them and record the outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use audit_core::delivery::{self, Facts, Verdict as Decision};
use audit_core::emitter::{DeadLetterError, DeadLetterReason};
use audit_core::{CreateEvent, Error, Event, OrganizationId, RetryPolicy, Sink};
use futures_util::{FutureExt, StreamExt};
use sqlx::{PgConnection, Row};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::rate::{FleetRateLimit, RateLimitKey};
use crate::wake::{FAST_POLL, FAST_WINDOW};
use crate::{Outbox, OutboxError};

/// Configures the relays of one instance. Made by [`Outbox::relay`].
///
/// Defaults: 2 tasks claiming up to 64 rows each, at most 16 requests in flight, a 30 s lease
/// (extended while a row is worked on), a 1 s idle poll, backoff from 500 ms doubling to 30 s with
/// full jitter, `Retry-After` honoured up to 10 minutes, a one-hour retry window,
/// [`FleetRateLimit::workos`] on the bucket [`RateLimitKey::default`], 10 s for any database
/// statement, connections recycled every 10 minutes, authorization probes every 30 s to 5 minutes.
pub struct RelayBuilder {
    outbox: Outbox,
    sink: Arc<dyn Sink>,
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    tasks: usize,
    batch: usize,
    in_flight: usize,
    lease: Duration,
    poll: Duration,
    retry: RetryPolicy,
    retry_window: Duration,
    rate_limit: Option<FleetRateLimit>,
    bucket: RateLimitKey,
    instance: String,
    db_timeout: Duration,
    recycle: Duration,
    probe_initial: Duration,
    probe_max: Duration,
    hold_alert: Duration,
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every setting; the outbox's pool and the sink are left out.
        f.debug_struct("RelayBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long recorded outcomes wait for the other attempts of their batch before they are written
/// (one statement for all that finished meanwhile).
const RECORD_LINGER: Duration = Duration::from_millis(5);

/// How long a 429 without `Retry-After` pauses the fleet's bucket: the row's own backoff, at least
/// this.
const MIN_429_PAUSE: Duration = Duration::from_secs(1);

impl RelayBuilder {
    /// Default [`auth_hold_alert`](Self::auth_hold_alert): 15 minutes, as the emitter's.
    pub const DEFAULT_AUTH_HOLD_ALERT: Duration = Duration::from_secs(15 * 60);

    pub(crate) fn new(outbox: Outbox, sink: Arc<dyn Sink>) -> Self {
        Self {
            outbox,
            sink,
            config: Config {
                tasks: 2,
                batch: 64,
                in_flight: 16,
                lease: Duration::from_secs(30),
                poll: Duration::from_secs(1),
                retry: RetryPolicy::standard()
                    .with_max_retries(u32::MAX)
                    .with_max_retry_after(Duration::from_secs(600)),
                retry_window: Duration::from_secs(3600),
                rate_limit: Some(FleetRateLimit::workos()),
                bucket: RateLimitKey::default(),
                instance: uuid::Uuid::new_v4().simple().to_string(),
                db_timeout: Duration::from_secs(10),
                recycle: Duration::from_secs(600),
                probe_initial: Duration::from_secs(30),
                probe_max: Duration::from_secs(300),
                hold_alert: Self::DEFAULT_AUTH_HOLD_ALERT,
            },
        }
    }

    /// How many relay tasks this instance runs (default 2, at least 1). Each claims a batch,
    /// delivers it concurrently and records the outcomes; while one records, the others send.
    pub fn tasks(mut self, tasks: usize) -> Self {
        self.config.tasks = tasks.max(1);
        self
    }

    /// The most rows one task claims at once (default 64, at least 1; at most 10,000). A larger
    /// batch costs the database less per event; its rows are sent
    /// [`max_in_flight`](Self::max_in_flight) at a time.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.config.batch = batch.clamp(1, 10_000);
        self
    }

    /// The most delivery requests this instance has in flight at once, all tasks together
    /// (default 16, at least 1). Rows of a claimed batch beyond it wait for a free slot; a row
    /// still waiting when half its [lease](Self::lease) has gone by is given back unsent.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.config.in_flight = requests.max(1);
        self
    }

    /// How long a claim lasts without news from its relay (default 30 s, at least 30 ms). While
    /// a relay works on its rows it extends their leases every third of it, so a lease never ends
    /// under a request in flight, however slow; it only ends when the relay stopped (a killed
    /// instance, a database it cannot reach), and then other relays take the rows over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// The idle poll (default 1 s, at least 10 ms): how often a relay with nothing to do looks
    /// for rows written by other processes. Rows written by this process wake its relays at once
    /// (see the crate documentation, "Running several instances").
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.config.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Exponential backoff between attempts of one row: up to `initial · 2ⁿ`, at most `max`
    /// (defaults 500 ms and 30 s), with full jitter. The wait is stored in the row, so every
    /// instance honours it.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry = self
            .config
            .retry
            .clone()
            .with_initial_backoff(initial)
            .with_max_backoff(max.max(initial));
        self
    }

    /// The longest `Retry-After` honoured (default 10 minutes).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config.retry = self.config.retry.clone().with_max_retry_after(max);
        self
    }

    /// How long one row is retried from its first attempt (default one hour, as the emitter's:
    /// far inside the 24 hours WorkOS remembers an idempotency key). Then it becomes a dead
    /// letter with [`DeadLetterReason::RetryWindowExhausted`]. Attempts refused for the key's
    /// authorization (401/403) do not count.
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.config.retry_window = window;
        self
    }

    /// The fleet-wide rate limit (default [`FleetRateLimit::workos`]): a [`FleetRateLimit`] or
    /// the emitter's [`RateLimit`](audit_core::emitter::RateLimit), the same figures shared by
    /// the fleet. Give every instance using one API key the same limit and
    /// [`rate_limit_key`](Self::rate_limit_key).
    pub fn rate_limit(mut self, limit: impl Into<FleetRateLimit>) -> Self {
        self.config.rate_limit = Some(limit.into());
        self
    }

    /// No fleet-wide token bucket (a local server, tests). A 429 and an authorization hold still
    /// pause every relay on the same [`rate_limit_key`](Self::rate_limit_key).
    pub fn no_rate_limit(mut self) -> Self {
        self.config.rate_limit = None;
        self
    }

    /// The bucket this instance's relays share with the fleet (default [`RateLimitKey::default`]).
    pub fn rate_limit_key(mut self, key: RateLimitKey) -> Self {
        self.config.bucket = key;
        self
    }

    /// The name this instance's claims carry in `audit_outbox.lease_owner` (default a random
    /// UUID; up to 100 characters).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        let mut id = id.into();
        id.truncate(id.char_indices().nth(100).map_or(id.len(), |(i, _)| i));
        self.config.instance = id;
        self
    }

    /// The longest a relay's database statement may take (default 10 s, at least 100 ms): set as
    /// the connection's `statement_timeout` and enforced by the relay itself, so that a
    /// half-open connection after a failover (no answer, no error) costs one timeout, after which
    /// the connection is replaced.
    pub fn database_timeout(mut self, timeout: Duration) -> Self {
        self.config.db_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// How long a relay keeps one database connection (default 10 minutes, at least 1 s): then
    /// it opens a new one, so that relays follow a failover or a changed DNS name even when their
    /// old connection still works.
    pub fn recycle_connections(mut self, every: Duration) -> Self {
        self.config.recycle = every.max(Duration::from_secs(1));
        self
    }

    /// While WorkOS refuses the API key (401/403) the fleet holds: one row probes, first after
    /// `initial`, then after as long as the hold has lasted, at most `max` (defaults 30 s and
    /// 5 minutes, as the emitter's).
    pub fn auth_probe_interval(mut self, initial: Duration, max: Duration) -> Self {
        self.config.probe_initial = initial.max(Duration::from_millis(10));
        self.config.probe_max = max.max(self.config.probe_initial);
        self
    }

    /// How long an authorization hold lasts before every failed probe logs
    /// `AUDIT DELIVERY STOPPED` at error level (default
    /// [`DEFAULT_AUTH_HOLD_ALERT`](Self::DEFAULT_AUTH_HOLD_ALERT)); shorter holds log each
    /// probe at error level too, without the alert.
    pub fn auth_hold_alert(mut self, limit: Duration) -> Self {
        self.config.hold_alert = limit;
        self
    }

    /// Starts the relay tasks on the current tokio runtime, each under a supervisor that
    /// restarts it should it die.
    pub fn start(self) -> Result<Relay, OutboxError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OutboxError::NoRuntime)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            outbox: self.outbox,
            sink: self.sink,
            counters: Counters::default(),
            in_flight: Semaphore::new(self.config.in_flight),
            paused_until: std::sync::Mutex::new(None),
            last_delivery: std::sync::Mutex::new(None),
            config: self.config,
        });
        let tasks = (0..shared.config.tasks)
            .map(|_| runtime.spawn(supervise(shared.clone(), stop_rx.clone())))
            .collect();
        Ok(Relay {
            shared,
            stop: stop_tx,
            tasks,
        })
    }
}

/// The running relays of one instance. Dropping it stops them at once (claimed rows are taken
/// over when their lease ends); [`shutdown`](Self::shutdown) lets deliveries in flight finish.
pub struct Relay {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("instance", &self.shared.config.instance)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What one instance's relays did since they started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Rows claimed (a row retried three times counts three times).
    pub claimed: u64,
    /// Events delivered (acknowledged by the sink) and deleted.
    pub delivered: u64,
    /// Failed attempts scheduled for another try.
    pub retried: u64,
    /// Rows moved to the dead-letter table.
    pub dead_lettered: u64,
    /// 429 answers that paused the fleet (counted once the pause is recorded in the database).
    pub rate_limited: u64,
    /// Database errors met, timeouts included (each followed by a backoff and a new connection).
    pub database_errors: u64,
    /// Claimed rows given back unsent: no request slot freed up within half their lease, or the
    /// batch stopped at a 429 or a refused key.
    pub released: u64,
    /// Attempts refused for the key's authorization (401/403), the probes of a hold included.
    pub unauthorized: u64,
    /// Panics of the sink, caught and counted as failed attempts (retried like a timeout).
    pub sink_panics: u64,
    /// Relay tasks that died (a panic outside the sink) and were restarted.
    pub restarts: u64,
    /// Relay tasks running now.
    pub live_tasks: u64,
}

/// What [`Relay::shutdown`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The instance's totals.
    pub stats: RelayStats,
    /// Tasks still running at the deadline, then aborted (their claimed rows wait for their
    /// lease to end).
    pub aborted: usize,
    /// Whether every task finished before the deadline and none ever died
    /// ([`RelayStats::restarts`] is 0): `aborted == 0 && stats.restarts == 0`.
    pub clean: bool,
}

impl Relay {
    /// The instance's name, as stored in `audit_outbox.lease_owner`.
    pub fn instance_id(&self) -> &str {
        &self.shared.config.instance
    }

    /// What this instance's relays did so far.
    pub fn stats(&self) -> RelayStats {
        self.shared.counters.snapshot()
    }

    /// Wakes the idle relay tasks to look for due rows now (and keep looking for a moment).
    pub fn wake(&self) {
        self.shared.outbox.wake().signal();
    }

    /// Stops claiming, lets the batches in flight finish within `timeout`, then stops.
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut aborted = 0;
        for (task, abort) in tasks.into_iter().zip(&aborts) {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                aborted += 1;
            }
        }
        let stats = self.stats();
        ShutdownReport {
            stats,
            aborted,
            clean: aborted == 0 && stats.restarts == 0,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Shared {
    outbox: Outbox,
    sink: Arc<dyn Sink>,
    config: Config,
    counters: Counters,
    /// One permit per delivery request in flight.
    in_flight: Semaphore,
    /// Until when this instance sends nothing after a 429 (its batches in flight stop at once;
    /// other instances stop at their next claim, through the bucket's pause).
    paused_until: std::sync::Mutex<Option<Instant>>,
    /// When this instance last had an event accepted.
    last_delivery: std::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    rate_limited: AtomicU64,
    database_errors: AtomicU64,
    released: AtomicU64,
    unauthorized: AtomicU64,
    sink_panics: AtomicU64,
    restarts: AtomicU64,
    live_tasks: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RelayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayStats {
            claimed: get(&self.claimed),
            delivered: get(&self.delivered),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            rate_limited: get(&self.rate_limited),
            database_errors: get(&self.database_errors),
            released: get(&self.released),
            unauthorized: get(&self.unauthorized),
            sink_panics: get(&self.sink_panics),
            restarts: get(&self.restarts),
            live_tasks: get(&self.live_tasks),
        }
    }
}

fn add(counter: &AtomicU64, n: usize, _name: &'static str) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
    #[cfg(feature = "metrics")]
    metrics::counter!(_name).increment(n as u64);
}

/// Waits for `d`, or until told to stop; `false` when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Aborts the task when dropped: a supervisor aborted at shutdown takes its task with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts a task as live while it exists (unwinding included).
struct Live(Arc<Shared>);

impl Live {
    fn new(shared: Arc<Shared>) -> Self {
        shared.counters.live_tasks.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.counters.live_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one relay task, restarting it after a panic (after a short pause, longer after each
/// restart in a row), until told to stop.
async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut deaths = 0u32;
    loop {
        let mut task = AbortOnDrop(tokio::spawn(run(shared.clone(), stop.clone())));
        let started = Instant::now();
        match (&mut task.0).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                add(&shared.counters.restarts, 1, "audit_outbox_relay_restarts_total");
                deaths = if started.elapsed() > Duration::from_secs(60) {
                    1
                } else {
                    deaths.saturating_add(1)
                };
                let wait = Duration::from_millis(100 * 2u64.pow(deaths.min(6)));
                tracing::error!(
                    panic = %panic_message(e.into_panic().as_ref()),
                    restart_in = ?wait,
                    "audit outbox relay task panicked; restarting it (its claimed rows are retaken when their lease ends)"
                );
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// `$fut` (a database statement) within the relay's database timeout, as a [`DbError`]. A
/// macro, not a generic async function: the compiler cannot prove the latter `Send` for the
/// statements' borrowed connections.
macro_rules! db {
    ($shared:expr, $fut:expr $(,)?) => {{
        // Boxed: an erased future keeps the compiler's `Send` check of the tasks simple.
        let fut: futures_util::future::BoxFuture<'_, Result<_, sqlx::Error>> = Box::pin($fut);
        match tokio::time::timeout($shared.config.db_timeout, fut).await {
            Ok(r) => r.map_err(DbError::from),
            Err(_) => Err(DbError::Timeout($shared.config.db_timeout)),
        }
    }};
}

/// A failed database step.
#[derive(Debug)]
enum DbError {
    Sql(sqlx::Error),
    /// No answer within the database timeout.
    Timeout(Duration),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sql(e) => e.fmt(f),
            Self::Timeout(d) => write!(f, "no answer from PostgreSQL within {d:?} (database_timeout)"),
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

enum Step {
    /// Delivered a batch: look again at once.
    Worked,
    /// Nothing due: wait for a local write, at most this long.
    Idle(Duration),
    /// Rate limited, paused by a 429 or held: wait this long (local writes do not help).
    Throttled(Duration),
}

/// A task's connection and when it was opened.
struct Conn {
    conn: PgConnection,
    opened: Instant,
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _live = Live::new(shared.clone());
    let wake = shared.outbox.inner_wake();
    let mut failures = 0u32;
    let mut bucket_ready = false;
    let mut conn: Option<Conn> = None;
    let mut fast_until: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let waiter = wake.waiter();
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if conn
            .as_ref()
            .is_some_and(|c| c.opened.elapsed() >= shared.config.recycle)
        {
            conn = None;
        }
        // A batch in flight is not interrupted by a stop: shutdown waits for it (up to its
        // deadline), so its outcomes are recorded instead of waiting for the lease to end.
        let step: futures_util::future::BoxFuture<'_, Result<Step, DbError>> = Box::pin(async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(Conn {
                    conn: shared.connect().await?,
                    opened: Instant::now(),
                }),
            };
            if !bucket_ready {
                db!(shared, shared.ensure_bucket(&mut c.conn))?;
                bucket_ready = true;
            }
            shared.step(&mut c.conn).await
        });
        let step = step.await;
        if step.is_err() {
            // A broken connection is replaced; a working one is reopened at little cost.
            conn = None;
        }
        match step {
            Ok(Step::Worked) => failures = 0,
            Ok(Step::Idle(wait)) => {
                failures = 0;
                let fast = fast_until.is_some_and(|until| Instant::now() < until);
                let wait = wait.min(if fast { FAST_POLL } else { shared.config.poll });
                tokio::select! {
                    _ = notified => fast_until = Some(Instant::now() + FAST_WINDOW),
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            Ok(Step::Throttled(wait)) => {
                failures = 0;
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
            Err(e) => {
                add(
                    &shared.counters.database_errors,
                    1,
                    "audit_outbox_database_errors_total",
                );
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(50 * 2u64.pow(failures.min(7)))
                    .min(shared.config.poll.max(Duration::from_secs(1)));
                tracing::warn!(error = %e, retry_in = ?wait, "audit outbox relay: database error");
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
        }
        drop(waiter);
    }
}

/// One claimed row.
struct Claimed {
    id: i64,
    claims: i64,
    key: String,
    attempts: i32,
    /// Seconds since the row's first attempt (0 before its first).
    age: f64,
    body: Result<CreateEvent, String>,
}

/// What to do with a row after its attempt.
enum Verdict {
    Delivered,
    Retry {
        after: Duration,
        error: String,
    },
    Dead {
        reason: DeadLetterReason,
        error: DeadLetterError,
    },
    /// Refused for the key's authorization: the row waits for the hold to end.
    Unauthorized {
        error: String,
    },
    /// Not sent: half the lease went by while the row waited for a request slot, or the batch
    /// stopped (a 429, a refused key). It is given back, due now.
    Released,
}

/// A verdict and when its attempt started.
struct Outcome2 {
    index: usize,
    verdict: Verdict,
    started: Instant,
}

impl Shared {
    fn bucket(&self) -> &str {
        self.config.bucket.as_str()
    }

    /// The task's own connection, taken from the pool for good (the pool opens a replacement),
    /// with `synchronous_commit` off: the relay's statements (claims, deletes, backoffs) then
    /// commit without waiting for the WAL flush. A crash can lose the last few of them, which
    /// only means a row is sent again with its key, and WorkOS stores it once; rows written by
    /// the application are not affected. Its `statement_timeout` is the database timeout, and
    /// TCP keepalives let the server notice a relay that vanished.
    async fn connect(&self) -> Result<PgConnection, DbError> {
        let mut conn = db!(self, self.outbox.pool().acquire())?.detach();
        let timeout_ms = self.config.db_timeout.as_millis().to_string();
        db!(
            self,
            sqlx::query(
                "SELECT set_config('synchronous_commit', 'off', false), \
                        set_config('statement_timeout', $1, false), \
                        set_config('idle_in_transaction_session_timeout', $1, false), \
                        set_config('tcp_keepalives_idle', '10', false), \
                        set_config('tcp_keepalives_interval', '5', false), \
                        set_config('tcp_keepalives_count', '3', false), \
                        set_config('application_name', 'audit-outbox-relay', false)"
            )
            .bind(&timeout_ms)
            .execute(&mut conn)
        )?;
        Ok(conn)
    }

    async fn ensure_bucket(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let burst = self.config.rate_limit.map_or(0.0, |l| f64::from(l.max_burst()));
        sqlx::query(&self.outbox.queries().ensure_bucket)
            .bind(self.bucket())
            .bind(burst)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The rate and burst bound to the bucket statements: the limit's, or figures no claim
    /// reaches when there is none (the statement still honours pauses and holds).
    fn limit(&self) -> (f64, f64) {
        self.config
            .rate_limit
            .map_or((1e12, 1e12), |l| (l.rate(), f64::from(l.max_burst())))
    }

    /// How many rows this task may send now (and whether the key is held, so that this claim is
    /// the probe), or how long to wait.
    async fn tokens(
        &self,
        conn: &mut PgConnection,
        want: usize,
    ) -> Result<Result<(usize, bool), Duration>, DbError> {
        let q = self.outbox.queries();
        let (rate, burst) = self.limit();
        let row = db!(
            self,
            sqlx::query(&q.take_tokens)
                .bind(self.bucket())
                .bind(want as i64)
                .bind(rate)
                .bind(burst)
                .bind(self.config.probe_initial.as_secs_f64())
                .fetch_optional(&mut *conn),
        )?;
        let Some(row) = row else {
            // The bucket row was deleted under us: recreate it.
            db!(self, self.ensure_bucket(conn))?;
            return Ok(Err(Duration::ZERO));
        };
        let granted: i64 = row.try_get(0).map_err(DbError::Sql)?;
        let tokens: f64 = row.try_get(1).map_err(DbError::Sql)?;
        let paused: f64 = row.try_get(2).map_err(DbError::Sql)?;
        let held: f64 = row.try_get(3).map_err(DbError::Sql)?;
        if granted > 0 {
            Ok(Ok((usize::try_from(granted).unwrap_or(0), held >= 0.0)))
        } else if paused > 0.0 {
            Ok(Err(secs(paused)))
        } else {
            Ok(Err(secs((1.0 - tokens).max(0.001) / rate)))
        }
    }

    /// Gives `tokens` taken but not used back to the fleet's bucket (nothing without a limit).
    async fn refund(&self, conn: &mut PgConnection, tokens: usize) -> Result<(), DbError> {
        if let Some(limit) = self.config.rate_limit
            && tokens > 0
        {
            db!(
                self,
                sqlx::query(&self.outbox.queries().refund_tokens)
                    .bind(self.bucket())
                    .bind(tokens as f64)
                    .bind(f64::from(limit.max_burst()))
                    .execute(conn),
            )?;
        }
        Ok(())
    }

    async fn step(&self, conn: &mut PgConnection) -> Result<Step, DbError> {
        let q = self.outbox.queries();
        let (granted, probing) = match self.tokens(conn, self.config.batch).await? {
            Ok(n) => n,
            Err(wait) => return Ok(Step::Throttled(wait)),
        };
        let rows = db!(
            self,
            sqlx::query(&q.claim)
                .bind(&self.config.instance)
                .bind(self.config.lease.as_secs_f64())
                .bind(granted as i64)
                // A probe took the hold's slot, which paused the bucket: it claims anyway.
                .bind((!probing).then(|| self.bucket()))
                .fetch_all(&mut *conn),
        )?;
        self.refund(conn, granted.saturating_sub(rows.len())).await?;
        if rows.is_empty() {
            let paused: Option<f64> = db!(
                self,
                sqlx::query_scalar(&q.pause_left)
                    .bind(self.bucket())
                    .fetch_optional(&mut *conn),
            )?;
            if let Some(left) = paused.filter(|left| *left > 0.0)
                && !probing
            {
                return Ok(Step::Throttled(secs(left)));
            }
            let next: Option<f64> = db!(self, sqlx::query_scalar(&q.next_due).fetch_one(&mut *conn))?;
            // A due row that could not be claimed is locked by someone else's transaction:
            // look again shortly, not in a busy loop.
            let wait = next.map_or(self.config.poll, |s| secs(s.max(0.02)));
            return Ok(Step::Idle(wait));
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let org: String = row.try_get(2).map_err(DbError::Sql)?;
            let event: String = row.try_get(4).map_err(DbError::Sql)?;
            let body = OrganizationId::new(org)
                .map_err(|e| e.to_string())
                .and_then(|org| {
                    serde_json::from_str::<Event>(&event)
                        .map(|event| CreateEvent::new(org, event))
                        .map_err(|e| e.to_string())
                });
            claimed.push(Claimed {
                id: row.try_get(0).map_err(DbError::Sql)?,
                claims: row.try_get(1).map_err(DbError::Sql)?,
                key: row.try_get(3).map_err(DbError::Sql)?,
                attempts: row.try_get(5).map_err(DbError::Sql)?,
                age: row
                    .try_get::<Option<f64>, _>(6)
                    .map_err(DbError::Sql)?
                    .unwrap_or(0.0),
                body,
            });
        }
        add(
            &self.counters.claimed,
            claimed.len(),
            "audit_outbox_claimed_total",
        );
        // Boxed: an erased, `Send` future keeps the compiler's lifetime check of the spawned
        // task simple.
        let delivered: futures_util::future::BoxFuture<'_, Result<(), DbError>> =
            Box::pin(self.deliver(conn, &claimed, probing));
        delivered.await?;
        Ok(Step::Worked)
    }

    /// Sends the claimed rows concurrently and records each outcome as its attempt returns
    /// (outcomes that return together share a statement), extending the leases of the rows still
    /// in flight every third of the lease.
    async fn deliver(&self, conn: &mut PgConnection, rows: &[Claimed], probing: bool) -> Result<(), DbError> {
        let send_by = Instant::now() + self.config.lease / 2;
        let stopped = AtomicBool::new(false);
        // Boxed: the attempts borrow the batch, which the compiler cannot prove `Send` for every
        // lifetime otherwise.
        let pending =
            futures_util::stream::FuturesUnordered::<futures_util::future::BoxFuture<'_, Outcome2>>::new();
        for (index, row) in rows.iter().enumerate() {
            pending.push(Box::pin(
                self.timed_attempt(index, row, send_by, &stopped, probing),
            ));
        }
        let mut pending = pending;
        let mut open: Vec<bool> = vec![true; rows.len()];
        let every = self.config.lease / 3;
        let mut extend_at = tokio::time::Instant::now() + every;
        let mut done = Vec::new();
        let mut result = Ok(());
        while !pending.is_empty() {
            tokio::select! {
                Some(first) = pending.next() => {
                    done.push(first);
                    // The others of the batch that finish within the linger go with it.
                    let linger = tokio::time::sleep(RECORD_LINGER);
                    tokio::pin!(linger);
                    loop {
                        tokio::select! {
                            Some(next) = pending.next() => done.push(next),
                            _ = &mut linger => break,
                            else => break,
                        }
                    }
                    while let Some(Some(next)) = pending.next().now_or_never() {
                        done.push(next);
                    }
                    for o in &done {
                        open[o.index] = false;
                    }
                    if result.is_ok() {
                        result = self.record(conn, rows, std::mem::take(&mut done)).await;
                    } else {
                        done.clear();
                    }
                }
                _ = tokio::time::sleep_until(extend_at), if result.is_ok() => {
                    extend_at = tokio::time::Instant::now() + every;
                    let (ids, claims): (Vec<i64>, Vec<i64>) = rows
                        .iter()
                        .zip(&open)
                        .filter(|(_, open)| **open)
                        .map(|(r, _)| (r.id, r.claims))
                        .unzip();
                    if !ids.is_empty() {
                        result = db!(self,
                                sqlx::query(&self.outbox.queries().extend)
                                    .bind(&ids)
                                    .bind(&claims)
                                    .bind(self.config.lease.as_secs_f64())
                                    .execute(&mut *conn),
                            )
                            .map(drop);
                    }
                }
            }
        }
        result
    }

    /// [`attempt`](Self::attempt), and when it started.
    async fn timed_attempt(
        &self,
        index: usize,
        row: &Claimed,
        send_by: Instant,
        stopped: &AtomicBool,
        probing: bool,
    ) -> Outcome2 {
        let started = Instant::now();
        let verdict = self.attempt(row, send_by, stopped, probing).await;
        Outcome2 {
            index,
            verdict,
            started,
        }
    }

    /// Sends one row once, unless no request slot frees up before `send_by` or the batch was
    /// stopped, and decides what happens to it.
    async fn attempt(&self, row: &Claimed, send_by: Instant, stopped: &AtomicBool, probing: bool) -> Verdict {
        let body = match &row.body {
            Ok(body) => body,
            Err(e) => {
                return Verdict::Dead {
                    reason: DeadLetterReason::Refused,
                    error: dead_error(&format!("the stored event could not be read: {e}")),
                };
            }
        };
        // Never closed: an error cannot happen, and would only mean sending without a permit.
        let permit = self.in_flight.acquire().await.ok();
        if Instant::now() > send_by || stopped.load(Ordering::Acquire) || self.locally_paused() {
            return Verdict::Released;
        }
        let started = Instant::now();
        // The call and its future both: a sink may panic in either.
        let sent = AssertUnwindSafe(async { self.sink.send(body, &row.key).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                add(&self.counters.sink_panics, 1, "audit_outbox_sink_panics_total");
                let message = panic_message(panic.as_ref());
                tracing::error!(panic = %message, "audit outbox relay: the sink panicked; the row is retried");
                Err(Error::Panicked {
                    what: "the sink",
                    message,
                })
            });
        drop(permit);
        let error = match sent {
            Ok(()) => {
                *audit_core::sync::lock(&self.last_delivery) = Some(Instant::now());
                if probing {
                    self.end_hold().await;
                }
                return Verdict::Delivered;
            }
            Err(e) => e,
        };
        // The one decision the emitter's senders apply too: the relay only carries it out.
        let facts = Facts::new(
            u32::try_from(row.attempts).unwrap_or(0).saturating_add(1),
            secs(row.age),
            self.config.retry_window,
        )
        .with_others_accepted(self.accepted_since(secs(row.age) + started.elapsed()));
        match delivery::decide(Err(&error), &facts, &self.config.retry, rand::random::<f64>) {
            Decision::Delivered => Verdict::Delivered,
            Decision::Retry { after, slow_down } => {
                if slow_down {
                    // WorkOS asked to slow down: the whole fleet waits, and this batch (and the
                    // instance's others) sends nothing more.
                    stopped.store(true, Ordering::Release);
                    let wait = after.max(MIN_429_PAUSE);
                    *audit_core::sync::lock(&self.paused_until) = Some(Instant::now() + wait);
                    self.pause_fleet(wait).await;
                }
                Verdict::Retry {
                    after,
                    error: error.to_string(),
                }
            }
            // A refused key is the application's to fix: the fleet holds and one row probes,
            // instead of every row being retried and dead-lettered by the thousand.
            Decision::HoldForAuthorization => {
                stopped.store(true, Ordering::Release);
                add(&self.counters.unauthorized, 1, "audit_outbox_unauthorized_total");
                self.hold(&error).await;
                Verdict::Unauthorized {
                    error: error.to_string(),
                }
            }
            Decision::DeadLetter(reason) => Verdict::Dead {
                reason,
                error: (&error).into(),
            },
        }
    }

    /// Whether this instance delivered an event within the last `within`: a 403 then concerns
    /// the event's organization, not the key.
    fn accepted_since(&self, within: Duration) -> bool {
        audit_core::sync::lock(&self.last_delivery).is_some_and(|at| at.elapsed() <= within)
    }

    /// Whether a 429 met by this instance still pauses it.
    fn locally_paused(&self) -> bool {
        audit_core::sync::lock(&self.paused_until).is_some_and(|until| Instant::now() < until)
    }

    async fn pause_fleet(&self, after: Duration) {
        let paused = db!(
            self,
            sqlx::query(&self.outbox.queries().pause)
                .bind(self.bucket())
                .bind(after.as_secs_f64())
                .execute(self.outbox.pool()),
        );
        match paused {
            Ok(_) => add(&self.counters.rate_limited, 1, "audit_outbox_rate_limited_total"),
            Err(e) => {
                tracing::warn!(error = %e, "audit outbox relay: could not record a 429 pause for the fleet");
            }
        }
    }

    /// Starts or continues the fleet's authorization hold, and says so loudly.
    async fn hold(&self, error: &Error) {
        let held = db!(
            self,
            sqlx::query_scalar::<_, f64>(&self.outbox.queries().hold)
                .bind(self.bucket())
                .bind(self.config.probe_initial.as_secs_f64())
                .bind(self.config.probe_max.as_secs_f64())
                .fetch_optional(self.outbox.pool()),
        );
        match held {
            Ok(held) => {
                let held_for = secs(held.unwrap_or(0.0));
                if held_for > self.config.hold_alert {
                    tracing::error!(
                        status = error.status(),
                        error = %error,
                        held_for_s = held_for.as_secs(),
                        limit_s = self.config.hold_alert.as_secs(),
                        "AUDIT DELIVERY STOPPED: WorkOS has refused the API key for longer than the hold limit; \
                         events are kept in the outbox but none is delivered: fix WORKOS_API_KEY"
                    );
                } else {
                    tracing::error!(
                        status = error.status(),
                        error = %error,
                        held_for_s = held_for.as_secs(),
                        "WorkOS refuses the API key: audit outbox delivery is held (one probe at a time)"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit outbox relay: could not record the authorization hold");
            }
        }
    }

    /// A probe went through: the fleet sends again.
    async fn end_hold(&self) {
        let ended = db!(
            self,
            sqlx::query(&self.outbox.queries().unhold)
                .bind(self.bucket())
                .execute(self.outbox.pool()),
        );
        match ended {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::warn!("WorkOS accepts the API key again: audit outbox delivery resumed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit outbox relay: could not end the authorization hold"),
        }
    }

    /// Records the outcomes of attempts that returned: one statement per kind.
    async fn record(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed],
        outcomes: Vec<Outcome2>,
    ) -> Result<(), DbError> {
        let q = self.outbox.queries();
        let mut delivered = Vec::new();
        let (mut retry_ids, mut retry_claims, mut retry_delays, mut retry_errors, mut retry_ago) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut dead_ids, mut dead_claims, mut dead_reasons, mut dead_errors, mut dead_ago) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut held_ids, mut held_claims, mut held_errors, mut held_ago) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut released_ids, mut released_claims) = (Vec::new(), Vec::new());
        for Outcome2 {
            index,
            verdict,
            started,
        } in outcomes
        {
            let row = &rows[index];
            let ago = started.elapsed().as_secs_f64();
            match verdict {
                Verdict::Delivered => delivered.push(row.id),
                Verdict::Released => {
                    released_ids.push(row.id);
                    released_claims.push(row.claims);
                }
                Verdict::Retry { after, error } => {
                    retry_ids.push(row.id);
                    retry_claims.push(row.claims);
                    retry_delays.push(after.as_secs_f64());
                    retry_errors.push(error);
                    retry_ago.push(ago);
                }
                Verdict::Unauthorized { error } => {
                    held_ids.push(row.id);
                    held_claims.push(row.claims);
                    held_errors.push(error);
                    held_ago.push(ago);
                }
                Verdict::Dead { reason, error } => {
                    tracing::error!(
                        idempotency_key = %row.key,
                        reason = %reason,
                        error = %error.message,
                        "audit outbox: event moved to the dead-letter table"
                    );
                    dead_ids.push(row.id);
                    dead_claims.push(row.claims);
                    dead_reasons.push(reason.as_str().to_owned());
                    dead_errors.push(serde_json::to_string(&error).unwrap_or_default());
                    dead_ago.push(ago);
                }
            }
        }
        if !delivered.is_empty() {
            db!(self, sqlx::query(&q.delete).bind(&delivered).execute(&mut *conn))?;
            add(
                &self.counters.delivered,
                delivered.len(),
                "audit_outbox_delivered_total",
            );
        }
        if !retry_ids.is_empty() {
            db!(
                self,
                sqlx::query(&q.retry)
                    .bind(&retry_ids)
                    .bind(&retry_claims)
                    .bind(&retry_delays)
                    .bind(&retry_errors)
                    .bind(&retry_ago)
                    .execute(&mut *conn),
            )?;
            add(
                &self.counters.retried,
                retry_ids.len(),
                "audit_outbox_retried_total",
            );
        }
        if !held_ids.is_empty() {
            db!(
                self,
                sqlx::query(&q.unauthorized)
                    .bind(&held_ids)
                    .bind(&held_claims)
                    .bind(&held_errors)
                    .bind(&held_ago)
                    .execute(&mut *conn),
            )?;
        }
        if !dead_ids.is_empty() {
            db!(
                self,
                sqlx::query(&q.dead)
                    .bind(&dead_ids)
                    .bind(&dead_claims)
                    .bind(&dead_reasons)
                    .bind(&dead_errors)
                    .bind(&dead_ago)
                    .execute(&mut *conn),
            )?;
            add(
                &self.counters.dead_lettered,
                dead_ids.len(),
                "audit_outbox_dead_lettered_total",
            );
        }
        if !released_ids.is_empty() {
            db!(
                self,
                sqlx::query(&q.release)
                    .bind(&released_ids)
                    .bind(&released_claims)
                    .execute(&mut *conn),
            )?;
            add(
                &self.counters.released,
                released_ids.len(),
                "audit_outbox_released_total",
            );
            // Their tokens were taken but no request was made: they go back to the fleet.
            self.refund(conn, released_ids.len()).await?;
        }
        Ok(())
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.clamp(0.0, 86_400.0)).unwrap_or(Duration::ZERO)
}

fn dead_error(message: &str) -> DeadLetterError {
    let err = Error::InvalidParameter {
        field: "event",
        message: message.to_owned(),
    };
    (&err).into()
}
