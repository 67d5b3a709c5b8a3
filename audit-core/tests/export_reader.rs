//! The event reader over loopback HTTP: events recorded in audit-testkit come back through a CSV
//! export equal to what was sent; empty exports, expired URLs and exports, the `error` state, slow
//! `pending` exports, malformed rows and a large export read with bounded buffering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use audit_core::client::{CreateExport, ExportState};
use audit_core::export::{EventReader, Phase, ReadError};
use audit_core::{Action, Actor, Client, Context, Event, Metadata, OrganizationId, RetryPolicy, Target};
use audit_testkit::{FaultRule, TestKit};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use time::OffsetDateTime;

async fn kit_with(delay: Duration) -> TestKit {
    TestKit::builder()
        .export_delay(delay)
        .start()
        .await
        .expect("testkit starts")
}

fn client(base_url: &str) -> Client {
    Client::builder()
        .api_key("sk_test_reader")
        .base_url(base_url)
        .retry_policy(
            RetryPolicy::standard()
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid configuration")
}

fn reader(base_url: &str) -> EventReader {
    EventReader::new(client(base_url)).poll_backoff(Duration::from_millis(5), Duration::from_millis(20))
}

fn org_of(kit: &TestKit) -> OrganizationId {
    OrganizationId::new(kit.organization_id()).expect("valid id")
}

/// Now, to the millisecond (what the CSV keeps).
fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(u32::from(now.millisecond()) * 1_000_000)
        .expect("a valid nanosecond")
}

fn around_now(org: OrganizationId) -> CreateExport {
    let now = OffsetDateTime::now_utc();
    CreateExport::new(
        org,
        now - time::Duration::hours(1),
        now + time::Duration::hours(1),
    )
}

fn sample_events() -> Vec<Event> {
    let at = now_ms();
    let all_types = Metadata::new()
        .with("s", "a \"quoted\", comma\nand newline ü")
        .with("i", -42)
        .with("big", i64::MAX)
        .with("f", 1.5)
        .with("tiny", 1e-300)
        .with("whole_float", 3.0)
        .with("t", true)
        .with("no", false)
        .with("empty", "");
    vec![
        // No targets, no optional fields.
        Event::new(
            Action::new("user.signed_in").unwrap(),
            Actor::new("user_1", "user"),
            Context::new("203.0.113.7"),
        )
        .occurred_at(at),
        // One target, every optional field.
        Event::new(
            Action::new("invoice.paid").unwrap(),
            Actor::new("user_2", "user")
                .name("Jon Smith")
                .metadata(all_types.clone()),
            Context::new("2001:db8::1").user_agent("Mozilla/5.0 (X11; Linux x86_64)"),
        )
        .occurred_at(at + time::Duration::milliseconds(1))
        .target(
            Target::new("inv_1", "invoice")
                .name("Invoice #1")
                .metadata(all_types.clone()),
        )
        .metadata(all_types),
        // Many targets, some with names or metadata.
        (0..7).fold(
            Event::new(
                Action::new("team.members-added").unwrap(),
                Actor::new("api_key_1", "api_key"),
                Context::new("eu-west-1"),
            )
            .occurred_at(at + time::Duration::milliseconds(2))
            .meta("count", 7),
            |e, i| {
                let t = Target::new(format!("user_{i}"), "user");
                let t = if i % 2 == 0 {
                    t.name(format!("User {i}"))
                } else {
                    t
                };
                e.target(if i % 3 == 0 { t.meta("n", i) } else { t })
            },
        ),
    ]
}

#[tokio::test]
async fn events_come_back_equal_to_what_was_sent() {
    let kit = kit_with(Duration::from_millis(30)).await;
    let org = org_of(&kit);
    let c = client(&kit.url());
    let sent = sample_events();
    for e in &sent {
        c.create_event(&org, e).await.expect("stored");
    }
    let stream = reader(&kit.url()).read(around_now(org.clone()));
    let progress = stream.progress();
    let back: Vec<Event> = stream.try_collect().await.expect("read back");
    assert_eq!(back, sent);
    assert_eq!(progress.rows(), 3);
    assert_eq!(progress.phase(), Phase::Done);
    assert!(progress.bytes() > 0);
    assert!(
        progress
            .export_id()
            .is_some_and(|id| id.starts_with("audit_log_export_"))
    );

    // Filters reach WorkOS's export: action, actor id, target type.
    let only = |q: CreateExport| {
        let r = reader(&kit.url());
        async move { r.read(q).try_collect::<Vec<Event>>().await.expect("read back") }
    };
    let by_action = only(around_now(org.clone()).action(Action::new("invoice.paid").unwrap())).await;
    assert_eq!(by_action, [sent[1].clone()]);
    let by_actor = only(around_now(org.clone()).actor_id("api_key_1")).await;
    assert_eq!(by_actor, [sent[2].clone()]);
    let by_target = only(around_now(org.clone()).target("invoice")).await;
    assert_eq!(by_target, [sent[1].clone()]);
    let by_name = only(around_now(org).actor_name("Jon Smith")).await;
    assert_eq!(by_name, [sent[1].clone()]);
}

#[tokio::test]
async fn no_matching_events_is_an_empty_stream() {
    let kit = kit_with(Duration::from_millis(10)).await;
    let stream = reader(&kit.url()).read(around_now(org_of(&kit)));
    let progress = stream.progress();
    let back: Vec<Event> = stream.try_collect().await.expect("not an error");
    assert!(back.is_empty());
    assert_eq!(progress.phase(), Phase::Done);
    let posts = kit.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "one export was asked for, none polled");
}

async fn one_event(kit: &TestKit) -> Event {
    let e = sample_events().remove(1);
    client(&kit.url())
        .create_event(&org_of(kit), &e)
        .await
        .expect("stored");
    e
}

fn export_body(id: &str, state: &str, url: Option<String>) -> serde_json::Value {
    let mut body = json!({
        "object": "audit_log_export", "id": id, "state": state,
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
    });
    if let Some(url) = url {
        body["url"] = url.into();
    }
    body
}

#[tokio::test]
async fn an_expired_url_is_renewed_by_reading_the_export_again() {
    let kit = kit_with(Duration::from_millis(10)).await;
    let sent = one_event(&kit).await;
    // The first read of the export hands out a URL the storage refuses (403), as an expired one.
    let stale = format!("{}/_testkit/exports/x.csv?token=expired", kit.url());
    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .method("GET")
            .times(1)
            .respond_json(200, export_body("audit_log_export_stale", "ready", Some(stale))),
    );
    let back: Vec<Event> = reader(&kit.url())
        .read(around_now(org_of(&kit)))
        .try_collect()
        .await
        .expect("renewed");
    assert_eq!(back, [sent]);
    let downloads = kit.requests().iter().filter(|r| r.method == "GET").count();
    assert!(downloads >= 2, "the export was read again after the 403");
}

#[tokio::test]
async fn renewals_are_bounded() {
    let kit = kit_with(Duration::from_millis(10)).await;
    one_event(&kit).await;
    let stale = format!("{}/_testkit/exports/x.csv?token=expired", kit.url());
    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .method("GET")
            .respond_json(200, export_body("audit_log_export_stale", "ready", Some(stale))),
    );
    let err = reader(&kit.url())
        .max_renewals(2)
        .read(around_now(org_of(&kit)))
        .try_collect::<Vec<Event>>()
        .await
        .expect_err("keeps expiring");
    match &err {
        ReadError::UrlExpired { renewals, source, .. } => {
            assert_eq!(*renewals, 2);
            assert_eq!(source.status(), Some(403));
        }
        other => panic!("{other:?}"),
    }
    let gets = kit
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/audit_logs/exports/"))
        .count();
    assert_eq!(gets, 3, "the first poll and two renewals");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn an_expired_export_is_created_again() {
    let kit = kit_with(Duration::from_millis(10)).await;
    let sent = one_event(&kit).await;
    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .method("GET")
            .times(1)
            .respond_json(200, export_body("audit_log_export_old", "expired", None)),
    );
    let back: Vec<Event> = reader(&kit.url())
        .read(around_now(org_of(&kit)))
        .try_collect()
        .await
        .expect("created again");
    assert_eq!(back, [sent]);
    let creates = kit
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/audit_logs/exports")
        .count();
    assert_eq!(creates, 2);
}

#[tokio::test]
async fn an_export_in_error_is_a_clear_error() {
    let kit = kit_with(Duration::from_millis(10)).await;
    one_event(&kit).await;
    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .method("GET")
            .times(1)
            .respond_json(200, export_body("audit_log_export_bad", "error", None)),
    );
    let err = reader(&kit.url())
        .read(around_now(org_of(&kit)))
        .try_collect::<Vec<Event>>()
        .await
        .expect_err("state error");
    assert!(
        matches!(&err, ReadError::ExportFailed { export_id } if export_id.starts_with("audit_log_export_")),
        "{err:?}"
    );
    assert!(err.to_string().contains("state `error`"), "{err}");
}

#[tokio::test]
async fn a_slow_pending_export_is_polled_with_growing_waits() {
    let kit = kit_with(Duration::from_millis(400)).await;
    let sent = one_event(&kit).await;
    let stream = EventReader::new(client(&kit.url()))
        .poll_backoff(Duration::from_millis(10), Duration::from_millis(80))
        .read(around_now(org_of(&kit)));
    let progress = stream.progress();
    let back: Vec<Event> = stream.try_collect().await.expect("ready in the end");
    assert_eq!(back, [sent]);
    // 10, 20, 40, 80, 80, ... ms: 400 ms takes about 8 polls, never one per millisecond.
    let polls = progress.polls();
    assert!((4..=20).contains(&polls), "{polls} polls");
    let gets: Vec<OffsetDateTime> = kit
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/audit_logs/exports/"))
        .map(|r| r.received_at)
        .collect();
    let gaps: Vec<time::Duration> = gets.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter()
            .skip(3)
            .all(|g| *g >= time::Duration::milliseconds(60)),
        "waits grow to the cap: {gaps:?}"
    );
}

#[tokio::test]
async fn a_pending_export_past_max_wait_is_an_error() {
    let kit = kit_with(Duration::from_secs(60)).await;
    one_event(&kit).await;
    let err = EventReader::new(client(&kit.url()))
        .poll_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .max_wait(Duration::from_millis(150))
        .read(around_now(org_of(&kit)))
        .try_collect::<Vec<Event>>()
        .await
        .expect_err("still pending");
    assert!(matches!(err, ReadError::PendingTimeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_range_before_the_export_window_is_refused_locally() {
    let kit = kit_with(Duration::from_millis(10)).await;
    let now = OffsetDateTime::now_utc();
    let q = CreateExport::new(org_of(&kit), now - time::Duration::days(200), now);
    let err = reader(&kit.url())
        .read(q.clone())
        .try_collect::<Vec<Event>>()
        .await
        .expect_err("too old");
    assert!(matches!(err, ReadError::RangeTooOld { .. }), "{err:?}");
    assert!(err.to_string().contains("three months"), "{err}");
    assert!(kit.requests().is_empty(), "nothing was sent");
    // Without the limit the range goes to the server (which has nothing: an empty stream).
    let back: Vec<Event> = reader(&kit.url())
        .lookback_limit(None)
        .read(q)
        .try_collect()
        .await
        .expect("sent");
    assert!(back.is_empty());
}

// ---- a tiny WorkOS stand-in serving handcrafted CSV -------------------------------------------

/// Serves `POST /audit_logs/exports` and `GET /audit_logs/exports/{id}` (always ready) and the
/// CSV at `/file.csv`, produced by `body` on each download.
async fn csv_server<F>(body: F) -> SocketAddr
where
    F: Fn() -> axum::body::Body + Clone + Send + Sync + 'static,
{
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let export = move || {
        axum::Json(export_body(
            "audit_log_export_local",
            "ready",
            Some(format!("http://{addr}/file.csv")),
        ))
    };
    let e2 = export;
    let app = axum::Router::new()
        .route(
            "/audit_logs/exports",
            post(move || async move { (axum::http::StatusCode::CREATED, export()) }),
        )
        .route("/audit_logs/exports/{id}", get(move || async move { e2() }))
        .route("/file.csv", get(move || async move { body() }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

const HEADER: &str =
    "occurred_at,action,actor_id,actor_type,actor_name,context_location,metadata,unknown_column\n";

#[tokio::test]
async fn a_malformed_row_is_an_error_after_the_rows_before_it() {
    let text = format!(
        "{HEADER}\
         2026-01-01T00:00:00.000Z,a.one,u1,user,,here,\"{{\"\"k\"\":1}}\",x\n\
         2026-01-01T00:00:01.000Z,a.two,u2,user,Ann,here,,x\n\
         2026-01-01T00:00:02.000Z,a.three,u3,user,,here,\"{{\"\"k\"\":[1]}}\",x\n\
         2026-01-01T00:00:03.000Z,a.four,u4,user,,here,,x\n"
    );
    let addr = csv_server(move || axum::body::Body::from(text.clone())).await;
    let q = CreateExport::new(
        OrganizationId::new("org_1").unwrap(),
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        OffsetDateTime::now_utc(),
    );
    let out: Vec<Result<Event, ReadError>> =
        reader(&format!("http://{addr}")).read(q.clone()).collect().await;
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].as_ref().unwrap().action.as_str(), "a.one");
    assert_eq!(out[1].as_ref().unwrap().actor.name.as_deref(), Some("Ann"));
    match &out[2] {
        Err(
            e @ ReadError::Row {
                row, line, column, ..
            },
        ) => {
            assert_eq!((*row, *line, column.as_str()), (3, 4, "metadata"));
            assert!(e.to_string().contains("row 3"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out[3].as_ref().unwrap().action.as_str(), "a.four");
    // try_collect stops at the error.
    let err = reader(&format!("http://{addr}"))
        .read(q)
        .try_collect::<Vec<Event>>()
        .await
        .expect_err("stops");
    assert!(matches!(err, ReadError::Row { row: 3, .. }));
}

/// One row of the large export: fixed width, so that its length is known.
fn big_row(i: u64) -> String {
    format!(
        "2026-01-01T00:00:00.000Z,bulk.row,user_{i:010},user,Name {i:010},203.0.113.7,\"{{\"\"i\"\":\"\"{i:010}\"\",\"\"pad\"\":\"\"{}\"\"}}\",x\n",
        "p".repeat(200)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_is_read_with_bounded_buffering() {
    const ROWS: u64 = 200_000;
    const PER_CHUNK: u64 = 500;
    let row_len = big_row(0).len() as u64;
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    let addr = csv_server(move || {
        p.store(0, Ordering::SeqCst);
        let p = p.clone();
        let chunks = futures_util::stream::iter(0..=ROWS / PER_CHUNK).map(move |c| {
            let text = if c == 0 {
                HEADER.to_owned()
            } else {
                ((c - 1) * PER_CHUNK..c * PER_CHUNK)
                    .map(big_row)
                    .collect::<String>()
            };
            p.fetch_add(text.len() as u64, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from(text))
        });
        axum::body::Body::from_stream(chunks)
    })
    .await;
    let q = CreateExport::new(
        OrganizationId::new("org_1").unwrap(),
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        OffsetDateTime::now_utc(),
    );
    let mut stream = reader(&format!("http://{addr}")).read(q);
    let progress = stream.progress();
    let (mut n, mut max_in_reader, mut max_in_flight) = (0u64, 0u64, 0u64);
    while let Some(event) = stream.try_next().await.expect("every row reads") {
        n += 1;
        if n % 1000 == 1 {
            assert_eq!(event.actor.id, format!("user_{:010}", n - 1));
        }
        // Bytes the parser received but whose rows were not yet handed out.
        let consumed = HEADER.len() as u64 + n * row_len;
        max_in_reader = max_in_reader.max(progress.bytes().saturating_sub(consumed));
        // Bytes the server produced that the parser has not received (sockets, HTTP buffers).
        max_in_flight = max_in_flight.max(produced.load(Ordering::SeqCst).saturating_sub(progress.bytes()));
    }
    assert_eq!(n, ROWS);
    let total = produced.load(Ordering::SeqCst);
    assert!(total > 50_000_000, "{total} bytes");
    eprintln!(
        "large export: {total} bytes, reader held at most {max_in_reader}, in flight at most {max_in_flight}"
    );
    assert!(
        max_in_reader <= 512 * 1024,
        "the reader held {max_in_reader} bytes of rows"
    );
    assert!(
        max_in_flight <= 24 * 1024 * 1024,
        "{max_in_flight} bytes in flight"
    );
}

#[tokio::test]
async fn a_state_this_version_does_not_know_is_named() {
    let kit = kit_with(Duration::from_millis(10)).await;
    one_event(&kit).await;
    kit.fault(
        FaultRule::new("/audit_logs/exports/")
            .method("GET")
            .times(1)
            .respond_json(200, export_body("audit_log_export_x", "archived", None)),
    );
    let err = reader(&kit.url())
        .read(around_now(org_of(&kit)))
        .try_collect::<Vec<Event>>()
        .await
        .expect_err("unknown state");
    assert!(matches!(&err, ReadError::UnexpectedState { state, .. } if state == "archived"));
    let _ = ExportState::Unknown("archived".into());
}
