//! The fault mix of the delivery benchmarks, so that the emitter's and the PostgreSQL outbox's
//! figures under faults measure the same thing. Included with `#[path]` by
//! `benches/emitter_delivery.rs` and audit-postgres's `benches/outbox.rs`.

use audit_testkit::{FaultRule, TestKit};

const EVENTS: &str = "/audit_logs/events";

/// Adds the mix to `kit`. Rules are tried in order, each drawing independently (seeded): 20 % get
/// a 500 before storing; 6.25 % of the other 80 % (5 % overall) a 502 after storing; 2.67 % of the
/// remaining 75 % (2 % overall) a dropped connection after storing.
pub(crate) fn add_fault_mix(kit: &TestKit) {
    kit.fault(FaultRule::new(EVENTS).method("POST").share(0.20, 11).respond(500));
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .share(0.0625, 12)
            .respond(502)
            .after_storage(),
    );
    kit.fault(
        FaultRule::new(EVENTS)
            .method("POST")
            .share(0.02 / 0.75, 13)
            .drop_connection()
            .after_storage(),
    );
}
