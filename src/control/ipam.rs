//! IPv4 address management: default pools for new networks and addresses for endpoints.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::wire::Ipv4Net;

/// The default `bridge` network's subnet.
pub const DEFAULT_BRIDGE_SUBNET: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(172, 17, 0, 0),
    prefix: 16,
};

/// Candidate subnets for networks created without `--subnet`, in order: the /16s 172.18-31,
/// then /24s from 10.0.0.0/8 (as Docker's default address pools).
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (18..=31).map(|b| Ipv4Net {
        addr: Ipv4Addr::new(172, b, 0, 0),
        prefix: 16,
    });
    let twenty_fours = (0..=255u8).flat_map(|b| {
        (0..=255u8).map(move |c| Ipv4Net {
            addr: Ipv4Addr::new(10, b, c, 0),
            prefix: 24,
        })
    });
    sixteens.chain(twenty_fours)
}

/// The first default pool that overlaps none of `taken`.
pub fn next_free_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net> {
    default_pools()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .ok_or_else(|| Error::conflict("all default address pools are in use; pass --subnet"))
}

/// Check a user-given subnet, gateway and range; fill in the gateway if absent.
pub fn plan_network(
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    ip_range: Option<Ipv4Net>,
    taken: &[(String, Ipv4Net)],
) -> Result<Ipv4Addr> {
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
    if subnet.prefix > 30 {
        return Err(Error::invalid(format!(
            "subnet {subnet} is too small: it needs room for a gateway and endpoints (/30 at most)"
        )));
    }
    if let Some((name, other)) = taken.iter().find(|(_, t)| t.overlaps(&subnet)) {
        return Err(Error::conflict(format!(
            "subnet {subnet} overlaps {other} of network {name}"
        )));
    }
    if let Some(range) = ip_range
        && (!subnet.covers(&range) || range.addr != range.network())
    {
        return Err(Error::invalid(format!(
            "ip range {range} is not a prefix inside subnet {subnet}"
        )));
    }
    let gateway = gateway.unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
    if !is_host_address(subnet, gateway) {
        return Err(Error::invalid(format!(
            "gateway {gateway} is not a usable address of subnet {subnet}"
        )));
    }
    Ok(gateway)
}

fn is_host_address(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(ip) && ip != subnet.network() && ip != subnet.broadcast()
}

/// Addresses taken on a network, as an allocation asks about them.
pub trait Taken<A> {
    fn contains(&self, ip: &A) -> bool;
}

impl<A: Eq + std::hash::Hash, S: std::hash::BuildHasher> Taken<A> for HashSet<A, S> {
    fn contains(&self, ip: &A) -> bool {
        HashSet::contains(self, ip)
    }
}

/// A network's taken addresses: its sandboxes' (the model's index, `sandbox_list.rs`, so that
/// no create collects 10,000 of them) and the few others (CNI attachments, VM ports, the
/// host's).
#[derive(Debug)]
pub struct TakenOn<'a, A, S> {
    pub sandboxes: Option<&'a std::collections::HashMap<A, u32, S>>,
    pub others: HashSet<A, S>,
}

impl<A: Eq + std::hash::Hash, S: std::hash::BuildHasher> Taken<A> for TakenOn<'_, A, S> {
    fn contains(&self, ip: &A) -> bool {
        self.sandboxes.is_some_and(|s| s.contains_key(ip)) || self.others.contains(ip)
    }
}

/// The address asked for (`--ip`, `--ip6`), if it is `usable` in `subnet`, not the gateway
/// and not taken: one check and one wording for both families.
pub(super) fn check_wanted<A>(
    ip: A,
    usable: bool,
    subnet: impl std::fmt::Display,
    gateway: A,
    used: &impl Taken<A>,
) -> Result<A>
where
    A: std::fmt::Display + Eq,
{
    if !usable {
        return Err(Error::invalid(format!(
            "address {ip} is not a usable address of subnet {subnet}"
        )));
    }
    if ip == gateway {
        return Err(Error::conflict(format!(
            "address {ip} is the network's gateway"
        )));
    }
    if used.contains(&ip) {
        return Err(Error::conflict(format!("address {ip} is already in use")));
    }
    Ok(ip)
}

/// Pick an address for a new endpoint: `wanted` if given and free, else the lowest free one in
/// the range (or the subnet). `used` holds the endpoint addresses already taken.
pub fn allocate(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    ip_range: Option<Ipv4Net>,
    used: &impl Taken<Ipv4Addr>,
    wanted: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    if let Some(ip) = wanted {
        return check_wanted(ip, is_host_address(subnet, ip), subnet, gateway, used);
    }
    let pool = ip_range.unwrap_or(subnet);
    let first = u32::from(pool.network());
    let last = u32::from(pool.broadcast());
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| is_host_address(subnet, *ip) && *ip != gateway && !used.contains(ip))
        .ok_or_else(|| Error::conflict(format!("no free address left in {pool}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pools_skip_taken_subnets() {
        assert_eq!(
            next_free_subnet(&[DEFAULT_BRIDGE_SUBNET]).unwrap(),
            net("172.18.0.0/16")
        );
        let taken = vec![
            DEFAULT_BRIDGE_SUBNET,
            net("172.18.0.0/16"),
            net("172.19.5.0/24"),
        ];
        assert_eq!(next_free_subnet(&taken).unwrap(), net("172.20.0.0/16"));
        let all16: Vec<_> = (16..=31).map(|b| net(&format!("172.{b}.0.0/16"))).collect();
        assert_eq!(next_free_subnet(&all16).unwrap(), net("10.0.0.0/24"));
    }

    #[test]
    fn plans_gateway_and_rejects_bad_input() {
        assert_eq!(
            plan_network(net("10.9.0.0/24"), None, None, &[]).unwrap(),
            Ipv4Addr::new(10, 9, 0, 1)
        );
        assert!(plan_network(net("10.9.0.5/24"), None, None, &[]).is_err());
        assert!(plan_network(net("10.9.0.0/31"), None, None, &[]).is_err());
        let outside = Some(Ipv4Addr::new(10, 8, 0, 1));
        assert!(plan_network(net("10.9.0.0/24"), outside, None, &[]).is_err());
        let broadcast = Some(Ipv4Addr::new(10, 9, 0, 255));
        assert!(plan_network(net("10.9.0.0/24"), broadcast, None, &[]).is_err());
        let taken = vec![("a".to_string(), net("10.0.0.0/8"))];
        let err = plan_network(net("10.9.0.0/24"), None, None, &taken).unwrap_err();
        assert!(err.to_string().contains("network a"), "{err}");
        assert!(plan_network(net("10.9.0.0/24"), None, Some(net("10.9.1.0/25")), &[]).is_err());
        assert!(plan_network(net("10.9.0.0/24"), None, Some(net("10.9.0.128/25")), &[]).is_ok());
        let err = plan_network(net("224.0.0.0/24"), None, None, &[]).unwrap_err();
        assert!(err.to_string().contains("multicast"), "{err}");
    }

    #[test]
    fn allocates_lowest_free_and_honours_requests() {
        let s = net("10.9.0.0/24");
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut used = HashSet::new();
        let a = allocate(s, gw, None, &used, None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        used.insert(a);
        assert_eq!(
            allocate(s, gw, None, &used, None).unwrap(),
            Ipv4Addr::new(10, 9, 0, 3)
        );
        let r = Some(net("10.9.0.128/25"));
        assert_eq!(
            allocate(s, gw, r, &used, None).unwrap(),
            Ipv4Addr::new(10, 9, 0, 128)
        );
        assert!(allocate(s, gw, None, &used, Some(a)).is_err(), "taken");
        assert!(allocate(s, gw, None, &used, Some(gw)).is_err(), "gateway");
        assert!(allocate(s, gw, None, &used, Some(Ipv4Addr::new(10, 10, 0, 2))).is_err());
        assert!(allocate(s, gw, None, &used, Some(Ipv4Addr::new(10, 9, 0, 0))).is_err());
        let wanted = Some(Ipv4Addr::new(10, 9, 0, 77));
        assert_eq!(
            allocate(s, gw, None, &used, wanted).unwrap(),
            Ipv4Addr::new(10, 9, 0, 77)
        );
    }

    #[test]
    fn reports_exhaustion() {
        let s = net("10.9.0.0/30");
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let used: HashSet<_> = [Ipv4Addr::new(10, 9, 0, 2)].into();
        assert!(allocate(s, gw, None, &used, None).is_err());
    }
}
