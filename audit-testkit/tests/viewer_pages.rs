//! The event viewer's pages over loopback HTTP: rendering, escaping, filters, paging, portal
//! tokens, export and the security headers.

mod common;
use audit_testkit::TestKit;
use common::*;
use serde_json::{Value, json};

const XSS_SCRIPT: &str = "<script>window.__xss=1</script>";
const XSS_ATTR: &str = "\"><img src=x onerror=\"window.__xss=1\">";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn store(c: &reqwest::Client, url: &str, org: &str, ev: Value) {
    let res = post(c, url, "/audit_logs/events", &body(org, ev)).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
}

fn ev(action: &str, at: &str, actor: (&str, &str), target_type: &str) -> Value {
    let mut e = event(action);
    e["occurred_at"] = json!(at);
    e["actor"] = json!({"id": actor.0, "type": "user", "name": actor.1});
    e["targets"] = json!([{"id": format!("{target_type}_1"), "type": target_type, "name": "T"}]);
    e
}

async fn html(c: &reqwest::Client, url: &str) -> (u16, String) {
    let res = c.get(url).send().await.expect("send");
    let st = res.status().as_u16();
    (st, res.text().await.expect("text"))
}

/// The actions of the rows of an event list, in page order.
fn actions(page: &str) -> Vec<String> {
    page.split("<tr data-index=")
        .skip(1)
        .filter_map(|row| {
            let a = row.split("<a href=\"/viewer/events/").nth(1)?;
            let start = a.find('>')? + 1;
            let end = a.find("</a>")?;
            Some(a[start..end].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn organizations_page_lists_orgs_with_counts_and_links() {
    let kit = TestKit::builder()
        .org("org_A")
        .org("org_B")
        .start()
        .await
        .unwrap();
    let c = client();
    store(&c, &kit.url(), "org_A", event("user.signed_in")).await;
    store(&c, &kit.url(), "org_A", event("user.signed_out")).await;
    let res = c.get(kit.url()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("href=\"/viewer/events?org=org_A\""));
    assert!(page.contains("href=\"/viewer/events?org=org_B\""));
    assert!(page.contains("<td>2</td>"), "org_A has 2 events");
    assert!(page.contains("<td>0</td>"), "org_B has none");
    // Viewer requests are not recorded as API requests.
    assert_eq!(kit.requests().len(), 2);
}

#[tokio::test]
async fn every_viewer_page_sends_the_csp_and_only_get_is_allowed() {
    let kit = TestKit::start().await.unwrap();
    let org = kit.organization_id().to_owned();
    let c = client();
    store(&c, &kit.url(), &org, event("a.b")).await;
    for path in [
        "/".to_owned(),
        format!("/viewer/events?org={org}"),
        "/viewer/events/0".to_owned(),
        format!("/viewer/log-streams?org={org}"),
        "/viewer/events/99".to_owned(),
        "/portal?token=nope".to_owned(),
    ] {
        let res = c.get(format!("{}{path}", kit.url())).send().await.unwrap();
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'unsafe-inline'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("script-src"), "{path}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
    for path in ["/", "/viewer/events", "/viewer/events/0"] {
        let res = c.post(format!("{}{path}", kit.url())).send().await.unwrap();
        assert_eq!(res.status(), 405, "POST {path}");
        let res = c.delete(format!("{}{path}", kit.url())).send().await.unwrap();
        assert_eq!(res.status(), 405, "DELETE {path}");
    }
    // The export creates a record: a POST of the page's form, never a GET.
    let export = format!("{}/viewer/export?org={org}", kit.url());
    assert_eq!(
        c.get(&export).send().await.unwrap().status(),
        405,
        "GET /viewer/export"
    );
    let res = c
        .post(format!("{}/viewer/export", kit.url()))
        .form(&[("org", org.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "an export post without the form token");
    assert_eq!(kit.events(&org).len(), 1);
}

#[tokio::test]
async fn html_and_script_in_event_values_render_as_text() {
    let kit = TestKit::start().await.unwrap();
    let org = kit.organization_id().to_owned();
    let c = client();
    let mut e = event(XSS_SCRIPT);
    e["actor"]["name"] = json!(XSS_ATTR);
    e["targets"][0]["name"] = json!(XSS_SCRIPT);
    e["targets"][0]["type"] = json!(XSS_ATTR);
    e["context"]["user_agent"] = json!(XSS_ATTR);
    e["metadata"] = json!({"note": XSS_SCRIPT, "attr": XSS_ATTR});
    store(&c, &kit.url(), &org, e).await;
    let (st, list) = html(&c, &format!("{}/viewer/events?org={org}", kit.url())).await;
    assert_eq!(st, 200);
    let (st, detail) = html(&c, &format!("{}/viewer/events/0", kit.url())).await;
    assert_eq!(st, 200);
    for page in [&list, &detail] {
        assert!(!page.contains("<script"), "a raw <script> tag");
        assert!(!page.contains("<img"), "a raw <img> tag");
        assert!(!page.contains("onerror=\""), "an attribute was broken out of");
    }
    assert!(list.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;"));
    assert!(list.contains("&quot;&gt;&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;"));
    // The detail view's JSON is escaped too (JSON-escaped quotes, then HTML-escaped).
    assert!(detail.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;"));
    assert!(detail.contains("\\&quot;&gt;&lt;img src=x"));
}

#[tokio::test]
async fn the_list_is_newest_first_and_paged_by_50() {
    let kit = TestKit::start().await.unwrap();
    let org = kit.organization_id().to_owned();
    let c = client();
    // Stored out of time order: the list orders by occurred_at.
    for i in (0..120).rev() {
        let at = format!("2026-01-01T00:{:02}:{:02}.000Z", i / 60, i % 60);
        store(
            &c,
            &kit.url(),
            &org,
            ev(&format!("e.n{i:03}"), &at, ("user_1", "Ada"), "team"),
        )
        .await;
    }
    let base = format!("{}/viewer/events?org={org}", kit.url());
    let (_, p1) = html(&c, &base).await;
    let a1 = actions(&p1);
    assert_eq!(a1.len(), 50);
    assert_eq!(a1[0], "e.n119");
    assert_eq!(a1[49], "e.n070");
    assert!(p1.contains("Events 1–50 of 120"));
    assert!(p1.contains("page 1 of 3"));
    assert!(p1.contains(&format!(
        "href=\"/viewer/events?org={org}&amp;page=2\" rel=\"next\""
    )));
    assert!(!p1.contains("rel=\"prev\""));
    let (_, p3) = html(&c, &format!("{base}&page=3")).await;
    let a3 = actions(&p3);
    assert_eq!(a3.len(), 20);
    assert_eq!(a3[19], "e.n000");
    assert!(p3.contains("rel=\"prev\""));
    assert!(!p3.contains("rel=\"next\""));
    // Past the end: an empty page, not an error.
    let (st, p9) = html(&c, &format!("{base}&page=9")).await;
    assert_eq!(st, 200);
    assert!(actions(&p9).is_empty());
    assert!(p9.contains(&format!(
        "href=\"/viewer/events?org={org}&amp;page=3\" rel=\"prev\""
    )));
    // A page number near the integer limit is past the end too, not an overflow.
    for huge in [
        "18446744073709551615",
        "368934881474191032",
        "99999999999999999999999",
    ] {
        let (st, p) = html(&c, &format!("{base}&page={huge}")).await;
        assert_eq!(st, 200, "page={huge}");
        let a = actions(&p);
        assert!(a.is_empty() || a == a1, "page={huge}");
    }
}

#[tokio::test]
async fn filters_match_the_export_filters() {
    let kit = TestKit::start().await.unwrap();
    let org = kit.organization_id().to_owned();
    let c = client();
    store(
        &c,
        &kit.url(),
        &org,
        ev(
            "user.signed_in",
            "2026-01-01T10:00:00.000Z",
            ("user_1", "Ada"),
            "team",
        ),
    )
    .await;
    store(
        &c,
        &kit.url(),
        &org,
        ev(
            "user.signed_in",
            "2026-01-02T10:00:00.000Z",
            ("user_2", "Grace"),
            "team",
        ),
    )
    .await;
    store(
        &c,
        &kit.url(),
        &org,
        ev(
            "team.deleted",
            "2026-01-03T10:00:00.000Z",
            ("user_1", "Ada"),
            "team",
        ),
    )
    .await;
    store(
        &c,
        &kit.url(),
        &org,
        ev(
            "invoice.viewed",
            "2026-01-04T10:00:00.000Z",
            ("user_2", "Grace"),
            "invoice",
        ),
    )
    .await;
    let base = format!("{}/viewer/events?org={org}", kit.url());
    let list = |q: &str| {
        let c = c.clone();
        let url = format!("{base}&{q}");
        async move { actions(&html(&c, &url).await.1) }
    };
    assert_eq!(
        list("action=user.signed_in").await,
        ["user.signed_in", "user.signed_in"]
    );
    assert_eq!(list("actor_id=user_1").await, ["team.deleted", "user.signed_in"]);
    assert_eq!(
        list("actor_name=Grace").await,
        ["invoice.viewed", "user.signed_in"]
    );
    assert_eq!(list("target=invoice").await, ["invoice.viewed"]);
    assert_eq!(
        list("from=2026-01-02T10:00:00Z&to=2026-01-03T10:00").await,
        ["team.deleted", "user.signed_in"],
        "inclusive bounds, RFC 3339 or a browser's datetime"
    );
    assert_eq!(list("actor_id=user_2&target=team").await, ["user.signed_in"]);
    assert!(list("action=nothing.here").await.is_empty());
    // The filter values are kept in the form and escaped there.
    let (st, page) = html(&c, &format!("{base}&action=%22%3E%3Cb%3Ex")).await;
    assert_eq!(st, 200);
    assert!(page.contains("name=\"action\" value=\"&quot;&gt;&lt;b&gt;x\""));
    // An unreadable bound is a clear error, not a silently unfiltered list.
    let (st, page) = html(&c, &format!("{base}&from=yesterday")).await;
    assert_eq!(st, 400);
    assert!(
        page.contains("'from' is not a time"),
        "the message names the bound"
    );
    assert!(actions(&page).is_empty());

    // The export of the same filters holds the same events.
    let export = format!("{}/viewer/export", kit.url());
    let res = viewer_post(&c, &base, &export, &[("org", &org), ("actor_name", "Grace")]).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"audit_log_export_")
    );
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("action,occurred_at,actor_id"));
    assert!(lines[1].starts_with("user.signed_in,2026-01-02T10:00:00.000Z,user_2"));
    assert!(lines[2].starts_with("invoice.viewed,2026-01-04T10:00:00.000Z,user_2"));
    // Nothing matches: a page that says so.
    let res = viewer_post(&c, &base, &export, &[("org", &org), ("action", "none")]).await;
    let (st, page) = (res.status().as_u16(), res.text().await.unwrap());
    assert_eq!(st, 404);
    assert!(page.contains("No audit log events found"));
    // Exports do not change the events.
    assert_eq!(kit.events(&org).len(), 4);
}

#[tokio::test]
async fn detail_shows_the_stored_json_and_the_idempotency_key() {
    let kit = TestKit::start().await.unwrap();
    let org = kit.organization_id().to_owned();
    let c = client();
    let res = post_key(
        &c,
        &kit.url(),
        "/audit_logs/events",
        &body(&org, event("team.created")),
        "4b98b0bb-df5d-49ea-9f65-4295d1ced242",
    )
    .await;
    assert_eq!(res.status(), 200);
    store(&c, &kit.url(), &org, event("team.deleted")).await;
    let (_, list) = html(&c, &format!("{}/viewer/events?org={org}", kit.url())).await;
    assert!(list.contains("<a href=\"/viewer/events/0\">team.created</a>"));
    let (st, d0) = html(&c, &format!("{}/viewer/events/0", kit.url())).await;
    assert_eq!(st, 200);
    assert!(d0.contains("<code id=\"idempotency-key\">4b98b0bb-df5d-49ea-9f65-4295d1ced242</code>"));
    let pre = d0.split("<pre id=\"event-json\">").nth(1).unwrap();
    let pre = &pre[..pre.find("</pre>").unwrap()];
    let unescaped = pre.replace("&quot;", "\"").replace("&amp;", "&");
    let parsed: Value = serde_json::from_str(&unescaped).unwrap();
    assert_eq!(parsed, kit.events(&org)[0].event);
    assert!(
        pre.contains("\n  &quot;action&quot;: &quot;team.created&quot;"),
        "pretty-printed"
    );
    let (_, d1) = html(&c, &format!("{}/viewer/events/1", kit.url())).await;
    assert!(d1.contains("none (sent without an Idempotency-Key header)"));
    for bad in ["2", "x", "-1"] {
        let (st, _) = html(&c, &format!("{}/viewer/events/{bad}", kit.url())).await;
        assert_eq!(st, 404, "{bad}");
    }
}

#[tokio::test]
async fn portal_links_lead_to_the_viewer_and_unknown_tokens_are_404() {
    let kit = TestKit::builder()
        .org("org_P")
        .log_stream("Datadog", "inactive")
        .start()
        .await
        .unwrap();
    let c = client();
    let nr = no_redirects();
    store(&c, &kit.url(), "org_P", event("user.signed_in")).await;
    let link = |intent: &'static str| {
        let c = c.clone();
        let url = kit.url();
        async move {
            let res = post(
                &c,
                &url,
                "/portal/generate_link",
                &json!({"organization": "org_P", "intent": intent}),
            )
            .await;
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.unwrap()["link"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let audit = link("audit_logs").await;
    let res = nr.get(&audit).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/viewer/events?org=org_P");
    let (st, page) = html(&c, &audit).await;
    assert_eq!(st, 200);
    assert_eq!(actions(&page), ["user.signed_in"]);

    let streams = link("log_streams").await;
    let res = nr.get(&streams).send().await.unwrap();
    assert_eq!(res.headers()["location"], "/viewer/log-streams?org=org_P");
    let (st, page) = html(&c, &streams).await;
    assert_eq!(st, 200);
    assert!(page.contains("<dd id=\"stream-type\">Datadog</dd>"));
    assert!(page.contains("<dd id=\"stream-state\">inactive</dd>"));
    assert!(page.contains("Log streams are configured in WorkOS"));

    // The intent of the token decides, not the one in the query.
    let swapped = audit.replace("intent=audit_logs", "intent=log_streams");
    let res = nr.get(&swapped).send().await.unwrap();
    assert_eq!(res.headers()["location"], "/viewer/events?org=org_P");

    for bad in ["/portal?token=nope&intent=audit_logs", "/portal"] {
        let (st, page) = html(&c, &format!("{}{bad}", kit.url())).await;
        assert_eq!(st, 404);
        assert!(page.contains("Unknown or expired Admin Portal link"));
    }
    // A reset forgets the tokens: the old link is now expired.
    kit.reset();
    let (st, _) = html(&c, &audit).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn log_stream_page_without_a_stream_and_unknown_orgs() {
    let kit = TestKit::builder().org("org_Q").start().await.unwrap();
    let c = client();
    let (st, page) = html(&c, &format!("{}/viewer/log-streams?org=org_Q", kit.url())).await;
    assert_eq!(st, 200);
    assert!(page.contains("id=\"stream-none\""));
    assert!(page.contains("Log streams are configured in WorkOS"));
    for path in ["/viewer/events?org=org_nope", "/viewer/log-streams?org=org_nope"] {
        let (st, page) = html(&c, &format!("{}{path}", kit.url())).await;
        assert_eq!(st, 404, "{path}");
        assert!(page.contains("Organization not found"));
    }
    let page_url = format!("{}/viewer/log-streams?org=org_Q", kit.url());
    let export = format!("{}/viewer/export", kit.url());
    let res = viewer_post(&c, &page_url, &export, &[("org", "org_nope")]).await;
    assert_eq!(res.status(), 404, "export of an unknown organization");
    assert!(res.text().await.unwrap().contains("Organization not found"));
    // Without an organization the list goes back to the organizations.
    let res = no_redirects()
        .get(format!("{}/viewer/events", kit.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");
}

/// A value that would close an element, open a script, break out of either kind of quoted
/// attribute and smuggle an entity, if it reached the markup as it is.
const HOSTILE: &str = "</td><script>alert(\"x\")</script> & 'q' \"&lt;";
/// [`HOSTILE`] as HTML text or attribute value.
const HOSTILE_HTML: &str =
    "&lt;/td&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; 'q' &quot;&amp;lt;";
/// [`HOSTILE`] inside the pretty JSON of the detail page (JSON-escaped, then HTML-escaped).
const HOSTILE_JSON_HTML: &str =
    "&lt;/td&gt;&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt; &amp; 'q' \\&quot;&amp;lt;";

/// No page lets the hostile value through as markup.
fn assert_inert(what: &str, page: &str) {
    assert!(!page.contains("<script"), "{what}: a raw <script> tag");
    assert!(
        !page.contains("alert(\"x\")"),
        "{what}: quotes of the value unescaped"
    );
    assert!(!page.contains(HOSTILE), "{what}: the value unescaped");
}

#[tokio::test]
async fn a_hostile_action_actor_and_metadata_value_is_escaped_on_every_page_that_shows_it() {
    let collector = audit_testkit::stand_ins::StandIn::collector(200);
    let kit = TestKit::builder()
        .org("org_H")
        .stream("org_H", audit_testkit::Destination::http(collector.url()))
        .start()
        .await
        .unwrap();
    let c = client();
    let mut e = ev(HOSTILE, "2026-01-01T00:00:00.000Z", ("user_1", HOSTILE), "team");
    e["metadata"] = json!({ "note": HOSTILE });
    store(&c, &kit.url(), "org_H", e).await;
    let base = kit.url();

    // The list: the action (also the link text to the event) and the actor name.
    let (st, list) = html(&c, &format!("{base}/viewer/events?org=org_H")).await;
    assert_eq!(st, 200);
    assert_inert("list", &list);
    assert_eq!(actions(&list), [HOSTILE_HTML]);
    assert!(
        list.contains(&format!("<td>{HOSTILE_HTML}<br>")),
        "the actor name"
    );

    // The list filtered by the value: it is echoed in the form's inputs and the export form.
    let q = serde_urlencoded::to_string([("org", "org_H"), ("action", HOSTILE), ("actor_name", HOSTILE)])
        .unwrap();
    let (st, filtered) = html(&c, &format!("{base}/viewer/events?{q}")).await;
    assert_eq!(st, 200);
    assert_inert("filtered list", &filtered);
    assert_eq!(
        actions(&filtered),
        [HOSTILE_HTML],
        "the filter matches the stored value"
    );
    assert!(filtered.contains(&format!("name=\"action\" value=\"{HOSTILE_HTML}\"")));
    assert!(filtered.contains(&format!(
        "type=\"hidden\" name=\"actor_name\" value=\"{HOSTILE_HTML}\""
    )));

    // The detail page: the action as heading and title, all three in the stored JSON.
    let (st, detail) = html(&c, &format!("{base}/viewer/events/0")).await;
    assert_eq!(st, 200);
    assert_inert("detail", &detail);
    assert!(detail.contains(&format!("<h1>{HOSTILE_HTML}</h1>")));
    assert!(detail.contains(&format!("<title>Event {HOSTILE_HTML} · audit-testkit</title>")));
    assert!(detail.contains(&format!("\"action\": \"{HOSTILE_JSON_HTML}\"").replace('"', "&quot;")));
    assert!(detail.contains(&format!("&quot;name&quot;: &quot;{HOSTILE_JSON_HTML}&quot;")));
    assert!(detail.contains(&format!("&quot;note&quot;: &quot;{HOSTILE_JSON_HTML}&quot;")));

    // The log-stream page: the action of the delivery, and an error message from the query.
    kit.wait_for_stream("org_H", std::time::Duration::from_secs(20), |s| s.delivered == 1)
        .await
        .expect("the event is delivered");
    let q = serde_urlencoded::to_string([("org", "org_H"), ("error", HOSTILE)]).unwrap();
    let (st, streams) = html(&c, &format!("{base}/viewer/log-streams?{q}")).await;
    assert_eq!(st, 200);
    assert_inert("log stream", &streams);
    assert!(
        streams.contains(&format!("<td>{HOSTILE_HTML}</td>")),
        "the delivery's action"
    );
    assert!(streams.contains(&format!("<p class=\"error\" role=\"alert\">{HOSTILE_HTML}</p>")));

    // A page about an unknown organization names it.
    let q = serde_urlencoded::to_string([("org", HOSTILE)]).unwrap();
    let (st, missing) = html(&c, &format!("{base}/viewer/events?{q}")).await;
    assert_eq!(st, 404);
    assert_inert("unknown organization", &missing);
    assert!(missing.contains(&format!("organization '{HOSTILE_HTML}'.")));
}
