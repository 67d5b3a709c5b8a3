//! A framework-neutral table of client-IP cases, shared by the adapters' test suites.
//!
//! audit-tower and audit-actix each run [`CASES`] through their middleware (a request with the
//! case's socket peer and headers, the layer configured with [`Case::config`]) and check that the
//! emitted event's `context.location` is [`Case::expected`]. audit-core runs the same table through
//! [`ClientIpConfig::resolve`] directly. One table, so the two adapters cannot drift apart.
//!
//! Every header value here is visible ASCII, valid in both `http` 0.2 and 1.x; cases with invalid
//! UTF-8 or huge headers are tested in audit-core itself.

use std::net::SocketAddr;

use audit_core::client_ip::{ClientIpConfig, ForwardedHeader, InvalidTrustedProxy};

/// One client-IP case.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// A short unique name, for assertion messages.
    pub name: &'static str,
    /// Trusted proxy ranges; empty means [`ClientIpConfig::socket_peer`].
    pub trusted: &'static [&'static str],
    /// The header read from trusted proxies.
    pub header: ForwardedHeader,
    /// The socket peer, as a socket address (`203.0.113.9:51000`, `[::1]:51000`).
    pub peer: &'static str,
    /// The request's headers, in order; a name may repeat.
    pub headers: &'static [(&'static str, &'static str)],
    /// The expected `context.location`.
    pub expected: &'static str,
}

impl Case {
    /// The rules to configure the adapter with.
    ///
    /// # Errors
    ///
    /// Never for the cases in [`CASES`].
    pub fn config(&self) -> Result<ClientIpConfig, InvalidTrustedProxy> {
        if self.trusted.is_empty() {
            Ok(ClientIpConfig::socket_peer().header(self.header))
        } else {
            Ok(ClientIpConfig::behind_proxies(self.trusted)?.header(self.header))
        }
    }

    /// The socket peer to give the request (`None` only if [`Case::peer`] does not parse).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.parse().ok()
    }

    /// The location audit-core's rules give for this case (`None` if the case itself is invalid).
    pub fn resolve(&self) -> Option<String> {
        let config = self.config().ok()?;
        let peer = self.peer_addr()?;
        let headers = self.headers.iter().map(|(n, v)| (*n, v.as_bytes()));
        Some(config.resolve(Some(peer.ip()), headers).location())
    }
}

const LB: &[&str] = &["10.0.0.0/8"];
const XFF: &str = "x-forwarded-for";
const FWD: &str = "forwarded";

/// The shared cases.
pub static CASES: &[Case] = &[
    Case {
        name: "default_ignores_x_forwarded_for",
        trusted: &[],
        header: ForwardedHeader::XForwardedFor,
        peer: "203.0.113.9:51000",
        headers: &[(XFF, "198.51.100.7")],
        expected: "203.0.113.9",
    },
    Case {
        name: "default_ignores_every_forwarding_header",
        trusted: &[],
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[
            (XFF, "1.1.1.1"),
            (FWD, "for=2.2.2.2"),
            ("cf-connecting-ip", "3.3.3.3"),
            ("x-real-ip", "4.4.4.4"),
        ],
        expected: "10.0.0.1",
    },
    Case {
        name: "untrusted_peer_headers_ignored",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "203.0.113.9:51000",
        headers: &[(XFF, "10.0.0.2"), (FWD, "for=10.0.0.3")],
        expected: "203.0.113.9",
    },
    Case {
        name: "trusted_peer_without_header",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[],
        expected: "10.0.0.1",
    },
    Case {
        name: "trusted_peer_single_hop",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "198.51.100.7")],
        expected: "198.51.100.7",
    },
    Case {
        name: "forged_leftmost_x_forwarded_for_loses",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "6.6.6.6, 198.51.100.7")],
        expected: "198.51.100.7",
    },
    Case {
        name: "chain_of_trusted_hops",
        trusted: &["10.0.0.0/8", "192.168.0.0/16"],
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "6.6.6.6, 198.51.100.7, 192.168.4.4, 10.0.0.5")],
        expected: "198.51.100.7",
    },
    Case {
        name: "every_hop_trusted_gives_leftmost",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "10.1.1.1, 10.0.0.5")],
        expected: "10.1.1.1",
    },
    Case {
        name: "several_header_instances_are_one_list",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[
            (XFF, "6.6.6.6"),
            (XFF, "198.51.100.7, 10.0.0.3"),
            (XFF, "10.0.0.4"),
        ],
        expected: "198.51.100.7",
    },
    Case {
        name: "garbage_stops_at_nearest_trusted_hop",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "198.51.100.7, not-an-ip, 10.0.0.5")],
        expected: "10.0.0.5",
    },
    Case {
        name: "garbage_rightmost_gives_peer",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "6.6.6.6, 1.2.3.4.5")],
        expected: "10.0.0.1",
    },
    Case {
        name: "ports_and_ipv6_brackets_stripped",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "6.6.6.6, [2001:db8::7]:4711, 10.0.0.5:8080")],
        expected: "2001:db8::7",
    },
    Case {
        name: "ipv4_mapped_peer_and_entry_normalized",
        trusted: LB,
        header: ForwardedHeader::XForwardedFor,
        peer: "[::ffff:10.0.0.1]:51000",
        headers: &[(XFF, "::ffff:198.51.100.7")],
        expected: "198.51.100.7",
    },
    Case {
        name: "ipv6_trusted_range",
        trusted: &["::1/128"],
        header: ForwardedHeader::XForwardedFor,
        peer: "[::1]:51000",
        headers: &[(XFF, "2001:db8::42")],
        expected: "2001:db8::42",
    },
    Case {
        name: "forwarded_walked_right_to_left",
        trusted: LB,
        header: ForwardedHeader::Forwarded,
        peer: "10.0.0.1:51000",
        headers: &[(FWD, "for=6.6.6.6, for=198.51.100.7;proto=https, for=10.0.0.5")],
        expected: "198.51.100.7",
    },
    Case {
        name: "forwarded_quoted_ipv6_with_port",
        trusted: LB,
        header: ForwardedHeader::Forwarded,
        peer: "10.0.0.1:51000",
        headers: &[(FWD, "For=\"[2001:db8:cafe::17]:4711\";Proto=https")],
        expected: "2001:db8:cafe::17",
    },
    Case {
        name: "forwarded_obfuscated_hidden_stops_walk",
        trusted: LB,
        header: ForwardedHeader::Forwarded,
        peer: "10.0.0.1:51000",
        headers: &[(FWD, "for=198.51.100.7, for=_hidden, for=10.0.0.5")],
        expected: "10.0.0.5",
    },
    Case {
        name: "forwarded_unknown_gives_peer",
        trusted: LB,
        header: ForwardedHeader::Forwarded,
        peer: "10.0.0.1:51000",
        headers: &[(FWD, "for=6.6.6.6, for=unknown")],
        expected: "10.0.0.1",
    },
    Case {
        name: "x_forwarded_for_ignored_when_forwarded_chosen",
        trusted: LB,
        header: ForwardedHeader::Forwarded,
        peer: "10.0.0.1:51000",
        headers: &[(XFF, "198.51.100.7")],
        expected: "10.0.0.1",
    },
    Case {
        name: "cf_connecting_ip_from_trusted_peer",
        trusted: &["173.245.48.0/20"],
        header: ForwardedHeader::Single("cf-connecting-ip"),
        peer: "173.245.48.1:51000",
        headers: &[("CF-Connecting-IP", "198.51.100.7"), (XFF, "6.6.6.6")],
        expected: "198.51.100.7",
    },
    Case {
        name: "cf_connecting_ip_from_untrusted_peer_ignored",
        trusted: &["173.245.48.0/20"],
        header: ForwardedHeader::Single("cf-connecting-ip"),
        peer: "203.0.113.9:51000",
        headers: &[("cf-connecting-ip", "198.51.100.7")],
        expected: "203.0.113.9",
    },
    Case {
        name: "x_real_ip_with_a_list_ignored",
        trusted: LB,
        header: ForwardedHeader::Single("x-real-ip"),
        peer: "10.0.0.1:51000",
        headers: &[("x-real-ip", "6.6.6.6, 198.51.100.7")],
        expected: "10.0.0.1",
    },
];

/// The forwarding headers a property test fills with arbitrary content.
pub static FORWARDING_HEADER_NAMES: &[&str] = &[
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "cf-connecting-ip",
    "true-client-ip",
    "x-forwarded-host",
];

/// Socket peers inside none of the ranges trusted by [`property_rules`].
pub static UNTRUSTED_PEERS: &[&str] = &[
    "203.0.113.9:51000",
    "[2001:db8::7]:443",
    "[::ffff:198.51.100.4]:8080",
    "172.16.0.1:1",
];

/// Rules for the property that no header content from an untrusted peer changes the location:
/// the default, and trusted ranges with each kind of forwarding header.
pub fn property_rules() -> Vec<ClientIpConfig> {
    let behind = |ranges: &[&str]| {
        ClientIpConfig::behind_proxies(ranges.iter().copied())
            .unwrap_or_else(|_| ClientIpConfig::socket_peer())
    };
    vec![
        ClientIpConfig::socket_peer(),
        behind(&["10.0.0.0/8", "fd00::/8"]),
        behind(&["10.0.0.0/8"]).header(ForwardedHeader::Forwarded),
        behind(&["10.0.0.0/8"]).header(ForwardedHeader::Single("x-real-ip")),
        behind(&["192.168.0.0/16", "::1/128"]).header(ForwardedHeader::Single("cf-connecting-ip")),
    ]
}

/// [`UNTRUSTED_PEERS`] as socket addresses.
pub fn untrusted_peers() -> Vec<SocketAddr> {
    UNTRUSTED_PEERS.iter().filter_map(|p| p.parse().ok()).collect()
}
