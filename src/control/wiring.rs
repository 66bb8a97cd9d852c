//! The bridge driver's work inside a sandbox: a TAP per endpoint with its MAC, MTU and address,
//! and the default route. Everything runs on a thread inside the sandbox's network namespace.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Context, Result};
use crate::netns::namespace::in_netns;
use crate::netns::netlink::{LinkSettings, Netlink, link_index};
use crate::netns::tap::{Offload, open_tap, open_tap_queues};
use crate::wire::MacAddr;

/// Kernel-to-switch queue of a TAP. Without offloads the sender's kernel hands us one
/// 1500-byte frame per segment, and the default 1000 frames overflow under bulk TCP.
const TXQUEUELEN_PLAIN: u32 = 10_000;

pub struct TapSpec {
    pub interface: String,
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u32,
    pub offload: Offload,
    /// Queues of the TAP: one per datapath worker (see `netns::tap::open_tap_queues`).
    pub queues: usize,
}

/// Create and configure the endpoint's TAP inside `netns`; the returned fds (one per queue)
/// are its switch port.
pub fn create_tap(netns: &Path, spec: TapSpec) -> Result<Vec<OwnedFd>> {
    in_netns(netns, move || {
        let fds = open_tap_queues(&spec.interface, spec.offload, spec.queues)?;
        let index = link_index(&spec.interface)?;
        eui64_link_local(&spec.interface)?;
        let mut nl = Netlink::open()?;
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
        nl.add_address(index, &spec.interface, spec.ipv4, spec.prefix)?;
        Ok(fds)
    })
}

/// Before the link comes up: its IPv6 link-local address from the MAC by EUI-64, whatever the
/// host's default `addr_gen_mode`, since port security allows that one (datapath/security.rs).
/// A kernel without IPv6 has no such file: nothing to do.
fn eui64_link_local(interface: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/addr_gen_mode");
    match std::fs::write(&path, "0") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.context(|| format!("set {path} to 0 (EUI-64)")),
    }
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

/// Bring up `lo` in the calling thread's namespace (a new namespace has it down).
pub fn loopback_up() -> Result<()> {
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

/// Make the sandbox's default route go via `gateway` on `interface`, or remove it.
pub fn set_default_route(netns: &Path, route: Option<(Ipv4Addr, String)>) -> Result<()> {
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
