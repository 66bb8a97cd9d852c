//! Per-namespace IPv6 settings of a sandbox's interfaces, through /proc/sys/net. A thread that
//! has joined a network namespace sees that namespace's entries there.

use std::io::ErrorKind;

use crate::error::{Error, Result};

/// What tapnet sets on every sandbox interface (`/proc/sys/net/ipv6/conf/IF/...`).
pub struct Ipv6Conf {
    /// Accept Router Advertisements: 0, since tapnet configures addresses and routes itself
    /// and no neighbour may hand a sandbox others.
    pub accept_ra: u8,
    /// 0: the link-local address derives from the MAC (EUI-64), as port security expects.
    pub addr_gen_mode: u8,
}

/// The settings of every tapnet interface.
pub const SANDBOX_IPV6: Ipv6Conf = Ipv6Conf {
    accept_ra: 0,
    addr_gen_mode: 0,
};

/// Apply `conf` to `interface` in the calling thread's network namespace. A kernel without
/// IPv6 has none of the files: with `required` false that is no error (an IPv4-only network).
pub fn set_ipv6_conf(interface: &str, conf: &Ipv6Conf, required: bool) -> Result<()> {
    write_conf(interface, "accept_ra", conf.accept_ra, required)?;
    write_conf(interface, "addr_gen_mode", conf.addr_gen_mode, required)
}

/// Turn IPv6 off on `interface` (an endpoint of a network without IPv6), as Docker does: no
/// link-local address, so none of the DAD, MLD and Router Solicitation frames each new
/// interface multicasts, which the switch would copy to every port of the network. A kernel
/// without IPv6 has nothing to turn off.
pub fn disable_ipv6(interface: &str) -> Result<()> {
    write_conf(interface, "disable_ipv6", 1, false)
}

/// Set `accept_ra` on `all` and `default` of a new sandbox namespace, so that no interface
/// made in it (by tapnet or by a process inside) takes addresses from a neighbour's RAs.
pub fn set_namespace_accept_ra(conf: &Ipv6Conf) -> Result<()> {
    write_conf("all", "accept_ra", conf.accept_ra, false)?;
    write_conf("default", "accept_ra", conf.accept_ra, false)
}

fn write_conf(dev: &str, key: &str, value: u8, required: bool) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{dev}/{key}");
    match std::fs::write(&path, value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound && !required => Ok(()),
        Err(source) => Err(Error::Io {
            context: format!("set {path} to {value} in a sandbox"),
            source,
        }),
    }
}
