//! HTML building blocks of the viewer: the page frame, its security headers and links.
//!
//! The pages are built with [`maud`]'s `html!` templates, checked at compile time: every value
//! spliced into a template (text or attribute) is HTML-escaped unless it is itself [`Markup`], so
//! a value from an event, a query string or the configuration cannot add markup. The pages also
//! carry a Content-Security-Policy that forbids scripts, images, frames and every other fetch, so
//! even markup that slipped through could not run code.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The Content-Security-Policy of every viewer page: nothing may load or run except the inline
/// stylesheet, forms submit only to the testkit itself, and the page cannot be framed.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A relative URL `path?k=v&...` with the pairs form-encoded; empty values are left out.
pub(crate) fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    if kept.is_empty() {
        return path.to_owned();
    }
    match serde_urlencoded::to_string(&kept) {
        Ok(q) => format!("{path}?{q}"),
        Err(_) => path.to_owned(),
    }
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#f6f7f9}\
header{background:#fff;border-bottom:1px solid #d8dee4;padding:10px 24px;display:flex;gap:12px;align-items:baseline}\
header a.home{font-weight:600;color:#1f2328;text-decoration:none}\
header span{color:#59636e}\
main{padding:18px 24px;max-width:1500px}\
h1{font-size:20px;margin:0 0 4px}\
p.sub{margin:0 0 14px;color:#59636e}\
a{color:#0b57d0}\
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}\
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d8dee4;border-radius:6px}\
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}\
th{background:#f6f8fa;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em;color:#59636e}\
tr:last-child td{border-bottom:0}\
td.ua{max-width:260px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;color:#59636e}\
td.time{white-space:nowrap}\
.muted{color:#59636e}\
.pill{display:inline-block;background:#eef1f4;border-radius:10px;padding:0 7px;margin:1px 2px 1px 0;font-size:12px}\
form.filters{display:flex;flex-wrap:wrap;gap:8px 12px;align-items:end;background:#fff;border:1px solid #d8dee4;\
border-radius:6px;padding:10px 12px;margin-bottom:12px}\
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#59636e;gap:2px}\
input{font:inherit;padding:4px 6px;border:1px solid #c9d1d9;border-radius:4px;min-width:150px}\
button,.button{font:inherit;padding:5px 12px;border:1px solid #c9d1d9;border-radius:4px;background:#f6f8fa;\
color:#1f2328;text-decoration:none;cursor:pointer}\
button.primary{background:#1f6feb;border-color:#1f6feb;color:#fff}\
.bar{display:flex;justify-content:space-between;align-items:center;margin:10px 0;gap:12px}\
.pager a,.pager span{margin-left:8px}\
pre{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:12px;overflow:auto;white-space:pre-wrap;\
word-break:break-word}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;border:1px solid #d8dee4;\
border-radius:6px;padding:12px;margin:0 0 12px}\
dt{color:#59636e}dd{margin:0}\
.note{background:#fff8c5;border:1px solid #eac54f;border-radius:6px;padding:8px 12px;margin:0 0 12px}\
.error{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:8px 12px;margin:0 0 12px}";

/// A complete page: `title` is plain text, `body` the page's content.
pub(crate) fn page(status: StatusCode, title: &str, body: Markup) -> Response<Body> {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · audit-testkit" }
                // A constant of this file: `<style>` is raw text, where escaping would corrupt it.
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.home href="/" { "audit-testkit" }
                    span { "Audit Logs viewer (local stand-in for the WorkOS dashboard and Admin Portal)" }
                }
                main { (body) }
            }
        }
    };
    let mut res = Response::new(Body::from(html.into_string()));
    *res.status_mut() = status;
    secure(&mut res);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// The headers every viewer response carries (pages and the CSV download alike).
pub(crate) fn secure(res: &mut Response<Body>) {
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A page that only says what went wrong, with a way back to the organization list.
pub(crate) fn problem(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    page(
        status,
        title,
        html! {
            h1 { (title) }
            p.sub { (text) }
            p { a href="/" { "All organizations" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn href_encodes_and_skips_empty_values() {
        assert_eq!(
            href(
                "/viewer/events",
                &[("org", "org_1"), ("action", ""), ("actor_name", "a&b c")]
            ),
            "/viewer/events?org=org_1&actor_name=a%26b+c"
        );
        assert_eq!(href("/x", &[("a", "")]), "/x");
    }
}
