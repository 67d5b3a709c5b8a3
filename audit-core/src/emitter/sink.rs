//! The destination seam: where the emitter's senders deliver events.
//!
//! [`Sink`] is one attempt at delivering one create-event request with its idempotency key. The
//! WorkOS [`Client`](crate::client::Client) is the production sink; [`MemorySink`] records events
//! in memory for an application's unit tests (and can be told to fail); [`DiscardSink`] only
//! counts them.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{CreateEvent, Error};

/// The future of one delivery attempt.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// A destination for events: one attempt, no retrying (the emitter retries).
///
/// An implementation sends `body` once with `idempotency_key` and reports how it went, with the
/// same error classification as the WorkOS client: [`Error::Api`] with the status (and any
/// `Retry-After`), [`Error::Transport`] or [`Error::Timeout`] for failures the emitter retries.
pub trait Sink: Send + Sync + 'static {
    /// Sends one event once.
    fn send<'a>(&'a self, body: &'a CreateEvent, idempotency_key: &'a str) -> SinkFuture<'a>;

    /// Whether a successful [`send`](Self::send) means the event is stored durably on the
    /// application's side, to be delivered from there (a transactional outbox), rather than
    /// delivered to WorkOS. `false` by default.
    ///
    /// With a durable sink, [`Emitter::emit_durable`](super::Emitter::emit_durable) works without
    /// a spool: it returns once the sink acknowledged the event.
    fn is_durable(&self) -> bool {
        false
    }
}

impl<T: Sink + ?Sized> Sink for Arc<T> {
    fn send<'a>(&'a self, body: &'a CreateEvent, idempotency_key: &'a str) -> SinkFuture<'a> {
        (**self).send(body, idempotency_key)
    }

    fn is_durable(&self) -> bool {
        (**self).is_durable()
    }
}

impl<T: Sink + ?Sized> Sink for Box<T> {
    fn send<'a>(&'a self, body: &'a CreateEvent, idempotency_key: &'a str) -> SinkFuture<'a> {
        (**self).send(body, idempotency_key)
    }

    fn is_durable(&self) -> bool {
        (**self).is_durable()
    }
}

/// An in-memory sink for tests: records every delivered event with its key, and answers with
/// scripted failures first when given some. Cloning shares the records.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use audit_core::emitter::{Emitter, MemorySink};
/// use audit_core::{Action, Actor, Context, Event, OrganizationId};
///
/// let sink = MemorySink::new();
/// let emitter = Emitter::builder(sink.clone()).start();
/// let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
/// let event = Event::new(
///     Action::new("user.signed_in").unwrap(),
///     Actor::new("user_01", "user"),
///     Context::new("203.0.113.7"),
/// );
/// emitter.try_emit(org, event).unwrap();
/// emitter.flush(Duration::from_secs(5)).await.unwrap();
/// assert_eq!(sink.events().len(), 1);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<MemoryInner>>,
    /// Woken at every delivery, for [`wait_for_events`](MemorySink::wait_for_events).
    delivered: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct MemoryInner {
    delivered: Vec<(CreateEvent, String)>,
    keys: HashSet<String>,
    attempts: Vec<String>,
    failures: VecDeque<Error>,
}

impl fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemorySink")
            .field("delivered", &inner.delivered.len())
            .field("attempts", &inner.attempts.len())
            .field("scripted_failures", &inner.failures.len())
            .finish()
    }
}

impl MemorySink {
    /// An empty sink that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        crate::sync::lock(&self.inner)
    }

    /// The next attempt fails with `error` (failures are used in the order they were pushed).
    pub fn push_failure(&self, error: Error) {
        self.lock().failures.push_back(error);
    }

    /// Every delivered event with its idempotency key, in delivery order. An event delivered
    /// twice with the same key is kept once, as WorkOS would.
    pub fn events(&self) -> Vec<(CreateEvent, String)> {
        self.lock().delivered.clone()
    }

    /// The idempotency key of every attempt, failed ones included, in order.
    pub fn attempts(&self) -> Vec<String> {
        self.lock().attempts.clone()
    }

    /// The action of every delivered event, in delivery order: compare it with what a test's
    /// requests should have produced (`assert_eq!(sink.actions(), ["team.created"])`).
    pub fn actions(&self) -> Vec<String> {
        self.lock()
            .delivered
            .iter()
            .map(|(e, _)| e.event.action.as_str().to_owned())
            .collect()
    }

    /// Waits until at least `count` events were delivered and returns every delivered event.
    /// The emitter delivers in the background (an adapter hands an event over once the
    /// response is finished), so a test waits for the event rather than reading at once.
    ///
    /// # Panics
    /// When fewer than `count` events arrived within `timeout`, naming the actions that did: it
    /// is an assertion for tests. Under tokio's paused clock the timeout passes in virtual time.
    pub async fn wait_for_events(&self, count: usize, timeout: std::time::Duration) -> Vec<CreateEvent> {
        self.wait_until(timeout, &format!("{count} audit events"), |delivered| {
            (delivered.len() >= count).then(|| delivered.iter().map(|(e, _)| e.clone()).collect())
        })
        .await
    }

    /// Waits (up to `timeout`) for a delivered event with this action and returns the first one.
    ///
    /// # Panics
    /// When none arrived in time, naming the actions that did.
    pub async fn expect_action(&self, action: &str, timeout: std::time::Duration) -> CreateEvent {
        self.wait_until(timeout, &format!("an audit event {action:?}"), |delivered| {
            delivered
                .iter()
                .find(|(e, _)| e.event.action.as_str() == action)
                .map(|(e, _)| e.clone())
        })
        .await
    }

    /// Waits until `found` finds something in the delivered events, or panics at `timeout`
    /// saying what was `expected` and which actions were delivered.
    async fn wait_until<T>(
        &self,
        timeout: std::time::Duration,
        expected: &str,
        found: impl Fn(&[(CreateEvent, String)]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so that a delivery in between is not missed.
            let notified = self.delivered.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = found(&self.lock().delivered) {
                return result;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {expected} within {timeout:?}; delivered: {:?}",
                    self.actions()
                );
            }
        }
    }
}

impl Sink for MemorySink {
    fn send<'a>(&'a self, body: &'a CreateEvent, idempotency_key: &'a str) -> SinkFuture<'a> {
        let result = {
            let mut inner = self.lock();
            inner.attempts.push(idempotency_key.to_owned());
            match inner.failures.pop_front() {
                Some(e) => Err(e),
                None => {
                    if inner.keys.insert(idempotency_key.to_owned()) {
                        inner.delivered.push((body.clone(), idempotency_key.to_owned()));
                        self.delivered.notify_waiters();
                    }
                    Ok(())
                }
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// A sink that accepts every event and keeps nothing but a count: for load tests that measure
/// what audit costs an application without a network destination, and for environments that run
/// the audit pipeline (validation, queueing) without sending anywhere. Cloning shares the count.
///
/// Unlike [`MemorySink`], whose record of every event grows without bound, it uses no memory
/// per event.
#[derive(Debug, Clone, Default)]
pub struct DiscardSink {
    accepted: Arc<AtomicU64>,
}

impl DiscardSink {
    /// A sink with a count of zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many attempts it accepted (one per delivered event).
    pub fn count(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// An attempt that has already succeeded.
struct Done;

impl Future for Done {
    type Output = Result<(), Error>;
    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Sink for DiscardSink {
    fn send<'a>(&'a self, _body: &'a CreateEvent, _idempotency_key: &'a str) -> SinkFuture<'a> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        // A zero-sized future: boxing it allocates nothing.
        Box::pin(Done)
    }
}

/// The WorkOS client as a sink: one [`Client::send_event_once`](crate::client::Client::send_event_once)
/// per attempt, over the client's pooled connections.
impl Sink for crate::client::Client {
    fn send<'a>(&'a self, body: &'a CreateEvent, idempotency_key: &'a str) -> SinkFuture<'a> {
        Box::pin(self.send_event_once(body, idempotency_key))
    }
}
