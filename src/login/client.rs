//! PURE: who the client of a sign-in is, for counting wrong passwords. Behind an Ingress every
//! request comes from the proxy's address, so `X-Forwarded-For` is read, but only as far as a
//! chain of configured trusted proxies vouches for it: the client is the right-most hop that is
//! not a trusted proxy. IPv6 clients are counted per /64, the block one subscriber usually holds.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in these networks.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One trusted proxy: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
///
/// # Errors
/// Text that is neither, said plainly.
pub fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|n| match n {
            // An IPv4 network written in IPv6's mapped form means the IPv4 one.
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(n, IpNet::V4)
                }
                _ => n,
            },
            IpNet::V4(_) => n,
        })
        .map_err(|_| {
            format!("{text:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address")
        })
}

/// One `X-Forwarded-For` hop: an address, perhaps with a port (`1.2.3.4:5`, `[::1]:5`).
fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The client's address: the TCP `peer`, or, while the hop to the right is a trusted proxy,
/// the next hop leftwards in `forwarded_for` (the `X-Forwarded-For` header values, in order).
/// A hop that is not an address ends the walk at the proxy that sent it.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for text in hops.iter().rev() {
        let Some(ip) = hop(text) else {
            return client;
        };
        client = ip;
        if !trusted.contains(ip) {
            return client;
        }
    }
    client
}

/// The key failures are counted under: an IPv4 address as it is, an IPv6 address as its /64.
pub fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let network = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{network}/64")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|p| parse_proxy(p).unwrap()).collect())
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let none = TrustedProxies::default();
        assert_eq!(
            client_ip(ip("198.51.100.9"), &["203.0.113.7"], &none),
            ip("198.51.100.9")
        );
        let ingress = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("198.51.100.9"), &["203.0.113.7"], &ingress),
            ip("198.51.100.9"),
            "a client outside the proxies cannot name another address"
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let ingress = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        // What a client prepends is left of what the proxies append, and never reached.
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &["1.1.1.1, 203.0.113.7", "192.0.2.1"],
                &ingress
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["[2001:db8::5]:4711"], &ingress),
            ip("2001:db8::5")
        );
        // Only proxies: the left-most one is as far as anyone vouches.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["10.9.9.9"], &ingress),
            ip("10.9.9.9")
        );
        assert_eq!(client_ip(ip("10.1.2.3"), &[], &ingress), ip("10.1.2.3"));
        // Garbage stops the walk at the proxy that passed it on.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["203.0.113.7, unknown"], &ingress),
            ip("10.1.2.3")
        );
        // A mapped IPv4 peer is the IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), &["203.0.113.8"], &ingress),
            ip("203.0.113.8")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(address_key(ip("2001:db8:1:2::a")), "2001:db8:1:2::/64");
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            address_key(ip("2001:db8:1:3::a")),
            address_key(ip("2001:db8:1:2::a"))
        );
        assert_eq!(address_key(ip("192.0.2.7")), "192.0.2.7");
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), "192.0.2.7");
    }

    #[test]
    fn proxies_are_cidrs_or_addresses() {
        assert!(proxies(&["10.0.0.1"]).contains(ip("10.0.0.1")));
        assert!(!proxies(&["10.0.0.1"]).contains(ip("10.0.0.2")));
        assert!(proxies(&["fd00::/8"]).contains(ip("fd12::1")));
        assert!(proxies(&["::ffff:10.0.0.0/104"]).contains(ip("10.2.3.4")));
        assert!(
            parse_proxy("10.0.0.0/33")
                .unwrap_err()
                .contains("is not a CIDR")
        );
        assert!(parse_proxy("ingress").is_err());
    }
}
