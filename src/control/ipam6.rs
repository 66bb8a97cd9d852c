//! IPv6 address management: the daemon's ULA pool, checks of user-given prefixes and
//! addresses, and addresses for endpoints.

use std::net::Ipv6Addr;

use super::ipam::check_wanted;
use crate::error::{Error, Result};
use crate::wire::Ipv6Net;

/// The shortest and the longest prefix a network may have: /64 is what SLAAC and most
/// guests expect; /120 still leaves room for a gateway and endpoints.
pub const MIN_PREFIX: u8 = 64;
pub const MAX_PREFIX: u8 = 120;

/// A random ULA /48 (RFC 4193: fd00::/8 and a 40-bit random global ID).
pub fn random_ula() -> Result<Ipv6Net> {
    let mut id = [0u8; 5];
    getrandom::fill(&mut id).map_err(|e| {
        Error::Remote(format!(
            "cannot pick an IPv6 ULA prefix: the kernel's random source: {e}"
        ))
    })?;
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&id);
    Ok(Ipv6Net {
        addr: Ipv6Addr::from(octets),
        prefix: 48,
    })
}

/// The first /64 of the ULA `pool` (a /48) that overlaps none of `taken`.
pub fn next_free_subnet(pool: Ipv6Net, taken: &[Ipv6Net]) -> Result<Ipv6Net> {
    let base = u128::from(pool.network());
    (0..1u128 << (64 - u32::from(pool.prefix.min(64))))
        .map(|i| Ipv6Net {
            addr: Ipv6Addr::from(base | (i << 64)),
            prefix: 64,
        })
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .ok_or_else(|| Error::conflict(format!("every /64 of {pool} is in use; pass --subnet")))
}

/// Check a user-given IPv6 prefix and gateway; the gateway defaults to `prefix::1`.
pub fn plan_network(
    subnet: Ipv6Net,
    gateway: Option<Ipv6Addr>,
    taken: &[(String, Ipv6Net)],
) -> Result<Ipv6Addr> {
    if subnet.addr != subnet.network() {
        return Err(Error::invalid(format!(
            "subnet {subnet} has host bits set (did you mean {}?)",
            subnet.trunc()
        )));
    }
    if let Some(block) = subnet.special_use() {
        return Err(Error::invalid(format!(
            "subnet {subnet} lies in {block}: sandboxes cannot use these addresses"
        )));
    }
    if subnet.prefix < MIN_PREFIX || subnet.prefix > MAX_PREFIX {
        return Err(Error::invalid(format!(
            "subnet {subnet}: an IPv6 prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}"
        )));
    }
    if let Some((name, other)) = taken.iter().find(|(_, t)| t.overlaps(&subnet)) {
        return Err(Error::conflict(format!(
            "subnet {subnet} overlaps {other} of network {name}"
        )));
    }
    let gateway = match gateway {
        Some(g) => g,
        None => subnet
            .host(1)
            .ok_or_else(|| Error::invalid(format!("subnet {subnet} has no room for a gateway")))?,
    };
    if !is_host_address(subnet, gateway) {
        return Err(Error::invalid(format!(
            "gateway {gateway} is not a usable address of subnet {subnet}"
        )));
    }
    Ok(gateway)
}

/// In the prefix, and not its first address (the subnet-router anycast address, RFC 4291).
fn is_host_address(subnet: Ipv6Net, ip: Ipv6Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network()
}

/// Pick an address for a new endpoint: `wanted` if given and free, else the lowest free one
/// from `prefix::2` (the gateway and `used` skipped).
pub fn allocate(
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    used: &impl super::ipam::Taken<Ipv6Addr>,
    wanted: Option<Ipv6Addr>,
) -> Result<Ipv6Addr> {
    if let Some(ip) = wanted {
        return check_wanted(ip, is_host_address(subnet, ip), subnet, gateway, used);
    }
    // A /64 has more addresses than any network has endpoints: the search ends after at most
    // as many steps as addresses are taken, plus two.
    let host_max = !subnet.mask();
    (1..=host_max)
        .filter_map(|i| subnet.host(i))
        .find(|ip| *ip != gateway && !used.contains(ip))
        .ok_or_else(|| Error::conflict(format!("no free address left in {subnet}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ula_prefixes_are_random_fd_48s() {
        let a = random_ula().unwrap();
        let b = random_ula().unwrap();
        assert_eq!(a.prefix, 48);
        assert_eq!(a.addr.octets()[0], 0xfd);
        assert_eq!(a, a.trunc());
        assert_ne!(a, b, "40 random bits twice the same");
    }

    #[test]
    fn pool_hands_out_successive_64s() {
        let pool = net("fd12:3456:789a::/48");
        assert_eq!(
            next_free_subnet(pool, &[]).unwrap(),
            net("fd12:3456:789a::/64")
        );
        let taken = [net("fd12:3456:789a::/64"), net("fd12:3456:789a:1::/80")];
        assert_eq!(
            next_free_subnet(pool, &taken).unwrap(),
            net("fd12:3456:789a:2::/64")
        );
        assert!(next_free_subnet(pool, &[pool]).is_err());
    }

    #[test]
    fn plans_gateway_and_refuses_bad_prefixes() {
        assert_eq!(
            plan_network(net("fd00:a::/64"), None, &[]).unwrap(),
            ip("fd00:a::1")
        );
        assert_eq!(
            plan_network(net("fd00:a::/64"), Some(ip("fd00:a::fe")), &[]).unwrap(),
            ip("fd00:a::fe")
        );
        let cases = [
            ("fd00:a::5/64", None, "host bits"),
            ("ff02::/64", None, "multicast"),
            ("fe80::/64", None, "link-local"),
            ("::/96", None, "loopback"),
            ("::ffff:0:0/96", None, "IPv4-mapped"),
            ("2001:db8::/64", None, "documentation"),
            ("fd00:a::/48", None, "/64 to /120"),
            ("fd00:a::/124", None, "/64 to /120"),
            ("fd00:a::/64", Some("fd00:b::1"), "not a usable address"),
            ("fd00:a::/64", Some("fd00:a::"), "not a usable address"),
        ];
        for (subnet, gw, want) in cases {
            let err = plan_network(net(subnet), gw.map(ip), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{subnet}: {err} does not say {want}");
        }
        let taken = vec![("a".to_string(), net("fd00:a::/64"))];
        let err = plan_network(net("fd00:a::/112"), None, &taken).unwrap_err();
        assert!(err.to_string().contains("network a"), "{err}");
        assert!(plan_network(net("fd00:b::/64"), None, &taken).is_ok());
    }

    #[test]
    fn allocates_sequentially_and_honours_requests() {
        let s = net("fd00:a::/64");
        let gw = ip("fd00:a::1");
        let mut used = HashSet::new();
        let a = allocate(s, gw, &used, None).unwrap();
        assert_eq!(a, ip("fd00:a::2"));
        used.insert(a);
        assert_eq!(allocate(s, gw, &used, None).unwrap(), ip("fd00:a::3"));
        // A gateway elsewhere in the prefix is skipped too.
        let gw3 = ip("fd00:a::3");
        assert_eq!(allocate(s, gw3, &used, None).unwrap(), ip("fd00:a::1"));
        assert!(allocate(s, gw, &used, Some(a)).is_err(), "taken");
        assert!(allocate(s, gw, &used, Some(gw)).is_err(), "gateway");
        assert!(
            allocate(s, gw, &used, Some(ip("fd00:b::2"))).is_err(),
            "outside"
        );
        assert!(
            allocate(s, gw, &used, Some(ip("fd00:a::"))).is_err(),
            "anycast"
        );
        assert_eq!(
            allocate(s, gw, &used, Some(ip("fd00:a::77"))).unwrap(),
            ip("fd00:a::77")
        );
    }

    #[test]
    fn reports_exhaustion() {
        let s = net("fd00:a::/126");
        let gw = ip("fd00:a::1");
        let used: HashSet<_> = [ip("fd00:a::2"), ip("fd00:a::3")].into();
        assert!(allocate(s, gw, &used, None).is_err());
    }
}
