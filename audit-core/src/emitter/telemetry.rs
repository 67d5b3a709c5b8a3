//! Readiness ([`Emitter::health`](super::Emitter::health)) and, with the `metrics` feature, the
//! emitter's [`Stats`] exported through the `metrics` facade once a second.
//!
//! # Metric names
//!
//! These names and labels are stable (a change is a breaking change of the crate):
//!
//! | name | kind | what |
//! |---|---|---|
//! | `workos_audit_emitter_events_total{outcome}` | counter | events by `outcome`: `accepted`, `delivered`, `retried`, `dead_lettered`, `dropped_newest`, `dropped_oldest` (counted as they happen) |
//! | `workos_audit_emitter_not_workos_total` | counter | [`Stats::not_workos`] |
//! | `workos_audit_emitter_dead_letter_failures_total` | counter | [`Stats::dead_letter_failures`] |
//! | `workos_audit_emitter_panics_total` | counter | [`Stats::panics`] |
//! | `workos_audit_emitter_queued` | gauge | [`Stats::queued`] |
//! | `workos_audit_emitter_retrying` | gauge | [`Stats::retrying`] |
//! | `workos_audit_emitter_in_flight` | gauge | [`Stats::in_flight`] |
//! | `workos_audit_emitter_held` | gauge | 1 while delivery is held for a refused key ([`Stats::auth_failed`]), else 0 |
//! | `workos_audit_emitter_paused` | gauge | 1 while every sender waits for a `Retry-After` ([`Stats::paused`]) |
//! | `workos_audit_emitter_concurrency` | gauge | [`Stats::concurrency`] |
//! | `workos_audit_emitter_accept_rate` | gauge | [`Stats::accept_rate`], events per second |
//! | `workos_audit_emitter_delivery_rate` | gauge | [`Stats::delivery_rate`], events per second |
//! | `workos_audit_emitter_time_to_drain_seconds` | gauge | [`Stats::time_to_drain`] (not updated while the backlog does not shrink) |
//! | `workos_audit_emitter_latency_seconds{quantile}` | gauge | [`Stats::latency_p50`], `p90`, `p99` as `quantile` `0.5`, `0.9`, `0.99` |
//! | `workos_audit_emitter_delivery_latency_seconds` | histogram | acceptance to delivery, one sample per delivered event |
//! | `workos_audit_spool_depth` | gauge | [`SpoolStats::depth`](super::SpoolStats::depth) (with a spool) |
//! | `workos_audit_spool_spilled` | gauge | [`SpoolStats::spilled`](super::SpoolStats::spilled) |
//! | `workos_audit_spool_backlog` | gauge | [`SpoolStats::backlog`](super::SpoolStats::backlog) |
//! | `workos_audit_spool_oldest_age_seconds` | gauge | [`SpoolStats::oldest_age`](super::SpoolStats::oldest_age), 0 when empty |
//! | `workos_audit_spool_commit_seconds{quantile}` | gauge | [`SpoolStats::commit_p50`](super::SpoolStats::commit_p50) and `commit_p99` (`0.5`, `0.99`) |
//! | `workos_audit_spool_commits_total` | counter | [`SpoolStats::commits`](super::SpoolStats::commits) |
//! | `workos_audit_spool_recovered_total` | counter | [`SpoolStats::recovered`](super::SpoolStats::recovered) |
//! | `workos_audit_spool_refused_total` | counter | [`SpoolStats::refused`](super::SpoolStats::refused) |
//! | `workos_audit_spool_corrupt_total` | counter | [`SpoolStats::corrupt`](super::SpoolStats::corrupt) |
//! | `workos_audit_spool_write_errors_total` | counter | [`SpoolStats::write_errors`](super::SpoolStats::write_errors) |

use super::Stats;

/// Whether an emitter can take and deliver events now: the answer for a readiness probe.
/// Made by [`Emitter::health`](super::Emitter::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The emitter accepts events (not shut down) and every sender task is running.
    pub senders_alive: bool,
    /// Delivery is held because WorkOS refused the API key (401/403).
    pub held: bool,
    /// Events waiting (queued and retrying) now.
    pub waiting: usize,
    /// The threshold `waiting` was compared with.
    pub max_waiting: usize,
}

impl Health {
    /// Ready: senders alive, not held, and fewer than `max_waiting` events waiting.
    pub fn is_ready(&self) -> bool {
        self.senders_alive && !self.held && self.waiting < self.max_waiting
    }

    /// What is wrong, in words for a probe's answer (`None` when ready).
    pub fn problem(&self) -> Option<String> {
        if !self.senders_alive {
            Some("the audit emitter's senders are not running (shut down or stopped)".to_owned())
        } else if self.held {
            Some("audit delivery is held: WorkOS refused the API key".to_owned())
        } else if self.waiting >= self.max_waiting {
            Some(format!(
                "{} audit events are waiting (threshold {})",
                self.waiting, self.max_waiting
            ))
        } else {
            None
        }
    }

    pub(super) fn new(stats: &Stats, senders_alive: bool, max_waiting: usize) -> Self {
        Health {
            senders_alive,
            held: stats.auth_failed,
            waiting: stats.queued + stats.retrying,
            max_waiting,
        }
    }
}

#[cfg(feature = "metrics")]
pub(super) use export::{delivered, spawn};

#[cfg(feature = "metrics")]
mod export {
    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use metrics::{counter, gauge, histogram};

    use super::super::shared::Shared;
    use super::Stats;

    /// How often the gauges and totals are brought up to date.
    const INTERVAL: Duration = Duration::from_secs(1);

    /// One sample of the delivery latency histogram.
    pub(in crate::emitter) fn delivered(latency: Duration) {
        histogram!("workos_audit_emitter_delivery_latency_seconds").record(latency.as_secs_f64());
    }

    /// Starts the task that exports [`Stats`] once a second while the emitter is open (and once
    /// more when it closed). It holds no reference that would keep the emitter alive.
    pub(in crate::emitter) fn spawn(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle) {
        runtime.spawn(run(Arc::downgrade(shared)));
    }

    async fn run(shared: Weak<Shared>) {
        let mut every = tokio::time::interval(INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            record(&super::super::stats_of(&shared));
            if shared.is_closed() {
                return;
            }
        }
    }

    /// Sets every gauge and total of the table in the module documentation from `stats`.
    pub(in crate::emitter) fn record(stats: &Stats) {
        let secs = |d: Duration| d.as_secs_f64();
        counter!("workos_audit_emitter_not_workos_total").absolute(stats.not_workos);
        counter!("workos_audit_emitter_dead_letter_failures_total").absolute(stats.dead_letter_failures);
        counter!("workos_audit_emitter_panics_total").absolute(stats.panics);
        gauge!("workos_audit_emitter_queued").set(stats.queued as f64);
        gauge!("workos_audit_emitter_retrying").set(stats.retrying as f64);
        gauge!("workos_audit_emitter_in_flight").set(stats.in_flight as f64);
        gauge!("workos_audit_emitter_held").set(f64::from(u8::from(stats.auth_failed)));
        gauge!("workos_audit_emitter_paused").set(f64::from(u8::from(stats.paused)));
        gauge!("workos_audit_emitter_concurrency").set(stats.concurrency as f64);
        gauge!("workos_audit_emitter_accept_rate").set(stats.accept_rate);
        gauge!("workos_audit_emitter_delivery_rate").set(stats.delivery_rate);
        if let Some(d) = stats.time_to_drain {
            gauge!("workos_audit_emitter_time_to_drain_seconds").set(secs(d));
        }
        for (quantile, value) in [
            ("0.5", stats.latency_p50),
            ("0.9", stats.latency_p90),
            ("0.99", stats.latency_p99),
        ] {
            if let Some(d) = value {
                gauge!("workos_audit_emitter_latency_seconds", "quantile" => quantile).set(secs(d));
            }
        }
        #[cfg(feature = "spool")]
        if let Some(spool) = &stats.spool {
            gauge!("workos_audit_spool_depth").set(spool.depth as f64);
            gauge!("workos_audit_spool_spilled").set(spool.spilled as f64);
            gauge!("workos_audit_spool_backlog").set(spool.backlog as f64);
            gauge!("workos_audit_spool_oldest_age_seconds").set(spool.oldest_age.map_or(0.0, secs));
            for (quantile, value) in [("0.5", spool.commit_p50), ("0.99", spool.commit_p99)] {
                if let Some(d) = value {
                    gauge!("workos_audit_spool_commit_seconds", "quantile" => quantile).set(secs(d));
                }
            }
            counter!("workos_audit_spool_commits_total").absolute(spool.commits);
            counter!("workos_audit_spool_recovered_total").absolute(spool.recovered);
            counter!("workos_audit_spool_refused_total").absolute(spool.refused);
            counter!("workos_audit_spool_corrupt_total").absolute(spool.corrupt);
            counter!("workos_audit_spool_write_errors_total").absolute(spool.write_errors);
        }
    }
}
