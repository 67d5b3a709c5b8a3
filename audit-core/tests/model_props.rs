//! Property tests of the event model.
//!
//! - An event that passes local validation also satisfies WorkOS's published JSON Schema of the
//!   create-event body (`AuditLogEventIngestionDto` of the OpenAPI extract, copied into
//!   `tests/fixtures/openapi-event-ingestion.schema.json`), including every metadata rule.
//! - Serialization round-trips: serialize → deserialize → serialize gives the same JSON value.
//! - Invalid metadata (bad key, long string, non-finite number, too many keys) anywhere in an
//!   event is refused locally, with the JSON pointer of the offending value.
//!
//! Generated strings hold no U+0000: the published schema accepts it, the local rules refuse
//! it (see `audit_core::validate`), which the unit tests of the validator cover.

use std::sync::LazyLock;

use audit_core::{
    Action, Actor, Context, CreateEvent, Event, FieldErrorKind, Metadata, MetadataValue, OrganizationId,
    Target,
};
use proptest::prelude::*;
use serde_json::Value;
use time::OffsetDateTime;

static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(include_str!("fixtures/openapi-event-ingestion.schema.json"))
        .expect("fixture is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the OpenAPI extract is a valid JSON Schema")
});

fn schema_errors(body: &Value) -> Vec<String> {
    SCHEMA
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

// ---- strategies ---------------------------------------------------------------------------------

fn valid_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{0,40}"
}

fn valid_value() -> impl Strategy<Value = MetadataValue> {
    prop_oneof![
        "(?s)[^\\x00]{0,500}".prop_map(MetadataValue::String),
        any::<i64>().prop_map(MetadataValue::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(MetadataValue::Float),
        any::<bool>().prop_map(MetadataValue::Bool),
    ]
}

fn valid_metadata() -> impl Strategy<Value = Option<Metadata>> {
    prop::option::of(
        prop::collection::btree_map(valid_key(), valid_value(), 0..=12)
            .prop_map(|m| m.into_iter().collect::<Metadata>()),
    )
}

fn action() -> impl Strategy<Value = Action> {
    "[a-zA-Z0-9_-]{1,12}(\\.[a-zA-Z0-9_-]{1,12}){0,3}"
        .prop_map(|s| Action::new(s).expect("the generator follows the rule"))
}

fn non_blank() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]{1,5}(?s)[^\\x00]{0,20}"
}

/// Any instant from 0000-01-01 to 9999-12-31, to the nanosecond.
fn occurred_at() -> impl Strategy<Value = OffsetDateTime> {
    (-62_167_219_200i64..=253_402_300_799i64, 0u32..1_000_000_000).prop_map(|(s, ns)| {
        OffsetDateTime::from_unix_timestamp(s).expect("in range") + time::Duration::nanoseconds(ns.into())
    })
}

fn actor() -> impl Strategy<Value = Actor> {
    (
        non_blank(),
        non_blank(),
        prop::option::of("[^\\x00\\n]{0,30}"),
        valid_metadata(),
    )
        .prop_map(|(id, kind, name, m)| {
            let mut a = Actor::new(id, kind);
            a.name = name;
            a.metadata = m;
            a
        })
}

fn target() -> impl Strategy<Value = Target> {
    (
        non_blank(),
        non_blank(),
        prop::option::of("[^\\x00\\n]{0,30}"),
        valid_metadata(),
    )
        .prop_map(|(id, kind, name, m)| {
            let mut t = Target::new(id, kind);
            t.name = name;
            t.metadata = m;
            t
        })
}

prop_compose! {
    fn valid_event()(
        action in action(),
        at in occurred_at(),
        version in prop::option::of(1u32..1000),
        actor in actor(),
        targets in prop::collection::vec(target(), 0..4),
        location in non_blank(),
        user_agent in prop::option::of("[^\\x00\\n]{0,60}"),
        metadata in valid_metadata(),
    ) -> Event {
        let mut context = Context::new(location);
        context.user_agent = user_agent;
        let mut e = Event::new(action, actor, context).occurred_at(at);
        e.version = version;
        e.targets = targets;
        e.metadata = metadata;
        e
    }
}

/// Where in an event a metadata object sits.
#[derive(Debug, Clone, Copy)]
enum Place {
    Event,
    Actor,
    Target(usize),
}

fn place(targets: usize) -> impl Strategy<Value = Place> {
    if targets == 0 {
        prop_oneof![Just(Place::Event), Just(Place::Actor)].boxed()
    } else {
        prop_oneof![
            Just(Place::Event),
            Just(Place::Actor),
            (0..targets).prop_map(Place::Target)
        ]
        .boxed()
    }
}

fn metadata_at(event: &mut Event, place: Place) -> (&mut Metadata, String) {
    let (slot, base) = match place {
        Place::Event => (&mut event.metadata, "/metadata".to_owned()),
        Place::Actor => (&mut event.actor.metadata, "/actor/metadata".to_owned()),
        Place::Target(i) => (&mut event.targets[i].metadata, format!("/targets/{i}/metadata")),
    };
    (slot.get_or_insert_with(Metadata::new), base)
}

/// One way of breaking a metadata rule.
#[derive(Debug, Clone)]
enum Breakage {
    /// A key outside `^[a-zA-Z0-9_-]{0,40}$`.
    Key(String),
    /// A string over 500 characters.
    LongString(String),
    /// NaN or an infinity.
    NonFinite(f64),
    /// More than 50 keys.
    TooManyKeys(usize),
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        "[a-zA-Z0-9_-]{0,10}[^a-zA-Z0-9_-][a-zA-Z0-9_-]{0,10}".prop_map(Breakage::Key),
        "[a-zA-Z0-9_-]{41,60}".prop_map(Breakage::Key),
        "(?s).{501,700}".prop_map(Breakage::LongString),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
            .prop_map(Breakage::NonFinite),
        (51usize..80).prop_map(Breakage::TooManyKeys),
    ]
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn body(event: &Event) -> Value {
    let org = OrganizationId::new("org_01EHWNCE74X7JSDV0X3SZ3KJNY").expect("valid");
    serde_json::to_value(CreateEvent::new(org, event.clone())).expect("serializable")
}

// ---- properties -----------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn locally_valid_events_satisfy_the_openapi_schema(event in valid_event()) {
        prop_assert!(event.validate().is_ok(), "{:?}", event.validate());
        let body = body(&event);
        let errors = schema_errors(&body);
        prop_assert!(errors.is_empty(), "{errors:?} for {body}");
    }

    #[test]
    fn serialization_round_trips(event in valid_event()) {
        let first = serde_json::to_value(&event).unwrap();
        let read: Event = serde_json::from_value(first.clone()).unwrap();
        prop_assert_eq!(serde_json::to_value(&read).unwrap(), first.clone());
        // Through text too, as on the wire.
        let text = serde_json::to_string(&body(&event)).unwrap();
        let read: CreateEvent = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(serde_json::to_value(&read.event).unwrap(), first);
    }

    #[test]
    fn invalid_metadata_is_refused_with_its_pointer(
        (mut event, place) in valid_event().prop_flat_map(|e| {
            let n = e.targets.len();
            (Just(e), place(n))
        }),
        breakage in breakage(),
    ) {
        let (metadata, base) = metadata_at(&mut event, place);
        let (pointer, expected) = match &breakage {
            Breakage::Key(key) => {
                metadata.insert(key.clone(), true);
                (format!("{base}/{}", escape(key)), FieldErrorKind::InvalidKey)
            }
            Breakage::LongString(s) => {
                metadata.insert("note", s.clone());
                (format!("{base}/note"), FieldErrorKind::StringTooLong { chars: s.chars().count() })
            }
            Breakage::NonFinite(f) => {
                metadata.insert("ratio", *f);
                (format!("{base}/ratio"), FieldErrorKind::NonFiniteNumber)
            }
            Breakage::TooManyKeys(n) => {
                for i in 0..*n {
                    metadata.insert(format!("k{i}"), i as i64);
                }
                (base.clone(), FieldErrorKind::TooManyKeys { count: metadata.len() })
            }
        };
        let errors = event.validate().expect_err("broken metadata must be refused");
        prop_assert!(
            errors.errors().iter().any(|e| e.pointer == pointer && e.kind == expected),
            "expected {expected:?} at {pointer}, got {errors}"
        );
        // Every other error, if any, is about the same metadata object (a generated key may
        // collide with a long string's key, for example).
        for e in errors.errors() {
            prop_assert!(e.pointer.starts_with(&base), "unexpected {e} for {breakage:?}");
        }
        // WorkOS's schema refuses the body too (NaN becomes null in JSON).
        prop_assert!(!schema_errors(&body(&event)).is_empty(), "schema accepted {breakage:?}");
    }

    #[test]
    fn anything_locally_valid_is_schema_valid(
        event in valid_event(),
        extra in prop::collection::btree_map(
            prop_oneof![valid_key(), "[^\\x00\\n]{0,45}"],
            prop_oneof![valid_value(), "(?s)[^\\x00]{490,510}".prop_map(MetadataValue::String)],
            0..4,
        ),
        place_pick in 0usize..3,
    ) {
        let mut event = event;
        let place = match place_pick {
            0 => Place::Event,
            1 => Place::Actor,
            _ if event.targets.is_empty() => Place::Actor,
            _ => Place::Target(0),
        };
        let (metadata, _) = metadata_at(&mut event, place);
        for (k, v) in extra {
            metadata.insert(k, v);
        }
        let body = body(&event);
        let schema = schema_errors(&body);
        match event.validate() {
            Ok(()) => prop_assert!(schema.is_empty(), "locally valid but {schema:?}: {body}"),
            Err(local) => prop_assert!(!schema.is_empty(), "schema accepts what is refused locally: {local}"),
        }
    }
}

#[test]
fn boundaries_agree_with_the_schema() {
    let base = || {
        Event::new(
            Action::new("a.b").unwrap(),
            Actor::new("u", "user"),
            Context::new("1.1.1.1"),
        )
    };
    let fifty: Metadata = (0..50).map(|i| (format!("k{i}"), i)).collect();
    let cases = [
        (base().metadata(fifty.clone()), true),
        (base().metadata(fifty.with("k50", 1)), false),
        (base().meta("x".repeat(40), 1), true),
        (base().meta("x".repeat(41), 1), false),
        (base().meta("", 1), true),
        (base().meta("s", "é".repeat(500)), true),
        (base().meta("s", "é".repeat(501)), false),
        (base().meta("f", f64::MAX), true),
    ];
    for (event, ok) in cases {
        assert_eq!(event.validate().is_ok(), ok, "{event:?}");
        assert_eq!(schema_errors(&body(&event)).is_empty(), ok, "{event:?}");
    }
}
