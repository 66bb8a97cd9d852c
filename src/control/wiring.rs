//! The bridge driver's work inside a sandbox: a TAP per endpoint with its MAC, MTU and address,
//! and the default route. Everything runs on a thread inside the sandbox's network namespace.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::datapath::frame::MacAddr;
use crate::error::Result;
use crate::netns::namespace::in_netns;
use crate::netns::netlink::{LinkSettings, Netlink, link_index};
use crate::netns::tap::{Offload, open_tap};

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
}

/// Create and configure the endpoint's TAP inside `netns`; the returned fd is its switch port.
pub fn create_tap(netns: &Path, spec: TapSpec) -> Result<OwnedFd> {
    in_netns(netns, move || {
        let fd = open_tap(&spec.interface, spec.offload)?;
        let index = link_index(&spec.interface)?;
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
        Ok(fd)
    })
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
