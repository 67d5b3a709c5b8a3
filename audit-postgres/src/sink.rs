//! [`OutboxSink`]: the emitter's destination when its events go to the outbox.

use std::sync::{Arc, Mutex};

use audit_core::emitter::SinkFuture;
use audit_core::{CreateEvent, Error, Sink};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::Outbox;

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
/// retry writes a second row with the same key, which WorkOS stores once.
#[derive(Clone)]
pub struct OutboxSink {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    insert: String,
    writer: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
}

struct Pending {
    organization: String,
    key: String,
    event: String,
    done: oneshot::Sender<Result<(), String>>,
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
            rx,
        ));
        let sent = tx.send(pending).map_err(|e| e.0);
        *writer = Some(tx);
        sent
    }
}

/// The writer task: one multi-row insert per group of waiting events.
async fn write_groups(pool: PgPool, insert: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut group = Vec::new();
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (mut orgs, mut keys, mut events) = (
            Vec::with_capacity(group.len()),
            Vec::with_capacity(group.len()),
            Vec::with_capacity(group.len()),
        );
        for p in &mut group {
            orgs.push(std::mem::take(&mut p.organization));
            keys.push(std::mem::take(&mut p.key));
            events.push(std::mem::take(&mut p.event));
        }
        let result = sqlx::query(&insert)
            .bind(&orgs)
            .bind(&keys)
            .bind(&events)
            .execute(&pool)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        for p in group.drain(..) {
            let _ = p.done.send(result.clone());
        }
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
                Ok(result) => result.map_err(outbox_error),
                Err(_) => Err(outbox_error("the outbox writer stopped before answering".into())),
            }
        })
    }
}
