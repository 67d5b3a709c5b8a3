//! [`SpoolStore`]: the emitter's [`Store`] backed by the SQLite file, and its writer thread.
//!
//! Memory holds what the senders work on (ready, parked, taken, bounded by the capacity), exactly
//! like the in-memory store. Every accepted event is also sent to the writer thread, which owns
//! the connection and commits in groups. Events that do not fit in memory are *spilled*: they are
//! only in the file (or the writer's backlog) and are loaded back in acceptance order when memory
//! has room. Once anything is spilled, new events are spilled too, so the spilled events are
//! always the newest ones and loading them by increasing id keeps the order.
//!
//! Invariant: commands reach the writer in sequence order (they are sent while the memory lock
//! is held), so the committed inserts are always a prefix of the accepted events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};
use tokio::sync::watch;
use tokio::time::Instant;

use super::db::{self, Loaded};
use super::{Spool, SpoolStats, StaleEvents};
use crate::CreateEvent;
use crate::emitter::IdempotencyKey;
use crate::emitter::Overflow;
use crate::emitter::queue::{Depth, Item, Pushed, Store, Taken, wall_clock};
use crate::emitter::stats::{Histogram, Throttle};

/// WorkOS forgets an idempotency key after 24 hours.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Rows loaded back into memory at once.
const LOAD_BATCH: usize = 4_096;
/// How soon an idle sender looks again while spilled events wait to be loaded.
const SPILL_POLL: Duration = Duration::from_millis(2);

/// What the writer has made durable, for [`Emitter::emit_durable`](crate::emitter::Emitter::emit_durable).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durable {
    /// Every event with a sequence number up to this one is committed (or resolved).
    pub(crate) committed: u64,
    /// The latest commit failed.
    pub(crate) failing: bool,
    /// The writer has stopped.
    pub(crate) stopped: bool,
}

// The outbox stores commands inline: boxing the large variants would add an allocation per
// event for nothing.
#[allow(clippy::large_enum_variant)]
enum Payload {
    /// A shared copy of an event that is also in memory.
    Copy {
        body: Arc<CreateEvent>,
        key: IdempotencyKey,
    },
    /// A spilled event: the writer holds the only copy until it is committed.
    Owned(Item),
}

struct Insert {
    seq: u64,
    created: SystemTime,
    payload: Payload,
}

impl Insert {
    fn body_and_key(&self) -> (&CreateEvent, &str) {
        match &self.payload {
            Payload::Copy { body, key } => (body, key),
            Payload::Owned(item) => (&item.body, &item.key),
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Cmd {
    Insert(Insert),
    Delete(u64),
    Attempted {
        seq: u64,
        attempts: u32,
        first: Option<SystemTime>,
        last: Option<SystemTime>,
    },
    /// Commit everything, close the file and answer with the inserts that could not be committed.
    Finish(SyncSender<Vec<Insert>>),
    /// Makes the writer panic (tests of a writer that died).
    #[cfg(test)]
    Crash,
}

struct Inner {
    closed: bool,
    next_seq: u64,
    ready: VecDeque<Item>,
    parked: BTreeMap<u64, Item>,
    due: BTreeSet<(Instant, u64)>,
    /// Taken events with their acceptance time.
    taken: BTreeMap<u64, Instant>,
    /// Events only in the file (or the writer's backlog): ids above `load_cursor`.
    spilled: u64,
    /// When the oldest spilled event was accepted (approximate after a load).
    spilled_since: Option<Instant>,
    /// Every id up to this one was placed in memory (or resolved).
    load_cursor: u64,
    /// Unresolved events (memory and spilled): the spool's depth.
    rows: u64,
    /// Wall-clock acceptance of events read back from the file (for the stale check).
    created: HashMap<u64, SystemTime>,
    /// Commands for the writer, in sequence order (they are queued under this lock).
    outbox: VecDeque<Cmd>,
    /// The writer waits for commands on `Common::wake`.
    writer_waiting: bool,
    /// The writer has ended (or never started): nothing sent now would be written.
    writer_gone: bool,
    /// Spilled events (their only copy) that a writer which died never committed: `drain`
    /// hands them back to be dead-lettered.
    orphans: Vec<Item>,
}

impl Inner {
    fn in_memory(&self) -> usize {
        self.ready.len() + self.parked.len() + self.taken.len()
    }
}

/// State shared by the store and its writer thread.
struct Common {
    inner: Mutex<Inner>,
    /// Wakes the writer when it waits for commands.
    wake: Condvar,
    capacity: usize,
    durable: watch::Sender<Durable>,
    backlog: AtomicUsize,
    commits: AtomicU64,
    corrupt: AtomicU64,
    write_errors: AtomicU64,
    refused: AtomicU64,
    recovered: u64,
    commit_latency: Histogram,
    failing: Mutex<Option<String>>,
    error_warning: Throttle,
}

impl Common {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each critical section is a few list operations: a poisoned lock is still consistent.
        crate::sync::lock(&self.inner)
    }

    /// Queues a command for the writer (the caller holds the lock, which keeps the commands in
    /// sequence order). The writer is woken only when it waits: while it is busy committing, the
    /// commands gather for its next group at the cost of a push. `false` when the writer is gone.
    fn send(&self, inner: &mut Inner, cmd: Cmd) -> bool {
        if inner.writer_gone {
            return false;
        }
        inner.outbox.push_back(cmd);
        if inner.writer_waiting {
            inner.writer_waiting = false;
            self.wake.notify_one();
        }
        true
    }
}

/// The emitter's store with the SQLite spool behind it.
pub(crate) struct SpoolStore {
    common: Arc<Common>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    max_events: u64,
    max_backlog: usize,
    stale: StaleEvents,
    refusal_warning: Throttle,
}

impl SpoolStore {
    /// Starts the writer thread on an open spool; `capacity` bounds the events held in memory.
    pub(crate) fn start(spool: Spool, capacity: usize, warn_interval: Duration) -> Self {
        let Spool {
            config,
            conn,
            rows,
            min_id,
            max_id,
        } = spool;
        let first = u64::try_from(min_id).unwrap_or(0);
        let inner = Inner {
            closed: false,
            next_seq: u64::try_from(max_id).unwrap_or(0),
            ready: VecDeque::new(),
            parked: BTreeMap::new(),
            due: BTreeSet::new(),
            taken: BTreeMap::new(),
            spilled: rows,
            spilled_since: (rows > 0).then(Instant::now),
            load_cursor: first.saturating_sub(1),
            rows,
            created: HashMap::new(),
            outbox: VecDeque::new(),
            writer_waiting: false,
            writer_gone: false,
            orphans: Vec::new(),
        };
        if rows > 0 {
            tracing::info!(
                path = %config.path.display(),
                events = rows,
                "audit spool: delivering events kept from an earlier run, with their original idempotency keys"
            );
        }
        let (durable, _) = watch::channel(Durable {
            committed: inner.next_seq,
            ..Durable::default()
        });
        let common = Arc::new(Common {
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            capacity: capacity.max(1),
            durable,
            backlog: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            recovered: rows,
            commit_latency: Histogram::default(),
            failing: Mutex::new(None),
            error_warning: Throttle::new(warn_interval),
        });
        let writer = Writer {
            conn,
            common: Arc::clone(&common),
            max_batch: config.max_batch,
            commit_delay: config.commit_delay,
            path: config.path.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("audit-spool-writer".into())
            .spawn(move || writer.run());
        let handle = match handle {
            Ok(h) => Some(h),
            Err(e) => {
                // Without a writer nothing becomes durable: say so loudly; emits are refused
                // rather than silently kept in memory only.
                tracing::error!(error = %e, "audit spool: could not start the writer thread");
                common.lock().writer_gone = true;
                None
            }
        };
        Self {
            common,
            writer: Mutex::new(handle),
            path: config.path,
            max_events: config.max_events,
            max_backlog: config.max_backlog,
            stale: config.stale,
            refusal_warning: Throttle::new(warn_interval),
        }
    }

    fn refuse(&self, item: Item, rows: u64, backlog: usize) -> Pushed {
        self.common.refused.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.refusal_warning.ready() {
            tracing::warn!(
                path = %self.path.display(),
                events = rows,
                max_events = self.max_events,
                backlog,
                max_backlog = self.max_backlog,
                suppressed,
                refused = self.common.refused.load(Relaxed),
                "audit spool full (or its writer is behind): an event was refused"
            );
        }
        Pushed::Full(item)
    }

    /// Subscribes to the commit progress.
    pub(crate) fn durable(&self) -> watch::Receiver<Durable> {
        self.common.durable.subscribe()
    }

    pub(crate) fn stats(&self) -> SpoolStats {
        let c = &self.common;
        let (depth, spilled, oldest) = {
            let inner = c.lock();
            let oldest = [
                inner.ready.front().map(|i| i.accepted),
                inner.parked.values().next().map(|i| i.accepted),
                inner.taken.values().min().copied(),
                inner.spilled_since.filter(|_| inner.spilled > 0),
            ]
            .into_iter()
            .flatten()
            .min();
            (inner.rows, inner.spilled, oldest)
        };
        let [p50, p99] = c.commit_latency.percentiles([50.0, 99.0]);
        SpoolStats {
            depth,
            spilled,
            backlog: c.backlog.load(Relaxed),
            oldest_age: oldest.map(|t| t.elapsed()),
            commits: c.commits.load(Relaxed),
            commit_p50: p50,
            commit_p99: p99,
            recovered: c.recovered,
            refused: c.refused.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            failing: crate::sync::lock(&c.failing).clone(),
        }
    }
}

impl Store for SpoolStore {
    fn push(&self, mut item: Item, _overflow: Overflow) -> Pushed {
        let mut inner = self.common.lock();
        if inner.closed {
            return Pushed::Closed;
        }
        let backlog = self.common.backlog.load(Relaxed);
        if inner.rows >= self.max_events || backlog >= self.max_backlog {
            let rows = inner.rows;
            drop(inner);
            return self.refuse(item, rows, backlog);
        }
        // Memory full: whatever the overflow policy, the event waits in the file (spilled) until
        // memory has room. Nothing is evicted, so an event whose durability was confirmed is
        // never dropped; only a full spool refuses (above).
        let spill = inner.spilled > 0 || inner.in_memory() >= self.common.capacity;
        inner.next_seq += 1;
        let seq = inner.next_seq;
        item.seq = seq;
        let accepted = item.accepted;
        let wake = inner.ready.is_empty();
        let (payload, keep) = if spill {
            (Payload::Owned(item), None)
        } else {
            let copy = Payload::Copy {
                body: Arc::clone(&item.body),
                key: item.key.clone(),
            };
            (copy, Some(item))
        };
        let insert = Insert {
            seq,
            created: SystemTime::now(),
            payload,
        };
        if !self.common.send(&mut inner, Cmd::Insert(insert)) {
            inner.next_seq -= 1;
            return Pushed::Closed;
        }
        self.common.backlog.fetch_add(1, Relaxed);
        inner.rows += 1;
        match keep {
            Some(item) => {
                inner.load_cursor = seq;
                inner.ready.push_back(item);
            }
            None => {
                if inner.spilled == 0 {
                    inner.spilled_since = Some(accepted);
                }
                inner.spilled += 1;
            }
        }
        Pushed::Accepted { evicted: None, wake }
    }

    fn take(&self, now: &dyn Fn() -> Instant) -> Taken {
        let mut inner = self.common.lock();
        if let Some(&(due, seq)) = inner.due.first()
            && due <= now()
        {
            inner.due.remove(&(due, seq));
            if let Some(mut item) = inner.parked.remove(&seq) {
                item.due = None;
                inner.taken.insert(seq, item.accepted);
                let more = !inner.ready.is_empty();
                return Taken::Item(item, more);
            }
        }
        if let Some(item) = inner.ready.pop_front() {
            inner.taken.insert(item.seq, item.accepted);
            let more = !inner.ready.is_empty();
            return Taken::Item(item, more);
        }
        let next_due = inner.due.first().map(|&(due, _)| due);
        // Spilled events are loaded by the writer thread, which cannot wake the senders: while
        // there are some, the senders look again shortly.
        let next_due = match (next_due, inner.spilled > 0) {
            (due, false) => due,
            (Some(due), true) => Some(due.min(now() + SPILL_POLL)),
            (None, true) => Some(now() + SPILL_POLL),
        };
        Taken::Empty { next_due }
    }

    fn park(&self, mut item: Item, due: Instant) {
        let mut inner = self.common.lock();
        inner.taken.remove(&item.seq);
        self.common.send(
            &mut inner,
            Cmd::Attempted {
                seq: item.seq,
                attempts: item.attempts,
                first: item.first_attempt.map(wall_clock),
                last: item.last_attempt.map(wall_clock),
            },
        );
        item.due = Some(due);
        inner.due.insert((due, item.seq));
        inner.parked.insert(item.seq, item);
    }

    fn release_parked(&self, now: Instant) -> usize {
        let inner = &mut *self.common.lock();
        super::super::queue::release_parked(&mut inner.parked, &mut inner.due, now)
    }

    fn unpark_front(&self, item: Item) {
        let mut inner = self.common.lock();
        inner.taken.remove(&item.seq);
        inner.ready.push_front(item);
    }

    fn resolve(&self, seq: u64) {
        let mut inner = self.common.lock();
        if inner.taken.remove(&seq).is_some() {
            inner.rows = inner.rows.saturating_sub(1);
        }
        inner.created.remove(&seq);
        self.common.send(&mut inner, Cmd::Delete(seq));
    }

    fn give_back(&self, item: Item) -> Option<Item> {
        // Shutdown's deadline or an abandoned sender: the event stays in the file for the next
        // start instead of being dead-lettered (`drain` checks that it was committed).
        let mut inner = self.common.lock();
        inner.taken.remove(&item.seq);
        inner.ready.push_front(item);
        None
    }

    fn is_stale(&self, item: &Item) -> bool {
        if self.stale == StaleEvents::SendAnyway {
            return false;
        }
        let now = SystemTime::now();
        let start = item.first_attempt.map(wall_clock).unwrap_or_else(|| {
            self.common
                .lock()
                .created
                .get(&item.seq)
                .copied()
                .unwrap_or_else(|| now.checked_sub(item.accepted.elapsed()).unwrap_or(now))
        });
        now.duration_since(start)
            .is_ok_and(|age| age > IDEMPOTENCY_WINDOW)
    }

    fn close(&self) {
        self.common.lock().closed = true;
    }

    /// Shutdown (or the end of the runtime): commits everything, stops the writer and closes
    /// the file. Events whose row is committed stay in the file for the next start; only those
    /// that could not be written are returned, to be dead-lettered. Blocks until the writer has
    /// finished its last commit (callers in async code run it on a blocking thread); a writer
    /// that died is detected, and what it had not committed is returned.
    fn drain(&self) -> Vec<Item> {
        let (in_memory, orphans) = {
            let mut inner = self.common.lock();
            inner.closed = true;
            inner.due.clear();
            let mut out: Vec<Item> = inner.ready.drain(..).collect();
            let parked = std::mem::take(&mut inner.parked);
            out.extend(parked.into_values());
            (out, std::mem::take(&mut inner.orphans))
        };
        let handle = crate::sync::lock(&self.writer).take();
        let Some(handle) = handle else {
            // Already finished (a second call). Events given back since are in the file, but
            // the writer is gone and cannot confirm it: dead-letter them (a replay keeps the key).
            if !in_memory.is_empty() {
                tracing::error!(
                    path = %self.path.display(),
                    events = in_memory.len(),
                    "audit spool: events handed back after the spool closed; dead-lettering them"
                );
            }
            let mut out = in_memory;
            out.extend(orphans);
            out.sort_by_key(|i| i.seq);
            return out;
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.common.send(&mut self.common.lock(), Cmd::Finish(reply));
        // A writer that died drops the request unanswered: `recv` fails instead of waiting.
        let unwritten = if sent {
            answer.recv().unwrap_or_default()
        } else {
            Vec::new()
        };
        if handle.join().is_err() {
            tracing::error!(path = %self.path.display(), "audit spool: the writer thread panicked");
        }
        // Commands reach the writer in sequence order and commits are a prefix of them: an
        // event above the last committed sequence number is not in the file.
        let committed = self.common.durable.borrow().committed;
        let mut lost: HashSet<u64> = unwritten.iter().map(|i| i.seq).collect();
        let mut out = Vec::new();
        let mut kept = 0u64;
        for item in in_memory {
            if lost.contains(&item.seq) || item.seq > committed {
                lost.insert(item.seq);
                out.push(item);
            } else {
                kept += 1;
            }
        }
        for insert in unwritten {
            if let Payload::Owned(item) = insert.payload {
                out.push(item);
            }
        }
        out.extend(orphans);
        out.extend(std::mem::take(&mut self.common.lock().orphans));
        let depth = self.common.lock().rows;
        if depth > 0 || kept > 0 {
            tracing::info!(
                path = %self.path.display(),
                events = depth,
                "audit spool closed with events still pending; they are delivered at the next start"
            );
        }
        if !out.is_empty() {
            tracing::error!(
                path = %self.path.display(),
                events = out.len(),
                "audit spool: events could not be written before shutdown; dead-lettering them"
            );
        }
        out.sort_by_key(|i| i.seq);
        out
    }

    fn depth(&self) -> Depth {
        let inner = self.common.lock();
        Depth {
            ready: inner.ready.len() + usize::try_from(inner.spilled).unwrap_or(usize::MAX),
            parked: inner.parked.len(),
            taken: inner.taken.len(),
        }
    }

    fn last_seq(&self) -> u64 {
        self.common.lock().next_seq
    }

    fn oldest_outstanding(&self) -> Option<u64> {
        let inner = self.common.lock();
        [
            inner.ready.front().map(|i| i.seq),
            inner.parked.keys().next().copied(),
            inner.taken.keys().next().copied(),
            (inner.spilled > 0).then_some(inner.load_cursor + 1),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn ready_since(&self) -> Option<Instant> {
        self.common.lock().ready.front().map(|i| i.accepted)
    }

    fn spool_stats(&self) -> Option<SpoolStats> {
        Some(self.stats())
    }

    fn durable(&self) -> Option<watch::Receiver<Durable>> {
        Some(SpoolStore::durable(self))
    }
}

impl Drop for SpoolStore {
    fn drop(&mut self) {
        if crate::sync::lock(&self.writer).is_some() {
            for item in self.drain() {
                tracing::error!(
                    organization = %item.body.organization_id,
                    action = %item.body.event.action,
                    idempotency_key = %item.key,
                    "audit spool: an event could not be written before the spool closed"
                );
            }
        }
    }
}

/// Deletes the rows `ids`, one statement per run of consecutive ids (delivered events mostly
/// are): far fewer statements than one per row.
fn delete_rows(tx: &rusqlite::Transaction<'_>, ids: impl Iterator<Item = u64>) -> rusqlite::Result<()> {
    let mut ids: Vec<u64> = ids.collect();
    if ids.is_empty() {
        return Ok(());
    }
    ids.sort_unstable();
    let mut delete = tx.prepare_cached("DELETE FROM events WHERE id BETWEEN ?1 AND ?2")?;
    let row = |id: u64| i64::try_from(id).unwrap_or(i64::MAX);
    let mut start = ids[0];
    let mut end = start;
    for &id in &ids[1..] {
        if end.checked_add(1) == Some(id) {
            end = id;
        } else {
            delete.execute(params![row(start), row(end)])?;
            start = id;
            end = id;
        }
    }
    delete.execute(params![row(start), row(end)])?;
    Ok(())
}

/// Whether SQLite failed because the disk (or the file's size limit) is full.
fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// The writer thread: owns the connection, commits in groups, loads spilled events.
struct Writer {
    conn: Connection,
    common: Arc<Common>,
    max_batch: usize,
    commit_delay: Duration,
    path: PathBuf,
}

#[derive(Default)]
struct Batch {
    cmds: Vec<Cmd>,
    inserts: usize,
    last_insert: u64,
}

impl Batch {
    /// The sequence numbers this group inserts and deletes (an event in both was delivered before
    /// it was written: neither is done).
    fn inserted_and_deleted(&self) -> (HashSet<u64>, HashSet<u64>) {
        let mut inserted = HashSet::new();
        let mut deleted = HashSet::new();
        for cmd in &self.cmds {
            match cmd {
                Cmd::Insert(i) => {
                    inserted.insert(i.seq);
                }
                Cmd::Delete(seq) => {
                    deleted.insert(*seq);
                }
                _ => {}
            }
        }
        (inserted, deleted)
    }

    fn absorb(&mut self, cmd: Cmd, finish: &mut Option<SyncSender<Vec<Insert>>>) {
        match cmd {
            Cmd::Finish(reply) => *finish = Some(reply),
            #[cfg(test)]
            Cmd::Crash => panic!("the spool writer crashed (test)"),
            Cmd::Insert(insert) => {
                self.inserts += 1;
                self.last_insert = insert.seq;
                self.cmds.push(Cmd::Insert(insert));
            }
            other => self.cmds.push(other),
        }
    }
}

impl Writer {
    fn run(mut self) {
        let mut batch = Batch::default();
        let mut finish = None;
        let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.work(&mut batch, &mut finish);
        }));
        if worked.is_err() {
            tracing::error!(
                path = %self.path.display(),
                "audit spool: the writer thread panicked; events it had not committed are handed back to be dead-lettered"
            );
        }
        let mut unwritten: Vec<Insert> = batch
            .cmds
            .into_iter()
            .filter_map(|c| match c {
                Cmd::Insert(i) => Some(i),
                _ => None,
            })
            .collect();
        {
            let mut inner = self.common.lock();
            inner.writer_gone = true;
            // Commands that will never be handled: a spilled event's only copy is kept for
            // `drain`, and a finish request still waiting is answered (by dropping its sender)
            // so that nobody waits for a writer that is gone.
            for cmd in std::mem::take(&mut inner.outbox) {
                match cmd {
                    Cmd::Insert(i) => unwritten.push(i),
                    Cmd::Finish(reply) if finish.is_none() => finish = Some(reply),
                    _ => {}
                }
            }
            if finish.is_none() {
                inner
                    .orphans
                    .extend(unwritten.drain(..).filter_map(|i| match i.payload {
                        Payload::Owned(item) => Some(item),
                        Payload::Copy { .. } => None,
                    }));
            }
        }
        self.common.durable.send_modify(|d| d.stopped = true);
        // Close the file (and release its lock) before answering.
        drop(self.conn);
        if let Some(reply) = finish {
            let _ = reply.send(unwritten);
        }
    }

    fn work(&mut self, batch: &mut Batch, finish: &mut Option<SyncSender<Vec<Insert>>>) {
        let mut backoff = Duration::from_millis(50);
        let mut failing = false;
        self.load();
        loop {
            if batch.cmds.is_empty() && finish.is_none() {
                let cmds = self.receive(self.max_batch, Some(Duration::from_secs(1)));
                if cmds.is_empty() {
                    // Nothing for a second: look for spilled events that fit in memory now.
                    self.load();
                    continue;
                }
                let gathering = std::time::Instant::now();
                for cmd in cmds {
                    batch.absorb(cmd, finish);
                }
                // Let the group gather (see `SpoolConfig::commit_delay`).
                if finish.is_none() && !self.commit_delay.is_zero() {
                    std::thread::sleep(self.commit_delay.saturating_sub(gathering.elapsed()));
                }
            }
            // Everything that has queued up goes into this group (all of it when ending).
            let room = if finish.is_some() {
                usize::MAX
            } else {
                self.max_batch.saturating_sub(batch.inserts)
            };
            for cmd in self.receive(room, None) {
                batch.absorb(cmd, finish);
            }
            if finish.is_some() {
                // Whatever was queued before the finish command is part of the last group.
                for cmd in self.receive(usize::MAX, None) {
                    batch.absorb(cmd, finish);
                }
            }
            let ending = finish.is_some();
            if !batch.cmds.is_empty() {
                let started = std::time::Instant::now();
                match self.commit(batch) {
                    Ok(()) => {
                        self.common.commit_latency.record(started.elapsed());
                        self.common.commits.fetch_add(1, Relaxed);
                        self.common.backlog.fetch_sub(batch.inserts, Relaxed);
                        let committed = batch.last_insert;
                        self.common.durable.send_modify(|d| {
                            d.committed = d.committed.max(committed);
                            d.failing = false;
                        });
                        if failing {
                            failing = false;
                            *crate::sync::lock(&self.common.failing) = None;
                            tracing::warn!(path = %self.path.display(), "audit spool: commits succeed again");
                        }
                        backoff = Duration::from_millis(50);
                        *batch = Batch::default();
                    }
                    Err(e) => {
                        failing = true;
                        self.failed("commit", &e);
                        if is_disk_full(&e) {
                            // Free what can be freed: delete the rows of delivered events.
                            self.commit_deletions(batch);
                        }
                        self.common.durable.send_modify(|d| d.failing = true);
                        if ending {
                            break;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            if ending {
                break;
            }
            self.load();
        }
    }

    /// Takes up to `max` queued commands; with `wait`, first waits up to that long for one.
    fn receive(&self, max: usize, wait: Option<Duration>) -> Vec<Cmd> {
        let mut inner = self.common.lock();
        if let Some(timeout) = wait
            && inner.outbox.is_empty()
        {
            inner.writer_waiting = true;
            inner = crate::sync::wait_timeout(&self.common.wake, inner, timeout);
            inner.writer_waiting = false;
        }
        let n = inner.outbox.len().min(max);
        inner.outbox.drain(..n).collect()
    }

    fn failed(&self, what: &str, e: &rusqlite::Error) {
        self.common.write_errors.fetch_add(1, Relaxed);
        let text = format!("{what} failed: {e}");
        *crate::sync::lock(&self.common.failing) = Some(text);
        if let Some(suppressed) = self.common.error_warning.ready() {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                suppressed,
                backlog = self.common.backlog.load(Relaxed),
                "audit spool: {what} failed; retrying (events stay in memory meanwhile, new ones are refused once the backlog is full)"
            );
        }
    }

    fn commit(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        let (inserted, deleted) = batch.inserted_and_deleted();
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO events (id, organization_id, idempotency_key, event, created_at, checksum)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE events SET attempts = ?2, first_attempt_at = ?3, last_attempt_at = ?4 WHERE id = ?1",
            )?;
            // Deletions first: they free room in the file for this group's inserts (they never
            // touch a row inserted in the same group, see below).
            delete_rows(&tx, deleted.iter().copied().filter(|seq| !inserted.contains(seq)))?;
            for cmd in &batch.cmds {
                match cmd {
                    // Delivered before it was written: nothing to write or delete.
                    Cmd::Insert(i) if deleted.contains(&i.seq) => {}
                    Cmd::Insert(i) => {
                        let (body, key) = i.body_and_key();
                        let json = match serde_json::to_vec(&body.event) {
                            Ok(json) => json,
                            Err(e) => {
                                // Cannot happen for a validated event; the event is still
                                // delivered from memory.
                                tracing::error!(error = %e, "audit spool: could not serialize an event");
                                continue;
                            }
                        };
                        let org = body.organization_id.as_str();
                        let created = db::unix_ms(i.created);
                        let crc = db::checksum(org, key, created, &json);
                        insert.execute(params![
                            i64::try_from(i.seq).unwrap_or(i64::MAX),
                            org,
                            key,
                            json,
                            created,
                            i64::from(crc)
                        ])?;
                    }
                    Cmd::Delete(_) => {}
                    Cmd::Attempted {
                        seq,
                        attempts,
                        first,
                        last,
                    } => {
                        update.execute(params![
                            i64::try_from(*seq).unwrap_or(i64::MAX),
                            i64::from(*attempts),
                            first.map(db::unix_ms),
                            last.map(db::unix_ms)
                        ])?;
                    }
                    Cmd::Finish(_) => {}
                    #[cfg(test)]
                    Cmd::Crash => {}
                }
            }
        }
        tx.commit()
    }

    /// On a full disk (or [`SpoolConfig::max_bytes`](super::SpoolConfig::max_bytes)): commits the
    /// batch's deletions alone, which need no new space and free some, and keeps its inserts for
    /// the next attempt (an insert whose event was delivered meanwhile is dropped with its delete).
    fn commit_deletions(&mut self, batch: &mut Batch) {
        let (inserted, deleted) = batch.inserted_and_deleted();
        if deleted.is_empty() {
            return;
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            delete_rows(&tx, deleted.iter().copied().filter(|seq| !inserted.contains(seq)))?;
            tx.commit()
        })();
        if let Err(e) = result {
            self.failed("deleting delivered events", &e);
            return;
        }
        let before = batch.inserts;
        batch.cmds.retain(|c| match c {
            Cmd::Insert(i) => !deleted.contains(&i.seq),
            Cmd::Delete(_) => false,
            _ => true,
        });
        batch.inserts = batch.cmds.iter().filter(|c| matches!(c, Cmd::Insert(_))).count();
        self.common.backlog.fetch_sub(before - batch.inserts, Relaxed);
    }

    /// Moves spilled events back into memory while it has room.
    fn load(&mut self) {
        loop {
            let (after, room) = {
                let inner = self.common.lock();
                if inner.spilled == 0 {
                    return;
                }
                let room = self.common.capacity.saturating_sub(inner.in_memory());
                (inner.load_cursor, room.min(LOAD_BATCH))
            };
            if room == 0 {
                return;
            }
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let (good, bad) = match db::load(&self.conn, after, room) {
                Ok(found) => found,
                Err(e) => {
                    self.failed("reading spilled events", &e);
                    return;
                }
            };
            if good.is_empty() && bad.is_empty() {
                // The spilled events are not committed yet.
                return;
            }
            for (id, reason) in &bad {
                self.common.corrupt.fetch_add(1, Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    row = id,
                    reason = %reason,
                    "audit spool: a row failed its check and was moved to the table dead_rows"
                );
            }
            let now = Instant::now();
            let wall = SystemTime::now();
            let mut inner = self.common.lock();
            let mut cursor = inner.load_cursor;
            for (id, _) in &bad {
                cursor = cursor.max(u64::try_from(*id).unwrap_or(0));
                inner.spilled = inner.spilled.saturating_sub(1);
                inner.rows = inner.rows.saturating_sub(1);
            }
            for row in good {
                let Loaded {
                    id,
                    body,
                    key,
                    created_at,
                    attempts,
                    first_attempt_at,
                    last_attempt_at,
                } = row;
                let seq = u64::try_from(id).unwrap_or(0);
                cursor = cursor.max(seq);
                let ago = |t: SystemTime| {
                    let age = wall.duration_since(t).unwrap_or_default();
                    now.checked_sub(age).unwrap_or(now)
                };
                let mut item = Item::new(body, IdempotencyKey::from_checked(key));
                item.seq = seq;
                item.accepted = ago(created_at);
                item.attempts = attempts;
                item.first_attempt = first_attempt_at.map(ago);
                item.last_attempt = last_attempt_at.map(ago);
                inner.created.insert(seq, created_at);
                inner.spilled = inner.spilled.saturating_sub(1);
                inner.ready.push_back(item);
            }
            inner.load_cursor = cursor;
            if inner.spilled == 0 {
                inner.spilled_since = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emitter::SpoolConfig;
    use crate::emitter::queue::tests::item;

    /// A writer thread that died is detected at shutdown: `drain` returns promptly, and every
    /// accepted event is either committed in the file or handed back to be dead-lettered.
    #[test]
    fn a_dead_writer_is_detected_and_nothing_ends_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let spool = SpoolConfig::new(&path)
            .commit_delay(Duration::ZERO)
            .open()
            .unwrap();
        let store = SpoolStore::start(spool, 2, Duration::from_secs(10));
        for n in 1..=5 {
            assert!(matches!(
                store.push(item(n), Overflow::DropNewest),
                Pushed::Accepted { .. }
            ));
        }
        let mut durable = store.durable();
        let committed = std::time::Instant::now();
        while durable.borrow_and_update().committed < 5 {
            assert!(committed.elapsed() < Duration::from_secs(10), "never committed");
            std::thread::sleep(Duration::from_millis(1));
        }
        for n in 6..=8 {
            assert!(matches!(
                store.push(item(n), Overflow::DropNewest),
                Pushed::Accepted { .. }
            ));
        }
        {
            let mut inner = store.common.lock();
            assert!(store.common.send(&mut inner, Cmd::Crash));
        }
        let started = std::time::Instant::now();
        let handed_back: Vec<u64> = store.drain().iter().map(|i| i.seq).collect();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "drain waited for a dead writer"
        );
        drop(store);
        let reopened = SpoolConfig::new(&path).open().unwrap();
        let in_file = reopened.recovered();
        assert!(handed_back.iter().all(|&seq| seq > 5), "{handed_back:?}");
        assert_eq!(
            in_file + handed_back.len() as u64,
            8,
            "file {in_file}, handed back {handed_back:?}"
        );
    }
}
