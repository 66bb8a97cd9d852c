//! Where outbound NAT may go. Never into a tapnet network's subnet (another network is reached
//! through the switch or not at all: the host would route such a packet out of its uplink), and
//! only to destinations the daemon's `--nat-allow` list admits (default: everywhere).
//!
//! The same for IPv6: the controller names the networks' IPv6 prefixes too, and the allow list
//! takes IPv6 prefixes beside IPv4 ones. The host's loopback `::1` (where connections to a
//! gateway's IPv6 address go on a network with `host_loopback=on`) follows the rule of
//! 127.0.0.1. Whether the gateway address leads to the loopback at all is the network's
//! choice (`GatewayConfig::host_loopback`), checked before this policy.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use crate::wire::{Ipv4Net, Ipv6Net};

#[derive(Clone, Debug)]
pub struct NatPolicy {
    allow: Arc<Vec<Ipv4Net>>,
    allow6: Arc<Vec<Ipv6Net>>,
    /// Subnets of every bridge network of this daemon, kept current by the controller.
    tapnet_subnets: Arc<RwLock<Vec<Ipv4Net>>>,
    /// IPv6 prefixes of every bridge network of this daemon, kept current by the controller.
    tapnet_subnets_v6: Arc<RwLock<Vec<Ipv6Net>>>,
}

impl NatPolicy {
    /// Both lists empty means everywhere; a list of either family restricts both.
    pub fn new(allow: Vec<Ipv4Net>, allow6: Vec<Ipv6Net>) -> Self {
        NatPolicy {
            allow: Arc::new(allow),
            allow6: Arc::new(allow6),
            tapnet_subnets: Arc::new(RwLock::new(Vec::new())),
            tapnet_subnets_v6: Arc::new(RwLock::new(Vec::new())),
        }
    }

    pub fn set_tapnet_subnets(&self, subnets: Vec<Ipv4Net>) {
        *crate::guard::write_or_stop(&self.tapnet_subnets, "the NAT policy's subnets") = subnets;
    }

    /// Is `dst`, as a sandbox addressed it, inside one of tapnet's own networks?
    pub fn is_tapnet_address(&self, dst: Ipv4Addr) -> bool {
        crate::guard::read_or_stop(&self.tapnet_subnets, "the NAT policy's subnets")
            .iter()
            .any(|s| s.contains(dst))
    }

    /// May a host socket connect or send to `target`?
    pub fn allows(&self, target: Ipv4Addr) -> bool {
        self.everywhere() || self.allow.iter().any(|n| n.contains(target))
    }

    fn everywhere(&self) -> bool {
        self.allow.is_empty() && self.allow6.is_empty()
    }

    pub fn set_tapnet_subnets_v6(&self, subnets: Vec<Ipv6Net>) {
        *crate::guard::write_or_stop(&self.tapnet_subnets_v6, "the NAT policy's subnets") = subnets;
    }

    /// Is `dst` inside one of tapnet's own networks' IPv6 prefixes?
    pub fn is_tapnet_address_v6(&self, dst: Ipv6Addr) -> bool {
        crate::guard::read_or_stop(&self.tapnet_subnets_v6, "the NAT policy's subnets")
            .iter()
            .any(|s| s.contains(dst))
    }

    /// May a host socket connect or send to the IPv6 `target`? Everywhere without an allow
    /// list; with one, the IPv6 prefixes it names, and `::1` as far as 127.0.0.1 is admitted.
    pub fn allows_v6(&self, target: Ipv6Addr) -> bool {
        self.everywhere()
            || self.allow6.iter().any(|n| n.contains(target))
            || (target.is_loopback() && self.allows(Ipv4Addr::LOCALHOST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_and_tapnet_subnets() {
        let open = NatPolicy::new(Vec::new(), Vec::new());
        assert!(open.allows(Ipv4Addr::new(192, 0, 2, 1)));
        let local = NatPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], Vec::new());
        assert!(local.allows(Ipv4Addr::LOCALHOST));
        assert!(!local.allows(Ipv4Addr::new(192, 0, 2, 1)));
        local.set_tapnet_subnets(vec!["172.18.0.0/16".parse().unwrap()]);
        assert!(local.is_tapnet_address(Ipv4Addr::new(172, 18, 9, 9)));
        assert!(!local.is_tapnet_address(Ipv4Addr::new(172, 19, 0, 1)));
    }

    #[test]
    fn ipv6_allowed_everywhere_without_a_list_else_only_the_loopback() {
        let beyond: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let open = NatPolicy::new(Vec::new(), Vec::new());
        assert!(open.allows_v6(beyond) && open.allows_v6(Ipv6Addr::LOCALHOST));
        let local = NatPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], Vec::new());
        assert!(local.allows_v6(Ipv6Addr::LOCALHOST));
        assert!(!local.allows_v6(beyond));
        let lan = NatPolicy::new(vec!["192.0.2.0/24".parse().unwrap()], Vec::new());
        assert!(!lan.allows_v6(Ipv6Addr::LOCALHOST));
        // An IPv6 prefix in the list admits it, and restricts IPv4 too.
        let v6 = NatPolicy::new(Vec::new(), vec!["2001:db8::/48".parse().unwrap()]);
        assert!(v6.allows_v6(beyond) && !v6.allows_v6("2001:db9::1".parse().unwrap()));
        assert!(!v6.allows(Ipv4Addr::new(192, 0, 2, 1)) && !v6.allows_v6(Ipv6Addr::LOCALHOST));
        open.set_tapnet_subnets_v6(vec!["fd00:42::/64".parse().unwrap()]);
        assert!(open.is_tapnet_address_v6("fd00:42::9".parse().unwrap()));
        assert!(!open.is_tapnet_address_v6("fd00:43::9".parse().unwrap()));
    }
}
