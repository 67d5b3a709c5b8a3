//! Who may talk to the testkit, checked for every request before it reaches a handler.
//!
//! - **Host check** (DNS rebinding): a page whose name an attacker rebinds to 127.0.0.1 sends
//!   `Host: attacker.example:PORT`. Only the bound address, loopback addresses, `localhost`
//!   (and `*.localhost`) and the names given with [`allowed_host`](crate::TestKitBuilder::allowed_host)
//!   are answered; any other `Host` gets a 403 that says how to allow it. When bound to every
//!   interface (`0.0.0.0`, `::`), every IP address literal counts as the bound address (a page
//!   cannot rebind an IP literal).
//! - **No cross-site changes** on `/_testkit/*`: a request that changes state (any method but
//!   `GET`, `HEAD`, `OPTIONS`) must not come from another site (`Sec-Fetch-Site` same-origin or
//!   none, else `Origin` absent or this host) and must say `Content-Type: application/json`, which
//!   a page cannot send to another origin without a CORS preflight (the testkit answers none). A
//!   bodyless request without `Content-Type` is accepted only from a client that is not a browser
//!   (neither `Origin` nor `Sec-Fetch-Site`: curl, test helpers). The viewer's own forms carry a
//!   per-process token instead (see `viewer`).
//! - **Control token**: with [`control_token`](crate::TestKitBuilder::control_token), `/_testkit/*`
//!   (but `/_testkit/health` and the export downloads, which carry their own token) and the viewer
//!   need `Authorization: Bearer <token>`, or HTTP Basic with the token as password (how a browser
//!   sends it after asking once).

// The checks return complete responses as their error values; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use crate::util::json_response;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

/// A secret kept out of `Debug` output (the control token in the builder's configuration).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One `--allowed-host` entry: a name (or IP literal), with or without a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    name: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// Reads `name`, `name:port`, `[v6]` or `[v6]:port`; the message names what is wrong.
    pub(crate) fn parse(s: &str) -> Result<AllowedHost, String> {
        let (name, port) = split_host(s.trim())
            .ok_or_else(|| format!("allowed host '{s}': expected NAME or NAME:PORT, e.g. testkit:8787"))?;
        if name.is_empty() || name.contains(['/', '@', ' ', '?', '#']) {
            return Err(format!(
                "allowed host '{s}': expected NAME or NAME:PORT, e.g. testkit:8787"
            ));
        }
        Ok(AllowedHost { name, port })
    }
}

/// Splits a `Host` value into its lowercased name (brackets of an IPv6 literal removed, a
/// trailing dot dropped) and port; `None` when the port is not a number.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (v6, Some(p)),
            None if after.is_empty() => (v6, None),
            None => return None,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// The request guard of one testkit (see the module docs).
#[derive(Debug)]
pub(crate) struct Guard {
    bound: SocketAddr,
    allowed: Vec<AllowedHost>,
    control_token: Option<String>,
}

/// Whether a path is served only to holders of the control token, when one is set.
fn needs_control_token(path: &str) -> bool {
    if path == "/_testkit/health" || path.starts_with("/_testkit/exports/") {
        return false;
    }
    path == "/_testkit"
        || path.starts_with("/_testkit/")
        || path == "/portal"
        || crate::viewer::is_viewer_path(path)
}

fn is_testkit_api(path: &str) -> bool {
    path == "/_testkit" || path.starts_with("/_testkit/")
}

fn changes_state(method: &Method) -> bool {
    !(method == Method::GET || method == Method::HEAD || method == Method::OPTIONS)
}

fn refused(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json_response(status, &json!({"message": message, "code": code}))
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request comes from this testkit's own origin, or from no browser page at all.
/// Browsers say where a request comes from in `Sec-Fetch-Site`; the viewer's
/// `Referrer-Policy: no-referrer` makes Chromium send `Origin: null` on its own form posts, so
/// `Origin` decides only without `Sec-Fetch-Site` (then it must be absent or `http://` this host).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// Whether the `Content-Type` names JSON (`application/json` or `application/...+json`).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Decodes standard base64 (with or without padding); `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

impl Guard {
    pub(crate) fn new(
        bound: SocketAddr,
        allowed: &[String],
        control_token: Option<String>,
    ) -> Result<Guard, String> {
        let allowed = allowed
            .iter()
            .map(|h| AllowedHost::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        if control_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err("control token: empty (leave it unset for none)".into());
        }
        Ok(Guard {
            bound,
            allowed,
            control_token,
        })
    }

    /// Whether requests addressed to `host` (a `Host` header value) are answered.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if let Ok(ip) = name.parse::<IpAddr>() {
            let bound = self.bound.ip();
            if ip.is_loopback() || bound.is_unspecified() || ip == bound {
                return true;
            }
        } else if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.allowed
            .iter()
            .any(|a| a.name == name && a.port.is_none_or(|p| Some(p) == port))
    }

    fn has_control_token(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.control_token else {
            return true;
        };
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return same_secret(rest.trim(), want);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(decoded) = base64_decode(rest) else {
                return false;
            };
            let text = String::from_utf8_lossy(&decoded);
            let password = text.split_once(':').map_or(text.as_ref(), |(_, p)| p);
            return same_secret(password, want);
        }
        false
    }

    /// The checks that need only the request head: the Host check and the control token.
    pub(crate) fn check_head(
        &self,
        path: &str,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(), Response<Body>> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority);
        if let Some(host) = host
            && !self.host_allowed(host)
        {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "Host '{host}' is not allowed: audit-testkit answers only requests addressed to its own address ({}), \
                     a loopback address or localhost, so that a web page cannot reach it by rebinding its own name \
                     to this machine. To use this name, start it with --allowed-host {host} \
                     (TestKitBuilder::allowed_host(\"{host}\")).",
                    self.bound
                ),
            ));
        }
        if needs_control_token(path) && !self.has_control_token(headers) {
            let viewer = !is_testkit_api(path);
            let mut res = refused(
                StatusCode::UNAUTHORIZED,
                "control_token_required",
                "This audit-testkit was started with a control token: send it as `Authorization: Bearer <token>` \
                 (the browser asks for it as a password on viewer pages). It is the value of --control-token or \
                 AUDIT_TESTKIT_CONTROL_TOKEN."
                    .to_owned(),
            );
            let challenge = if viewer {
                "Basic realm=\"audit-testkit\", charset=\"UTF-8\""
            } else {
                "Bearer realm=\"audit-testkit\""
            };
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            return Err(res);
        }
        Ok(())
    }

    /// The cross-site check of a state-changing `/_testkit/` request, once its body is known.
    pub(crate) fn check_change(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body_len: usize,
    ) -> Result<(), Response<Body>> {
        if !is_testkit_api(path) || !changes_state(method) {
            return Ok(());
        }
        if !same_origin(headers) {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "cross_site_refused",
                format!(
                    "{method} {path} was sent from another site's page (Origin / Sec-Fetch-Site): the testkit's \
                     state can only be changed by tests, scripts and its own pages."
                ),
            ));
        }
        let browser = headers.contains_key("origin") || headers.contains_key("sec-fetch-site");
        let bodyless_script = body_len == 0 && !browser && !headers.contains_key(header::CONTENT_TYPE);
        if !bodyless_script && !is_json(headers) {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_else(|| "none".to_owned());
            return Err(refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "{method} {path} needs Content-Type: application/json (it was '{ct}'): a request that changes the \
                     testkit's state must be one a web page cannot send to it."
                ),
            ));
        }
        Ok(())
    }

    /// The warning to print when the testkit listens beyond loopback, naming what is exposed.
    pub(crate) fn exposure_warning(&self, any_key: bool) -> Option<String> {
        if self.bound.ip().is_loopback() {
            return None;
        }
        let mut w = format!(
            "WARNING: audit-testkit listens on {}, beyond this machine's loopback interface. Whoever can reach \
             this address can read every stored event and recorded request, and, ",
            self.bound
        );
        if self.control_token.is_some() {
            w.push_str(
                "with the control token only, change or wipe the testkit's state and point log streams at any URL \
                 (the testkit then POSTs events there). ",
            );
        } else {
            w.push_str(
                "through /_testkit/* and the viewer with no credentials at all, change or wipe the testkit's state \
                 and point log streams at any URL (the testkit then POSTs events there). Set --control-token or \
                 AUDIT_TESTKIT_CONTROL_TOKEN to protect them. ",
            );
        }
        if any_key {
            w.push_str("The WorkOS endpoints accept any sk_ key: restrict them with --api-key.");
        } else {
            w.push_str("The WorkOS endpoints accept only the --api-key keys.");
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bound: &str, allowed: &[&str]) -> Guard {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        Guard::new(bound.parse().unwrap(), &allowed, None).unwrap()
    }

    #[test]
    fn loopback_names_and_the_bound_address_are_allowed() {
        let g = guard("127.0.0.1:8787", &[]);
        for ok in [
            "127.0.0.1:8787",
            "127.0.0.1",
            "localhost:8787",
            "LOCALHOST",
            "localhost.:1",
            "[::1]:8787",
            "app.localhost:3000",
            "127.0.0.2:9",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example:8787",
            "localhost.attacker.example",
            "10.0.0.5:8787",
            "host.docker.internal:8787",
            "127.0.0.1:x",
            "[::1",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn allowed_hosts_match_with_or_without_port() {
        let g = guard("0.0.0.0:8787", &["testkit:8787", "host.docker.internal"]);
        assert!(g.host_allowed("testkit:8787"));
        assert!(!g.host_allowed("testkit:9000"));
        assert!(g.host_allowed("host.docker.internal:1234"));
        assert!(
            g.host_allowed("192.168.1.20:8787"),
            "bound to every interface: any IP literal"
        );
        assert!(!g.host_allowed("evil.example"));
        assert!(AllowedHost::parse("a/b").is_err());
        assert!(AllowedHost::parse("name:port").is_err());
    }

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        assert_eq!(base64_decode("dTpzM2NyZXQ=").as_deref(), Some(&b"u:s3cret"[..]));
        assert_eq!(base64_decode("dTpzM2NyZXQ").as_deref(), Some(&b"u:s3cret"[..]));
        assert!(base64_decode("*").is_none());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
