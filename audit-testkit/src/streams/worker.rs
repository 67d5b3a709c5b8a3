//! The delivery side of log streams: one background task per configured stream.

use super::{Destination, Outgoing, StreamKind, shapes};
use crate::state::lock;
use crate::util::{format_ts, now, ulid};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// How many recent deliveries and failures a stream remembers.
const RECENT: usize = 100;

/// How many events may wait for delivery per stream by default; more are dropped and counted as
/// failed.
const MAX_PENDING: usize = 10_000;

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Retry settings of every stream of a testkit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamSettings {
    /// Attempts per event (at least 1) before it is given up and the stream goes to `error`.
    pub(crate) attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub(crate) first_backoff: Duration,
    /// How many events may wait per stream (the one being attempted included).
    pub(crate) max_pending: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_pending: MAX_PENDING,
        }
    }
}

/// The state of a log stream, as the configuration endpoint reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamState {
    /// Deliveries succeed (or none has failed yet).
    Active,
    /// Paused: events stored meanwhile are not delivered.
    Inactive,
    /// An event could not be delivered after every retry; the next success makes it `active`.
    Error,
}

impl StreamState {
    /// `active`, `inactive` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Active => "active",
            StreamState::Inactive => "inactive",
            StreamState::Error => "error",
        }
    }
}

/// What happened to one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// The destination answered 2xx.
    Delivered {
        /// The status it answered.
        status: u16,
    },
    /// The attempt failed; another follows.
    Retrying {
        /// Why (the status and the start of the answer, or the transport error).
        error: String,
    },
    /// The last attempt failed: the event was not delivered.
    GaveUp {
        /// Why.
        error: String,
    },
    /// The event was never attempted: too many were waiting.
    Dropped,
}

/// One entry of a stream's recent deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamDelivery {
    /// When the attempt ended.
    pub at: OffsetDateTime,
    /// The streamed event's `id`.
    pub event_id: String,
    /// The event's action.
    pub action: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// What happened.
    pub outcome: DeliveryOutcome,
}

/// A log stream's configuration and delivery counters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStatus {
    /// The organization.
    pub organization_id: String,
    /// The destination's kind.
    pub kind: StreamKind,
    /// The destination without credentials ([`Destination::describe`]).
    pub destination: String,
    /// The state the configuration endpoint reports.
    pub state: StreamState,
    /// When the stream was configured.
    pub created_at: OffsetDateTime,
    /// When an event was last delivered.
    pub last_synced_at: Option<OffsetDateTime>,
    /// Events delivered.
    pub delivered: u64,
    /// Events given up or dropped.
    pub failed: u64,
    /// Events waiting (the one being attempted included).
    pub pending: usize,
    /// Recent attempts, oldest first (at most 100).
    pub recent: Vec<StreamDelivery>,
}

impl StreamStatus {
    /// The `log_stream` object of `GET /organizations/{id}/audit_log_configuration`.
    pub(crate) fn configuration_json(&self) -> Value {
        let suffix: String = self
            .organization_id
            .trim_start_matches("org_")
            .chars()
            .take(26)
            .collect();
        json!({
            "id": format!("als_{suffix}"),
            "type": self.kind.type_name(),
            "state": self.state.as_str(),
            "last_synced_at": self.last_synced_at.map(format_ts),
            "created_at": format_ts(self.created_at),
        })
    }

    /// The status as served by `GET /_testkit/streams`.
    pub(crate) fn to_json(&self) -> Value {
        let recent: Vec<Value> = self
            .recent
            .iter()
            .map(|d| {
                let (outcome, detail) = match &d.outcome {
                    DeliveryOutcome::Delivered { status } => ("delivered", json!(status)),
                    DeliveryOutcome::Retrying { error } => ("retrying", json!(error)),
                    DeliveryOutcome::GaveUp { error } => ("gave_up", json!(error)),
                    DeliveryOutcome::Dropped => ("dropped", json!("too many events waiting")),
                };
                json!({"at": format_ts(d.at), "event_id": d.event_id, "action": d.action,
                       "attempt": d.attempt, "outcome": outcome, "detail": detail})
            })
            .collect();
        json!({
            "organization_id": self.organization_id,
            "type": self.kind.type_name(),
            "destination": self.destination,
            "state": self.state.as_str(),
            "created_at": format_ts(self.created_at),
            "last_synced_at": self.last_synced_at.map(format_ts),
            "delivered": self.delivered,
            "failed": self.failed,
            "pending": self.pending,
            "recent": recent,
        })
    }
}

#[derive(Clone)]
struct Pending {
    id: String,
    action: String,
    event: Value,
}

struct Inner {
    destination: Destination,
    /// When the destination was (last) set.
    created_at: OffsetDateTime,
    /// Counts the times the destination was replaced, so that the worker sees it change.
    generation: u64,
    active: bool,
    error: bool,
    pending: VecDeque<Pending>,
    delivered: u64,
    failed: u64,
    last_synced_at: Option<OffsetDateTime>,
    recent: VecDeque<StreamDelivery>,
}

impl Inner {
    fn note(&mut self, p: &Pending, attempt: u32, outcome: DeliveryOutcome) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(StreamDelivery {
            at: now(),
            event_id: p.id.clone(),
            action: p.action.clone(),
            attempt,
            outcome,
        });
    }
}

struct Stream {
    org: String,
    inner: Mutex<Inner>,
    /// Wakes the worker: an event arrived, the stream was resumed, replaced or removed.
    wake: Notify,
    stopped: AtomicBool,
}

impl Stream {
    fn status(&self) -> StreamStatus {
        let g = lock(&self.inner);
        StreamStatus {
            organization_id: self.org.clone(),
            kind: g.destination.kind(),
            destination: g.destination.describe(),
            state: if !g.active {
                StreamState::Inactive
            } else if g.error {
                StreamState::Error
            } else {
                StreamState::Active
            },
            created_at: g.created_at,
            last_synced_at: g.last_synced_at,
            delivered: g.delivered,
            failed: g.failed,
            pending: g.pending.len(),
            recent: g.recent.iter().cloned().collect(),
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Every organization's stream.
pub(crate) struct Streams {
    settings: StreamSettings,
    handle: OnceLock<tokio::runtime::Handle>,
    client: reqwest::Client,
    map: Mutex<HashMap<String, Arc<Stream>>>,
    /// Signalled whenever a stream's status changes.
    pub(crate) changed: Arc<Notify>,
}

impl Streams {
    pub(crate) fn new(settings: StreamSettings) -> Result<Streams, String> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("log streams: building the HTTP client: {e}"))?;
        Ok(Streams {
            settings: StreamSettings {
                attempts: settings.attempts.max(1),
                ..settings
            },
            handle: OnceLock::new(),
            client,
            map: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        })
    }

    /// Starts the workers of the streams configured so far, and of every later one, on `handle`.
    pub(crate) fn start(&self, handle: tokio::runtime::Handle) {
        if self.handle.set(handle).is_ok() {
            for s in lock(&self.map).values() {
                self.spawn(s.clone());
            }
        }
    }

    fn spawn(&self, stream: Arc<Stream>) {
        if let Some(h) = self.handle.get() {
            h.spawn(run(
                stream,
                self.client.clone(),
                self.settings,
                self.changed.clone(),
            ));
        }
    }

    /// Configures (or replaces) an organization's stream. Events still waiting for the old
    /// destination go to the new one; an event being sent when the destination is replaced is
    /// sent once: not again when that attempt succeeds, else to the new destination.
    pub(crate) fn set(
        &self,
        org: &str,
        destination: Destination,
        active: bool,
    ) -> Result<StreamStatus, String> {
        destination.validate()?;
        let mut map = lock(&self.map);
        if let Some(stream) = map.get(org).cloned() {
            drop(map);
            {
                let mut g = lock(&stream.inner);
                g.destination = destination;
                g.created_at = now();
                g.generation += 1;
                g.active = active;
                g.error = false;
                g.delivered = 0;
                g.failed = 0;
                g.last_synced_at = None;
                g.recent.clear();
            }
            stream.wake.notify_one();
            self.changed.notify_waiters();
            return Ok(stream.status());
        }
        let stream = Arc::new(Stream {
            org: org.to_owned(),
            inner: Mutex::new(Inner {
                destination,
                created_at: now(),
                generation: 0,
                active,
                error: false,
                pending: VecDeque::new(),
                delivered: 0,
                failed: 0,
                last_synced_at: None,
                recent: VecDeque::new(),
            }),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        map.insert(org.to_owned(), stream.clone());
        drop(map);
        let status = stream.status();
        self.spawn(stream);
        self.changed.notify_waiters();
        Ok(status)
    }

    /// Pauses (`false`) or resumes a stream; `None` when the organization has none.
    pub(crate) fn set_active(&self, org: &str, active: bool) -> Option<StreamStatus> {
        let stream = lock(&self.map).get(org).cloned()?;
        lock(&stream.inner).active = active;
        stream.wake.notify_one();
        self.changed.notify_waiters();
        Some(stream.status())
    }

    /// Removes a stream; whether there was one.
    pub(crate) fn remove(&self, org: &str) -> bool {
        let old = lock(&self.map).remove(org);
        if let Some(old) = &old {
            old.stop();
            self.changed.notify_waiters();
        }
        old.is_some()
    }

    pub(crate) fn status(&self, org: &str) -> Option<StreamStatus> {
        let stream = lock(&self.map).get(org).cloned();
        stream.map(|s| s.status())
    }

    pub(crate) fn all(&self) -> Vec<StreamStatus> {
        let streams: Vec<Arc<Stream>> = lock(&self.map).values().cloned().collect();
        let mut out: Vec<StreamStatus> = streams.iter().map(|s| s.status()).collect();
        out.sort_by(|a, b| a.organization_id.cmp(&b.organization_id));
        out
    }

    /// Queues a newly stored event for the organization's stream, if it has an active one.
    pub(crate) fn enqueue(&self, org: &str, event: &Value) {
        let Some(stream) = lock(&self.map).get(org).cloned() else {
            return;
        };
        let mut g = lock(&stream.inner);
        if !g.active {
            return;
        }
        let id = format!("audit_log_event_{}", ulid());
        let p = Pending {
            action: event
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            event: shapes::streamed_event(&id, org, event),
            id,
        };
        if g.pending.len() >= self.settings.max_pending.max(1) {
            g.failed += 1;
            g.note(&p, 0, DeliveryOutcome::Dropped);
            drop(g);
            self.changed.notify_waiters();
            return;
        }
        g.pending.push_back(p);
        drop(g);
        stream.wake.notify_one();
        self.changed.notify_waiters();
    }

    /// Forgets waiting events, counters and recent deliveries (the configuration stays).
    pub(crate) fn reset(&self) {
        for s in lock(&self.map).values() {
            let mut g = lock(&s.inner);
            g.pending.clear();
            g.recent.clear();
            g.delivered = 0;
            g.failed = 0;
            g.error = false;
            g.last_synced_at = None;
        }
        self.changed.notify_waiters();
    }
}

/// The most of a destination's answer that is read (only its start is shown; the rest of a
/// larger answer is never read).
pub(crate) const ANSWER_READ_LIMIT: usize = 256 * 1024;

/// How many characters of a failed answer a delivery's detail shows.
const ANSWER_SHOWN_CHARS: usize = 200;

/// Reads at most `limit` bytes of an answer's body; `true` when there was more.
async fn read_capped(res: &mut reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return (buf, true);
        }
        buf.extend_from_slice(&chunk);
    }
    (buf, false)
}

/// Sends one request; `Ok(status)` on 2xx. The error shows the status and the start of the
/// answer (at most [`ANSWER_READ_LIMIT`] bytes are read) or the transport error, with the
/// destination's credentials and `sk_` keys taken out.
async fn send(client: &reqwest::Client, out: &Outgoing, secrets: &[&str]) -> Result<u16, String> {
    let mut req = client.post(&out.url).body(out.body.clone());
    for (k, v) in &out.headers {
        req = req.header(k, v);
    }
    let msg = match req.send().await {
        Ok(mut res) => {
            let status = res.status().as_u16();
            if res.status().is_success() {
                return Ok(status);
            }
            let (body, cut) = read_capped(&mut res, ANSWER_READ_LIMIT).await;
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            let mut shown: String = text.chars().take(ANSWER_SHOWN_CHARS).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            let mut msg = format!("HTTP {status}: {shown}");
            if cut {
                msg.push_str(&format!(
                    " (answer longer than {ANSWER_READ_LIMIT} bytes: the rest was not read)"
                ));
            }
            msg
        }
        Err(e) => {
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    };
    Err(crate::redact::redact_secrets(&msg, secrets))
}

/// What the worker takes from the queue: the first event and where to send it.
fn next_event(stream: &Stream) -> Option<(Pending, Destination, u64)> {
    let g = lock(&stream.inner);
    if !g.active {
        return None;
    }
    let p = g.pending.front().cloned()?;
    Some((p, g.destination.clone(), g.generation))
}

async fn run(stream: Arc<Stream>, client: reqwest::Client, settings: StreamSettings, changed: Arc<Notify>) {
    loop {
        if stream.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Some((p, destination, generation)) = next_event(&stream) else {
            stream.wake.notified().await;
            continue;
        };
        let out = destination.outgoing(&p.event);
        let secrets = destination.credentials();
        let mut backoff = settings.first_backoff;
        'attempts: for attempt in 1..=settings.attempts {
            let result = send(&client, &out, &secrets).await;
            if stream.stopped.load(Ordering::SeqCst) {
                return;
            }
            let last = attempt == settings.attempts;
            let go_on = {
                let mut g = lock(&stream.inner);
                // A reset may have dropped the event meanwhile: then it is not counted.
                let current = g.pending.front().is_some_and(|f| f.id == p.id);
                // Replaced meanwhile: a delivered event is done (sent once); a failed attempt
                // is not counted, and the event goes to the new destination at once.
                let replaced = g.generation != generation;
                match &result {
                    _ if !current => {}
                    Ok(status) => {
                        g.pending.pop_front();
                        g.delivered += 1;
                        g.error = false;
                        g.last_synced_at = Some(now());
                        g.note(&p, attempt, DeliveryOutcome::Delivered { status: *status });
                    }
                    Err(_) if replaced => {}
                    Err(error) if last => {
                        g.pending.pop_front();
                        g.failed += 1;
                        g.error = true;
                        g.note(&p, attempt, DeliveryOutcome::GaveUp { error: error.clone() });
                    }
                    Err(error) => g.note(&p, attempt, DeliveryOutcome::Retrying { error: error.clone() }),
                }
                // Paused: the event stays first in line until the stream is resumed.
                current && result.is_err() && !last && g.active && !replaced
            };
            changed.notify_waiters();
            if !go_on {
                break;
            }
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = stream.wake.notified() => {
                        if stream.stopped.load(Ordering::SeqCst) {
                            return;
                        }
                        if lock(&stream.inner).generation != generation {
                            break 'attempts;
                        }
                    }
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback URL nothing listens on: every attempt fails at once, without a timer.
    fn refusing_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/in")
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_then_give_up() {
        let streams = Streams::new(StreamSettings {
            attempts: 4,
            first_backoff: Duration::from_millis(500),
            max_pending: 10,
        })
        .unwrap();
        streams.start(tokio::runtime::Handle::current());
        streams
            .set("org_1", Destination::http(refusing_url()), true)
            .unwrap();
        let started = tokio::time::Instant::now();
        streams.enqueue("org_1", &json!({"action": "a.b"}));
        loop {
            let mut changed = std::pin::pin!(streams.changed.notified());
            changed.as_mut().enable();
            if streams.status("org_1").unwrap().state == StreamState::Error {
                break;
            }
            changed.await;
        }
        // 500 ms, 1 s and 2 s between the four attempts, on the paused clock.
        assert_eq!(started.elapsed(), Duration::from_millis(3_500));
        let status = streams.status("org_1").unwrap();
        let attempts: Vec<(u32, bool)> = status
            .recent
            .iter()
            .map(|d| (d.attempt, matches!(d.outcome, DeliveryOutcome::GaveUp { .. })))
            .collect();
        assert_eq!(attempts, [(1, false), (2, false), (3, false), (4, true)]);
        assert_eq!((status.failed, status.pending), (1, 0));
    }
}
