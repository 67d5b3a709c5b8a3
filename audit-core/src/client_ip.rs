//! Client-IP rules: which address of a request is the client.
//!
//! An audit event's `context.location` should name the client that made the request. The only
//! address a server knows for certain is the socket peer: whoever opened the TCP connection. Behind
//! a load balancer or reverse proxy the peer is the proxy, and the client's address arrives in a
//! forwarding header (`X-Forwarded-For`, RFC 7239 `Forwarded`, or a vendor header such as
//! `CF-Connecting-IP`). Any client can send those headers too, so they are believed only when the
//! peer is one of the proxies the operator configured as trusted.
//!
//! [`ClientIpConfig`] holds the rules, [`ClientIpConfig::resolve`] applies them to one request and
//! returns a [`ClientIp`]. Both web adapters (audit-tower and audit-actix) use these rules, so an
//! axum app and an actix-web app resolve the same request to the same location. Headers are passed
//! as plain `(name, value)` pairs: this module knows nothing about any HTTP library.
//!
//! ```
//! use std::net::IpAddr;
//! use audit_core::client_ip::{ClientIp, ClientIpConfig, ForwardedHeader};
//!
//! // The default: the socket peer is the client, every forwarding header is ignored.
//! let direct = ClientIpConfig::socket_peer();
//! let peer: IpAddr = "203.0.113.9".parse().unwrap();
//! let forged = [("x-forwarded-for", &b"1.2.3.4"[..])];
//! assert_eq!(direct.resolve(Some(peer), forged).location(), "203.0.113.9");
//!
//! // Behind a load balancer in 10.0.0.0/8 that appends to X-Forwarded-For.
//! let behind_lb = ClientIpConfig::behind_proxies(["10.0.0.0/8"])?.header(ForwardedHeader::XForwardedFor);
//! let lb: IpAddr = "10.0.0.7".parse().unwrap();
//! // The client sent a forged "6.6.6.6"; the load balancer appended the address it saw.
//! let headers = [("X-Forwarded-For", &b"6.6.6.6, 198.51.100.23"[..])];
//! let ip = behind_lb.resolve(Some(lb), headers);
//! assert_eq!(ip.location(), "198.51.100.23");
//! assert!(matches!(ip, ClientIp::Header { header: ForwardedHeader::XForwardedFor, .. }));
//!
//! // No socket peer known (for example a test request without one): a documented placeholder.
//! assert_eq!(behind_lb.resolve(None, headers).location(), audit_core::client_ip::UNKNOWN_LOCATION);
//! # Ok::<(), audit_core::client_ip::InvalidTrustedProxy>(())
//! ```
//!
//! # Security
//!
//! The location is evidence in an audit log, so it must not be forgeable:
//!
//! - By default ([`ClientIpConfig::socket_peer`]) no header is read at all. An app that is reached
//!   directly and believed `X-Forwarded-For` would let every client write any address it likes
//!   into the audit log.
//! - With trusted proxies, headers are read only when the socket peer is inside a trusted range.
//! - A proxy *appends* the address it saw to the right of `X-Forwarded-For` / `Forwarded`; whatever
//!   the client sent stays on the left. The list is therefore walked from the right, past the
//!   trusted proxies, and the first address that is not a trusted proxy is the client. The leftmost
//!   entry (what many libraries return) is whatever the client chose to send.
//! - Anything that does not parse as an address (garbage, `unknown`, obfuscated `_hidden`
//!   identifiers, invalid UTF-8) stops the walk: the location is then the nearest trusted hop
//!   already seen, never a value from further left, which an attacker could have chosen.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

/// The location reported when no socket peer is known ([`ClientIp::Unknown`]).
///
/// WorkOS requires a non-empty `context.location`; `"unknown"` is not an IP address, so it cannot
/// be mistaken for one. The adapters log a warning the first time they report it.
pub const UNKNOWN_LOCATION: &str = "unknown";

/// The environment variable the examples read trusted proxy ranges from
/// (see [`ClientIpConfig::from_env`]).
pub const TRUSTED_PROXIES_ENV: &str = "AUDIT_TRUSTED_PROXIES";

/// The most list entries examined in forwarding headers for one request.
///
/// Bounds the work done on a huge or hostile header. Reaching the limit ends the walk like the end
/// of the list would: the location is the leftmost entry examined (a trusted proxy) or the peer.
pub const MAX_HOPS: usize = 32;

/// Which forwarding header carries the client address, when the peer is a trusted proxy.
///
/// Choose the header your nearest proxy sets: a header your proxies do not write is one only
/// clients write. Names are matched case-insensitively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`: a comma-separated list each proxy appends to.
    /// Entries may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:443`). The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711"`: the
    /// `for=` parameter of each element, walked like `X-Forwarded-For`.
    Forwarded,
    /// A header holding exactly one address set by the proxy, such as `CF-Connecting-IP`
    /// (Cloudflare), `X-Real-IP` (nginx), `True-Client-IP` or `Fly-Client-IP`. Several instances
    /// or a list are ignored (the peer is used).
    Single(&'static str),
}

impl ForwardedHeader {
    /// The header name, lower case for the built-in ones.
    pub fn name(&self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::Single(name) => name,
        }
    }
}

impl fmt::Display for ForwardedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A trusted proxy range that is neither a CIDR range nor an IP address.
///
/// Its message names the setting and the value:
/// `AUDIT_TRUSTED_PROXIES: "10.0.0/8" is not a CIDR range or an IP address (...)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTrustedProxy {
    setting: &'static str,
    value: String,
}

impl InvalidTrustedProxy {
    /// The setting at fault: `AUDIT_TRUSTED_PROXIES` or `trusted_proxies`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The value that was refused, as given.
    pub fn value(&self) -> &str {
        &self.value
    }

    fn reason(&self) -> String {
        format!(
            "{:?} is not a CIDR range or an IP address (expected for example \"10.0.0.0/8\", \
             \"2001:db8::/32\" or \"192.0.2.10\")",
            self.value
        )
    }
}

impl fmt::Display for InvalidTrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.reason())
    }
}

impl std::error::Error for InvalidTrustedProxy {}

impl From<InvalidTrustedProxy> for crate::Error {
    fn from(e: InvalidTrustedProxy) -> Self {
        crate::Error::Config {
            setting: e.setting,
            message: e.reason(),
        }
    }
}

/// The client-IP rules: which proxies are trusted and which header they write.
///
/// Cheap to clone (the ranges are shared), `Send + Sync`, built once at startup:
///
/// ```
/// use audit_core::client_ip::{ClientIpConfig, ForwardedHeader};
///
/// let direct = ClientIpConfig::socket_peer(); // the default
/// let behind_nginx = ClientIpConfig::behind_proxies(["10.0.0.0/8", "::1/128"])?
///     .header(ForwardedHeader::Single("x-real-ip"));
/// let from_env = ClientIpConfig::from_trusted_proxies_str("10.0.0.0/8, 192.168.0.0/16")?;
/// assert_eq!(from_env.trusted_ranges().len(), 2);
/// # Ok::<(), audit_core::client_ip::InvalidTrustedProxy>(())
/// ```
///
/// # Security
///
/// The default, [`socket_peer`](Self::socket_peer), ignores every forwarding header, because an
/// app reached directly receives those headers only from clients, who can put any address in them.
/// Configure [`behind_proxies`](Self::behind_proxies) only with the ranges of proxies you operate
/// (or your CDN's published ranges), and choose the header those proxies write. Trusting a range
/// that clients can connect from (`0.0.0.0/0`) makes every header believed and the location
/// forgeable. See [`resolve`](Self::resolve) for how the headers are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIpConfig {
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
}

impl ClientIpConfig {
    /// The socket peer is the client; every forwarding header is ignored. The default.
    pub fn socket_peer() -> Self {
        Self::default()
    }

    /// Believe [`header`](Self::header) (default `X-Forwarded-For`) when the socket peer is inside
    /// one of `ranges`.
    ///
    /// Each range is a CIDR range (`10.0.0.0/8`, `2001:db8::/32`) or a single address
    /// (`192.0.2.10`, meaning `/32` or `/128`); surrounding whitespace is ignored and host bits are
    /// cleared. IPv4-mapped IPv6 ranges (`::ffff:10.0.0.0/104`) are stored as IPv4 ranges, since
    /// addresses are compared in their IPv4 form. An empty list trusts nobody (same as
    /// [`socket_peer`](Self::socket_peer)).
    ///
    /// # Errors
    ///
    /// [`InvalidTrustedProxy`] naming the setting `trusted_proxies` and the first bad value.
    pub fn behind_proxies<I, S>(ranges: I) -> Result<Self, InvalidTrustedProxy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let trusted = ranges
            .into_iter()
            .map(|r| parse_range(r.as_ref(), "trusted_proxies"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            trusted: trusted.into(),
            header: ForwardedHeader::default(),
        })
    }

    /// Like [`behind_proxies`](Self::behind_proxies), from already parsed ranges.
    pub fn behind_proxy_nets(ranges: impl IntoIterator<Item = IpNet>) -> Self {
        let trusted: Vec<IpNet> = ranges.into_iter().map(|n| normalize_net(n.trunc())).collect();
        Self {
            trusted: trusted.into(),
            header: ForwardedHeader::default(),
        }
    }

    /// Parse a comma-separated list of ranges, the format of `AUDIT_TRUSTED_PROXIES`:
    /// `"10.0.0.0/8, 192.168.0.0/16"`. An empty or blank string trusts nobody (the socket peer is
    /// the client); empty items (a trailing comma) are skipped. The header is `X-Forwarded-For`
    /// unless changed with [`header`](Self::header).
    ///
    /// # Errors
    ///
    /// [`InvalidTrustedProxy`] naming `AUDIT_TRUSTED_PROXIES` and the first bad item.
    pub fn from_trusted_proxies_str(ranges: &str) -> Result<Self, InvalidTrustedProxy> {
        let trusted = ranges
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(|r| parse_range(r, TRUSTED_PROXIES_ENV))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            trusted: trusted.into(),
            header: ForwardedHeader::default(),
        })
    }

    /// Read [`TRUSTED_PROXIES_ENV`] (`AUDIT_TRUSTED_PROXIES`) as in
    /// [`from_trusted_proxies_str`](Self::from_trusted_proxies_str); unset means
    /// [`socket_peer`](Self::socket_peer).
    ///
    /// # Errors
    ///
    /// [`InvalidTrustedProxy`] for a bad item or a value that is not valid Unicode.
    pub fn from_env() -> Result<Self, InvalidTrustedProxy> {
        match std::env::var_os(TRUSTED_PROXIES_ENV) {
            None => Ok(Self::socket_peer()),
            Some(v) => match v.to_str() {
                Some(s) => Self::from_trusted_proxies_str(s),
                None => Err(InvalidTrustedProxy {
                    setting: TRUSTED_PROXIES_ENV,
                    value: v.to_string_lossy().into_owned(),
                }),
            },
        }
    }

    /// Read the client address from `header` when the peer is trusted. Has no effect without
    /// trusted ranges.
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The trusted proxy ranges (empty for [`socket_peer`](Self::socket_peer)).
    pub fn trusted_ranges(&self) -> &[IpNet] {
        &self.trusted
    }

    /// The header read from trusted proxies.
    pub fn forwarded_header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether [`resolve`](Self::resolve) can ever read a header. `false` for
    /// [`socket_peer`](Self::socket_peer): adapters may then skip collecting headers.
    pub fn reads_headers(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// Whether `ip` (in its IPv4 form if it is IPv4-mapped) is inside a trusted range.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of one request.
    ///
    /// `peer` is the socket peer (`None` when the server does not know it, as with some test
    /// utilities or Unix sockets); `headers` are the request's headers as `(name, value)` pairs in
    /// the order received. Names are compared case-insensitively; several instances of a list header
    /// are read as one list, in order (RFC 9110 §5.3). `headers` is not iterated at all unless the
    /// peer is trusted.
    ///
    /// The rules:
    ///
    /// 1. No peer: [`ClientIp::Unknown`], whatever the headers say (trust cannot be checked).
    /// 2. Peer not inside a trusted range (always so with [`socket_peer`](Self::socket_peer)): the
    ///    peer.
    /// 3. Trusted peer, `X-Forwarded-For` or `Forwarded`: the list is walked from right to left.
    ///    Entries inside trusted ranges are skipped; the first entry outside them is the client.
    ///    If every entry is trusted, the leftmost one is the client (an internal client). An entry
    ///    that is not an address (garbage, invalid UTF-8, `for=unknown`, an obfuscated `for=_hidden`,
    ///    a `Forwarded` element without exactly one `for=`) stops the walk, and so does reaching
    ///    [`MAX_HOPS`] entries: the client is then the last trusted entry seen, or the peer if
    ///    there is none. No header: the peer.
    /// 4. Trusted peer, [`ForwardedHeader::Single`]: the header's address if it occurs exactly once
    ///    and holds exactly one address; otherwise the peer.
    ///
    /// Addresses are normalized: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4 (also for the
    /// peer and for range checks), ports are stripped (`1.2.3.4:5678`, `[2001:db8::1]:443`),
    /// brackets and surrounding whitespace removed.
    ///
    /// # Security
    ///
    /// The leftmost `X-Forwarded-For` entry is whatever the client sent: every proxy appends the
    /// address it saw to the right. Only the entries written by trusted proxies, read from the
    /// right, can be believed, and the first one that names an untrusted host names the host that
    /// connected to the outermost trusted proxy: the client. Everything left of it is
    /// client-controlled and never read. Unparseable input never moves the result further left,
    /// so no header content chosen by a client can select the location, and an untrusted peer's
    /// headers are not even looked at.
    pub fn resolve<'a>(
        &self,
        peer: Option<IpAddr>,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> ClientIp {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return ClientIp::Unknown;
        };
        if !self.is_trusted(peer) {
            return ClientIp::Peer(peer);
        }
        let name = self.header.name();
        let values: Vec<&[u8]> = headers
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect();
        let found = match self.header {
            ForwardedHeader::XForwardedFor => self.walk(&values, false, parse_xff_entry),
            ForwardedHeader::Forwarded => self.walk(&values, true, parse_forwarded_element),
            ForwardedHeader::Single(_) => match values.as_slice() {
                [one] => parse_xff_entry(one.trim_ascii()),
                _ => None,
            },
        };
        match found {
            Some(ip) => ClientIp::Header {
                ip,
                header: self.header,
            },
            None => ClientIp::Peer(peer),
        }
    }

    /// Walks the list formed by `values` from the right; `None` means "the peer".
    fn walk(
        &self,
        values: &[&[u8]],
        quote_aware: bool,
        parse: fn(&[u8]) -> Option<IpAddr>,
    ) -> Option<IpAddr> {
        let mut examined = 0;
        let mut last_trusted = None;
        for value in values.iter().rev() {
            for raw in RevList::new(value, quote_aware) {
                examined += 1;
                if examined > MAX_HOPS {
                    return last_trusted;
                }
                let entry = raw.trim_ascii();
                if entry.is_empty() {
                    // RFC 9110 §5.6.1: empty list elements are ignored.
                    continue;
                }
                match parse(entry) {
                    Some(ip) if self.is_trusted(ip) => last_trusted = Some(ip),
                    Some(ip) => return Some(ip),
                    None => return last_trusted,
                }
            }
        }
        last_trusted
    }
}

/// The client address of a request and where it came from, from [`ClientIpConfig::resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientIp {
    /// The socket peer.
    Peer(IpAddr),
    /// An address a trusted proxy wrote in a forwarding header.
    Header {
        /// The address (normalized: IPv4-mapped IPv6 as IPv4, no port).
        ip: IpAddr,
        /// The header it was read from.
        header: ForwardedHeader,
    },
    /// No socket peer was known.
    Unknown,
}

impl ClientIp {
    /// The address, if one is known.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Self::Peer(ip) | Self::Header { ip, .. } => Some(ip),
            Self::Unknown => None,
        }
    }

    /// The event's `context.location`: the address (`203.0.113.7`, `2001:db8::7`), or
    /// [`UNKNOWN_LOCATION`] when no peer was known.
    pub fn location(&self) -> String {
        match self.ip() {
            // The common case, formatted without the formatting machinery (it runs per event).
            Some(IpAddr::V4(ip)) => {
                let mut out = String::with_capacity(15);
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    if octet >= 100 {
                        out.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        out.push(char::from(b'0' + octet / 10 % 10));
                    }
                    out.push(char::from(b'0' + octet % 10));
                }
                out
            }
            _ => self.to_string(),
        }
    }

    /// Whether no address is known.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::Unknown)
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(ip) => fmt::Display::fmt(&ip, f),
            None => f.write_str(UNKNOWN_LOCATION),
        }
    }
}

fn parse_range(item: &str, setting: &'static str) -> Result<IpNet, InvalidTrustedProxy> {
    let s = item.trim();
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(InvalidTrustedProxy {
                    setting,
                    value: item.to_owned(),
                });
            }
        },
    };
    Ok(normalize_net(net.trunc()))
}

/// `::ffff:a.b.c.d/n` (n >= 96) becomes `a.b.c.d/(n - 96)`, so that it matches canonical addresses.
fn normalize_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

/// Splits a header value at top-level commas, from the right. With `quote_aware`, commas inside
/// double quotes do not split (RFC 7239 quoted strings). Scanning from the right keeps the
/// well-formed suffix that trusted proxies appended intact even when a client sent an unbalanced
/// quote on the left.
struct RevList<'a> {
    rest: Option<&'a [u8]>,
    quote_aware: bool,
}

impl<'a> RevList<'a> {
    fn new(value: &'a [u8], quote_aware: bool) -> Self {
        Self {
            rest: Some(value),
            quote_aware,
        }
    }
}

impl<'a> Iterator for RevList<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut in_quotes = false;
        for i in (0..rest.len()).rev() {
            match rest[i] {
                b'"' if self.quote_aware => in_quotes = !in_quotes,
                b',' if !in_quotes => {
                    self.rest = Some(&rest[..i]);
                    return Some(&rest[i + 1..]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// An `X-Forwarded-For` entry or a single-address header value.
fn parse_xff_entry(entry: &[u8]) -> Option<IpAddr> {
    parse_node(std::str::from_utf8(entry).ok()?)
}

/// The `for=` address of one RFC 7239 `Forwarded` element (`for=1.2.3.4;proto=https;by=...`).
/// `None` for no `for=`, a repeated `for=`, a malformed pair or quoted string, and for node names
/// that are not addresses (`unknown`, obfuscated `_identifiers`).
fn parse_forwarded_element(element: &[u8]) -> Option<IpAddr> {
    let element = std::str::from_utf8(element).ok()?;
    let mut node = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        if name.eq_ignore_ascii_case("for") {
            if node.is_some() {
                return None;
            }
            node = Some(value.trim());
        }
    }
    parse_node(unquote(node?)?)
}

/// Splits `s` at `sep` outside double quotes.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    s.split(move |c: char| {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        !in_quotes && c == sep as char
    })
}

/// The content of a quoted string, or a token as is. Quoted pairs (`\x`) are refused: no address
/// contains one, and refusing them keeps the address a literal part of the header.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => (!value.contains('"')).then_some(value),
    }
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`; RFC 7239 obfuscated ports (`:_p1`) are accepted and stripped.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.len() > 64 {
        return None;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip = inside.parse::<Ipv6Addr>().ok()?;
        if !after.is_empty() && !valid_port(after.strip_prefix(':')?) {
            return None;
        }
        return Some(IpAddr::V6(ip).to_canonical());
    }
    let (host, port) = s.split_once(':')?;
    let ip = host.parse::<Ipv4Addr>().ok()?;
    valid_port(port).then_some(IpAddr::V4(ip))
}

fn valid_port(p: &str) -> bool {
    if let Some(obfuscated) = p.strip_prefix('_') {
        return !obfuscated.is_empty()
            && obfuscated
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    }
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn resolve(config: &ClientIpConfig, peer: &str, headers: &[(&str, &[u8])]) -> ClientIp {
        config.resolve(Some(ip(peer)), headers.iter().copied())
    }

    fn loc(config: &ClientIpConfig, peer: &str, headers: &[(&str, &[u8])]) -> String {
        resolve(config, peer, headers).location()
    }

    fn behind(ranges: &[&str], header: ForwardedHeader) -> ClientIpConfig {
        ClientIpConfig::behind_proxies(ranges)
            .expect("test ranges")
            .header(header)
    }

    const ALL_HEADERS: &[(&str, &[u8])] = &[
        ("x-forwarded-for", b"1.1.1.1"),
        ("forwarded", b"for=2.2.2.2"),
        ("cf-connecting-ip", b"3.3.3.3"),
        ("x-real-ip", b"4.4.4.4"),
        ("true-client-ip", b"5.5.5.5"),
    ];

    #[test]
    fn default_ignores_every_forwarding_header() {
        let config = ClientIpConfig::socket_peer();
        assert!(!config.reads_headers());
        for peer in ["203.0.113.9", "10.0.0.1", "127.0.0.1", "::1"] {
            assert_eq!(resolve(&config, peer, ALL_HEADERS), ClientIp::Peer(ip(peer)));
        }
        // Even choosing a header changes nothing without trusted ranges.
        for header in [
            ForwardedHeader::XForwardedFor,
            ForwardedHeader::Forwarded,
            ForwardedHeader::Single("cf-connecting-ip"),
        ] {
            let config = ClientIpConfig::socket_peer().header(header);
            assert_eq!(loc(&config, "10.0.0.1", ALL_HEADERS), "10.0.0.1");
            let empty = ClientIpConfig::behind_proxies(Vec::<String>::new())
                .unwrap()
                .header(header);
            assert_eq!(loc(&empty, "10.0.0.1", ALL_HEADERS), "10.0.0.1");
        }
    }

    #[test]
    fn default_does_not_iterate_headers() {
        let config = ClientIpConfig::socket_peer();
        let headers = std::iter::from_fn(|| -> Option<(&str, &[u8])> { panic!("headers were read") });
        assert_eq!(
            config.resolve(Some(ip("10.0.0.1")), headers).location(),
            "10.0.0.1"
        );
    }

    #[test]
    fn untrusted_peer_headers_ignored() {
        for header in [
            ForwardedHeader::XForwardedFor,
            ForwardedHeader::Forwarded,
            ForwardedHeader::Single("cf-connecting-ip"),
            ForwardedHeader::Single("x-real-ip"),
        ] {
            let config = behind(&["10.0.0.0/8"], header);
            assert_eq!(
                resolve(&config, "203.0.113.9", ALL_HEADERS),
                ClientIp::Peer(ip("203.0.113.9"))
            );
        }
    }

    #[test]
    fn xff_chain_walked_right_to_left() {
        let config = behind(&["10.0.0.0/8", "192.168.0.0/16"], ForwardedHeader::XForwardedFor);
        let cases: &[(&[u8], &str)] = &[
            (b"198.51.100.7", "198.51.100.7"),
            (b"6.6.6.6, 198.51.100.7", "198.51.100.7"),
            (b"6.6.6.6, 198.51.100.7, 10.0.0.5", "198.51.100.7"),
            (b"198.51.100.7, 10.0.0.5, 192.168.3.4", "198.51.100.7"),
            // A client pretending to be behind a trusted proxy only moves the result to itself.
            (b"10.9.9.9, 198.51.100.7, 10.0.0.5", "198.51.100.7"),
            // Every entry trusted: the leftmost (an internal client).
            (b"10.1.1.1, 10.0.0.5", "10.1.1.1"),
            (b"192.168.1.1", "192.168.1.1"),
            // Empty elements are skipped.
            (b" , 198.51.100.7 ,, 10.0.0.5,", "198.51.100.7"),
            (b"", "10.0.0.1"),
            (b"  ", "10.0.0.1"),
        ];
        for (value, expected) in cases {
            let got = loc(&config, "10.0.0.1", &[("x-forwarded-for", value)]);
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(value));
        }
        assert_eq!(
            resolve(
                &config,
                "10.0.0.1",
                &[("x-forwarded-for", b"6.6.6.6, 198.51.100.7")]
            ),
            ClientIp::Header {
                ip: ip("198.51.100.7"),
                header: ForwardedHeader::XForwardedFor
            }
        );
        // No header from a trusted peer: the peer.
        assert_eq!(resolve(&config, "10.0.0.1", &[]), ClientIp::Peer(ip("10.0.0.1")));
    }

    #[test]
    fn header_names_case_insensitive_and_only_the_chosen_header() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        assert_eq!(
            loc(&config, "10.0.0.1", &[("X-Forwarded-For", b"198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            loc(&config, "10.0.0.1", &[("X-FORWARDED-FOR", b"198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            loc(&config, "10.0.0.1", &[("forwarded", b"for=198.51.100.7")]),
            "10.0.0.1"
        );
        assert_eq!(
            loc(&config, "10.0.0.1", &[("x-real-ip", b"198.51.100.7")]),
            "10.0.0.1"
        );
        let single = behind(&["10.0.0.0/8"], ForwardedHeader::Single("CF-Connecting-IP"));
        assert_eq!(
            loc(&single, "10.0.0.1", &[("cf-connecting-ip", b"198.51.100.7")]),
            "198.51.100.7"
        );
    }

    #[test]
    fn several_header_instances_are_one_list() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let headers: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"6.6.6.6"),
            ("user-agent", b"x"),
            ("X-Forwarded-For", b"198.51.100.7, 10.0.0.3"),
            ("x-forwarded-for", b"10.0.0.4"),
        ];
        assert_eq!(loc(&config, "10.0.0.1", headers), "198.51.100.7");
        let headers: &[(&str, &[u8])] = &[("x-forwarded-for", b"6.6.6.6"), ("x-forwarded-for", b"10.0.0.4")];
        assert_eq!(loc(&config, "10.0.0.1", headers), "6.6.6.6");
        let fwd = behind(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let headers: &[(&str, &[u8])] = &[
            ("forwarded", b"for=6.6.6.6"),
            ("forwarded", b"for=198.51.100.7;proto=https"),
            ("forwarded", b"for=10.0.0.2"),
        ];
        assert_eq!(loc(&fwd, "10.0.0.1", headers), "198.51.100.7");
    }

    #[test]
    fn garbage_stops_the_walk_at_the_nearest_trusted_hop() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let cases: &[(&[u8], &str)] = &[
            (b"198.51.100.7, garbage, 10.0.0.5", "10.0.0.5"),
            (b"6.6.6.6, nonsense", "10.0.0.1"),
            (b"6.6.6.6, 1.2.3.4.5", "10.0.0.1"),
            (b"6.6.6.6, 010.0.0.1", "10.0.0.1"),
            (b"6.6.6.6, 1.2.3.4:99999", "10.0.0.1"),
            (b"6.6.6.6, 1.2.3.4:", "10.0.0.1"),
            (b"6.6.6.6, \"1.2.3.4\"", "10.0.0.1"),
            (b"6.6.6.6, fe80::1%eth0", "10.0.0.1"),
            (b"6.6.6.6, unknown, 10.0.0.9", "10.0.0.9"),
            (b"6.6.6.6, \xff\xfe, 10.0.0.9", "10.0.0.9"),
            (b"\xff, 198.51.100.7", "198.51.100.7"),
            (b"6.6.6.6 198.51.100.7", "10.0.0.1"),
        ];
        for (value, expected) in cases {
            let got = loc(&config, "10.0.0.1", &[("x-forwarded-for", value)]);
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(value));
        }
        // An instance with invalid UTF-8 stops the walk too; earlier instances are not read.
        let headers: &[(&str, &[u8])] = &[("x-forwarded-for", b"6.6.6.6"), ("x-forwarded-for", b"\xc3\x28")];
        assert_eq!(loc(&config, "10.0.0.1", headers), "10.0.0.1");
    }

    #[test]
    fn ports_brackets_and_whitespace() {
        let config = behind(
            &["10.0.0.0/8", "2001:db8:ffff::/48"],
            ForwardedHeader::XForwardedFor,
        );
        let cases: &[(&[u8], &str)] = &[
            (b"198.51.100.7:5678", "198.51.100.7"),
            (b"[2001:db8::7]:4711", "2001:db8::7"),
            (b"[2001:db8::7]", "2001:db8::7"),
            (b"2001:DB8:0::7", "2001:db8::7"),
            (b"\t 198.51.100.7 \t", "198.51.100.7"),
            (b"2001:db8::7, [2001:db8:ffff::1]:443, 10.0.0.2:80", "2001:db8::7"),
            (b"[::1]:80", "::1"),
        ];
        for (value, expected) in cases {
            let got = loc(&config, "10.0.0.1", &[("x-forwarded-for", value)]);
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_normalized_everywhere() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // The peer.
        assert_eq!(
            resolve(&config, "::ffff:203.0.113.9", &[]),
            ClientIp::Peer(ip("203.0.113.9"))
        );
        // The peer matched against an IPv4 range.
        assert_eq!(
            loc(
                &config,
                "::ffff:10.0.0.1",
                &[("x-forwarded-for", b"::ffff:198.51.100.7")]
            ),
            "198.51.100.7"
        );
        // Header entries matched against an IPv4 range.
        assert_eq!(
            loc(
                &config,
                "10.0.0.1",
                &[("x-forwarded-for", b"198.51.100.7, [::ffff:10.0.0.2]:80")]
            ),
            "198.51.100.7"
        );
        // A range written as IPv4-mapped IPv6 matches IPv4 peers.
        let mapped = behind(&["::ffff:10.0.0.0/104"], ForwardedHeader::XForwardedFor);
        assert_eq!(mapped.trusted_ranges(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(
            loc(&mapped, "10.0.0.1", &[("x-forwarded-for", b"198.51.100.7")]),
            "198.51.100.7"
        );
        assert!(mapped.is_trusted(ip("::ffff:10.1.2.3")));
        // Not IPv4-compatible addresses: ::1 stays ::1.
        assert_eq!(
            resolve(&ClientIpConfig::socket_peer(), "::1", &[]),
            ClientIp::Peer(ip("::1"))
        );
    }

    #[test]
    fn forwarded_rfc7239() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let cases: &[(&[u8], &str)] = &[
            (b"for=192.0.2.60", "192.0.2.60"),
            (b"for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            (b"For=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            (b"FOR=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            (b"for=\"192.0.2.60:8080\"", "192.0.2.60"),
            (b"for=\"[2001:db8::1]:_p1\"", "2001:db8::1"),
            (b"proto=https; for=192.0.2.60 ;host=example.com", "192.0.2.60"),
            (b"for=6.6.6.6, for=192.0.2.60, for=10.0.0.3", "192.0.2.60"),
            (
                b"for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com",
                "198.51.100.17",
            ),
            (b"for=\"a,b\", for=192.0.2.60", "192.0.2.60"),
            (b"for=10.0.0.8, for=10.0.0.9", "10.0.0.8"),
            (b"for=192.0.2.60;", "192.0.2.60"),
        ];
        for (value, expected) in cases {
            let got = loc(&config, "10.0.0.1", &[("forwarded", value)]);
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(value));
        }
        assert_eq!(
            resolve(&config, "10.0.0.1", &[("Forwarded", b"for=192.0.2.60")]),
            ClientIp::Header {
                ip: ip("192.0.2.60"),
                header: ForwardedHeader::Forwarded
            }
        );
    }

    #[test]
    fn forwarded_obfuscated_and_malformed_stop_the_walk() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let cases: &[(&[u8], &str)] = &[
            (b"for=198.51.100.7, for=_hidden, for=10.0.0.5", "10.0.0.5"),
            (b"for=198.51.100.7, for=unknown", "10.0.0.1"),
            (b"for=198.51.100.7, for=\"unknown\"", "10.0.0.1"),
            (b"for=198.51.100.7, for=_hidden", "10.0.0.1"),
            (b"for=6.6.6.6, proto=https", "10.0.0.1"),
            (b"for=6.6.6.6, for=1.1.1.1;for=2.2.2.2", "10.0.0.1"),
            (b"for=6.6.6.6, for=\"192.0.2.\\60\"", "10.0.0.1"),
            (b"for=6.6.6.6, for=\"192.0.2.60", "10.0.0.1"),
            (b"for=6.6.6.6, 192.0.2.60", "10.0.0.1"),
            (b"for=6.6.6.6, f or=192.0.2.60", "10.0.0.1"),
            (b"for=6.6.6.6, for=[2001:db8::1", "10.0.0.1"),
            (b"for=6.6.6.6, for=\"[2001:db8::1]:x\"", "10.0.0.1"),
            // An unbalanced quote sent by the client stays on the left.
            (b"for=\"6.6.6.6, for=198.51.100.7", "198.51.100.7"),
        ];
        for (value, expected) in cases {
            let got = loc(&config, "10.0.0.1", &[("forwarded", value)]);
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn single_value_headers() {
        let cf = behind(&["173.245.48.0/20"], ForwardedHeader::Single("cf-connecting-ip"));
        let peer = "173.245.48.1";
        assert_eq!(
            loc(&cf, peer, &[("CF-Connecting-IP", b" 198.51.100.7 ")]),
            "198.51.100.7"
        );
        assert_eq!(
            loc(&cf, peer, &[("cf-connecting-ip", b"2001:db8::7")]),
            "2001:db8::7"
        );
        assert_eq!(
            loc(&cf, peer, &[("cf-connecting-ip", b"::ffff:198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            loc(&cf, peer, &[("cf-connecting-ip", b"198.51.100.7:443")]),
            "198.51.100.7"
        );
        // Not exactly one address: ignored.
        assert_eq!(
            loc(&cf, peer, &[("cf-connecting-ip", b"6.6.6.6, 198.51.100.7")]),
            peer
        );
        assert_eq!(
            loc(
                &cf,
                peer,
                &[
                    ("cf-connecting-ip", b"6.6.6.6"),
                    ("cf-connecting-ip", b"198.51.100.7")
                ]
            ),
            peer
        );
        assert_eq!(loc(&cf, peer, &[("cf-connecting-ip", b"garbage")]), peer);
        assert_eq!(loc(&cf, peer, &[("cf-connecting-ip", b"\xff\xfe")]), peer);
        assert_eq!(loc(&cf, peer, &[("cf-connecting-ip", b"")]), peer);
        // Other headers are not read.
        assert_eq!(loc(&cf, peer, &[("x-forwarded-for", b"198.51.100.7")]), peer);
        // Untrusted peer: ignored.
        assert_eq!(
            loc(&cf, "203.0.113.9", &[("cf-connecting-ip", b"198.51.100.7")]),
            "203.0.113.9"
        );

        let real_ip = behind(&["::1/128"], ForwardedHeader::Single("x-real-ip"));
        assert_eq!(
            loc(&real_ip, "::1", &[("X-Real-IP", b"198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            loc(&real_ip, "127.0.0.1", &[("X-Real-IP", b"198.51.100.7")]),
            "127.0.0.1"
        );
    }

    #[test]
    fn bounded_work_on_huge_headers() {
        let config = behind(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        // More trusted hops than MAX_HOPS: the walk stops at the leftmost one examined.
        let mut hops: Vec<String> = vec!["198.51.100.7".into()];
        hops.extend((0..100).map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1)));
        let value = hops.join(", ");
        let got = loc(&config, "10.0.0.1", &[("x-forwarded-for", value.as_bytes())]);
        assert_eq!(got, hops[hops.len() - MAX_HOPS]);
        // Just within the limit, the client is found.
        let value = format!("198.51.100.7, {}", hops[hops.len() - (MAX_HOPS - 1)..].join(", "));
        assert_eq!(
            loc(&config, "10.0.0.1", &[("x-forwarded-for", value.as_bytes())]),
            "198.51.100.7"
        );
        // Many empty elements count toward the limit too.
        let value = format!("198.51.100.7{}", ",".repeat(10_000));
        assert_eq!(
            loc(&config, "10.0.0.1", &[("x-forwarded-for", value.as_bytes())]),
            "10.0.0.1"
        );
        // A megabyte-long entry is garbage.
        let value = "1".repeat(1 << 20);
        assert_eq!(
            loc(&config, "10.0.0.1", &[("x-forwarded-for", value.as_bytes())]),
            "10.0.0.1"
        );
        // Many header instances.
        let many: Vec<(&str, &[u8])> = (0..1000).map(|_| ("x-forwarded-for", &b"10.0.0.2"[..])).collect();
        assert_eq!(config.resolve(Some(ip("10.0.0.1")), many).location(), "10.0.0.2");
    }

    #[test]
    fn unknown_peer() {
        let config = behind(&["0.0.0.0/0", "::/0"], ForwardedHeader::XForwardedFor);
        let got = config.resolve(None, [("x-forwarded-for", &b"198.51.100.7"[..])]);
        assert_eq!(got, ClientIp::Unknown);
        assert!(got.is_unknown());
        assert_eq!(got.ip(), None);
        assert_eq!(got.location(), UNKNOWN_LOCATION);
        assert_eq!(
            ClientIpConfig::socket_peer().resolve(None, []).location(),
            "unknown"
        );
    }

    #[test]
    fn bad_cidr_errors_name_setting_and_value() {
        let e = ClientIpConfig::from_trusted_proxies_str("10.0.0.0/8, 10.0.0/8").unwrap_err();
        assert_eq!(e.setting(), "AUDIT_TRUSTED_PROXIES");
        assert_eq!(e.value(), " 10.0.0/8");
        assert!(
            e.to_string()
                .starts_with("AUDIT_TRUSTED_PROXIES: \" 10.0.0/8\" is not a CIDR range"),
            "{e}"
        );
        let e = ClientIpConfig::behind_proxies(["10.0.0.0/33"]).unwrap_err();
        assert_eq!(e.setting(), "trusted_proxies");
        assert!(
            e.to_string()
                .starts_with("trusted_proxies: \"10.0.0.0/33\" is not a CIDR range"),
            "{e}"
        );
        for bad in [
            "",
            "10.0.0.0/",
            "/8",
            "example.com",
            "10.0.0.0/8/8",
            "10.0.0.0-10.0.0.9",
            "::g/64",
        ] {
            assert!(ClientIpConfig::behind_proxies([bad]).is_err(), "{bad:?}");
        }
        let core: crate::Error = e.into();
        assert_eq!(
            core.to_string(),
            "configuration error: trusted_proxies: \"10.0.0.0/33\" is not a CIDR range or an IP address \
             (expected for example \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.10\")"
        );
    }

    #[test]
    fn range_parsing() {
        let config =
            ClientIpConfig::from_trusted_proxies_str(" 10.0.0.0/8 ,192.168.1.10,, ::1/128, 2001:db8::5/32,")
                .unwrap();
        let expected: Vec<IpNet> = ["10.0.0.0/8", "192.168.1.10/32", "::1/128", "2001:db8::/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(config.trusted_ranges(), expected.as_slice());
        assert_eq!(config.forwarded_header(), ForwardedHeader::XForwardedFor);
        assert!(config.reads_headers());
        assert_eq!(
            ClientIpConfig::from_trusted_proxies_str("").unwrap(),
            ClientIpConfig::socket_peer()
        );
        assert_eq!(
            ClientIpConfig::from_trusted_proxies_str(" , ").unwrap(),
            ClientIpConfig::socket_peer()
        );
        let nets = ClientIpConfig::behind_proxy_nets(["10.1.2.3/8".parse::<IpNet>().unwrap()]);
        assert_eq!(nets.trusted_ranges(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn config_is_cheap_shared_state() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<ClientIpConfig>();
        assert_send_sync::<ClientIp>();
        assert_send_sync::<InvalidTrustedProxy>();
    }
}
