//! What the agent checks before it answers `/v1/credentials`: that the request was addressed to
//! the agent itself (its `Host`), and that its client is within its rate.
//!
//! The `Host` check defeats DNS rebinding: a web page that makes a name of its own resolve to
//! `169.254.170.23` reaches the agent from a browser on the node, but its requests carry that
//! name as `Host`. SDKs call the URI the webhook injected, an IP literal, so they always pass.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Which `Host` headers the agent answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// Listen addresses: a `Host` naming one (its IP, with its port or, for port 80, none).
    /// An unspecified address (`0.0.0.0`, `[::]`) admits any IP literal on its port.
    listen: Vec<SocketAddr>,
    /// Further names allowed as is (lowercase, with or without a port).
    names: Vec<String>,
    /// Any IP literal, on any port: the default of an agent built without its listeners.
    any_ip: bool,
}

impl Default for HostPolicy {
    fn default() -> Self {
        Self::ip_literals()
    }
}

impl HostPolicy {
    /// Any IP-literal `Host` (never a name): what an agent serves before it knows its
    /// listeners, and still immune to DNS rebinding, which needs a name.
    pub fn ip_literals() -> Self {
        Self {
            listen: Vec::new(),
            names: Vec::new(),
            any_ip: true,
        }
    }

    /// Exactly the hosts of `listen`, plus `names`.
    pub fn for_listeners(listen: &[SocketAddr], names: &[String]) -> Self {
        Self {
            listen: listen.to_vec(),
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            any_ip: false,
        }
    }

    /// Whether a request with this `Host` header (none: `None`) is addressed to the agent.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
            // HTTP/1.1 requires Host; every SDK sends one. Without it, the request names nothing.
            return false;
        };
        let lower = host.to_ascii_lowercase();
        if self.names.contains(&lower) {
            return true;
        }
        let Some((ip, port)) = split_host(host) else {
            return false;
        };
        if self.any_ip {
            return true;
        }
        self.listen.iter().any(|addr| {
            let port_ok = port.unwrap_or(80) == addr.port();
            let ip_ok = addr.ip() == ip || addr.ip().is_unspecified();
            port_ok && ip_ok
        })
    }
}

/// The IP and optional port of a `Host` header that is an IP literal (`1.2.3.4`, `1.2.3.4:80`,
/// `[fd00:ec2::23]`, `[fd00:ec2::23]:80`); `None` for a name or anything malformed.
fn split_host(host: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((IpAddr::V6(ip), port));
    }
    match host.split_once(':') {
        Some((ip, port)) => Some((IpAddr::V4(ip.parse().ok()?), Some(port.parse().ok()?))),
        None => Some((IpAddr::V4(host.parse().ok()?), None)),
    }
}

/// How fast one client (one source address) may ask for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests allowed at once above the sustained rate.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// 100 requests per second with bursts of 200 per client address: far above what an SDK
    /// asks (once, then ahead of each expiry), low enough that one pod in a loop cannot starve
    /// the others on its node.
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// A per-client-address rate limiter (GCRA, from `governor`).
#[derive(Clone)]
pub struct ClientLimiter {
    limit: RateLimit,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for ClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiter")
            .field("limit", &self.limit)
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl ClientLimiter {
    /// A limiter enforcing `limit` per address.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limit,
            limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// `Ok` when `client` may be answered now; otherwise how long until it may ask again.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter.check_key(&client).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// Forgets clients whose state has returned to full burst, so the map holds only the
    /// addresses seen recently.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses tracked now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_link_local_addresses_pass_with_and_without_their_port() {
        let policy =
            HostPolicy::for_listeners(&addrs(&["169.254.170.23:80", "[fd00:ec2::23]:80"]), &[]);
        for host in [
            "169.254.170.23",
            "169.254.170.23:80",
            "[fd00:ec2::23]",
            "[fd00:ec2::23]:80",
            "[FD00:EC2::23]",
        ] {
            assert!(policy.allows(Some(host)), "{host}");
        }
    }

    #[test]
    fn a_name_another_address_or_port_or_nothing_is_refused() {
        let policy = HostPolicy::for_listeners(&addrs(&["169.254.170.23:80"]), &[]);
        for host in [
            "rebind.attacker.example",
            "rebind.attacker.example:80",
            "169.254.170.2",
            "169.254.170.23:8080",
            "169.254.170.23:",
            "169.254.170.23:80:80",
            "[169.254.170.23]",
            "localhost",
            "",
        ] {
            assert!(!policy.allows(Some(host)), "{host:?}");
        }
        assert!(!policy.allows(None));
    }

    #[test]
    fn a_configured_name_passes_and_an_unspecified_listener_takes_any_ip_on_its_port() {
        let policy = HostPolicy::for_listeners(
            &addrs(&["0.0.0.0:8080"]),
            &["Agent.Node.Local:8080".to_owned()],
        );
        assert!(policy.allows(Some("agent.node.local:8080")));
        assert!(!policy.allows(Some("agent.node.local")));
        assert!(policy.allows(Some("10.1.2.3:8080")));
        assert!(!policy.allows(Some("10.1.2.3:80")));
        assert!(!policy.allows(Some("rebind.attacker.example:8080")));
    }

    #[test]
    fn the_default_takes_ip_literals_only() {
        let policy = HostPolicy::default();
        assert!(policy.allows(Some("127.0.0.1:41234")));
        assert!(policy.allows(Some("[::1]:9")));
        assert!(!policy.allows(Some("localhost:41234")));
    }

    #[test]
    fn a_client_over_its_burst_waits_and_another_client_does_not() {
        let limiter = ClientLimiter::new(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check(b).is_ok());
        assert_eq!(limiter.clients(), 2);
    }
}
