//! Where accepted events wait: the bounded in-memory store behind the [`Store`] seam.
//!
//! Every accepted event is in exactly one of three places until it is resolved (delivered,
//! dead-lettered or dropped by the overflow policy):
//!
//! - **ready**: waiting for a sender, in the order it was accepted;
//! - **parked**: waiting for its retry time after a failed attempt;
//! - **taken**: held by a sender (an attempt in flight, or a probe during an authorization hold).
//!
//! The capacity bounds all three together, so a server that fails every request cannot make the
//! store grow: failed events wait in `parked` and still take room.
//!
//! The [`Store`] trait is the seam for a durable store (the SQLite spool, a PostgreSQL outbox):
//! the senders and the [`Emitter`](super::Emitter) handle only talk to the trait.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::time::Instant;

use super::{IdempotencyKey, Overflow};
use crate::{CreateEvent, Error};

/// One accepted event and its delivery history.
#[derive(Debug)]
pub(crate) struct Item {
    /// Order of acceptance; assigned by the store.
    pub(crate) seq: u64,
    /// Shared, so that a durable store can write it without copying it.
    pub(crate) body: Arc<CreateEvent>,
    pub(crate) key: IdempotencyKey,
    /// When the event was accepted (latency is measured from here).
    pub(crate) accepted: Instant,
    /// The span that was current when the event was accepted, captured only when a subscriber
    /// wants the emitter's DEBUG spans: each attempt's span `follows_from` it.
    pub(crate) cause: Option<tracing::span::Id>,
    pub(crate) attempts: u32,
    /// When the first attempt started (the retry window starts here); see [`wall_clock`].
    pub(crate) first_attempt: Option<Instant>,
    pub(crate) last_attempt: Option<Instant>,
    pub(crate) last_error: Option<Box<Error>>,
    /// Events delivered (the emitter's count) when the first attempt started: a 403 after
    /// others were delivered is about this event, not the key.
    pub(crate) delivered_before: u64,
    /// While parked: when the next attempt is due.
    pub(crate) due: Option<Instant>,
    /// The event was given up but no dead-letter destination recorded it yet: it stays (in
    /// memory and in the spool) and the write is tried again when it is next taken.
    pub(crate) dead_letter: Option<Box<PendingDeadLetter>>,
    /// For `emit_durable` with a durable sink: told `true` when the sink acknowledged the event,
    /// `false` when an attempt failed; dropped unanswered if the event leaves the emitter
    /// otherwise (evicted, dead-lettered).
    pub(crate) ack: Option<tokio::sync::oneshot::Sender<bool>>,
    /// Released early once already (see [`release_parked`]): a later failure waits out its own
    /// backoff.
    pub(crate) released: bool,
}

/// A dead letter waiting to be recorded.
#[derive(Debug)]
pub(crate) struct PendingDeadLetter {
    pub(crate) reason: super::DeadLetterReason,
    pub(crate) error: Option<super::DeadLetterError>,
    /// Failed writes so far.
    pub(crate) tries: u32,
}

impl Item {
    pub(crate) fn new(body: CreateEvent, key: IdempotencyKey) -> Self {
        Self {
            seq: 0,
            body: Arc::new(body),
            key,
            accepted: Instant::now(),
            cause: None,
            attempts: 0,
            first_attempt: None,
            last_attempt: None,
            last_error: None,
            delivered_before: 0,
            due: None,
            dead_letter: None,
            ack: None,
            released: false,
        }
    }
}

/// The wall-clock time of a monotonic instant (attempt times are kept as instants, one clock
/// read per attempt, and turned into dates only for a dead letter or the spool's file).
pub(crate) fn wall_clock(at: Instant) -> SystemTime {
    let age = Instant::now().saturating_duration_since(at);
    SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Makes every parked event that was not released before due at `now` (see
/// [`Store::release_parked`]); the number released. The one implementation of both stores.
pub(crate) fn release_parked(
    parked: &mut BTreeMap<u64, Item>,
    due: &mut BTreeSet<(Instant, u64)>,
    now: Instant,
) -> usize {
    let later: Vec<(Instant, u64)> = due
        .iter()
        .rev()
        .take_while(|(at, _)| *at > now)
        .copied()
        .collect();
    let mut released = 0;
    for (at, seq) in later {
        if let Some(item) = parked.get_mut(&seq)
            && !item.released
        {
            item.released = true;
            item.due = Some(now);
            due.remove(&(at, seq));
            due.insert((now, seq));
            released += 1;
        }
    }
    released
}

/// What [`Store::push`] did.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// Accepted with this sequence number; with `DropOldest` on a full store, the evicted event.
    Accepted {
        evicted: Option<Item>,
        /// Nothing was ready before: a sender must be woken.
        wake: bool,
    },
    /// The store is full and the policy drops the newest: the event is handed back.
    Full(Item),
    /// The store no longer accepts events.
    Closed,
}

/// What [`Store::take`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The event, and whether more are ready (another sender should be woken).
    Item(Item, bool),
    /// Nothing to do now; the earliest parked event is due at this time (if any).
    Empty { next_due: Option<Instant> },
}

/// Counts of the three places, for stats and for waiting.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Depth {
    pub(crate) ready: usize,
    pub(crate) parked: usize,
    pub(crate) taken: usize,
}

impl Depth {
    pub(crate) fn outstanding(self) -> usize {
        self.ready + self.parked + self.taken
    }
}

/// The seam between the emitter and the place where accepted events wait.
///
/// The in-memory [`MemoryStore`] is the only implementation today; a durable spool implements the
/// same calls (persisting on `push`, deleting on `resolve`).
pub(crate) trait Store: Send + Sync + 'static {
    /// Accepts an event, applying the overflow policy when full.
    fn push(&self, item: Item, overflow: Overflow) -> Pushed;
    /// Takes the next event to attempt: a due parked one first (it is older), else the oldest ready.
    /// `now` is read only when a parked event may be due.
    fn take(&self, now: &dyn Fn() -> Instant) -> Taken;
    /// Puts a taken event back to wait until `due`.
    fn park(&self, item: Item, due: Instant);
    /// Puts a taken event back at the front of the ready queue (an attempt that was not made).
    fn unpark_front(&self, item: Item);
    /// Delivery works again after failures: every parked event not released before becomes due
    /// at `now` (the rate limit paces them) instead of waiting out its own backoff. Returns how
    /// many were released.
    fn release_parked(&self, now: Instant) -> usize;
    /// A taken event was resolved (delivered or dead-lettered).
    fn resolve(&self, seq: u64);
    /// Stops accepting events.
    fn close(&self);
    /// Removes and returns every ready and parked event (taken ones stay with their senders).
    fn drain(&self) -> Vec<Item>;
    /// The sizes of the three places.
    fn depth(&self) -> Depth;
    /// The sequence number of the latest accepted event (0 when none).
    fn last_seq(&self) -> u64;
    /// The smallest sequence number still outstanding, if any.
    fn oldest_outstanding(&self) -> Option<u64>;
    /// When the oldest ready event was accepted, if any is ready (for the senders' linger).
    fn ready_since(&self) -> Option<Instant>;

    // Durable stores (the `spool` feature). The defaults are the in-memory behaviour.

    /// A taken event is being given up at shutdown's deadline or abandoned: `None` when the store
    /// keeps it durably for the next start, else the event (resolved) to dead-letter.
    fn give_back(&self, item: Item) -> Option<Item> {
        self.resolve(item.seq);
        Some(item)
    }
    /// Whether a taken event is too old to send (see `StaleEvents`).
    fn is_stale(&self, _item: &Item) -> bool {
        false
    }
    /// The spool's statistics.
    #[cfg(feature = "spool")]
    fn spool_stats(&self) -> Option<super::SpoolStats> {
        None
    }
    /// Commit progress, for `emit_durable`.
    #[cfg(feature = "spool")]
    fn durable(&self) -> Option<tokio::sync::watch::Receiver<super::spool::Durable>> {
        None
    }
}

/// The bounded in-memory store: one mutex around a `VecDeque` (ready), a map and a due-time
/// index (parked) and a set (taken). Each call holds the lock for a few list operations and
/// never across an `.await`.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closed: bool,
    next_seq: u64,
    ready: VecDeque<Item>,
    parked: BTreeMap<u64, Item>,
    due: BTreeSet<(Instant, u64)>,
    /// Sequence numbers of the taken events: at most one per sender, so a short list (no
    /// allocation per event, unlike a tree that empties and refills).
    taken: Vec<u64>,
}

impl Inner {
    fn outstanding(&self) -> usize {
        self.ready.len() + self.parked.len() + self.taken.len()
    }

    fn untake(&mut self, seq: u64) {
        if let Some(i) = self.taken.iter().position(|&s| s == seq) {
            self.taken.swap_remove(i);
        }
    }

    /// Removes the oldest event that is not held by a sender.
    fn evict_oldest(&mut self) -> Option<Item> {
        let ready = self.ready.front().map(|i| i.seq);
        let parked = self.parked.keys().next().copied();
        match (ready, parked) {
            (Some(r), Some(p)) if p < r => self.remove_parked(p),
            (Some(_), _) => self.ready.pop_front(),
            (None, Some(p)) => self.remove_parked(p),
            (None, None) => None,
        }
    }

    fn remove_parked(&mut self, seq: u64) -> Option<Item> {
        let mut item = self.parked.remove(&seq)?;
        if let Some(due) = item.due.take() {
            self.due.remove(&(due, seq));
        }
        Some(item)
    }
}

impl MemoryStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the lists inconsistent (each operation
        // is a single push or pop), so a poisoned lock is still usable.
        crate::sync::lock(&self.inner)
    }
}

impl Store for MemoryStore {
    fn push(&self, mut item: Item, overflow: Overflow) -> Pushed {
        let mut inner = self.lock();
        if inner.closed {
            return Pushed::Closed;
        }
        let mut evicted = None;
        if inner.outstanding() >= self.capacity {
            match overflow {
                Overflow::DropOldest => {
                    evicted = inner.evict_oldest();
                    if evicted.is_none() {
                        // Everything is held by senders: nothing older can make room.
                        return Pushed::Full(item);
                    }
                }
                Overflow::DropNewest | Overflow::SpillToSpool => return Pushed::Full(item),
            }
        }
        inner.next_seq += 1;
        let seq = inner.next_seq;
        item.seq = seq;
        let wake = inner.ready.is_empty();
        inner.ready.push_back(item);
        Pushed::Accepted { evicted, wake }
    }

    fn take(&self, now: &dyn Fn() -> Instant) -> Taken {
        let mut inner = self.lock();
        if let Some(&(due, seq)) = inner.due.first()
            && due <= now()
        {
            inner.due.remove(&(due, seq));
            if let Some(mut item) = inner.parked.remove(&seq) {
                item.due = None;
                inner.taken.push(seq);
                let more = !inner.ready.is_empty();
                return Taken::Item(item, more);
            }
        }
        if let Some(item) = inner.ready.pop_front() {
            inner.taken.push(item.seq);
            let more = !inner.ready.is_empty();
            return Taken::Item(item, more);
        }
        Taken::Empty {
            next_due: inner.due.first().map(|&(due, _)| due),
        }
    }

    fn park(&self, mut item: Item, due: Instant) {
        let mut inner = self.lock();
        inner.untake(item.seq);
        item.due = Some(due);
        inner.due.insert((due, item.seq));
        inner.parked.insert(item.seq, item);
    }

    fn unpark_front(&self, item: Item) {
        let mut inner = self.lock();
        inner.untake(item.seq);
        inner.ready.push_front(item);
    }

    fn release_parked(&self, now: Instant) -> usize {
        let inner = &mut *self.lock();
        release_parked(&mut inner.parked, &mut inner.due, now)
    }

    fn resolve(&self, seq: u64) {
        self.lock().untake(seq);
    }

    fn close(&self) {
        self.lock().closed = true;
    }

    fn drain(&self) -> Vec<Item> {
        let mut inner = self.lock();
        let mut out: Vec<Item> = inner.ready.drain(..).collect();
        inner.due.clear();
        let parked = std::mem::take(&mut inner.parked);
        out.extend(parked.into_values());
        out.sort_by_key(|i| i.seq);
        out
    }

    fn depth(&self) -> Depth {
        let inner = self.lock();
        Depth {
            ready: inner.ready.len(),
            parked: inner.parked.len(),
            taken: inner.taken.len(),
        }
    }

    fn last_seq(&self) -> u64 {
        self.lock().next_seq
    }

    fn ready_since(&self) -> Option<Instant> {
        self.lock().ready.front().map(|i| i.accepted)
    }

    fn oldest_outstanding(&self) -> Option<u64> {
        let inner = self.lock();
        [
            inner.ready.front().map(|i| i.seq),
            inner.parked.keys().next().copied(),
            inner.taken.iter().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Action, Actor, Context, Event, OrganizationId};

    /// A queued event of user `n` with the key `key-{n}` (also used by the spool store's tests).
    pub(crate) fn item(n: u32) -> Item {
        let event = Event::new(
            Action::new("user.signed_in").unwrap(),
            Actor::new(format!("user_{n}"), "user"),
            Context::new("127.0.0.1"),
        );
        Item::new(
            CreateEvent::new(OrganizationId::new("org_1").unwrap(), event),
            IdempotencyKey::from_checked(format!("key-{n}")),
        )
    }

    fn accepted(p: Pushed) -> Option<Item> {
        match p {
            Pushed::Accepted { evicted, .. } => evicted,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn capacity_counts_parked_and_taken_events() {
        let s = MemoryStore::new(2);
        accepted(s.push(item(1), Overflow::DropNewest));
        accepted(s.push(item(2), Overflow::DropNewest));
        let Taken::Item(one, _) = s.take(&Instant::now) else {
            panic!()
        };
        s.park(one, Instant::now() + std::time::Duration::from_secs(60));
        assert!(matches!(s.push(item(3), Overflow::DropNewest), Pushed::Full(_)));
        assert_eq!(s.depth().outstanding(), 2);
    }

    #[test]
    fn drop_oldest_evicts_the_oldest_waiting_event_even_when_parked() {
        let s = MemoryStore::new(2);
        accepted(s.push(item(1), Overflow::DropOldest));
        accepted(s.push(item(2), Overflow::DropOldest));
        let Taken::Item(one, _) = s.take(&Instant::now) else {
            panic!()
        };
        assert_eq!(one.seq, 1);
        s.park(one, Instant::now() + std::time::Duration::from_secs(60));
        let evicted = accepted(s.push(item(3), Overflow::DropOldest));
        assert_eq!(evicted.map(|i| i.seq), Some(1));
        assert_eq!(s.depth().parked, 0);
        assert_eq!(s.oldest_outstanding(), Some(2));
    }

    #[test]
    fn released_events_are_due_at_once_and_only_once() {
        let s = MemoryStore::new(10);
        for n in 1..=3 {
            accepted(s.push(item(n), Overflow::DropNewest));
        }
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(60);
        for _ in 0..2 {
            let Taken::Item(one, _) = s.take(&|| now) else {
                panic!()
            };
            s.park(one, later);
        }
        assert_eq!(s.release_parked(now), 2);
        let Taken::Item(first, more) = s.take(&|| now) else {
            panic!()
        };
        assert_eq!((first.seq, more), (1, true));
        // Failing again, it waits out its own backoff: not released a second time.
        s.park(first, later);
        assert_eq!(s.release_parked(now), 0);
        let Taken::Item(second, _) = s.take(&|| now) else {
            panic!()
        };
        assert_eq!(second.seq, 2);
        let Taken::Item(third, _) = s.take(&|| now) else {
            panic!()
        };
        assert_eq!(third.seq, 3);
        assert!(matches!(s.take(&|| now), Taken::Empty { next_due: Some(at) } if at == later));
    }

    #[test]
    fn due_parked_events_come_before_ready_ones() {
        let s = MemoryStore::new(10);
        accepted(s.push(item(1), Overflow::DropNewest));
        accepted(s.push(item(2), Overflow::DropNewest));
        let now = Instant::now();
        let Taken::Item(one, _) = s.take(&|| now) else {
            panic!()
        };
        s.park(one, now);
        let Taken::Item(again, _) = s.take(&|| now) else {
            panic!()
        };
        assert_eq!(again.seq, 1);
        s.resolve(again.seq);
        let Taken::Item(two, _) = s.take(&|| now) else {
            panic!()
        };
        assert_eq!(two.seq, 2);
        s.resolve(2);
        assert!(matches!(s.take(&|| now), Taken::Empty { next_due: None }));
        assert_eq!(s.oldest_outstanding(), None);
    }
}
