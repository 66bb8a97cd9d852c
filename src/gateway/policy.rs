//! Where outbound NAT may go. Never into a tapnet network's subnet (another network is reached
//! through the switch or not at all: the host would route such a packet out of its uplink), and
//! only to destinations the daemon's `--nat-allow` list admits (default: everywhere).

use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use crate::wire::Ipv4Net;

#[derive(Clone, Debug)]
pub struct NatPolicy {
    allow: Arc<Vec<Ipv4Net>>,
    /// Subnets of every bridge network of this daemon, kept current by the controller.
    tapnet_subnets: Arc<RwLock<Vec<Ipv4Net>>>,
}

impl NatPolicy {
    /// `allow` empty means everywhere.
    pub fn new(allow: Vec<Ipv4Net>) -> Self {
        NatPolicy {
            allow: Arc::new(allow),
            tapnet_subnets: Arc::new(RwLock::new(Vec::new())),
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
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_and_tapnet_subnets() {
        let open = NatPolicy::new(Vec::new());
        assert!(open.allows(Ipv4Addr::new(192, 0, 2, 1)));
        let local = NatPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(local.allows(Ipv4Addr::LOCALHOST));
        assert!(!local.allows(Ipv4Addr::new(192, 0, 2, 1)));
        local.set_tapnet_subnets(vec!["172.18.0.0/16".parse().unwrap()]);
        assert!(local.is_tapnet_address(Ipv4Addr::new(172, 18, 9, 9)));
        assert!(!local.is_tapnet_address(Ipv4Addr::new(172, 19, 0, 1)));
    }
}
