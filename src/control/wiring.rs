//! The bridge driver's work inside a sandbox: a TAP per endpoint with its MAC, MTU and address,
//! and the default route. Everything runs on a thread inside the sandbox's network namespace.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::Result;
use crate::netns::namespace::in_netns;
use crate::netns::netlink::{LinkSettings, Netlink, link_index};
use crate::netns::sysctl::{ConfDir, SANDBOX_IPV6};
use crate::netns::tap::{Offload, open_tap, open_tap_queues};
use crate::wire::MacAddr;

/// Kernel-to-switch queue of a TAP. Without offloads the sender's kernel hands us one
/// 1500-byte frame per segment, and the default 1000 frames overflow under bulk TCP.
const TXQUEUELEN_PLAIN: u32 = 10_000;

pub struct TapSpec {
    pub interface: String,
    pub mac: MacAddr,
    /// The IPv4 address and prefix length (none on an IPv6-only network).
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The IPv6 address and prefix length, on a network with an IPv6 prefix.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    pub mtu: u32,
    pub offload: Offload,
    /// Queues of the TAP: one per datapath worker (see `netns::tap::open_tap_queues`).
    pub queues: usize,
}

/// Create and configure the endpoint's TAP inside `netns`; the returned fds (one per queue)
/// are its switch port.
pub fn create_tap(netns: &Path, spec: TapSpec) -> Result<Vec<OwnedFd>> {
    in_netns(netns, move || make_tap(spec))
}

/// A network's interface for the host (`host_access=on`): the TAP made and configured as a
/// sandbox's, but in the daemon's own namespace. Its addresses bring the connected routes of
/// the network's subnets; it takes no Router Advertisement (the gateway's would give the host
/// a default route through the network). Not persistent: it goes when its fds close (the
/// network removed, the daemon stopped) and a restarted daemon makes it again.
pub fn create_host_access_tap(spec: TapSpec) -> Result<Vec<OwnedFd>> {
    make_tap(spec)
}

/// Create and configure a TAP in the calling thread's namespace.
fn make_tap(spec: TapSpec) -> Result<Vec<OwnedFd>> {
    let fds = open_tap_queues(&spec.interface, spec.offload, spec.queues)?;
    let index = link_index(&spec.interface)?;
    // Before the link is up, so that it never takes an RA and its link-local is EUI-64
    // (the namespace's `all` and `default` are set when it is made: `loopback_up`).
    let conf = ConfDir::open()?;
    conf.set_ipv6_conf(&spec.interface, &SANDBOX_IPV6, spec.ipv6.is_some())?;
    if spec.ipv6.is_none() {
        conf.disable_ipv6(&spec.interface)?;
    }
    let mut nl = Netlink::open()?;
    nl.set_noqueue(index, &spec.interface)?;
    let txqueuelen = (spec.offload == Offload::Off).then_some(TXQUEUELEN_PLAIN);
    nl.set_link(
        index,
        &spec.interface,
        &LinkSettings {
            mac: Some(spec.mac),
            mtu: Some(spec.mtu),
            txqueuelen,
            up: true,
        },
    )?;
    if let Some((ip, prefix)) = spec.ipv4 {
        nl.add_address(index, &spec.interface, ip, prefix)?;
    }
    if let Some((ip, prefix)) = spec.ipv6 {
        nl.add_address6(index, &spec.interface, ip, prefix)?;
    }
    Ok(fds)
}

/// A TAP in the daemon's own namespace, with its MAC and MTU, left down: a Docker endpoint's
/// link, which dockerd moves into the container, renames, addresses and brings up. The fd
/// held here stays the switch port wherever the link goes.
pub fn create_host_tap(name: &str, mac: MacAddr, mtu: u32, offload: Offload) -> Result<OwnedFd> {
    let fd = open_tap(name, offload)?;
    let index = link_index(name)?;
    Netlink::open()?.set_link(
        index,
        name,
        &LinkSettings {
            mac: Some(mac),
            mtu: Some(mtu),
            txqueuelen: (offload == Offload::Off).then_some(TXQUEUELEN_PLAIN),
            up: false,
        },
    )?;
    Ok(fd)
}

/// A remote plugin's link as tapnet sets it up in a sandbox.
pub struct PluginLink {
    /// Its name in the daemon's namespace, where the plugin made it.
    pub src: String,
    /// Its name in the sandbox.
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub ipv4: Ipv4Addr,
    pub prefix: u8,
    /// Routes: destination, prefix, next hop (`None`: directly connected).
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    pub gateway: Option<Ipv4Addr>,
}

/// Move a plugin's link from the daemon's namespace into the sandbox at `netns`, rename it,
/// and set its MAC, MTU, address, routes and default route.
pub fn adopt_link(netns: &Path, link: PluginLink) -> Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(netns)
        .map_err(|e| crate::error::Error::invalid(format!("open {}: {e}", netns.display())))?;
    let index = link_index(&link.src)?;
    Netlink::open()?.move_to_netns(index, &link.src, ns.as_raw_fd())?;
    in_netns(netns, move || {
        let index = link_index(&link.src)?;
        let mut nl = Netlink::open()?;
        nl.rename_link(index, &link.src, &link.name)?;
        nl.set_link(
            index,
            &link.name,
            &LinkSettings {
                mac: Some(link.mac),
                mtu: Some(link.mtu),
                txqueuelen: None,
                up: true,
            },
        )?;
        nl.add_address(index, &link.name, link.ipv4, link.prefix)?;
        for (dest, prefix, via) in &link.routes {
            nl.add_route(*dest, *prefix, *via, index)?;
        }
        if let Some(gw) = link.gateway {
            nl.replace_default_route(gw, index)?;
        }
        Ok(())
    })
}

/// Does the sandbox at `netns` have a link named `name`?
pub fn link_exists_in(netns: &Path, name: &str) -> bool {
    let name = name.to_string();
    in_netns(netns, move || link_index(&name)).is_ok()
}

/// Bring up `lo` in the calling thread's namespace (a new namespace has it down), and make
/// the namespace refuse Router Advertisements (`all` and `default`; tapnet addresses its
/// interfaces itself): the setup of every new sandbox namespace.
pub fn loopback_up() -> Result<()> {
    ConfDir::open()?.set_namespace_accept_ra(&SANDBOX_IPV6)?;
    let mut nl = Netlink::open()?;
    let index = link_index("lo")?;
    nl.set_link(
        index,
        "lo",
        &LinkSettings {
            up: true,
            ..LinkSettings::default()
        },
    )
}

/// Make the default route go via `gateway` on `interface`, or remove it (a CNI runtime's
/// namespace, whose IPv6 routes are not tapnet's).
pub fn set_default_route(netns: &Path, route: Option<(Ipv4Addr, String)>) -> Result<()> {
    crate::netns::slow_for_test();
    in_netns(netns, move || {
        let mut nl = Netlink::open()?;
        match route {
            Some((gateway, interface)) => {
                let index = link_index(&interface)?;
                nl.replace_default_route(gateway, index)
            }
            None => nl.remove_default_route(),
        }
    })
}

/// A sandbox's default routes: IPv4 and IPv6, each via a gateway on an interface, or none.
/// A plain value, planned from the model under the controller's lock and set without it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefaultRoutes {
    pub route: Option<(Ipv4Addr, String)>,
    pub route6: Option<(Ipv6Addr, String)>,
}

impl DefaultRoutes {
    /// Set them in the namespace at `netns` (slow: a thread enters it).
    pub fn set(&self, netns: &Path) -> Result<()> {
        set_default_routes(netns, self.route.clone(), self.route6.clone())
    }
}

/// Make a sandbox's default routes go via `gateway` on `interface` (IPv4 `route`, IPv6
/// `route6`), or remove them.
pub fn set_default_routes(
    netns: &Path,
    route: Option<(Ipv4Addr, String)>,
    route6: Option<(Ipv6Addr, String)>,
) -> Result<()> {
    crate::netns::slow_for_test();
    in_netns(netns, move || {
        let mut nl = Netlink::open()?;
        match route {
            Some((gateway, interface)) => {
                let index = link_index(&interface)?;
                nl.replace_default_route(gateway, index)?;
            }
            None => nl.remove_default_route()?,
        }
        match route6 {
            Some((gateway, interface)) => {
                let index = link_index(&interface)?;
                nl.replace_default_route6(gateway, index)
            }
            // A kernel without IPv6 has no route to remove either.
            None => match nl.remove_default_route6() {
                Err(crate::error::Error::Netlink(m)) if m.contains("EAFNOSUPPORT") => Ok(()),
                other => other,
            },
        }
    })
}
