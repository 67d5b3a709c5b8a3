//! The audited request's event, written in the handler's transaction: one call on `AuditCtx`.

use std::future::Future;

use audit_core::adapter::{Decision, ResponseInfo};
use audit_core::request::{AuditHandle, SkipReason};
use sqlx::PgConnection;

use crate::{Outbox, OutboxError};

/// Writes an annotated request's event into the handler's own transaction. Implemented for
/// audit-core's [`AuditHandle`], which both adapters' `AuditCtx` extractors
/// (`audit_tower::AuditCtx`, `audit_actix::AuditCtx`) dereference to, so a handler calls it on its
/// `AuditCtx`:
///
/// ```no_run
/// # async fn handler(audit: audit_core::request::AuditHandle, outbox: audit_postgres::Outbox, pool: sqlx::PgPool)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use audit_postgres::OutboxAudit;
/// let mut tx = pool.begin().await?;
/// sqlx::query("UPDATE invoices SET paid = true WHERE id = $1").bind(7_i64).execute(&mut *tx).await?;
/// audit.write_in(&outbox, &mut tx).await?; // the event exists iff the transaction commits
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// The event is the one the layer would have emitted after the response: the action from
/// `#[action]`, the actor, organization, client IP, user agent and targets the middleware
/// captured, and whatever the handler added on the `AuditCtx` before the call. The actor and
/// organization fall back on the outbox's [`with_request_policy`](Outbox::with_request_policy)
/// (give it the layer's policy); the event is written as for a successful response, since it only
/// exists if the handler commits.
///
/// **Retried transactions.** The request's record is marked written only once the row is
/// written, and it keeps the event: a handler that retries its transaction after a
/// serialization failure or a deadlock calls `write_in` again in the new transaction, which
/// writes the same event again, under the same idempotency key (so that should an earlier
/// attempt have committed after all, WorkOS stores the event once). A second call in the *same*
/// transaction is [`OutboxError::AlreadyWritten`] and writes nothing.
///
/// **What the layer does.** Once the event is written, the layer emits nothing more for the
/// request (its skip counters count it as suppressed). When the write fails, the mark is cleared
/// and the layer emits the event after the response as it would without `write_in`, under its
/// outcome policy: a handler that ignores the error and commits still gets its event (through
/// the layer's emitter, not the transaction), and one that answers with an error gets what the
/// policy gives failed requests (nothing under the default, success-only policy, matching a
/// change that was not made).
pub trait OutboxAudit {
    /// Writes the request's event through `conn` (the handler's transaction) and returns its
    /// idempotency key. Distinct errors when there is nothing to write, the transaction then
    /// untouched: [`OutboxError::AuditOff`], [`OutboxError::NotAnnotated`],
    /// [`OutboxError::AlreadyWritten`] (in this transaction), [`OutboxError::NotWritten`] (the
    /// handler suppressed the event, or no actor or organization).
    fn write_in<'a>(
        &'a self,
        outbox: &'a Outbox,
        conn: &'a mut PgConnection,
    ) -> impl Future<Output = Result<String, OutboxError>> + Send + 'a;
}

impl OutboxAudit for AuditHandle {
    async fn write_in<'a>(
        &'a self,
        outbox: &'a Outbox,
        conn: &'a mut PgConnection,
    ) -> Result<String, OutboxError> {
        let Some(record) = self.record() else {
            return Err(OutboxError::AuditOff);
        };
        let (organization, event) = match record.preview(outbox.request_policy(), &ResponseInfo::new(200)) {
            Decision::Emit { organization, event } => (organization, event),
            Decision::Skip(SkipReason::NotAnnotated) => return Err(OutboxError::NotAnnotated),
            Decision::Skip(reason) => {
                return Err(OutboxError::NotWritten {
                    reason: skip_text(reason),
                });
            }
            _ => {
                return Err(OutboxError::NotWritten {
                    reason: "the request's record decided not to emit",
                });
            }
        };
        let key = record
            .written_key()
            .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
        match outbox
            .write_once_in_transaction(conn, &organization, &event, &key)
            .await
        {
            Ok(true) => {
                record.mark_written(&key);
                Ok(key)
            }
            Ok(false) => Err(OutboxError::AlreadyWritten),
            Err(e) => {
                record.unmark_written();
                Err(e)
            }
        }
    }
}

fn skip_text(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Suppressed => "the handler suppressed the event",
        SkipReason::Outcome => "the policy emits nothing for this outcome",
        SkipReason::MissingActor => "no actor was captured and the policy has no default",
        SkipReason::MissingOrganization => "no organization was captured and the policy has no default",
        _ => "the request's record decided not to emit",
    }
}
