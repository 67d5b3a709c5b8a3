//! `stream_datadog`: the key on the site's API, then one log to the site's intake.

use super::wire::{self, DatadogSite, Destination};

use super::{Probe, Sent, sample_event};
use crate::report::{CheckId, CheckResult};

const ID: CheckId = CheckId::StreamDatadog;

/// The API and intake base URLs of a site, or of its stand-in under `override_url`.
fn bases(site: DatadogSite, override_url: Option<&str>) -> (String, String) {
    match override_url {
        Some(u) => {
            let b = format!("{}/{}", u.trim_end_matches('/'), site.name().to_ascii_lowercase());
            (b.clone(), b)
        }
        None => (site.api_url(), site.intake_url()),
    }
}

enum Key {
    Valid,
    Invalid,
    Unknown(CheckResult),
}

async fn validate(p: &Probe, site: DatadogSite, key: &str, override_url: Option<&str>) -> Key {
    let url = wire::datadog_validate_url(&bases(site, override_url).0);
    let headers = [("DD-API-KEY".to_owned(), key.to_owned())];
    match p.send(reqwest::Method::GET, &url, &headers, None).await {
        Sent::Answer { status: 200, .. } => Key::Valid,
        Sent::Answer {
            status: 401 | 403, ..
        } => Key::Invalid,
        Sent::Answer { status, body, .. } => Key::Unknown(CheckResult::fail(
            ID,
            format!(
                "Datadog's key validation on {} answered {status} ({})",
                site.name(),
                body.excerpt()
            ),
            "try again later; check https://status.datadoghq.com",
        )),
        Sent::Failed(t) => Key::Unknown(p.transport_failure(ID, &url, &t, "")),
    }
}

pub(super) async fn probe(
    p: &Probe,
    site: DatadogSite,
    key: &str,
    override_url: Option<&str>,
) -> CheckResult {
    if key.trim().is_empty() {
        return CheckResult::fail(
            ID,
            "the Datadog API key is empty",
            "pass the API key with --stream-datadog-key",
        );
    }
    match validate(p, site, key, override_url).await {
        Key::Valid => {}
        Key::Unknown(r) => return r,
        Key::Invalid => {
            for other in DatadogSite::ALL.into_iter().filter(|s| *s != site) {
                if let Key::Valid = validate(p, other, key, override_url).await {
                    return CheckResult::fail(
                        ID,
                        format!(
                            "wrong region: the key is valid on Datadog {} ({}), not on {} ({})",
                            other.name(),
                            other.domain(),
                            site.name(),
                            site.domain()
                        ),
                        format!(
                            "select region {} in the WorkOS stream (or use an API key of the {} site)",
                            other.name(),
                            site.name()
                        ),
                    );
                }
            }
            return CheckResult::fail(
                ID,
                format!(
                    "the API key is not valid on Datadog {} nor on any other site",
                    site.name()
                ),
                "copy an API key (not an application key) from Datadog's Organization Settings → API Keys",
            );
        }
    }
    let dest = Destination::Datadog {
        url: bases(site, override_url).1,
        api_key: key.to_owned(),
    };
    let out = dest.outgoing(&sample_event());
    match p
        .send(reqwest::Method::POST, &out.url, &out.headers, Some(out.body))
        .await
    {
        Sent::Answer {
            status: 200..=299, ..
        } => CheckResult::pass(
            ID,
            format!(
                "the key is valid on Datadog {} and the logs intake accepted a sample event (source workos)",
                site.name()
            ),
        ),
        Sent::Answer {
            status: 401 | 403,
            body,
            ..
        } => CheckResult::fail(
            ID,
            format!(
                "the key is valid on Datadog {} but the logs intake refused it ({})",
                site.name(),
                body.excerpt()
            ),
            "the key cannot write logs: use an API key with \"Logs Write\" permission (Organization Settings → API Keys)",
        ),
        Sent::Answer { status, body, .. } => CheckResult::fail(
            ID,
            format!(
                "the logs intake of Datadog {} answered {status} ({})",
                site.name(),
                body.excerpt()
            ),
            "check Datadog's status page and the intake's limits (5 MB per request, 1 MB per log)",
        ),
        Sent::Failed(t) => p.transport_failure(ID, &out.url, &t, ""),
    }
}
