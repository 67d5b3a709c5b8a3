//! Relays: the tasks of one instance that claim due rows, deliver them and record the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use audit_core::emitter::{DeadLetterError, DeadLetterReason};
use audit_core::retry::{Decision, Disposition, GiveUp, Outcome, classify};
use audit_core::{CreateEvent, Error, Event, OrganizationId, RetryPolicy, Sink};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Row};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::rate::{FleetRateLimit, RateLimitKey};
use crate::{Outbox, OutboxError};

/// Configures the relays of one instance. Made by [`Outbox::relay`].
///
/// Defaults: 2 tasks claiming up to 64 rows each, at most 16 requests in flight, a 30 s lease,
/// a 5 s fallback poll, backoff from 500 ms doubling to 30 s with full jitter, `Retry-After`
/// honoured up to 10 minutes, a one-hour retry window, [`FleetRateLimit::workos`] on the bucket
/// [`RateLimitKey::default`].
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
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every setting; the outbox's pool and the sink are left out.
        f.debug_struct("RelayBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RelayBuilder {
    pub(crate) fn new(outbox: Outbox, sink: Arc<dyn Sink>) -> Self {
        Self {
            outbox,
            sink,
            config: Config {
                tasks: 2,
                batch: 64,
                in_flight: 16,
                lease: Duration::from_secs(30),
                poll: Duration::from_secs(5),
                retry: RetryPolicy::standard()
                    .with_max_retries(u32::MAX)
                    .with_max_retry_after(Duration::from_secs(600)),
                retry_window: Duration::from_secs(3600),
                rate_limit: Some(FleetRateLimit::workos()),
                bucket: RateLimitKey::default(),
                instance: uuid::Uuid::new_v4().simple().to_string(),
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
    /// batch costs the database less per event (one claim and one delete per batch); its rows
    /// are sent [`max_in_flight`](Self::max_in_flight) at a time.
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.config.batch = batch.clamp(1, 10_000);
        self
    }

    /// The most delivery requests this instance has in flight at once, all tasks together
    /// (default 16, at least 1). Rows of a claimed batch beyond it wait for a free slot; a row
    /// still waiting when half its [lease](Self::lease) has gone by is given back unsent, so
    /// that a slow WorkOS never lets leases expire under rows that were not even tried.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.config.in_flight = requests.max(1);
        self
    }

    /// How long a claim lasts (default 30 s). Rows claimed by an instance that dies are taken
    /// over by others after it. Keep it well above the sink's request timeout: a lease that ends
    /// while the request is still in flight lets another relay send the same event, which WorkOS
    /// stores once thanks to the key, but at the price of a second request.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(10));
        self
    }

    /// The fallback poll when no notification arrives (default 5 s). New rows wake the relays
    /// at once through `LISTEN/NOTIFY`; the poll only covers a lost listening connection.
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
    /// letter with [`DeadLetterReason::RetryWindowExhausted`].
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

    /// No fleet-wide token bucket (a local server, tests). A 429's `Retry-After` still pauses
    /// every relay on the same [`rate_limit_key`](Self::rate_limit_key).
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

    /// Starts the relay tasks and the listener on the current tokio runtime.
    pub fn start(self) -> Result<Relay, OutboxError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OutboxError::NoRuntime)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            outbox: self.outbox,
            sink: self.sink,
            notify: Notify::new(),
            counters: Counters::default(),
            in_flight: Semaphore::new(self.config.in_flight),
            config: self.config,
        });
        let mut tasks = Vec::with_capacity(shared.config.tasks + 1);
        tasks.push(runtime.spawn(listen(shared.clone(), stop_rx.clone())));
        for _ in 0..shared.config.tasks {
            tasks.push(runtime.spawn(run(shared.clone(), stop_rx.clone())));
        }
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
    /// 429 answers with a `Retry-After` that paused the fleet (counted once the pause is
    /// recorded in the database).
    pub rate_limited: u64,
    /// Database errors met (each followed by a backoff).
    pub database_errors: u64,
    /// Claimed rows given back unsent: no request slot (see
    /// [`RelayBuilder::max_in_flight`]) freed up within half their lease.
    pub released: u64,
}

/// What [`Relay::shutdown`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The instance's totals.
    pub stats: RelayStats,
    /// Whether every task finished before the deadline (otherwise they were aborted and their
    /// claimed rows wait for their lease to end).
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

    /// Wakes the idle relay tasks to look for due rows now.
    pub fn wake(&self) {
        self.shared.notify.notify_waiters();
    }

    /// Stops claiming, lets the batches in flight finish within `timeout`, then stops.
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = futures_util::future::join_all(tasks);
        let clean = tokio::time::timeout(timeout, all).await.is_ok();
        if !clean {
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        ShutdownReport {
            stats: self.stats(),
            clean,
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
    notify: Notify,
    counters: Counters,
    /// One permit per delivery request in flight.
    in_flight: Semaphore,
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

/// The `LISTEN` side: wakes the tasks on every notification, and once after each (re)connection
/// so that rows written while it was away are not left to the poll.
async fn listen(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let channel = shared.outbox.channel();
    let mut failures = 0u32;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(shared.outbox.pool()).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            l = connected => l,
            _ = stop.wait_for(|s| *s) => return,
        };
        match &mut listener {
            Ok(listener) => {
                failures = 0;
                shared.notify.notify_waiters();
                loop {
                    tokio::select! {
                        n = listener.recv() => match n {
                            Ok(_) => shared.notify.notify_waiters(),
                            Err(e) => {
                                tracing::warn!(error = %e, "audit outbox: lost the LISTEN connection; reconnecting");
                                break;
                            }
                        },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "audit outbox: could not LISTEN for new rows; relays poll meanwhile");
            }
        }
        let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
        if !pause(&mut stop, wait).await {
            return;
        }
    }
}

enum Step {
    /// Delivered a batch: look again at once.
    Worked,
    /// Nothing due: wait for a notification, at most this long.
    Idle(Duration),
    /// Rate limited or paused by a 429: wait this long (notifications do not help).
    Throttled(Duration),
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    let mut bucket_ready = false;
    let mut conn: Option<PgConnection> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A batch in flight is not interrupted by a stop: shutdown waits for it (up to its
        // deadline), so its outcomes are recorded instead of waiting for the lease to end.
        let step = async {
            let conn = match &mut conn {
                Some(conn) => conn,
                None => conn.insert(shared.connect().await?),
            };
            if !bucket_ready {
                shared.ensure_bucket(conn).await?;
                bucket_ready = true;
            }
            shared.step(conn).await
        };
        let step = step.await;
        if step.is_err() {
            // A broken connection is replaced; a working one is reopened at little cost.
            conn = None;
        }
        match step {
            Ok(Step::Worked) => failures = 0,
            Ok(Step::Idle(wait)) => {
                failures = 0;
                let wait = wait.min(shared.config.poll);
                tokio::select! {
                    _ = notified => {}
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
                let wait = Duration::from_millis(50 * 2u64.pow(failures.min(7))).min(shared.config.poll);
                tracing::warn!(error = %e, retry_in = ?wait, "audit outbox relay: database error");
                if !pause(&mut stop, wait).await {
                    return;
                }
            }
        }
    }
}

/// One claimed row.
struct Claimed {
    id: i64,
    claims: i64,
    key: String,
    attempts: i32,
    /// Seconds since the row's first attempt (this one included).
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
    /// Not sent: half the lease went by while the row waited for a request slot. It is given
    /// back (due now) rather than sent late, when another relay may take it over.
    Released,
}

impl Shared {
    fn bucket(&self) -> &str {
        self.config.bucket.as_str()
    }

    /// The task's own connection, taken from the pool for good (the pool opens a replacement),
    /// with `synchronous_commit` off: the relay's statements (claims, deletes, backoffs) then
    /// commit without waiting for the WAL flush. A crash can lose the last few of them, which
    /// only means a row is sent again with its key, and WorkOS stores it once; rows written by
    /// the application are not affected.
    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        let mut conn = self.outbox.pool().acquire().await?.detach();
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
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

    /// How many rows this task may send now, or how long to wait.
    async fn tokens(
        &self,
        conn: &mut PgConnection,
        want: usize,
    ) -> Result<Result<usize, Duration>, sqlx::Error> {
        let q = self.outbox.queries();
        match self.config.rate_limit {
            // The claim itself takes nothing while the bucket is paused.
            None => Ok(Ok(want)),
            Some(limit) => {
                let row = sqlx::query(&q.take_tokens)
                    .bind(self.bucket())
                    .bind(want as i64)
                    .bind(limit.rate())
                    .bind(f64::from(limit.max_burst()))
                    .fetch_optional(&mut *conn)
                    .await?;
                let Some(row) = row else {
                    // The bucket row was deleted under us: recreate it.
                    self.ensure_bucket(conn).await?;
                    return Ok(Err(Duration::ZERO));
                };
                let granted: i64 = row.try_get(0)?;
                let tokens: f64 = row.try_get(1)?;
                let paused: f64 = row.try_get(2)?;
                if granted > 0 {
                    Ok(Ok(granted as usize))
                } else if paused > 0.0 {
                    Ok(Err(secs(paused)))
                } else {
                    Ok(Err(secs((1.0 - tokens).max(0.001) / limit.rate())))
                }
            }
        }
    }

    /// Gives `tokens` taken but not used back to the fleet's bucket (nothing without a limit).
    async fn refund(&self, conn: &mut PgConnection, tokens: usize) -> Result<(), sqlx::Error> {
        if let Some(limit) = self.config.rate_limit
            && tokens > 0
        {
            sqlx::query(&self.outbox.queries().refund_tokens)
                .bind(self.bucket())
                .bind(tokens as f64)
                .bind(f64::from(limit.max_burst()))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    async fn step(&self, conn: &mut PgConnection) -> Result<Step, sqlx::Error> {
        let q = self.outbox.queries();
        let granted = match self.tokens(conn, self.config.batch).await? {
            Ok(n) => n,
            Err(wait) => return Ok(Step::Throttled(wait)),
        };
        let rows = sqlx::query(&q.claim)
            .bind(&self.config.instance)
            .bind(self.config.lease.as_secs_f64())
            .bind(granted as i64)
            .bind(self.bucket())
            .fetch_all(&mut *conn)
            .await?;
        self.refund(conn, granted - rows.len()).await?;
        if rows.is_empty() {
            let paused: Option<f64> = sqlx::query_scalar(&q.pause_left)
                .bind(self.bucket())
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(left) = paused.filter(|left| *left > 0.0) {
                return Ok(Step::Throttled(secs(left)));
            }
            let next: Option<f64> = sqlx::query_scalar(&q.next_due).fetch_one(&mut *conn).await?;
            // A due row that could not be claimed is locked by someone else's transaction:
            // look again shortly, not in a busy loop.
            let wait = next.map_or(self.config.poll, |s| secs(s.max(0.02)));
            return Ok(Step::Idle(wait));
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let org: String = row.try_get(2)?;
            let event: String = row.try_get(4)?;
            let body = OrganizationId::new(org)
                .map_err(|e| e.to_string())
                .and_then(|org| {
                    serde_json::from_str::<Event>(&event)
                        .map(|event| CreateEvent::new(org, event))
                        .map_err(|e| e.to_string())
                });
            claimed.push(Claimed {
                id: row.try_get(0)?,
                claims: row.try_get(1)?,
                key: row.try_get(3)?,
                attempts: row.try_get(5)?,
                age: row.try_get::<Option<f64>, _>(6)?.unwrap_or(0.0),
                body,
            });
        }
        add(
            &self.counters.claimed,
            claimed.len(),
            "audit_outbox_claimed_total",
        );
        let send_by = std::time::Instant::now() + self.config.lease / 2;
        let verdicts =
            futures_util::future::join_all(claimed.iter().map(|row| self.attempt(row, send_by))).await;
        self.record(conn, &claimed, verdicts).await?;
        Ok(Step::Worked)
    }

    /// Sends one row once, unless no request slot frees up before `send_by`, and decides what
    /// happens to it.
    async fn attempt(&self, row: &Claimed, send_by: std::time::Instant) -> Verdict {
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
        if std::time::Instant::now() > send_by {
            return Verdict::Released;
        }
        let sent = self.sink.send(body, &row.key).await;
        drop(permit);
        let error = match sent {
            Ok(()) => return Verdict::Delivered,
            Err(e) => e,
        };
        let attempt = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
        let random: f64 = rand::random();
        let decision = match classify(&error) {
            Disposition::Accepted => return Verdict::Delivered,
            Disposition::Retry(outcome) => {
                if let Outcome::Status {
                    status: 429,
                    retry_after: Some(after),
                } = outcome
                {
                    self.pause_fleet(after.min(self.config.retry.max_retry_after))
                        .await;
                }
                self.config.retry.decide(outcome, attempt, random)
            }
            // A refused key is the application's to fix; the rows wait (backing off) meanwhile
            // instead of being dead-lettered by the thousand.
            Disposition::Unauthorized => Decision::Retry {
                after: self
                    .config
                    .retry
                    .jittered_backoff(attempt.saturating_sub(1), random),
            },
            Disposition::Permanent(reason) => {
                return Verdict::Dead {
                    reason,
                    error: (&error).into(),
                };
            }
        };
        match decision {
            Decision::Retry { after }
                if row.age + after.as_secs_f64() < self.config.retry_window.as_secs_f64() =>
            {
                Verdict::Retry {
                    after,
                    error: error.to_string(),
                }
            }
            Decision::GiveUp(GiveUp::Permanent) => Verdict::Dead {
                reason: DeadLetterReason::Rejected,
                error: (&error).into(),
            },
            _ => Verdict::Dead {
                reason: DeadLetterReason::RetryWindowExhausted,
                error: (&error).into(),
            },
        }
    }

    async fn pause_fleet(&self, after: Duration) {
        let paused = sqlx::query(&self.outbox.queries().pause)
            .bind(self.bucket())
            .bind(after.as_secs_f64())
            .execute(self.outbox.pool())
            .await;
        match paused {
            Ok(_) => add(&self.counters.rate_limited, 1, "audit_outbox_rate_limited_total"),
            Err(e) => {
                tracing::warn!(error = %e, "audit outbox relay: could not record a Retry-After pause for the fleet");
            }
        }
    }

    /// Records every verdict of a batch: one statement per kind.
    async fn record(
        &self,
        conn: &mut PgConnection,
        rows: &[Claimed],
        verdicts: Vec<Verdict>,
    ) -> Result<(), sqlx::Error> {
        let q = self.outbox.queries();
        let mut delivered = Vec::new();
        let (mut retry_ids, mut retry_claims, mut retry_delays, mut retry_errors) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut dead_ids, mut dead_claims, mut dead_reasons, mut dead_errors) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut released_ids, mut released_claims) = (Vec::new(), Vec::new());
        for (row, verdict) in rows.iter().zip(verdicts) {
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
                }
            }
        }
        if !delivered.is_empty() {
            sqlx::query(&q.delete)
                .bind(&delivered)
                .execute(&mut *conn)
                .await?;
            add(
                &self.counters.delivered,
                delivered.len(),
                "audit_outbox_delivered_total",
            );
        }
        if !retry_ids.is_empty() {
            sqlx::query(&q.retry)
                .bind(&retry_ids)
                .bind(&retry_claims)
                .bind(&retry_delays)
                .bind(&retry_errors)
                .execute(&mut *conn)
                .await?;
            add(
                &self.counters.retried,
                retry_ids.len(),
                "audit_outbox_retried_total",
            );
        }
        if !dead_ids.is_empty() {
            sqlx::query(&q.dead)
                .bind(&dead_ids)
                .bind(&dead_claims)
                .bind(&dead_reasons)
                .bind(&dead_errors)
                .execute(&mut *conn)
                .await?;
            add(
                &self.counters.dead_lettered,
                dead_ids.len(),
                "audit_outbox_dead_lettered_total",
            );
        }
        if !released_ids.is_empty() {
            sqlx::query(&q.release)
                .bind(&released_ids)
                .bind(&released_claims)
                .execute(&mut *conn)
                .await?;
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
