//! [`HandOff`]: the last step of every audited request.

use std::sync::Arc;
use std::time::Duration;

use super::{Decision, RequestAudit, ResponseInfo, SANITIZED_METADATA_KEY};
use crate::emitter::{EmitError, EmitOptions, Emitter, IdempotencyKey};
use crate::event::{Event, Metadata, OrganizationId};
use crate::request::{
    AuditPolicy, CancelledRequests, OMITTED_TARGETS_METADATA_KEY, SPLIT_ID_METADATA_KEY,
    SPLIT_PART_METADATA_KEY, SkipCounters, TargetOverflow,
};
use crate::throttle::Throttle;

/// The shortest interval between two log lines of a [`HandOff`] about events that were not
/// emitted (refused by the emitter, or breaking a WorkOS rule).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The adapters' last step, shared by `audit-tower` and `audit-actix`: decide a finished request
/// under the policy, hand a due event to the emitter without waiting (an event with more than
/// [`Event::MAX_TARGETS`] targets as several events or cut, as
/// [`AuditPolicy::target_overflow`] says; counted), count every request that
/// emitted nothing ([`SkipCounters`], by reason, and the events the emitter refused) and log
/// those failures at most once per [`FAILURE_LOG_INTERVAL`], with the number not logged since.
/// Nothing here fails or blocks: audit trouble never reaches the response.
#[derive(Debug)]
pub struct HandOff {
    emitter: Emitter,
    counters: Arc<SkipCounters>,
    /// At most one log line about failures per [`FAILURE_LOG_INTERVAL`].
    failure_log: Throttle,
}

impl HandOff {
    /// Hands events to `emitter` and counts into `counters`.
    pub fn new(emitter: Emitter, counters: Arc<SkipCounters>) -> Self {
        Self {
            emitter,
            counters,
            failure_log: Throttle::new(FAILURE_LOG_INTERVAL),
        }
    }

    /// The emitter events are handed to.
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// The counters of requests that emitted nothing.
    pub fn counters(&self) -> &Arc<SkipCounters> {
        &self.counters
    }

    /// Finishes the request's record ([`RequestAudit::finish`]) under `policy` with the response's
    /// `status`, and emits, counts or logs the outcome.
    pub fn finish(&self, audit: RequestAudit, policy: &AuditPolicy, status: u16) {
        self.decide(audit, policy, &ResponseInfo::new(status));
    }

    /// The request's response future was dropped before the response existed: counted, and
    /// emitted marked `outcome: "cancelled"` or skipped as the policy says
    /// ([`AuditPolicy::cancelled`]). Requests without an action are not audited and not counted.
    pub fn cancelled(&self, audit: RequestAudit, policy: &AuditPolicy) {
        if audit.action().is_none() {
            return;
        }
        self.counters.count_cancelled();
        tracing::debug!(
            action = ?audit.action().map(|a| a.as_str().to_owned()),
            "audit: the request was cancelled before its response"
        );
        if policy.cancelled == CancelledRequests::Emit {
            self.decide(audit, policy, &ResponseInfo::cancelled());
        }
    }

    fn decide(&self, audit: RequestAudit, policy: &AuditPolicy, response: &ResponseInfo) {
        let (organization, mut event) = match audit.finish(policy, response) {
            Decision::Emit { organization, event } => (organization, event),
            Decision::Skip(reason) => return self.counters.count(reason),
        };
        if event
            .metadata
            .as_ref()
            .is_some_and(|m| m.get(SANITIZED_METADATA_KEY).is_some())
        {
            self.counters.count_sanitized();
        }
        if event.targets.len() <= Event::MAX_TARGETS {
            return self.emit(organization, event, None);
        }
        self.counters.count_target_overflow();
        let total = event.targets.len();
        match policy.target_overflow {
            TargetOverflow::KeepFirst => {
                event.targets.truncate(Event::MAX_TARGETS);
                event
                    .metadata
                    .get_or_insert_with(Metadata::new)
                    .insert(OMITTED_TARGETS_METADATA_KEY, total - Event::MAX_TARGETS);
                self.emit(organization, event, None);
            }
            TargetOverflow::Split => {
                // One correlation id for the request; each part's key derives from it.
                let split_id = IdempotencyKey::generate();
                let parts = total.div_ceil(Event::MAX_TARGETS);
                let mut targets = std::mem::take(&mut event.targets).into_iter();
                for part in 1..=parts {
                    let mut piece = event.clone();
                    piece.targets = targets.by_ref().take(Event::MAX_TARGETS).collect();
                    let metadata = piece.metadata.get_or_insert_with(Metadata::new);
                    metadata.insert(SPLIT_ID_METADATA_KEY, split_id.as_str());
                    metadata.insert(SPLIT_PART_METADATA_KEY, format!("{part}/{parts}"));
                    let key = format!("{split_id}-{part}");
                    self.emit(organization.clone(), piece, Some(key));
                }
            }
        }
    }

    /// Hands one event to the emitter (with `key` as its idempotency key when given), counting
    /// and logging a refusal.
    fn emit(&self, organization: OrganizationId, event: Event, key: Option<String>) {
        let action = event.action.clone();
        let result = match key {
            None => self.emitter.try_emit(organization, event),
            Some(key) => {
                self.emitter
                    .try_emit_with(organization, event, EmitOptions::new().idempotency_key(key))
            }
        };
        match result {
            Ok(_) => {}
            Err(EmitError::Invalid(errors)) => {
                self.counters.count_invalid_event();
                if let Some(unlogged) = self.failure_log.ready() {
                    tracing::warn!(
                        action = %action,
                        errors = %errors,
                        not_logged_since_last = unlogged,
                        "audit: event not emitted, it breaks a WorkOS rule",
                    );
                }
            }
            Err(error) => {
                self.counters.count_emit_failure();
                if let Some(unlogged) = self.failure_log.ready() {
                    tracing::warn!(
                        action = %action,
                        error = %error,
                        refused_so_far = self.counters.emit_failures(),
                        not_logged_since_last = unlogged,
                        "audit: the emitter refused an event",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::adapter::RequestInfo;
    use crate::event::{Action, Actor, OrganizationId};
    use crate::request::SkipReason;

    fn annotated() -> RequestAudit {
        let a = RequestAudit::new(RequestInfo::new("198.51.100.4").user_agent("ua"));
        a.set_action(Action::from_static("team.created"));
        a.set_actor(Actor::new("u1", "user"));
        a.set_organization(OrganizationId::new("org_1").unwrap());
        a
    }

    #[tokio::test]
    async fn the_hand_off_emits_counts_and_logs_failures_at_a_bounded_rate() {
        use crate::emitter::MemorySink;

        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let hand_off = HandOff::new(emitter.clone(), Arc::default());
        let policy = AuditPolicy::default();
        hand_off.finish(annotated(), &policy, 201);
        hand_off.finish(RequestAudit::new(RequestInfo::new("198.51.100.4")), &policy, 200);
        hand_off.finish(annotated(), &policy, 500);
        let invalid = annotated();
        invalid.set_actor(Actor::new("", "user"));
        hand_off.finish(invalid, &policy, 200);
        emitter.flush(std::time::Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            sink.events().len(),
            1,
            "only the valid, successful, annotated request"
        );
        let counters = hand_off.counters();
        assert_eq!(counters.get(SkipReason::NotAnnotated), 1);
        assert_eq!(counters.get(SkipReason::Outcome), 1);
        assert_eq!(counters.invalid_events(), 1);
        assert_eq!(counters.emit_failures(), 0);

        // A shut-down emitter refuses: counted, and (within the interval of the invalid event's
        // log line) not logged but counted for the next line.
        emitter.shutdown(std::time::Duration::from_secs(5)).await;
        hand_off.finish(annotated(), &policy, 201);
        assert_eq!(counters.emit_failures(), 1);
        assert_eq!(hand_off.failure_log.suppressed.load(Ordering::Relaxed), 1);
        assert_eq!(hand_off.failure_log.ready(), None);
        assert_eq!(hand_off.failure_log.suppressed.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn more_than_twenty_targets_split_by_default_and_nothing_is_lost() {
        use crate::emitter::MemorySink;
        use crate::event::{MetadataValue, Target};

        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let hand_off = HandOff::new(emitter.clone(), Arc::default());
        let request = annotated();
        for i in 0..45 {
            request.add_target(Target::new(format!("user_{i}"), "user"));
        }
        hand_off.finish(request, &AuditPolicy::default(), 200);
        emitter.flush(std::time::Duration::from_secs(5)).await.unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 3);
        assert_eq!(hand_off.counters().target_overflows(), 1);
        assert_eq!(hand_off.counters().invalid_events(), 0);
        let mut ids = Vec::new();
        let mut keys = std::collections::HashSet::new();
        let split_id = events[0]
            .0
            .event
            .metadata
            .as_ref()
            .unwrap()
            .get(SPLIT_ID_METADATA_KEY)
            .cloned();
        assert!(split_id.is_some());
        let mut parts: Vec<_> = events.iter().collect();
        parts.sort_by_key(|(e, _)| {
            e.event
                .metadata
                .as_ref()
                .unwrap()
                .get(SPLIT_PART_METADATA_KEY)
                .map(ToString::to_string)
        });
        for (n, (body, key)) in parts.iter().enumerate() {
            let m = body.event.metadata.as_ref().unwrap();
            assert_eq!(m.get(SPLIT_ID_METADATA_KEY), split_id.as_ref());
            assert_eq!(
                m.get(SPLIT_PART_METADATA_KEY),
                Some(&MetadataValue::from(format!("{}/3", n + 1)))
            );
            assert!(body.event.targets.len() <= Event::MAX_TARGETS);
            let MetadataValue::String(id) = split_id.as_ref().unwrap() else {
                panic!()
            };
            assert_eq!(key.as_str(), format!("{id}-{}", n + 1));
            keys.insert(key.to_string());
            ids.extend(body.event.targets.iter().map(|t| t.id.clone()));
        }
        assert_eq!(keys.len(), 3, "distinct idempotency keys");
        assert_eq!(
            ids,
            (0..45).map(|i| format!("user_{i}")).collect::<Vec<_>>(),
            "every target, in order"
        );
    }

    #[tokio::test]
    async fn keep_first_records_how_many_targets_were_left_out() {
        use crate::emitter::MemorySink;
        use crate::event::{MetadataValue, Target};

        let sink = MemorySink::new();
        let emitter = Emitter::builder(sink.clone()).no_rate_limit().start();
        let hand_off = HandOff::new(emitter.clone(), Arc::default());
        let request = annotated();
        for i in 0..23 {
            request.add_target(Target::new(format!("user_{i}"), "user"));
        }
        let policy = AuditPolicy::default().target_overflow(TargetOverflow::KeepFirst);
        hand_off.finish(request, &policy, 200);
        emitter.flush(std::time::Duration::from_secs(5)).await.unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 1);
        let event = &events[0].0.event;
        assert_eq!(event.targets.len(), 20);
        assert_eq!(event.targets[19].id, "user_19");
        assert_eq!(
            event.metadata.as_ref().unwrap().get(OMITTED_TARGETS_METADATA_KEY),
            Some(&MetadataValue::Integer(3))
        );
        assert_eq!(hand_off.counters().target_overflows(), 1);
    }
}
