//! Client-IP rules against arbitrary header content: what a client sends can never choose the
//! location, and a trusted proxy's answer is always the peer or an address that is in the headers.

use std::net::{IpAddr, Ipv4Addr};

use audit_core::client_ip::{ClientIp, ClientIpConfig, ForwardedHeader, UNKNOWN_LOCATION};
use audit_test_cases::client_ip as test_cases;
use proptest::prelude::*;

const RECOGNISED: &[&str] = &["x-forwarded-for", "forwarded", "cf-connecting-ip", "x-real-ip"];

fn configs() -> Vec<ClientIpConfig> {
    let behind = |h| ClientIpConfig::behind_proxies(["10.0.0.0/8", "fd00::/8"]).map(|c| c.header(h));
    let mut v = vec![ClientIpConfig::socket_peer()];
    for h in [
        ForwardedHeader::XForwardedFor,
        ForwardedHeader::Forwarded,
        ForwardedHeader::Single("cf-connecting-ip"),
        ForwardedHeader::Single("x-real-ip"),
    ] {
        v.push(behind(h).expect("valid ranges"));
    }
    v
}

/// One of the recognised header names, in random letter case.
fn header_name() -> impl Strategy<Value = String> {
    (prop::sample::select(RECOGNISED), any::<u64>()).prop_map(|(name, mask)| {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

/// An address in one of the textual forms forwarding headers use.
fn address_text() -> impl Strategy<Value = String> {
    let ip = prop_oneof![
        any::<IpAddr>(),
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
        any::<u16>().prop_map(|x| IpAddr::V6(format!("fd00::{x:x}").parse().expect("literal"))),
    ];
    (ip, 0..6u8, any::<u16>()).prop_map(|(ip, form, port)| match (ip, form) {
        (IpAddr::V4(v4), 1) => format!("::ffff:{v4}"),
        (IpAddr::V4(v4), 2) => format!("{v4}:{port}"),
        (IpAddr::V4(v4), 3) => format!("for={v4}"),
        (IpAddr::V6(v6), 1) => format!("[{v6}]:{port}"),
        (IpAddr::V6(v6), 2) => format!("[{v6}]"),
        (IpAddr::V6(v6), 3) => format!("for=\"[{v6}]:{port}\""),
        (ip, 4) => format!("For=\"{ip}\";proto=https"),
        (ip, _) => ip.to_string(),
    })
}

/// Header-like text: addresses, separators and the awkward tokens of RFC 7239.
fn structured_value() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        4 => address_text(),
        1 => prop::sample::select(vec![
            "unknown", "_hidden", "for=", "for=unknown", "for=_x", "\"", "[", "]", ":", ";", "=", " ",
            "\\", "by=10.0.0.1", "for=\"", "\u{ff}", "ffff", "::", "0",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{0,12}",
    ];
    let sep = prop::sample::select(vec![", ", ",", ";", " ", "", ",,"]);
    prop::collection::vec((token, sep), 0..8).prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(t, s)| [t, s.to_owned()])
            .collect::<String>()
            .into_bytes()
    })
}

/// Any bytes at all, or header-like text.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..120), structured_value()]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((header_name(), header_value()), 0..6)
}

fn pairs(headers: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, &[u8])> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
}

/// Whether `ip` is spelled out somewhere in `value` (as any textual form that parses to it).
fn appears_in(ip: IpAddr, value: &[u8]) -> bool {
    (0..value.len()).any(|i| {
        (i + 1..=value.len().min(i + 64)).any(|j| {
            std::str::from_utf8(&value[i..j])
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|found| found.to_canonical() == ip)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The default ignores every header, for every peer, including the ones other configurations
    /// would trust.
    #[test]
    fn default_location_is_the_peer(peer in any::<IpAddr>(), headers in headers()) {
        let got = ClientIpConfig::socket_peer().resolve(Some(peer), pairs(&headers));
        prop_assert_eq!(got, ClientIp::Peer(peer.to_canonical()));
        prop_assert_eq!(got.location(), peer.to_canonical().to_string());
    }

    /// Nothing an untrusted peer sends changes the location, whichever header is configured.
    #[test]
    fn untrusted_peer_cannot_change_location(peer in any::<IpAddr>(), headers in headers()) {
        for config in configs() {
            prop_assume!(!config.is_trusted(peer));
            let got = config.resolve(Some(peer), pairs(&headers));
            prop_assert_eq!(got, ClientIp::Peer(peer.to_canonical()));
        }
    }

    /// Without a peer nothing can be checked, so nothing is believed.
    #[test]
    fn unknown_peer_is_unknown(headers in headers()) {
        for config in configs() {
            prop_assert_eq!(config.resolve(None, pairs(&headers)).location(), UNKNOWN_LOCATION);
        }
    }

    /// From a trusted proxy, the location is the peer or an address spelled out in the configured
    /// header: never something invented, never from another header.
    #[test]
    fn trusted_peer_gives_peer_or_an_address_from_the_header(
        peer in prop_oneof![
            any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
            any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V6(Ipv4Addr::new(10, a, b, c).to_ipv6_mapped())),
        ],
        headers in headers(),
    ) {
        for config in configs().into_iter().skip(1) {
            prop_assert!(config.is_trusted(peer));
            let name = config.forwarded_header().name();
            match config.resolve(Some(peer), pairs(&headers)) {
                ClientIp::Peer(ip) => prop_assert_eq!(ip, peer.to_canonical()),
                ClientIp::Header { ip, header } => {
                    prop_assert_eq!(header, config.forwarded_header());
                    let instances: Vec<&[u8]> = headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.as_slice())
                        .collect();
                    prop_assert!(
                        instances.iter().any(|v| appears_in(ip, v)),
                        "{} not in {:?}", ip, headers
                    );
                    if let ForwardedHeader::Single(_) = header {
                        prop_assert_eq!(instances.len(), 1);
                    }
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }

    /// Whatever a client puts in X-Forwarded-For before the proxies append to it (or in earlier
    /// header instances), the address the outermost trusted proxy appended wins.
    #[test]
    fn client_prefix_cannot_override_appended_client_x_forwarded_for(
        prefix in header_value(),
        earlier in prop::collection::vec(header_value(), 0..3),
        client in any::<Ipv4Addr>().prop_filter("untrusted", |ip| ip.octets()[0] != 10),
        hops in prop::collection::vec(any::<[u8; 3]>(), 0..4),
        separate_instance in any::<bool>(),
    ) {
        let config = ClientIpConfig::behind_proxies(["10.0.0.0/8"]).expect("valid").header(ForwardedHeader::XForwardedFor);
        let mut suffix = client.to_string();
        for [a, b, c] in &hops {
            suffix.push_str(&format!(", 10.{a}.{b}.{c}"));
        }
        let mut headers: Vec<(String, Vec<u8>)> =
            earlier.into_iter().map(|v| ("x-forwarded-for".to_owned(), v)).collect();
        if separate_instance {
            headers.push(("x-forwarded-for".into(), prefix));
            headers.push(("X-Forwarded-For".into(), suffix.into_bytes()));
        } else {
            let mut value = prefix;
            value.extend_from_slice(b", ");
            value.extend_from_slice(suffix.as_bytes());
            headers.push(("x-forwarded-for".into(), value));
        }
        let got = config.resolve(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), pairs(&headers));
        prop_assert_eq!(got.location(), client.to_string());
    }

    /// The same for RFC 7239 `Forwarded`, where the client may also send unbalanced quotes.
    #[test]
    fn client_prefix_cannot_override_appended_client_forwarded(
        prefix in header_value(),
        client in any::<IpAddr>().prop_filter("untrusted", |ip| match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets()[0] != 10,
            IpAddr::V6(_) => true,
        }),
        hops in prop::collection::vec(any::<[u8; 3]>(), 0..4),
    ) {
        let config = ClientIpConfig::behind_proxies(["10.0.0.0/8"]).expect("valid").header(ForwardedHeader::Forwarded);
        let mut value = prefix;
        match client {
            IpAddr::V4(v4) => value.extend_from_slice(format!(", for={v4};proto=https").as_bytes()),
            IpAddr::V6(v6) => value.extend_from_slice(format!(", for=\"[{v6}]:4711\"").as_bytes()),
        }
        for [a, b, c] in &hops {
            value.extend_from_slice(format!(", for=10.{a}.{b}.{c};by=_lb").as_bytes());
        }
        let headers = vec![("forwarded".to_owned(), value)];
        let got = config.resolve(Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), pairs(&headers));
        prop_assert_eq!(got.location(), client.to_canonical().to_string());
    }

    /// An entry a trusted proxy could not fill in (garbage, `unknown`, an obfuscated identifier)
    /// ends the walk there: nothing further left, which the client wrote, is read.
    #[test]
    fn unparseable_nearest_entry_falls_back_to_the_peer(
        prefix in header_value(),
        xff_garbage in prop_oneof![
            "[g-z_][a-z_.-]{0,10}",
            Just("unknown".to_owned()),
            Just("1.2.3.4.5".to_owned()),
            Just("[::1".to_owned()),
            Just("1.2.3.4:70000".to_owned()),
        ],
        fwd_garbage in prop_oneof![
            "_[a-zA-Z0-9._-]{1,10}".prop_map(|s| format!("for={s}")),
            Just("for=unknown".to_owned()),
            Just("for=\"unknown\"".to_owned()),
            Just("proto=https".to_owned()),
            Just("for=1.2.3.4;for=5.6.7.8".to_owned()),
        ],
    ) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        for (header, garbage) in [(ForwardedHeader::XForwardedFor, &xff_garbage), (ForwardedHeader::Forwarded, &fwd_garbage)] {
            let config = ClientIpConfig::behind_proxies(["10.0.0.0/8"]).expect("valid").header(header);
            let mut value = prefix.clone();
            value.extend_from_slice(b", ");
            value.extend_from_slice(garbage.as_bytes());
            let headers = vec![(header.name().to_owned(), value)];
            prop_assert_eq!(config.resolve(Some(peer), pairs(&headers)), ClientIp::Peer(peer));
        }
    }
}

#[test]
fn shared_table_resolves_as_documented() {
    assert!((15..=25).contains(&test_cases::CASES.len()));
    let mut names: Vec<&str> = test_cases::CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), test_cases::CASES.len(), "case names are unique");
    for case in test_cases::CASES {
        assert!(case.peer_addr().is_some(), "{}: peer", case.name);
        assert!(case.config().is_ok(), "{}: config", case.name);
        assert_eq!(
            case.resolve().as_deref(),
            Some(case.expected),
            "case {}",
            case.name
        );
        for (_, value) in case.headers {
            assert!(
                value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{}: header value",
                case.name
            );
        }
    }
}
