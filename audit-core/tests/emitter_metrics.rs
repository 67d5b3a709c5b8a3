//! With the `metrics` feature, the emitter's stats reach the `metrics` facade under their
//! documented names: counters as events happen, gauges and totals from the once-a-second task,
//! a latency histogram sample per delivery.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_core::emitter::{Emitter, MemorySink};
use audit_core::{Action, Actor, Context, Event, OrganizationId};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Every value recorded, by `name{label=value,...}`: counters and gauges their latest value,
/// histograms their samples.
#[derive(Default)]
struct Store {
    values: Mutex<BTreeMap<String, f64>>,
    samples: Mutex<BTreeMap<String, Vec<f64>>>,
}

struct Cell {
    key: String,
    store: Arc<Store>,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self
            .store
            .values
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.store
            .values
            .lock()
            .unwrap()
            .insert(self.key.clone(), value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self
            .store
            .values
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self
            .store
            .values
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.store.values.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.store
            .samples
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default()
            .push(value);
    }
}

struct TestRecorder(Arc<Store>);

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let key = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        Arc::new(Cell {
            key,
            store: Arc::clone(&self.0),
        })
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("user.signed_in").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
}

#[tokio::test(start_paused = true)]
async fn stats_are_exported_under_their_documented_names() {
    let store = Arc::new(Store::default());
    metrics::set_global_recorder(TestRecorder(Arc::clone(&store)))
        .expect("the only recorder of this test binary");
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").unwrap();
    let emitter = Emitter::builder(MemorySink::new())
        .senders(2)
        .no_rate_limit()
        .start();
    for n in 0..5 {
        emitter.try_emit(org.clone(), event(n)).unwrap();
    }
    emitter.flush(Duration::from_secs(5)).await.unwrap();
    // The export task runs once a second (the paused clock advances to it).
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let values = store.values.lock().unwrap().clone();
    let value = |k: &str| {
        *values
            .get(k)
            .unwrap_or_else(|| panic!("{k} was not recorded: {values:?}"))
    };
    assert_eq!(value("workos_audit_emitter_events_total{outcome=accepted}"), 5.0);
    assert_eq!(value("workos_audit_emitter_events_total{outcome=delivered}"), 5.0);
    for gauge in [
        "workos_audit_emitter_queued",
        "workos_audit_emitter_retrying",
        "workos_audit_emitter_in_flight",
        "workos_audit_emitter_held",
        "workos_audit_emitter_paused",
        "workos_audit_emitter_panics_total",
        "workos_audit_emitter_not_workos_total",
        "workos_audit_emitter_dead_letter_failures_total",
    ] {
        assert_eq!(value(gauge), 0.0, "{gauge}");
    }
    let stats = emitter.stats();
    assert_eq!(
        value("workos_audit_emitter_concurrency"),
        stats.concurrency as f64
    );
    assert!(value("workos_audit_emitter_concurrency") >= 1.0);
    for q in ["0.5", "0.9", "0.99"] {
        let l = value(&format!("workos_audit_emitter_latency_seconds{{quantile={q}}}"));
        assert!((0.0..5.0).contains(&l), "quantile {q}: {l}");
    }
    let samples = store.samples.lock().unwrap().clone();
    let latency = &samples["workos_audit_emitter_delivery_latency_seconds"];
    assert_eq!(latency.len(), 5, "one sample per delivered event");
    assert!(latency.iter().all(|s| (0.0..5.0).contains(s)), "{latency:?}");

    // Shut down: the task records once more, then stops.
    emitter.shutdown(Duration::from_secs(1)).await;
    assert!(!emitter.health(1).senders_alive);
}
