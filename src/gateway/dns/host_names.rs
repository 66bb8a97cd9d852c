//! The host's own names: `host.tapnet.internal` and `host.docker.internal` answer with the
//! host's non-loopback addresses (those of the namespace the daemon runs in), so a sandbox
//! reaches the host's services through NAT at a real address, not through the gateway address
//! (which leads to the host's loopback only where a network opts in, `host_loopback=on`).
//!
//! Left out: loopback, link-local, multicast and unspecified addresses, addresses of interfaces
//! that are down, and addresses inside tapnet's own networks (a `host_access` interface's, say:
//! NAT never carries a sandbox there). The list is read lazily, at a query for these names, at
//! most once per [`REFRESH`]: a netlink dump every few seconds at worst, none while nobody asks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::names::Names;
use crate::gateway::policy::NatPolicy;

/// The names answered with the host's addresses (lowercase, as queries reach the resolver).
pub const HOST_NAMES: [&str; 2] = ["host.tapnet.internal", "host.docker.internal"];

/// How long a read of the host's addresses is used before the next query reads them again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The host's addresses of each family, as last read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAddrs {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// The host's addresses, read at most once per [`REFRESH`].
pub struct HostAddresses {
    /// Knows tapnet's own networks (left out); none in unit tests.
    policy: Option<NatPolicy>,
    cache: Mutex<Option<(Instant, HostAddrs)>>,
}

impl HostAddresses {
    pub fn new(policy: Option<NatPolicy>) -> Self {
        HostAddresses {
            policy,
            cache: Mutex::new(None),
        }
    }

    /// The current list: the cached one while it is younger than [`REFRESH`].
    pub fn get(&self, now: Instant) -> HostAddrs {
        let mut cache = crate::guard::lock_or_stop(&self.cache, "the host's addresses");
        match &*cache {
            Some((at, addrs)) if now.duration_since(*at) < REFRESH => addrs.clone(),
            _ => {
                let addrs = self.read();
                *cache = Some((now, addrs.clone()));
                addrs
            }
        }
    }

    /// The addresses of this namespace's interfaces that are up, as the module says. A failed
    /// read is an empty list (the names then answer NODATA), not an error for the sandbox.
    fn read(&self) -> HostAddrs {
        let mut addrs = HostAddrs::default();
        let Ok(list) = nix::ifaddrs::getifaddrs() else {
            return addrs;
        };
        for ifa in list {
            if !ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
                continue;
            }
            let Some(address) = ifa.address else {
                continue;
            };
            let ip = if let Some(sin) = address.as_sockaddr_in() {
                IpAddr::V4(sin.ip())
            } else if let Some(sin6) = address.as_sockaddr_in6() {
                IpAddr::V6(sin6.ip())
            } else {
                continue;
            };
            if !self.admits(ip) {
                continue;
            }
            match ip {
                IpAddr::V4(ip) if !addrs.v4.contains(&ip) => addrs.v4.push(ip),
                IpAddr::V6(ip) if !addrs.v6.contains(&ip) => addrs.v6.push(ip),
                _ => {}
            }
        }
        addrs
    }

    /// Is `ip` one a sandbox should be given for the host?
    pub fn admits(&self, ip: IpAddr) -> bool {
        if !host_address(ip) {
            return false;
        }
        match (&self.policy, ip) {
            (Some(p), IpAddr::V4(ip)) => !p.is_tapnet_address(ip),
            (Some(p), IpAddr::V6(ip)) => !p.is_tapnet_address_v6(ip),
            (None, _) => true,
        }
    }
}

/// Not loopback, link-local, multicast, unspecified or broadcast.
pub fn host_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            !(ip.is_loopback()
                || ip.is_link_local()
                || ip.is_multicast()
                || ip.is_unspecified()
                || ip.is_broadcast())
        }
        IpAddr::V6(ip) => {
            let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
            let mapped = ip.to_ipv4_mapped().is_some();
            !(ip.is_loopback() || link_local || ip.is_multicast() || ip.is_unspecified() || mapped)
        }
    }
}

/// Is `name` (lowercased, no trailing dot) one of the host's names?
pub fn is_host_name(name: &str) -> bool {
    HOST_NAMES.contains(&name)
}

/// A network's names with the host's in front of them.
pub struct WithHost<'a> {
    pub names: &'a dyn Names,
    pub host: &'a HostAddresses,
}

impl WithHost<'_> {
    /// The host's addresses when `name` is one of its names (an empty list of a family is a
    /// known name without that family's records: NOERROR, no records).
    fn host_addrs(&self, name: &str) -> Option<HostAddrs> {
        is_host_name(name).then(|| self.host.get(Instant::now()))
    }
}

impl Names for WithHost<'_> {
    fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        match self.host_addrs(name) {
            Some(h) => Some(h.v4),
            None => self.names.addresses(name),
        }
    }

    fn name_of(&self, address: Ipv4Addr) -> Option<String> {
        self.names.name_of(address)
    }

    fn addresses_v6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
        match self.host_addrs(name) {
            Some(h) => Some(h.v6),
            None => self.names.addresses_v6(name),
        }
    }

    fn name_of_v6(&self, address: Ipv6Addr) -> Option<String> {
        self.names.name_of_v6(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::dns::{CLASS_IN, Decision, NameTable, TYPE_A, TYPE_AAAA, answer};

    #[test]
    fn loopback_link_local_and_tapnet_addresses_are_not_the_hosts() {
        let policy = NatPolicy::new(Vec::new(), Vec::new());
        policy.set_tapnet_subnets(vec!["172.18.0.0/16".parse().unwrap()]);
        policy.set_tapnet_subnets_v6(vec!["fd00:42::/64".parse().unwrap()]);
        let host = HostAddresses::new(Some(policy));
        for refused in [
            "127.0.0.1",
            "127.3.0.1",
            "169.254.1.1",
            "172.18.0.1",
            "::1",
            "fe80::1",
            "fd00:42::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!host.admits(refused.parse().unwrap()), "{refused}");
        }
        for admitted in ["10.0.0.5", "192.168.1.4", "2001:db8::5", "fd00:43::1"] {
            assert!(host.admits(admitted.parse().unwrap()), "{admitted}");
        }
    }

    #[test]
    fn the_list_is_read_again_only_after_the_refresh_time() {
        let host = HostAddresses::new(None);
        let start = Instant::now();
        let first = host.get(start);
        // Plant a value: within REFRESH it is what comes back, after it a fresh read.
        let planted = HostAddrs {
            v4: vec![Ipv4Addr::new(192, 0, 2, 9)],
            v6: Vec::new(),
        };
        *host.cache.lock().unwrap() = Some((start, planted.clone()));
        assert_eq!(host.get(start + REFRESH / 2), planted);
        assert_eq!(host.get(start + REFRESH), first);
        assert!(first.v4.iter().all(|ip| !ip.is_loopback()), "{first:?}");
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        crate::gateway::dns::test_util::query_bytes(0x1234, name, qtype, CLASS_IN)
    }

    #[test]
    fn host_names_answer_in_any_case_and_a_missing_family_is_noerror_without_records() {
        let host = HostAddresses::new(None);
        *host.cache.lock().unwrap() = Some((
            Instant::now(),
            HostAddrs {
                v4: vec![Ipv4Addr::new(192, 0, 2, 9)],
                v6: Vec::new(),
            },
        ));
        let table = NameTable::new();
        let names = WithHost {
            names: &table,
            host: &host,
        };
        let mut out = Vec::new();
        for name in ["host.tapnet.internal", "HOST.Docker.Internal"] {
            assert_eq!(
                answer(&query(name, TYPE_A), &names, &mut out),
                Decision::Answered
            );
            let r = crate::gateway::dns::test_util::parse_response(&out);
            assert_eq!(r.header.rcode(), 0);
            assert_eq!(r.answers.len(), 1, "{name}");
            assert_eq!(r.answers[0].rdata, [192, 0, 2, 9]);
            assert_eq!(
                answer(&query(name, TYPE_AAAA), &names, &mut out),
                Decision::Answered
            );
            let r = crate::gateway::dns::test_util::parse_response(&out);
            assert_eq!(
                (r.header.rcode(), r.answers.len()),
                (0, 0),
                "NODATA for {name}"
            );
        }
        // Other names go on as before: forwarded.
        assert_eq!(
            answer(&query("example.org", TYPE_A), &names, &mut out),
            Decision::Forward
        );
    }
}
