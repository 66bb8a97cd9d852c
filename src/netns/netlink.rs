//! Interface configuration over rtnetlink, in whatever network namespace the calling thread is in:
//! link MAC/MTU/up, IPv4 and IPv6 addresses and the default routes. Used only on namespace
//! setup threads.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::wire::MacAddr;

pub struct Netlink {
    socket: Socket,
    seq: u32,
}

/// What to set on a link; `None` leaves a property as it is.
#[derive(Default)]
pub struct LinkSettings {
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub txqueuelen: Option<u32>,
    pub up: bool,
}

impl Netlink {
    /// A route netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| Error::Netlink(format!("open socket: {e}")))?;
        socket
            .bind_auto()
            .map_err(|e| Error::Netlink(format!("bind socket: {e}")))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::Netlink(format!("connect socket: {e}")))?;
        Ok(Netlink { socket, seq: 1 })
    }

    /// Send one request and wait for its acknowledgement.
    fn request(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        self.seq += 1;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| Error::Netlink(format!("{what}: send: {e}")))?;
        loop {
            let (reply, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| Error::Netlink(format!("{what}: receive: {e}")))?;
            let mut offset = 0;
            while offset < reply.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                    .map_err(|e| Error::Netlink(format!("{what}: bad reply: {e}")))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == header.sequence_number
                    && let NetlinkPayload::Error(err) = msg.payload
                {
                    return match err.code {
                        None => Ok(()),
                        Some(code) => Err(Error::Netlink(format!(
                            "{what}: {}",
                            nix::errno::Errno::from_raw(-code.get())
                        ))),
                    };
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    pub fn set_link(&mut self, index: u32, name: &str, settings: &LinkSettings) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if settings.up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        if let Some(mac) = settings.mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = settings.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(q) = settings.txqueuelen {
            msg.attributes.push(LinkAttribute::TxQueueLen(q));
        }
        self.request(
            &format!("configure link {name}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Give link `index` the `noqueue` root qdisc. Set before the link is first up, it stops
    /// the kernel from making its default ones (an `mq` with a `pfifo_fast` per queue, whose
    /// rings it allocates and zeroes: 41 % of the daemon's CPU per create at 2,000 sandboxes).
    /// A TAP never stops its queues, so those qdiscs only ever pass frames through.
    pub fn set_noqueue(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = TcMessage::default();
        msg.header.index = i32::try_from(index)
            .map_err(|_| Error::invalid(format!("link {name}: index {index} out of range")))?;
        msg.header.parent = TcHandle::ROOT;
        msg.attributes.push(TcAttribute::Kind("noqueue".into()));
        self.request(
            &format!("set qdisc noqueue on {name}"),
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Move link `index` into the network namespace open as `netns_fd` (a remote plugin's
    /// link into a sandbox).
    pub fn move_to_netns(
        &mut self,
        index: u32,
        name: &str,
        netns_fd: std::os::fd::RawFd,
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(netns_fd));
        self.request(
            &format!("move link {name} into a sandbox"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Rename link `index` (it must be down).
    pub fn rename_link(&mut self, index: u32, old: &str, new: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(new.to_string()));
        self.request(
            &format!("rename link {old} to {new}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Add a route to `dest/prefix` through link `index`, via `next_hop` or directly connected.
    pub fn add_route(
        &mut self,
        dest: Ipv4Addr,
        prefix: u8,
        next_hop: Option<Ipv4Addr>,
        index: u32,
    ) -> Result<()> {
        let via = next_hop.map(|gw| (RouteAddress::Inet(gw), index));
        let mut msg = Self::default_route(AddressFamily::Inet, via);
        msg.header.destination_prefix_length = prefix;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dest)));
        if next_hop.is_none() {
            msg.header.scope = RouteScope::Link;
            msg.attributes.push(RouteAttribute::Oif(index));
        }
        self.request(
            &format!("add route to {dest}/{prefix}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn add_address(&mut self, index: u32, name: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip.into()));
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        if prefix < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let broadcast = Ipv4Addr::from(u32::from(ip) | host_bits);
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
        self.request(
            &format!("add address {ip}/{prefix} to {name}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Add IPv6 address `ip/prefix` to link `index`, usable at once: no duplicate address
    /// detection (the controller hands out each address once per network).
    pub fn add_address6(&mut self, index: u32, name: &str, ip: Ipv6Addr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        self.request(
            &format!("add address {ip}/{prefix} to {name}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// A default route (`0.0.0.0/0` or `::/0`) of `family`, via `gateway` through interface
    /// `index` when given (a delete needs neither).
    fn default_route(family: AddressFamily, gateway: Option<(RouteAddress, u32)>) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if let Some((gw, index)) = gateway {
            msg.attributes.push(RouteAttribute::Gateway(gw));
            msg.attributes.push(RouteAttribute::Oif(index));
        }
        msg
    }

    fn replace_default(
        &mut self,
        what: &str,
        family: AddressFamily,
        gateway: RouteAddress,
        index: u32,
    ) -> Result<()> {
        let msg = Self::default_route(family, Some((gateway, index)));
        self.request(
            what,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Remove the default route of `family`; having none is not an error.
    fn remove_default(&mut self, what: &str, family: AddressFamily) -> Result<()> {
        let msg = Self::default_route(family, None);
        match self.request(what, RouteNetlinkMessage::DelRoute(msg), 0) {
            Err(Error::Netlink(m)) if m.contains("ESRCH") => Ok(()),
            other => other,
        }
    }

    /// Point the IPv6 default route (`::/0`) at `gateway` through interface `index`,
    /// replacing any other.
    pub fn replace_default_route6(&mut self, gateway: Ipv6Addr, index: u32) -> Result<()> {
        self.replace_default(
            &format!("set IPv6 default route via {gateway}"),
            AddressFamily::Inet6,
            RouteAddress::Inet6(gateway),
            index,
        )
    }

    /// Remove the IPv6 default route; having none is not an error.
    pub fn remove_default_route6(&mut self) -> Result<()> {
        self.remove_default("remove IPv6 default route", AddressFamily::Inet6)
    }

    /// Point the default route at `gateway` through interface `index`, replacing any other.
    pub fn replace_default_route(&mut self, gateway: Ipv4Addr, index: u32) -> Result<()> {
        self.replace_default(
            &format!("set default route via {gateway}"),
            AddressFamily::Inet,
            RouteAddress::Inet(gateway),
            index,
        )
    }

    /// Remove the default route; having none is not an error.
    pub fn remove_default_route(&mut self) -> Result<()> {
        self.remove_default("remove default route", AddressFamily::Inet)
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub fn link_index(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| Error::Sys {
        context: format!("find interface {name}"),
        errno,
    })
}
