//! What senders and waiters synchronize on: the stop [`Signal`], the [`Watchers`] of progress,
//! and the [`Gate`] every sender passes (a `Retry-After` pause, the authorization hold).

use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

/// A one-shot flag that async code can wait for.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    set: AtomicBool,
    notify: Notify,
}

impl Signal {
    pub(crate) fn fire(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait(&self) {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// A [`Notify`] for waiters that come and go (an emit waiting for room; flush and shutdown
/// waiting for the events accepted before them), signalled by the senders after every resolved
/// event. The signal costs one atomic load while nobody waits; a waiter for a sequence number
/// is woken only once every event up to it is resolved, not at every event.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    notify: Notify,
    waiting: AtomicUsize,
    /// The sequence numbers waited for (empty entries: waiters for any progress).
    targets: Mutex<Vec<Option<u64>>>,
}

impl Watchers {
    /// Registers a waiter until the guard is dropped: for any progress (`None`), or until every
    /// event up to `target` is resolved. Register before checking the condition waited for: a
    /// change made after that check is then signalled.
    pub(crate) fn watch(&self, target: Option<u64>) -> WatchGuard<'_> {
        crate::sync::lock(&self.targets).push(target);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        WatchGuard {
            watchers: self,
            target,
        }
    }

    /// An event was resolved; `oldest` tells the smallest sequence number still outstanding.
    pub(crate) fn notify(&self, oldest: impl FnOnce() -> Option<u64>) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let first = {
            let targets = crate::sync::lock(&self.targets);
            // `None` (any progress) sorts first.
            targets.iter().min().copied()
        };
        let due = match first {
            None => false,
            Some(None) => true,
            Some(Some(target)) => oldest().is_none_or(|seq| seq > target),
        };
        if due {
            self.notify.notify_waiters();
        }
    }

    /// Wakes every waiter, registered or not.
    pub(crate) fn notify_all(&self) {
        self.notify.notify_waiters();
    }
}

/// A registered waiter of [`Watchers`].
pub(crate) struct WatchGuard<'a> {
    watchers: &'a Watchers,
    target: Option<u64>,
}

impl WatchGuard<'_> {
    /// A notification future; `enable` it before checking the condition.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.watchers.notify.notified()
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        let mut targets = crate::sync::lock(&self.watchers.targets);
        if let Some(i) = targets.iter().position(|t| *t == self.target) {
            targets.swap_remove(i);
        }
        self.watchers.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every sender checks before taking an event: a `Retry-After` pause and the
/// authorization hold.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    /// Whether a pause or a hold may be on (set and cleared under `state`'s lock): while it is
    /// not, a sender passes the gate with one atomic load.
    engaged: AtomicBool,
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GateState {
    pub(crate) paused_until: Option<Instant>,
    pub(crate) held_since: Option<SystemTime>,
}

impl Gate {
    pub(crate) fn state(&self) -> GateState {
        *crate::sync::lock(&self.state)
    }

    pub(crate) fn pause_until(&self, until: Instant) {
        let mut s = crate::sync::lock(&self.state);
        if s.paused_until.is_none_or(|t| t < until) {
            s.paused_until = Some(until);
        }
        self.engaged.store(true, Ordering::SeqCst);
    }

    /// Starts a hold; `false` when one is already on (another sender probes).
    pub(crate) fn begin_hold(&self) -> bool {
        let mut s = crate::sync::lock(&self.state);
        if s.held_since.is_some() {
            return false;
        }
        s.held_since = Some(SystemTime::now());
        self.engaged.store(true, Ordering::SeqCst);
        true
    }

    pub(crate) fn end_hold(&self) {
        crate::sync::lock(&self.state).held_since = None;
        self.changed.notify_waiters();
    }

    pub(crate) fn is_open(&self) -> bool {
        if !self.engaged.load(Ordering::SeqCst) {
            return true;
        }
        let mut s = crate::sync::lock(&self.state);
        if s.paused_until.is_some_and(|t| t <= Instant::now()) {
            s.paused_until = None;
        }
        let open = s.held_since.is_none() && s.paused_until.is_none();
        if open {
            self.engaged.store(false, Ordering::SeqCst);
        }
        open
    }

    /// Waits until neither a pause nor a hold is on; `false` when `stop` fired first.
    pub(crate) async fn wait_open(&self, stop: &Signal) -> bool {
        if self.is_open() {
            return !stop.is_set();
        }
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if stop.is_set() {
                return false;
            }
            let s = self.state();
            if s.held_since.is_some() {
                tokio::select! {
                    () = changed => {}
                    () = stop.wait() => return false,
                }
                continue;
            }
            match s.paused_until {
                Some(until) if until > Instant::now() => {
                    tokio::select! {
                        () = sleep_until(until) => {}
                        () = changed => {}
                        () = stop.wait() => return false,
                    }
                }
                _ => return true,
            }
        }
    }
}
