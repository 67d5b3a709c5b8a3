//! What the emitter benchmarks share: the event they send and the JSON line they print per
//! measurement (`cargo xtask bench` reads those lines). Included with `#[path]` by
//! `benches/emitter_delivery.rs` and `examples/spool_bench.rs`.

use audit_core::{Action, Actor, Context, Event, Target};
use serde_json::{Value, json};

/// A realistic event (actor with a name, user agent, one named target, two metadata entries),
/// numbered `n`.
pub(crate) fn event(n: usize) -> Event {
    Event::new(
        Action::from_static("team.member_added"),
        Actor::new(format!("user_{n:08}"), "user").name("Jon Smith"),
        Context::new("203.0.113.7").user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"),
    )
    .target(Target::new("team_01HQ8Z3J6K4M2N7P9R1S5T0V3X", "team").name("Engineering"))
    .meta("role", "admin")
    .meta("n", n)
}

/// Prints one measurement: `name`, `value`, `unit`, and the fields of `extra`.
pub(crate) fn record(name: &str, value: f64, unit: &str, extra: Value) {
    let mut line = json!({"name": name, "value": value, "unit": unit});
    if let (Some(obj), Value::Object(more)) = (line.as_object_mut(), extra) {
        obj.extend(more);
    }
    println!("{line}");
}
