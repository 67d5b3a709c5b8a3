//! [`OutboxStats`]: what the outbox holds, read from the database.

use std::time::Duration;

use sqlx::Row;

use crate::{Outbox, OutboxError};

/// What the outbox holds now (every instance's rows). Per-instance delivery counts are in
/// [`RelayStats`](crate::RelayStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Rows waiting for delivery (due, backing off or claimed).
    pub depth: u64,
    /// How long the oldest of them has waited since it was written; `None` when empty.
    pub oldest_pending_age: Option<Duration>,
    /// Rows under an unexpired lease: being delivered by some instance right now.
    pub leases_held: u64,
    /// Rows in the dead-letter table.
    pub dead_letters: u64,
}

pub(crate) async fn read(outbox: &Outbox) -> Result<OutboxStats, OutboxError> {
    let row = sqlx::query(&outbox.queries().stats)
        .fetch_one(outbox.pool())
        .await?;
    let count =
        |i: usize| -> Result<u64, sqlx::Error> { Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or(0)) };
    let oldest: Option<f64> = row.try_get(1)?;
    let stats = OutboxStats {
        depth: count(0)?,
        oldest_pending_age: oldest.map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::ZERO)),
        leases_held: count(2)?,
        dead_letters: count(3)?,
    };
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!("audit_outbox_depth").set(stats.depth as f64);
        metrics::gauge!("audit_outbox_oldest_pending_seconds")
            .set(stats.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64()));
        metrics::gauge!("audit_outbox_leases_held").set(stats.leases_held as f64);
        metrics::gauge!("audit_outbox_dead_letters").set(stats.dead_letters as f64);
    }
    Ok(stats)
}
