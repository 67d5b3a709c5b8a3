//! The check both adapters' tests make of a request whose handler added more than WorkOS's 20
//! targets: under the default [`TargetOverflow::Split`](audit_core::request::TargetOverflow::Split)
//! the stored events are the parts of one request, and together they hold every target once, in
//! order.

use audit_core::request::{SPLIT_ID_METADATA_KEY, SPLIT_PART_METADATA_KEY};
use serde_json::Value;

/// Asserts that `events` (the stored events' JSON, in any order) are `parts` parts of one split
/// request, sharing one correlation id, numbered `1/parts` to `parts/parts`, each with at most 20
/// targets, and that their targets are `expected_ids` in order.
pub fn assert_split_parts(mut events: Vec<Value>, parts: usize, expected_ids: &[String]) {
    assert_eq!(events.len(), parts, "one stored event per part");
    events.sort_by_key(part_number);
    let split_id = events[0]["metadata"][SPLIT_ID_METADATA_KEY].clone();
    assert!(
        split_id.is_string(),
        "the parts carry a correlation id: {split_id}"
    );
    let mut ids = Vec::new();
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event["metadata"][SPLIT_ID_METADATA_KEY], split_id);
        assert_eq!(
            event["metadata"][SPLIT_PART_METADATA_KEY],
            format!("{}/{parts}", n + 1)
        );
        let targets = event["targets"].as_array().expect("targets");
        assert!(
            targets.len() <= 20,
            "part {} has {} targets",
            n + 1,
            targets.len()
        );
        ids.extend(
            targets
                .iter()
                .map(|t| t["id"].as_str().expect("target id").to_owned()),
        );
    }
    assert_eq!(ids, expected_ids, "every target, once, in order");
}

/// The part's number, read from its `n/total` metadata.
fn part_number(event: &Value) -> usize {
    event["metadata"][SPLIT_PART_METADATA_KEY]
        .as_str()
        .and_then(|p| p.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}
