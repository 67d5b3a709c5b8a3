//! The destination probes against audit-testkit's stand-ins (and a local TLS server with
//! generated certificates): each passes against a good destination and fails with the right fix
//! against each bad one, and never shows a token or key.

use std::sync::Arc;
use std::time::Duration;

use audit_testkit::stand_ins::{DatadogKey, StandIn};
use audit_testkit::streams::DatadogSite as KitSite;
use audit_verify::streams::{DatadogSite, MAX_ANSWER_BYTES, WORKOS_EGRESS_IPS};
use audit_verify::{CheckId, CheckResult, Report, Status, StreamProbe, Verifier, VerifyOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn probe(p: StreamProbe) -> CheckResult {
    probe_trusting(p, None).await
}

async fn probe_trusting(p: StreamProbe, root: Option<String>) -> CheckResult {
    let id = p.id();
    let mut o = VerifyOptions::new().only([id]).timeout(TIMEOUT).stream_probe(p);
    if let Some(pem) = root {
        o = o.stream_trust_root(pem);
    }
    let report: Report = Verifier::new(o).run().await;
    assert_eq!(report.checks.len(), 1, "{report}");
    report.get(id).cloned().expect("the probe's result")
}

fn text(r: &CheckResult) -> String {
    format!("{} | {}", r.finding, r.fix.clone().unwrap_or_default())
}

fn assert_fail(r: &CheckResult, finding: &str, fix: &str) {
    assert_eq!(r.status, Status::Fail, "{}", text(r));
    assert!(
        r.finding.contains(finding),
        "finding {:?} lacks {finding:?}",
        r.finding
    );
    let f = r.fix.as_deref().unwrap_or("");
    assert!(f.contains(fix), "fix {f:?} lacks {fix:?}");
}

#[tokio::test]
async fn http_probe_passes_on_2xx_and_maps_each_failure_to_its_fix() {
    let good = StandIn::collector(204);
    let r =
        probe(StreamProbe::http(format!("{}/in", good.url())).header("Authorization", "Bearer http-secret"))
            .await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
    let got = good.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].method.as_str(), got[0].path.as_str()), ("POST", "/in"));
    assert_eq!(got[0].header("authorization"), Some("Bearer http-secret"));
    assert_eq!(
        got[0].json()["action"],
        "verify.stream_probe",
        "the generic envelope: the event itself"
    );

    let cases: [(u16, &str, &str); 6] = [
        (401, "refused the credentials", "--stream-header"),
        (403, "refused the credentials", "Authorization"),
        (404, "no endpoint accepting POST", "accepts POST"),
        (405, "no endpoint accepting POST", "accepts POST"),
        (302, "a redirect to /elsewhere", "final URL"),
        (503, "the endpoint failed", "endpoint's logs"),
    ];
    for (status, finding, fix) in cases {
        let bad = StandIn::collector(status);
        let r = probe(StreamProbe::http(bad.url()).header("Authorization", "Bearer http-secret")).await;
        assert_fail(&r, finding, fix);
        assert!(r.finding.contains(&status.to_string()), "{}", r.finding);
        assert!(!text(&r).contains("http-secret"), "{}", text(&r));
    }
    let bad = StandIn::collector(413);
    assert_fail(
        &probe(StreamProbe::http(bad.url())).await,
        "refused the sample event",
        "application/json",
    );

    let r = probe(StreamProbe::http(format!(
        "{}/x?token=query-secret",
        StandIn::refusing_url()
    )))
    .await;
    assert_fail(&r, "refused the connection", WORKOS_EGRESS_IPS[0]);
    for ip in WORKOS_EGRESS_IPS {
        assert!(r.fix.as_deref().unwrap().contains(ip), "{ip}");
    }
    assert!(!text(&r).contains("query-secret"), "{}", text(&r));

    // A destination that never answers: a timeout, with the addresses to allow.
    let stuck = StandIn::hanging();
    let o = VerifyOptions::new()
        .only([CheckId::StreamHttp])
        .timeout(Duration::from_secs(1))
        .stream_probe(StreamProbe::http(stuck.url()));
    let report = Verifier::new(o).run().await;
    let r = report.get(CheckId::StreamHttp).expect("probed");
    assert_fail(r, "did not answer within 1 s", WORKOS_EGRESS_IPS[2]);

    let r = probe(StreamProbe::http("ftp://example.com/x")).await;
    assert_fail(&r, "scheme", "http(s) URL");
}

#[tokio::test]
async fn splunk_probe_maps_hec_answers() {
    let hec = StandIn::splunk("hec-good-token");
    let r = probe(StreamProbe::splunk(hec.url(), "hec-good-token")).await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
    let got = hec.received();
    assert_eq!(got[0].path, "/services/collector/health");
    assert_eq!(got[1].path, "/services/collector/event");
    assert_eq!(got[1].json()["sourcetype"], "workos");
    assert_eq!(got[1].json()["event"]["action"], "verify.stream_probe");

    let r = probe(StreamProbe::splunk(hec.url(), "hec-wrong-token")).await;
    assert_fail(&r, "Invalid token", "expired, deleted");
    assert!(!text(&r).contains("hec-wrong-token"));

    let disabled = StandIn::splunk_disabled_token("hec-off-token");
    let r = probe(StreamProbe::splunk(disabled.url(), "hec-off-token")).await;
    assert_fail(&r, "Token disabled", "enable it");

    let r = probe(StreamProbe::splunk(StandIn::refusing_url(), "hec-good-token")).await;
    assert_fail(&r, "refused the connection", "HEC is enabled");

    // A plain web server, not HEC: 404 on the health endpoint.
    let web = StandIn::collector(404);
    assert_fail(
        &probe(StreamProbe::splunk(web.url(), "hec-any-token")).await,
        "no HTTP Event Collector",
        "HEC port",
    );

    // A URL that already names a collector endpoint is used as given.
    let r = probe(StreamProbe::splunk(
        format!("{}/services/collector", hec.url()),
        "hec-good-token",
    ))
    .await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
    assert_eq!(hec.received().last().unwrap().path, "/services/collector");

    // HEC's answers to a well-formed event that it still refuses.
    for (code, finding, fix) in [
        (6, "Invalid data format", "JSON event endpoint"),
        (7, "Incorrect index", "default index"),
        (9, "Server is busy", "overloaded"),
    ] {
        let refusing = StandIn::splunk_answering("hec-good-token", code);
        let r = probe(StreamProbe::splunk(refusing.url(), "hec-good-token")).await;
        assert_fail(&r, finding, fix);
    }
}

#[tokio::test]
async fn datadog_probe_finds_wrong_regions_and_keys_without_logs_write() {
    let dd = StandIn::datadog(vec![
        DatadogKey::new(KitSite::Eu1, "dd-eu-key"),
        DatadogKey::new(KitSite::Us3, "dd-readonly-key").without_logs_write(),
    ]);
    let r = probe(StreamProbe::datadog(DatadogSite::Eu1, "dd-eu-key").datadog_url(dd.url())).await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
    let log = dd
        .received()
        .into_iter()
        .find(|q| q.path == "/eu1/api/v2/logs")
        .expect("a log sent");
    assert_eq!(log.json()["ddsource"], "workos");
    assert_eq!(log.json()["message"]["action"], "verify.stream_probe");

    let r = probe(StreamProbe::datadog(DatadogSite::Us1, "dd-eu-key").datadog_url(dd.url())).await;
    assert_fail(&r, "wrong region", "select region EU1");
    assert!(!text(&r).contains("dd-eu-key"));

    let r = probe(StreamProbe::datadog(DatadogSite::Us3, "dd-readonly-key").datadog_url(dd.url())).await;
    assert_fail(&r, "refused it", "Logs Write");

    let r = probe(StreamProbe::datadog(DatadogSite::Us5, "dd-unknown-key").datadog_url(dd.url())).await;
    assert_fail(&r, "not valid on Datadog US5 nor on any other site", "API Keys");

    let r =
        probe(StreamProbe::datadog(DatadogSite::Ap1, "dd-eu-key").datadog_url(StandIn::refusing_url())).await;
    assert_fail(&r, "refused the connection", WORKOS_EGRESS_IPS[1]);
}

#[tokio::test]
async fn s3_settings_are_checked_offline() {
    let good = StreamProbe::s3(
        "workos-audit",
        "eu-central-1",
        "arn:aws:iam::123456789012:role/workos-streams",
        "ext-1234",
    );
    let r = probe(good).await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
    let cases = [
        (
            StreamProbe::s3(
                "Bad_Bucket",
                "us-east-1",
                "arn:aws:iam::123456789012:role/r",
                "ext-1",
            ),
            "bucket name",
        ),
        (
            StreamProbe::s3(
                "ok-bucket",
                "useast1",
                "arn:aws:iam::123456789012:role/r",
                "ext-1",
            ),
            "region",
        ),
        (
            StreamProbe::s3("ok-bucket", "us-east-1", "arn:aws:iam::1234:role/r", "ext-1"),
            "12 digits",
        ),
        (
            StreamProbe::s3(
                "ok-bucket",
                "us-east-1",
                "arn:aws:iam::123456789012:user/r",
                "ext-1",
            ),
            "role",
        ),
        (
            StreamProbe::s3("ok-bucket", "us-east-1", "arn:aws:iam::123456789012:role/r", "x"),
            "external id",
        ),
    ];
    for (p, finding) in cases {
        let r = probe(p).await;
        assert_eq!(r.status, Status::Fail, "{}", text(&r));
        assert!(r.finding.contains(finding), "{} lacks {finding}", r.finding);
    }
    let dotted = probe(StreamProbe::s3(
        "my.bucket",
        "us-east-1",
        "arn:aws:iam::123456789012:role/r",
        "ext-1",
    ))
    .await;
    assert_eq!(dotted.status, Status::Warn);
}

#[tokio::test]
async fn probes_run_only_when_given_and_are_skipped_when_named_without_one() {
    let report = Verifier::new(VerifyOptions::new().only([CheckId::StreamSplunk]))
        .run()
        .await;
    assert_eq!(
        report.get(CheckId::StreamSplunk).map(|c| c.status),
        Some(Status::Skip)
    );
    let report = Verifier::new(
        VerifyOptions::new()
            .only([CheckId::ApiKey])
            .env_var("WORKOS_API_KEY", "sk_test_x1234"),
    )
    .run()
    .await;
    assert!(CheckId::PROBES.iter().all(|id| report.get(*id).is_none()));
    assert_eq!("stream-http".parse::<CheckId>(), Ok(CheckId::StreamHttp));
}

/// A server on 127.0.0.1 answering every request with `head` and then an endless chunked body;
/// returns its URL.
async fn endless_answer(head: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = tcp.read(&mut buf).await;
                if tcp.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
                while tcp.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    url
}

#[tokio::test]
async fn an_endless_answer_is_cut_and_the_finding_says_so() {
    let url = endless_answer(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    // Read whole, the body would never end: the probe would report a timeout instead.
    let r = probe(StreamProbe::http(format!("{url}/in"))).await;
    assert_fail(&r, "answered 500", "endpoint's logs");
    assert!(
        r.finding.contains(&format!("cut after {MAX_ANSWER_BYTES} bytes")),
        "{}",
        r.finding
    );
    assert!(r.finding.contains("answer: xxxx"), "{}", r.finding);

    let r = probe(StreamProbe::splunk(url.clone(), "hec-token")).await;
    assert_fail(&r, "HEC health check answered 500", "unhealthy");
    assert!(r.finding.contains("cut after"), "{}", r.finding);

    let r = probe(StreamProbe::datadog(DatadogSite::Eu1, "dd-key").datadog_url(url)).await;
    assert_fail(&r, "answered 500", "status.datadoghq.com");
    assert!(r.finding.contains("cut after"), "{}", r.finding);

    // A 2xx with an endless body still passes: the answer's status is what counts.
    let ok = endless_answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
    let r = probe(StreamProbe::http(format!("{ok}/in"))).await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
}

// ---- TLS ----------------------------------------------------------------------------------

struct Certs {
    ca_pem: String,
    chain: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
    key: tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
}

/// A leaf certificate for `names`; signed by a fresh CA (whose PEM is returned) or self-signed.
fn certs(names: &[&str], self_signed: bool) -> Certs {
    certs_valid(names, self_signed, None)
}

/// [`certs`], the leaf valid only until `not_after` when given.
fn certs_valid(names: &[&str], self_signed: bool, not_after: Option<time::OffsetDateTime>) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf_params = CertificateParams::new(names).expect("params");
    if let Some(end) = not_after {
        leaf_params.not_before = end - time::Duration::days(30);
        leaf_params.not_after = end;
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf = if self_signed {
        leaf_params.self_signed(&leaf_key).expect("self-signed")
    } else {
        leaf_params.signed_by(&leaf_key, &ca, &ca_key).expect("signed")
    };
    Certs {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone()],
        key: tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    }
}

/// An HTTPS server on 127.0.0.1 answering every request 200; returns its port.
async fn tls_server(c: Certs) -> u16 {
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(c.chain, c.key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// Probes an HTTPS collector on localhost serving `c`, trusting `c`'s CA.
async fn probe_https_trusting_its_ca(c: Certs) -> CheckResult {
    let ca = c.ca_pem.clone();
    let port = tls_server(c).await;
    probe_trusting(
        StreamProbe::http(format!("https://localhost:{port}/in")),
        Some(ca),
    )
    .await
}

#[tokio::test]
async fn tls_failures_name_their_cause() {
    // Self-signed: not trusted.
    let port = tls_server(certs(&["localhost"], true)).await;
    let r = probe(StreamProbe::http(format!("https://localhost:{port}/in"))).await;
    assert_fail(&r, "not signed by a trusted authority", "public CA");

    // Signed by a CA the probe trusts, but for another name.
    let c = certs(&["collector.example"], false);
    let r = probe_https_trusting_its_ca(c).await;
    assert_fail(&r, "is not valid for localhost", "names include localhost");

    // Signed by a trusted CA for the right name, but expired yesterday.
    let yesterday = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let c = certs_valid(&["localhost"], false, Some(yesterday));
    let r = probe_https_trusting_its_ca(c).await;
    assert_fail(&r, "has expired", "renew the certificate");

    // The same CA and the right name: it passes (so the two failures above are the certificates').
    let c = certs(&["localhost"], false);
    let r = probe_https_trusting_its_ca(c).await;
    assert_eq!(r.status, Status::Pass, "{}", text(&r));
}
