//! [`OutboxSink`]: the emitter's destination when its events go to the outbox.

use std::sync::{Arc, Mutex};

use audit_core::emitter::SinkFuture;
use audit_core::{CreateEvent, Error, Sink};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::wake::Wake;
use crate::{Outbox, OutboxError};

/// The most rows one grouped insert writes.
const MAX_GROUP: usize = 512;

/// A [`Sink`] that writes each event into the outbox with the emitter's idempotency key, instead
/// of sending it to WorkOS; the relays deliver it from there. Made by [`Outbox::sink`]; used by
/// [`Outbox::emitter_builder`].
///
/// Concurrent sends are grouped: while one insert runs, the events that arrive wait and go
/// together in the next one (one statement and one commit for all of them). An attempt succeeds
/// once its row is committed. A database failure is reported as [`Error::Transport`], which the
/// emitter retries with the same key; should a commit succeed without its answer arriving, the
/// retry writes a second row with the same key, which WorkOS stores once. An event PostgreSQL
/// refuses (a U+0000 in a string, which `jsonb` cannot store) fails alone, its neighbours in the
/// group are written: it is [`Error::InvalidParameter`] naming the field at fault, which the
/// emitter dead-letters at once. Each committed group wakes this process's relays.
#[derive(Clone)]
pub struct OutboxSink {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    insert: String,
    wake: Arc<Wake>,
    writer: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
}

struct Pending {
    organization: String,
    key: String,
    event: String,
    done: oneshot::Sender<Result<(), Failed>>,
}

impl std::fmt::Debug for OutboxSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxSink").finish_non_exhaustive()
    }
}

impl OutboxSink {
    pub(crate) fn new(outbox: Outbox) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: outbox.pool().clone(),
                insert: outbox.queries().insert_many.clone(),
                wake: Arc::clone(&outbox.inner_wake()),
                writer: Mutex::new(None),
            }),
        }
    }

    /// Queues `pending` for the writer task, starting one on the current runtime when there is
    /// none (or the previous one's runtime has ended).
    fn enqueue(&self, pending: Pending) -> Result<(), Pending> {
        let mut writer = audit_core::sync::lock(&self.inner.writer);
        let pending = match writer.as_ref() {
            Some(tx) => match tx.send(pending) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(p)) => p,
            },
            None => pending,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(pending);
        };
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(write_groups(
            self.inner.pool.clone(),
            self.inner.insert.clone(),
            self.inner.wake.clone(),
            rx,
        ));
        let sent = tx.send(pending).map_err(|e| e.0);
        *writer = Some(tx);
        sent
    }
}

/// Why a row was not written.
#[derive(Clone)]
enum Failed {
    /// The database failed the statement (unreachable, timed out, …): retried by the emitter.
    Database(String),
    /// PostgreSQL refused a value of this event: retrying cannot help.
    Refused(String),
}

/// The writer task: one multi-row insert per group of waiting events.
async fn write_groups(
    pool: PgPool,
    insert: String,
    wake: Arc<Wake>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut group = Vec::new();
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let result = insert_rows(&pool, &insert, &group).await;
        let written = match result {
            Ok(()) => {
                for p in group.drain(..) {
                    let _ = p.done.send(Ok(()));
                }
                true
            }
            // A value PostgreSQL refuses fails the whole statement: each row is tried alone, so
            // that the one at fault fails and its neighbours are written.
            Err(Failed::Refused(_)) if group.len() > 1 => {
                let mut any = false;
                for p in group.drain(..) {
                    let alone = insert_rows(&pool, &insert, std::slice::from_ref(&p)).await;
                    any |= alone.is_ok();
                    let _ = p.done.send(alone);
                }
                any
            }
            Err(failed) => {
                for p in group.drain(..) {
                    let _ = p.done.send(Err(failed.clone()));
                }
                false
            }
        };
        if written {
            wake.signal();
        }
    }
}

/// One statement (and commit) for `rows`.
async fn insert_rows(pool: &PgPool, insert: &str, rows: &[Pending]) -> Result<(), Failed> {
    let orgs: Vec<&str> = rows.iter().map(|p| p.organization.as_str()).collect();
    let keys: Vec<&str> = rows.iter().map(|p| p.key.as_str()).collect();
    let events: Vec<&str> = rows.iter().map(|p| p.event.as_str()).collect();
    let result = sqlx::query(insert)
        .bind(&orgs)
        .bind(&keys)
        .bind(&events)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => match crate::refused(e, rows.first().map_or("", |p| p.event.as_str())) {
            refused @ OutboxError::Refused { .. } => Err(Failed::Refused(refused.to_string())),
            other => Err(Failed::Database(other.to_string())),
        },
    }
}

fn outbox_error(message: String) -> Error {
    Error::Transport {
        url: "postgresql audit outbox".into(),
        source: message.into(),
    }
}

impl Sink for OutboxSink {
    /// `true`: an acknowledged event is a committed row, so `Emitter::emit_durable` returns once
    /// the event is in the table.
    fn is_durable(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, body: &'a CreateEvent, idempotency_key: &'a str) -> SinkFuture<'a> {
        Box::pin(async move {
            let event = serde_json::to_string(&body.event).map_err(|e| Error::InvalidParameter {
                field: "event",
                message: e.to_string(),
            })?;
            let (done, answer) = oneshot::channel();
            let pending = Pending {
                organization: body.organization_id.as_str().to_owned(),
                key: idempotency_key.to_owned(),
                event,
                done,
            };
            if self.enqueue(pending).is_err() {
                return Err(outbox_error("no tokio runtime to write the outbox from".into()));
            }
            match answer.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(Failed::Database(message))) => Err(outbox_error(message)),
                // Refused for good: the emitter dead-letters the event (with the event itself)
                // instead of retrying it for its whole retry window.
                Ok(Err(Failed::Refused(message))) => Err(Error::InvalidParameter {
                    field: "event",
                    message,
                }),
                Err(_) => Err(outbox_error("the outbox writer stopped before answering".into())),
            }
        })
    }
}
