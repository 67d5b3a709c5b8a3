//! Waking this process's relays when it writes rows: no `NOTIFY`, so no database-wide lock in
//! the writers' commits.
//!
//! Every write through an [`Outbox`](crate::Outbox) of a schema signals that schema's relays in
//! the same process. A row written inside a transaction is not visible until the caller commits,
//! which the outbox does not see: a woken relay that finds nothing polls quickly for a short
//! while ([`FAST_POLL`] for [`FAST_WINDOW`]), then goes back to its idle poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

/// How often a woken relay looks for the rows of a transaction that has not committed yet.
pub(crate) const FAST_POLL: Duration = Duration::from_millis(10);

/// How long after a local write a relay keeps polling at [`FAST_POLL`].
pub(crate) const FAST_WINDOW: Duration = Duration::from_secs(1);

/// One schema's wake-up signal, shared by every `Outbox` of that schema in the process.
#[derive(Default)]
pub(crate) struct Wake {
    notify: Notify,
    /// Relay tasks waiting for a signal: writes skip the signal when none waits.
    waiting: AtomicUsize,
}

impl Wake {
    /// The signal of `schema` (one per schema name in the process).
    pub(crate) fn for_schema(schema: &str) -> Arc<Self> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Wake>>>> = OnceLock::new();
        let mut all = audit_core::sync::lock(ALL.get_or_init(Default::default));
        all.entry(schema.to_owned()).or_default().clone()
    }

    /// Wakes every waiting relay task of the schema.
    pub(crate) fn signal(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// A registration that counts as waiting while it lives, and its notification future
    /// (enabled at once, so a signal sent before it is awaited is not missed).
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiter { wake: self }
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// See [`Wake::waiter`].
pub(crate) struct Waiter<'a> {
    wake: &'a Wake,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.wake.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
