//! The audited request's event, written in the handler's transaction: one call on `AuditCtx`.

use std::future::Future;

use audit_core::adapter::{Decision, ResponseInfo};
use audit_core::emitter::EmitOptions;
use audit_core::request::AuditHandle;
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
/// captured, and whatever the handler added on the `AuditCtx` before the call. The request's
/// record is then finished, so the layer emits nothing more for the request (it counts it as
/// suppressed). The actor and organization fall back on the outbox's
/// [`with_request_policy`](Outbox::with_request_policy) (give it the layer's policy); the event is written
/// as for a successful response, since it only exists if the handler commits.
pub trait OutboxAudit {
    /// Writes the request's event through `conn` (the handler's transaction) and returns its
    /// idempotency key. [`OutboxError::NotWritten`] when there is no event to write (audit off,
    /// no `#[action]`, suppressed, already written, no actor or organization); the transaction
    /// is then untouched.
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
        {
            let Some(record) = self.record() else {
                return Err(OutboxError::NotWritten {
                    reason: "audit is off for this request",
                });
            };
            match record
                .clone()
                .finish(outbox.request_policy(), &ResponseInfo::new(200))
            {
                Decision::Emit { organization, event } => {
                    outbox
                        .write_with(conn, &organization, &event, &EmitOptions::new())
                        .await
                }
                Decision::Skip(reason) => Err(OutboxError::NotWritten {
                    reason: skip_text(reason),
                }),
                _ => Err(OutboxError::NotWritten {
                    reason: "the request's record decided not to emit",
                }),
            }
        }
    }
}

fn skip_text(reason: audit_core::request::SkipReason) -> &'static str {
    use audit_core::request::SkipReason as R;
    match reason {
        R::NotAnnotated => "the handler has no #[action]",
        R::Suppressed => "the event was suppressed or already written",
        R::Outcome => "the policy emits nothing for this outcome",
        R::MissingActor => "no actor was captured and the policy has no default",
        R::MissingOrganization => "no organization was captured and the policy has no default",
        _ => "the request's record decided not to emit",
    }
}
