//! Property: any valid event (without the fields a CSV cannot carry: `version`, empty optional
//! strings, empty metadata) sent to audit-testkit comes back unchanged through its CSV export and
//! the event reader.

use std::time::Duration;

use audit_core::client::CreateExport;
use audit_core::export::EventReader;
use audit_core::{Action, Actor, Client, Context, Event, Metadata, MetadataValue, OrganizationId, Target};
use audit_testkit::TestKit;
use futures_util::TryStreamExt;
use proptest::prelude::*;
use time::OffsetDateTime;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,;\"'\n\r\tü€😀{}\\[\\]:]{1,24}"
}

fn value() -> impl Strategy<Value = MetadataValue> {
    prop_oneof![
        "[a-zA-Z0-9 ,\"\n{}ü]{0,30}".prop_map(MetadataValue::String),
        any::<i64>().prop_map(MetadataValue::Integer),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(MetadataValue::Float),
        any::<bool>().prop_map(MetadataValue::Bool),
    ]
}

fn metadata() -> impl Strategy<Value = Option<Metadata>> {
    proptest::option::of(
        proptest::collection::btree_map("[a-zA-Z0-9_-]{0,12}", value(), 1..6)
            .prop_map(|m| m.into_iter().collect::<Metadata>()),
    )
}

fn target() -> impl Strategy<Value = Target> {
    (
        "[a-zA-Z0-9_]{1,12}",
        "[a-z_]{1,8}",
        proptest::option::of(text()),
        metadata(),
    )
        .prop_map(|(id, kind, name, metadata)| {
            let mut t = Target::new(id, kind);
            t.name = name;
            t.metadata = metadata;
            t
        })
}

fn event(base: OffsetDateTime) -> impl Strategy<Value = Event> {
    (
        proptest::collection::vec("[a-z][a-z0-9_-]{0,8}", 1..4),
        0i64..3_600_000,
        (
            "[a-zA-Z0-9_]{1,12}",
            "[a-z_]{1,8}",
            proptest::option::of(text()),
            metadata(),
        ),
        proptest::collection::vec(target(), 0..5),
        ("[a-zA-Z0-9.:]{1,20}", proptest::option::of(text())),
        metadata(),
    )
        .prop_map(
            move |(segments, ms, (id, kind, name, actor_meta), targets, (loc, ua), meta)| {
                let mut actor = Actor::new(id, kind);
                actor.name = name;
                actor.metadata = actor_meta;
                let mut context = Context::new(loc);
                context.user_agent = ua;
                let mut e = Event::new(Action::new(segments.join(".")).unwrap(), actor, context)
                    .occurred_at(base - time::Duration::milliseconds(ms));
                e.targets = targets;
                e.metadata = meta;
                e
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_event_survives_the_csv_export(e in event(base())) {
        prop_assert!(e.validate().is_ok(), "the strategy makes valid events: {:?}", e.validate());
        let back = FIXTURE.with(|f| f.round_trip(&e));
        prop_assert_eq!(back, vec![e]);
    }
}

/// Now, to the millisecond, once per test process.
fn base() -> OffsetDateTime {
    static BASE: std::sync::OnceLock<OffsetDateTime> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(u32::from(now.millisecond()) * 1_000_000)
            .expect("a valid nanosecond")
    })
}

struct Fixture {
    kit: TestKit,
    rt: tokio::runtime::Runtime,
    client: Client,
}

thread_local! {
    static FIXTURE: Fixture = Fixture::new();
}

impl Fixture {
    fn new() -> Self {
        let kit = TestKit::builder()
            .export_delay(Duration::ZERO)
            .start_blocking()
            .expect("testkit starts");
        let client = Client::builder()
            .api_key("sk_test_props")
            .base_url(kit.url())
            .build()
            .expect("valid configuration");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self { kit, rt, client }
    }

    fn round_trip(&self, e: &Event) -> Vec<Event> {
        self.kit.reset();
        let org = OrganizationId::new(self.kit.organization_id()).expect("valid id");
        self.rt.block_on(async {
            self.client.create_event(&org, e).await.expect("stored");
            let q = CreateExport::new(
                org,
                base() - time::Duration::hours(2),
                base() + time::Duration::minutes(1),
            );
            EventReader::new(self.client.clone())
                .poll_backoff(Duration::from_millis(1), Duration::from_millis(5))
                .read(q)
                .try_collect()
                .await
                .expect("read back")
        })
    }
}
