//! `stream_http`: one sample event `POST`ed to a generic HTTP endpoint.

use super::wire::Destination;

use super::{Probe, Sent, display_url, is_loopback, sample_event};
use crate::report::{CheckId, CheckResult};

const ID: CheckId = CheckId::StreamHttp;

pub(super) async fn probe(p: &Probe, dest: &Destination) -> CheckResult {
    let url = dest.url();
    let out = dest.outgoing(&sample_event());
    let shown = display_url(url);
    let sent = p
        .send(reqwest::Method::POST, &out.url, &out.headers, Some(out.body))
        .await;
    let (status, body, location) = match sent {
        Sent::Answer {
            status,
            body,
            location,
        } => (status, body, location),
        Sent::Failed(t) => return p.transport_failure(ID, url, &t, ""),
    };
    let names = dest.header_names();
    let sent_headers = if names.is_empty() {
        "no header".to_owned()
    } else {
        format!(
            "the header{} {}",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )
    };
    match status {
        200..=299 => {
            let https = reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https");
            let local = reqwest::Url::parse(url).is_ok_and(|u| is_loopback(&u));
            if https || local {
                CheckResult::pass(ID, format!("POST {shown} with a sample event answered {status}"))
            } else {
                CheckResult::warn(
                    ID,
                    format!("POST {shown} answered {status}, but over plain http"),
                    Some("WorkOS streams to HTTPS endpoints: serve the endpoint over https".to_owned()),
                )
            }
        }
        300..=399 => CheckResult::fail(
            ID,
            format!(
                "POST {shown} answered {status}, a redirect to {}",
                location.as_deref().unwrap_or("(no Location)")
            ),
            "configure the final URL: a redirected POST may be dropped or turned into a GET",
        ),
        401 | 403 => CheckResult::fail(
            ID,
            format!(
                "POST {shown} with {sent_headers} answered {status}: the endpoint refused the credentials"
            ),
            "configure in the WorkOS stream the header the endpoint expects (e.g. Authorization: Bearer …) and pass the same here with --stream-header 'Name: value'",
        ),
        404 | 405 => CheckResult::fail(
            ID,
            format!("POST {shown} answered {status}: no endpoint accepting POST at this URL"),
            "the URL must name an endpoint that accepts POST with a JSON body and answers 2xx; try `curl -X POST -H 'Content-Type: application/json' -d '{}' URL`",
        ),
        500..=599 => CheckResult::fail(
            ID,
            format!(
                "POST {shown} answered {status}: the endpoint failed ({})",
                body.excerpt()
            ),
            "look at the endpoint's logs for the failing request; the stream reports `error` while the endpoint keeps failing",
        ),
        _ => CheckResult::fail(
            ID,
            format!(
                "POST {shown} answered {status}: the endpoint refused the sample event ({})",
                body.excerpt()
            ),
            "the endpoint must accept WorkOS's JSON body (one event object with id, action, actor, targets, context, occurred_at) as application/json",
        ),
    }
}
