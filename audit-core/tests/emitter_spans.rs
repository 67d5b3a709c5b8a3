//! The emitter's attempt spans as a tracing subscriber sees them: one `audit_emitter.attempt`
//! span per delivery attempt at DEBUG level, with stable field names, linked (`follows_from`) to
//! the span in which the event was accepted, and never carrying the API key.
//!
//! A small recording `Layer` keeps every span, its fields and its `follows_from` links. The
//! subscriber is installed for the test's thread only (`set_default`) and the runtime is
//! single-threaded, so the senders' spans are recorded by it and no other test sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use audit_core::emitter::Emitter;
use audit_core::{Action, Actor, Client, Context, Event, OrganizationId};
use audit_testkit::{FaultRule, TestKit};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Instrument, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

const EVENTS: &str = "/audit_logs/events";
const API_KEY: &str = "sk_test_span_secret_0123456789";

/// One span as the layer saw it.
#[derive(Debug, Clone)]
struct SeenSpan {
    id: Id,
    name: &'static str,
    target: String,
    level: Level,
    fields: HashMap<String, String>,
    follows_from: Vec<Id>,
}

#[derive(Default)]
struct Seen {
    spans: Vec<SeenSpan>,
    /// Every field value of every event (log line), to look for secrets.
    event_values: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    fn seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn attempts(&self) -> Vec<SeenSpan> {
        self.seen(|s| {
            s.spans
                .iter()
                .filter(|span| span.name == "audit_emitter.attempt")
                .cloned()
                .collect()
        })
    }

    fn span_named(&self, name: &str) -> Vec<SeenSpan> {
        self.seen(|s| s.spans.iter().filter(|span| span.name == name).cloned().collect())
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: LayerContext<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let meta = attrs.metadata();
        self.seen(|s| {
            s.spans.push(SeenSpan {
                id: id.clone(),
                name: meta.name(),
                target: meta.target().to_owned(),
                level: *meta.level(),
                fields,
                follows_from: Vec::new(),
            })
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        self.seen(|s| {
            if let Some(span) = s.spans.iter_mut().rev().find(|span| span.id == *id) {
                values.record(&mut Fields(&mut span.fields));
            }
        });
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _: LayerContext<'_, S>) {
        self.seen(|s| {
            if let Some(span) = s.spans.iter_mut().rev().find(|span| span.id == *id) {
                span.follows_from.push(follows.clone());
            }
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.seen(|s| s.event_values.extend(fields.into_values()));
    }
}

fn event(n: usize) -> Event {
    Event::new(
        Action::new("invoice.paid").unwrap(),
        Actor::new(format!("user_{n}"), "user"),
        Context::new("203.0.113.7"),
    )
}

/// One sender, so the events are attempted in the order they were accepted; retries at once.
fn emitter(kit: &TestKit) -> Emitter {
    let client = Client::builder().api_key(API_KEY).base_url(kit.url()).build();
    Emitter::builder(client.expect("client"))
        .senders(1)
        .no_rate_limit()
        .jitter(false)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(1))
        .start()
}

#[tokio::test(flavor = "current_thread")]
async fn each_attempt_gets_a_debug_span_linked_to_the_span_that_emitted_the_event() {
    let recorder = Recorder::default();
    let _subscriber = tracing::subscriber::set_default(Registry::default().with(recorder.clone()));
    let kit = TestKit::builder().start().await.expect("testkit starts");
    // The first create-event request fails: the first event needs two attempts.
    kit.fault(FaultRule::new(EVENTS).method("POST").times(1).respond(500));
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let emitter = emitter(&kit);

    // An axum/actix handler's request span, current while `try_emit` accepts the event.
    let request = tracing::info_span!("http.request", route = "/invoices/{id}/pay");
    let retried = request
        .in_scope(|| emitter.try_emit(org.clone(), event(1)))
        .expect("accepted");
    // A job awaiting `emit` inside its own span.
    let job = tracing::info_span!("nightly.job");
    let from_job = emitter
        .emit(org.clone(), event(2))
        .instrument(job.clone())
        .await
        .expect("accepted");
    // Accepted outside any span: its attempt follows nothing.
    let unlinked = emitter.try_emit(org.clone(), event(3)).expect("accepted");
    emitter.flush(Duration::from_secs(10)).await.expect("delivered");
    assert_eq!(kit.events(org.as_str()).len(), 3);

    let request_id = request.id().expect("the request span is recorded");
    let job_id = job.id().expect("the job span is recorded");
    let attempts = recorder.attempts();
    let of = |key: &str| -> Vec<SeenSpan> {
        attempts
            .iter()
            .filter(|span| span.fields.get("idempotency_key").map(String::as_str) == Some(key))
            .cloned()
            .collect()
    };

    let first = of(retried.idempotency_key.as_str());
    assert_eq!(first.len(), 2, "two attempts of the first event: {attempts:#?}");
    for (n, span) in first.iter().enumerate() {
        assert_eq!(span.level, Level::DEBUG);
        assert_eq!(span.target, "audit_core::emitter");
        assert_eq!(span.fields["action"], "invoice.paid");
        assert_eq!(span.fields["organization_id"], org.as_str());
        assert_eq!(span.fields["attempt"], (n + 1).to_string());
        // Every attempt, the retry too, leads back to the request.
        assert_eq!(span.follows_from, vec![request_id.clone()], "{span:#?}");
    }
    assert_eq!(first[0].fields["outcome"], "retryable_error");
    assert_eq!(first[0].fields["status"], "500");
    assert_eq!(first[1].fields["outcome"], "delivered");
    assert!(!first[1].fields.contains_key("status"), "{:#?}", first[1]);

    let second = of(from_job.idempotency_key.as_str());
    assert_eq!(second.len(), 1, "{attempts:#?}");
    assert_eq!(second[0].follows_from, vec![job_id]);
    assert_eq!(second[0].fields["outcome"], "delivered");

    let third = of(unlinked.idempotency_key.as_str());
    assert_eq!(third.len(), 1, "{attempts:#?}");
    assert!(third[0].follows_from.is_empty(), "{:#?}", third[0]);

    // The API key is in no span field and no log line.
    let leaked: Vec<String> = recorder.seen(|s| {
        s.spans
            .iter()
            .flat_map(|span| span.fields.values().cloned())
            .chain(s.event_values.iter().cloned())
            .filter(|value| value.contains(API_KEY) || value.contains("sk_test_span"))
            .collect()
    });
    assert!(leaked.is_empty(), "the API key leaked: {leaked:?}");
    emitter.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_info_level_subscriber_sees_no_attempt_spans() {
    let recorder = Recorder::default();
    let _subscriber = tracing::subscriber::set_default(
        Registry::default().with(recorder.clone().with_filter(LevelFilter::INFO)),
    );
    let kit = TestKit::builder().start().await.expect("testkit starts");
    let org = OrganizationId::new(kit.organization_id()).unwrap();
    let emitter = emitter(&kit);
    let request = tracing::info_span!("http.request");
    request
        .in_scope(|| emitter.try_emit(org.clone(), event(1)))
        .expect("accepted");
    emitter.flush(Duration::from_secs(10)).await.expect("delivered");
    assert_eq!(kit.events(org.as_str()).len(), 1);
    assert_eq!(recorder.span_named("http.request").len(), 1);
    assert!(recorder.attempts().is_empty(), "{:#?}", recorder.attempts());
    emitter.shutdown(Duration::from_secs(5)).await;
}
