//! What both adapters' cancelled-request tests expect of the event a cancelled handler leaves.
//!
//! Their slow handler is annotated `#[action("report.generated")]`, records `rows: 10` before it
//! waits, and is cancelled (by a timeout or a disconnect) before it answers.

use audit_core::MetadataValue;
use audit_core::emitter::MemorySink;

/// Asserts that `sink` received exactly one event: the slow handler's `report.generated` with its
/// `rows: 10`, marked `outcome: "cancelled"` and without an `http_status` (no response was sent).
pub fn assert_one_cancelled_report(sink: &MemorySink) {
    let events = sink.events();
    assert_eq!(events.len(), 1);
    let event = &events[0].0.event;
    assert_eq!(event.action.as_str(), "report.generated");
    let metadata = event.metadata.as_ref().unwrap();
    assert_eq!(metadata.get("outcome"), Some(&MetadataValue::from("cancelled")));
    assert_eq!(metadata.get("rows"), Some(&MetadataValue::Integer(10)));
    assert_eq!(metadata.get("http_status"), None);
}
