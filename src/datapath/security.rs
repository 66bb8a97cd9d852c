//! Port security: a sandbox's port may only send as the station tapnet made it, with the MAC
//! and addresses of its endpoint. Checked on every frame from such a port, on borrowed bytes,
//! allocating nothing: the Ethernet source; for ARP the sender's hardware and protocol
//! addresses; for IPv4 the source address; for IPv6 the source address (the EUI-64 link-local
//! of the MAC, the endpoint's IPv6 address, or `::` for duplicate address detection and MLD),
//! the neighbour discovery a station may send (its own addresses and MAC only), and none of a
//! router's or DHCPv6 server's messages (RA guard, RFC 6105). VLAN-tagged frames are refused:
//! a sandbox's port is untagged. The gateway's port has no policy, nor has any port of a
//! network with `port_security=off`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::frame::FrameInfo;
use crate::wire::ethertype::{
    ARP as ETHERTYPE_ARP, IPV4 as ETHERTYPE_IPV4, IPV6 as ETHERTYPE_IPV6, QINQ as ETHERTYPE_QINQ,
    VLAN as ETHERTYPE_VLAN,
};
use crate::wire::icmpv6::{
    Icmpv6, Ndp, OPT_SOURCE_LL, OPT_TARGET_LL, TYPE_MLD_REPORT, TYPE_MLDV2_REPORT,
    TYPE_NEIGHBOR_SOLICITATION, TYPE_ROUTER_SOLICITATION,
};
use crate::wire::ipv4::PROTO_UDP;
use crate::wire::ipv6::{NEXT_ICMPV6, NEXT_UDP, link_local_eui64};
use crate::wire::{
    ArpPacket, ETH_HDR_LEN, Ipv4Packet, Ipv6Packet, MacAddr, UdpDatagram, VNET_HDR_LEN,
};

/// DHCPv4 ports (RFC 2131): clients send from 68 to 67, servers from 67 to 68.
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// DHCPv6 ports (RFC 8415): servers and relays send from 547, to clients on 546.
const DHCPV6_CLIENT_PORT: u16 = 546;
const DHCPV6_SERVER_PORT: u16 = 547;

/// What a port may send as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    /// The endpoint's global or ULA IPv6 address, if it has one. Its link-local address is
    /// not stored: it derives from `mac` (EUI-64), as the sandbox's kernel makes it.
    pub ipv6: Option<Ipv6Addr>,
    /// The address the station's kernel forms by SLAAC from the gateway's /64 prefix (the
    /// prefix and the MAC's EUI-64): a guest that configures itself sends from it.
    pub slaac: Option<Ipv6Addr>,
}

impl PortPolicy {
    /// The link-local address the port may send from.
    pub fn link_local(&self) -> Ipv6Addr {
        link_local_eui64(self.mac)
    }
    /// One of the port's own IPv6 addresses (link-local, assigned or SLAAC).
    pub fn owns_ipv6(&self, ip: Ipv6Addr) -> bool {
        ip == self.link_local() || Some(ip) == self.ipv6 || Some(ip) == self.slaac
    }
}

/// Why a frame broke its port's policy. Each has its own counter (`Violation::index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Ethernet source is not the port's MAC.
    SourceMac,
    /// ARP whose sender hardware or protocol address is not the port's (or a truncated ARP).
    ArpSender,
    /// IPv4 whose source address is not the port's (or a truncated header).
    Ipv4Source,
    /// A VLAN tag: sandboxes send untagged.
    Tagged,
    /// IPv6 whose source is not the port's link-local or assigned address, or `::` on
    /// anything but a duplicate address detection probe or an MLD report.
    Ipv6Source,
    /// IPv6 too short, with a payload length beyond the frame, a bad extension-header chain,
    /// a truncated ICMPv6 or UDP header, a malformed or fragmented NDP message.
    Ipv6Malformed,
    /// A Neighbor Advertisement for an address that is not the port's, or naming another MAC.
    NeighborAdvertisement,
    /// A Neighbor or Router Solicitation naming another MAC as its source, or a duplicate
    /// address detection probe for an address that is not the port's.
    NeighborSolicitation,
    /// A Router Advertisement: sandboxes are not routers (RA guard).
    RouterAdvertisement,
    /// A Redirect: only a router may send one.
    Redirect,
    /// A DHCPv6 server's or relay's message (UDP from port 547, or to a client's port 546).
    Dhcpv6Server,
    /// A DHCPv4 server's or relay's message (UDP from port 67, or to a client's port 68): only
    /// the gateway answers DHCP.
    DhcpServer,
}

impl Violation {
    pub const COUNT: usize = 12;
    pub const ALL: [Violation; Self::COUNT] = [
        Violation::SourceMac,
        Violation::ArpSender,
        Violation::Ipv4Source,
        Violation::Tagged,
        Violation::Ipv6Source,
        Violation::Ipv6Malformed,
        Violation::NeighborAdvertisement,
        Violation::NeighborSolicitation,
        Violation::RouterAdvertisement,
        Violation::Redirect,
        Violation::Dhcpv6Server,
        Violation::DhcpServer,
    ];

    /// Its counter's index in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name in `tapnet stats` and the metrics' `violation` label.
    pub fn name(self) -> &'static str {
        match self {
            Violation::SourceMac => "source_mac",
            Violation::ArpSender => "arp_sender",
            Violation::Ipv4Source => "ipv4_source",
            Violation::Tagged => "vlan_tagged",
            Violation::Ipv6Source => "ipv6_source",
            Violation::Ipv6Malformed => "ipv6_malformed",
            Violation::NeighborAdvertisement => "neighbor_advertisement",
            Violation::NeighborSolicitation => "neighbor_solicitation",
            Violation::RouterAdvertisement => "router_advertisement",
            Violation::Redirect => "redirect",
            Violation::Dhcpv6Server => "dhcpv6_server",
            Violation::DhcpServer => "dhcp_server",
        }
    }

    /// What `tapnet trace` says about such a frame.
    pub fn explain(self) -> &'static str {
        match self {
            Violation::SourceMac => "its Ethernet source is not the endpoint's MAC",
            Violation::ArpSender => "its ARP sender is not the endpoint's MAC and IPv4 address",
            Violation::Ipv4Source => "its IPv4 source is not the endpoint's address",
            Violation::Tagged => "it carries a VLAN tag; sandbox ports are untagged",
            Violation::Ipv6Source => {
                "its IPv6 source is none of the endpoint's link-local (EUI-64 of its MAC), its \
                 IPv6 address and the SLAAC address of its MAC (:: only for duplicate address \
                 detection, MLD reports and router solicitations)"
            }
            Violation::Ipv6Malformed => {
                "its IPv6 header, extension-header chain, ICMPv6 or UDP header is short or \
                 malformed, or it is a fragmented neighbour discovery message"
            }
            Violation::NeighborAdvertisement => {
                "it is a Neighbor Advertisement for an address not the endpoint's, or names \
                 another MAC"
            }
            Violation::NeighborSolicitation => {
                "it is a solicitation naming another MAC, or a duplicate address detection \
                 probe for an address not the endpoint's"
            }
            Violation::RouterAdvertisement => {
                "it is a Router Advertisement; sandboxes are not routers (RA guard)"
            }
            Violation::Redirect => "it is an ICMPv6 Redirect; sandboxes are not routers",
            Violation::Dhcpv6Server => {
                "it is a DHCPv6 server or relay message (UDP from port 547 or to port 546)"
            }
            Violation::DhcpServer => {
                "it is a DHCPv4 server or relay message (UDP from port 67 or to port 68); only \
                 the gateway answers DHCP"
            }
        }
    }
}

/// Check `frame` (virtio-net header included, already accepted by `frame::parse`) against
/// `policy`.
pub fn check(policy: &PortPolicy, frame: &[u8], info: &FrameInfo) -> Result<(), Violation> {
    if info.src != policy.mac {
        return Err(Violation::SourceMac);
    }
    let l3 = frame.get(VNET_HDR_LEN + ETH_HDR_LEN..).unwrap_or(&[]);
    match info.ethertype {
        ETHERTYPE_IPV4 => check_ipv4(policy, l3),
        ETHERTYPE_ARP => match ArpPacket::new_checked(l3) {
            // An address conflict probe (RFC 5227: sender 0.0.0.0) for its own address, as a
            // DHCP client may send before it uses the address it was given.
            Ok(arp)
                if arp.is_ethernet_ipv4()
                    && arp.sender_mac() == policy.mac
                    && (arp.sender_ip() == policy.ipv4
                        || (arp.sender_ip().is_unspecified()
                            && arp.target_ip() == policy.ipv4)) =>
            {
                Ok(())
            }
            _ => Err(Violation::ArpSender),
        },
        ETHERTYPE_IPV6 => check_ipv6(policy, l3),
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => Err(Violation::Tagged),
        _ => Ok(()),
    }
}

/// The IPv4 part of [`check`]: `l3` is the packet after the Ethernet header.
fn check_ipv4(policy: &PortPolicy, l3: &[u8]) -> Result<(), Violation> {
    let ip = match Ipv4Packet::new_checked(l3) {
        Ok(ip) if ip.version() == 4 => ip,
        _ => return Err(Violation::Ipv4Source),
    };
    // UDP ports, where the packet holds them (unfragmented, or its first fragment).
    let ports = if ip.protocol() == PROTO_UDP && ip.is_first_fragment() {
        ip.rest()
            .ok()
            .and_then(|l4| UdpDatagram::new_checked(l4).ok())
            .map(|udp| (udp.src_port(), udp.dst_port()))
    } else {
        None
    };
    if ip.src() == policy.ipv4 {
        return match ports {
            Some((src, dst)) if src == DHCP_SERVER_PORT || dst == DHCP_CLIENT_PORT => {
                Err(Violation::DhcpServer)
            }
            _ => Ok(()),
        };
    }
    // A DHCP client without an address yet sends from 0.0.0.0 (RFC 2131 4.1), to servers.
    let dhcp_client = ip.src().is_unspecified()
        && !ip.is_fragment()
        && ports == Some((DHCP_CLIENT_PORT, DHCP_SERVER_PORT));
    if dhcp_client {
        Ok(())
    } else {
        Err(Violation::Ipv4Source)
    }
}

/// The IPv6 part of [`check`]: `l3` is the packet after the Ethernet header.
fn check_ipv6(policy: &PortPolicy, l3: &[u8]) -> Result<(), Violation> {
    let ip = Ipv6Packet::new_checked(l3).map_err(|_| Violation::Ipv6Malformed)?;
    let up = ip.upper_layer().map_err(|_| Violation::Ipv6Malformed)?;
    let (_, end) = ip.payload_range().map_err(|_| Violation::Ipv6Malformed)?;
    let src = ip.src();
    let unspecified = src.is_unspecified();
    if !unspecified && !policy.owns_ipv6(src) {
        return Err(Violation::Ipv6Source);
    }
    // A later fragment holds no upper-layer header: without its first fragment (checked
    // below, as every first fragment is) it cannot be reassembled into anything.
    if up.later_fragment {
        return if unspecified {
            Err(Violation::Ipv6Source)
        } else {
            Ok(())
        };
    }
    let upper = &l3[up.offset..end];
    match up.protocol {
        NEXT_ICMPV6 => {
            let icmp = Icmpv6::new_checked(upper).map_err(|_| Violation::Ipv6Malformed)?;
            check_icmpv6(policy, &icmp, unspecified, up.fragmented)
        }
        _ if unspecified => Err(Violation::Ipv6Source),
        NEXT_UDP => {
            let udp = UdpDatagram::new_checked(upper).map_err(|_| Violation::Ipv6Malformed)?;
            if udp.src_port() == DHCPV6_SERVER_PORT || udp.dst_port() == DHCPV6_CLIENT_PORT {
                return Err(Violation::Dhcpv6Server);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// ICMPv6 from a port whose source address passed (`unspecified`: it is `::`).
fn check_icmpv6(
    policy: &PortPolicy,
    icmp: &Icmpv6<'_>,
    unspecified: bool,
    fragmented: bool,
) -> Result<(), Violation> {
    let msg_type = icmp.msg_type();
    if unspecified
        && !matches!(
            msg_type,
            TYPE_NEIGHBOR_SOLICITATION
                | TYPE_MLD_REPORT
                | TYPE_MLDV2_REPORT
                | TYPE_ROUTER_SOLICITATION
        )
    {
        return Err(Violation::Ipv6Source);
    }
    // Receivers ignore fragmented NDP (RFC 6980); a guard that let it through could be
    // dodged by options in a later fragment.
    if icmp.is_ndp() && fragmented {
        return Err(Violation::Ipv6Malformed);
    }
    let ndp = match Ndp::parse(icmp) {
        Ok(Some(ndp)) => ndp,
        Ok(None) => return Ok(()),
        Err(_) => return Err(Violation::Ipv6Malformed),
    };
    let foreign_ll = |kind| {
        ndp.options()
            .link_layers(kind)
            .any(|mac| mac != Some(policy.mac))
    };
    match ndp {
        Ndp::RouterAdvertisement { .. } => Err(Violation::RouterAdvertisement),
        Ndp::Redirect { .. } => Err(Violation::Redirect),
        Ndp::NeighborAdvertisement { target, .. } => {
            if policy.owns_ipv6(target) && !foreign_ll(OPT_TARGET_LL) {
                Ok(())
            } else {
                Err(Violation::NeighborAdvertisement)
            }
        }
        Ndp::NeighborSolicitation { target, options } => {
            // A probe (from ::) carries no source link-layer option (RFC 4861 4.3; a nonce
            // option, RFC 7527, it may) and may only ask for the port's own address: else it
            // would fail another's DAD.
            let bad_probe = unspecified
                && (!policy.owns_ipv6(target) || options.link_layers(OPT_SOURCE_LL).count() > 0);
            if bad_probe || foreign_ll(OPT_SOURCE_LL) {
                Err(Violation::NeighborSolicitation)
            } else {
                Ok(())
            }
        }
        Ndp::RouterSolicitation { .. } => {
            if foreign_ll(OPT_SOURCE_LL) {
                Err(Violation::NeighborSolicitation)
            } else {
                Ok(())
            }
        }
    }
}

/// Fuzz body: any bytes `frame::parse` accepts are checked without panicking, and a frame that
/// passes really carries the policy's MAC (and its address, for IPv4 and ARP; for IPv6 one of
/// its addresses or `::`, and never a Router Advertisement or Redirect).
pub fn check_arbitrary_frame(data: &[u8]) {
    let policy = PortPolicy {
        mac: MacAddr([2, 0x42, 10, 0, 0, 2]),
        ipv4: Ipv4Addr::new(10, 0, 0, 2),
        ipv6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        slaac: None,
    };
    let Ok(info) = super::frame::parse(data, 1500) else {
        return;
    };
    if check(&policy, data, &info).is_ok() {
        assert_eq!(info.src, policy.mac);
        let l3 = &data[VNET_HDR_LEN + ETH_HDR_LEN..];
        match info.ethertype {
            ETHERTYPE_IPV4 => {
                let own = l3[12..16] == policy.ipv4.octets();
                // 0.0.0.0 only from a DHCP client's port to a server's.
                let ihl = usize::from(l3[0] & 0xf) * 4;
                let dhcp_client =
                    l3[12..16] == [0; 4] && l3.get(ihl..ihl + 4) == Some(&[0, 68, 0, 67][..]);
                assert!(own || dhcp_client);
                if own && l3[9] == PROTO_UDP && u16::from_be_bytes([l3[6], l3[7]]) & 0x1fff == 0 {
                    let ports = l3.get(ihl..ihl + 4);
                    assert!(ports.is_none_or(|p| p[0..2] != [0, 67] && p[2..4] != [0, 68]));
                }
            }
            ETHERTYPE_ARP => assert!(
                l3[14..18] == policy.ipv4.octets()
                    || (l3[14..18] == [0; 4] && l3[24..28] == policy.ipv4.octets())
            ),
            ETHERTYPE_IPV6 => {
                let read = Ipv6Packet::new_checked(l3)
                    .ok()
                    .and_then(|ip| Some((ip.src(), ip.upper_layer().ok()?)));
                assert!(read.is_some(), "passed IPv6 without a header or chain");
                let Some((src, up)) = read else { return };
                assert!(src.is_unspecified() || policy.owns_ipv6(src));
                if up.protocol == NEXT_ICMPV6 && !up.later_fragment {
                    let t = l3[up.offset];
                    assert!(
                        t != crate::wire::icmpv6::TYPE_ROUTER_ADVERTISEMENT
                            && t != crate::wire::icmpv6::TYPE_REDIRECT
                    );
                }
            }
            t => assert!(t != ETHERTYPE_VLAN && t != ETHERTYPE_QINQ),
        }
    }
}

/// Fuzz body of `ipv6_ndp`: `data` after the first byte as an IPv6 packet (first byte even)
/// or as the upper layer of one from the port's link-local (odd: protocol ICMPv6, or UDP when
/// the byte is also 3 mod 4), in a frame from the port's MAC, through [`check_arbitrary_frame`].
/// Wrapping lets the fuzzer reach the NDP and DHCPv6 checks without first guessing an address.
pub fn check_arbitrary_ipv6(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mac = MacAddr([2, 0x42, 10, 0, 0, 2]);
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    frame.extend_from_slice(&mac.0);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    if mode & 1 == 1 {
        let next = if mode & 3 == 3 { NEXT_UDP } else { NEXT_ICMPV6 };
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(rest.len().min(0xffff) as u16).to_be_bytes());
        frame.extend_from_slice(&[next, 255]);
        frame.extend_from_slice(&link_local_eui64(mac).octets());
        frame.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
    frame.extend_from_slice(rest);
    check_arbitrary_frame(&frame);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::frame::parse;
    use crate::wire::icmpv6::{
        TYPE_NEIGHBOR_ADVERTISEMENT, TYPE_REDIRECT, TYPE_ROUTER_ADVERTISEMENT,
        TYPE_ROUTER_SOLICITATION,
    };

    const MAC: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
    const OTHER: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 3]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const POLICY: PortPolicy = PortPolicy {
        mac: MAC,
        ipv4: IP,
        ipv6: Some(IP6),
        slaac: None,
    };
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

    fn eth(src: MacAddr, ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; VNET_HDR_LEN];
        v.extend_from_slice(&[0xff; 6]);
        v.extend_from_slice(&src.0);
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(l3);
        v.resize(v.len().max(VNET_HDR_LEN + 60), 0);
        v
    }

    fn ipv4(src: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&[10, 0, 0, 1]);
        h
    }

    fn arp(sender_mac: MacAddr, sender_ip: Ipv4Addr) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sender_mac.0);
        a.extend_from_slice(&sender_ip.octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&[10, 0, 0, 1]);
        a
    }

    /// An IPv6 packet from `src` carrying `upper` as protocol `next` (checksums are not read).
    fn ipv6(src: Ipv6Addr, next: u8, upper: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(upper.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 255]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&ALL_NODES.octets());
        p.extend_from_slice(upper);
        p
    }

    /// An NDP message: type, the 4 bytes after the checksum, addresses, link-layer options.
    fn ndp(t: u8, word: [u8; 4], addrs: &[Ipv6Addr], lls: &[(u8, MacAddr)]) -> Vec<u8> {
        let mut m = vec![t, 0, 0, 0];
        m.extend_from_slice(&word);
        for a in addrs {
            m.extend_from_slice(&a.octets());
        }
        for (kind, mac) in lls {
            m.extend_from_slice(&[*kind, 1]);
            m.extend_from_slice(&mac.0);
        }
        m
    }

    fn na(target: Ipv6Addr, lls: &[(u8, MacAddr)]) -> Vec<u8> {
        ndp(TYPE_NEIGHBOR_ADVERTISEMENT, [0x20, 0, 0, 0], &[target], lls)
    }

    fn ns(target: Ipv6Addr, lls: &[(u8, MacAddr)]) -> Vec<u8> {
        ndp(TYPE_NEIGHBOR_SOLICITATION, [0; 4], &[target], lls)
    }

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
        u
    }

    fn verdict(frame: &[u8]) -> Result<(), Violation> {
        let info = parse(frame, 1500).expect("a well-formed frame");
        check(&POLICY, frame, &info)
    }

    fn v6(src: Ipv6Addr, next: u8, upper: &[u8]) -> Result<(), Violation> {
        verdict(&eth(MAC, ETHERTYPE_IPV6, &ipv6(src, next, upper)))
    }

    fn ll() -> Ipv6Addr {
        POLICY.link_local()
    }

    #[test]
    fn the_assigned_station_passes() {
        assert_eq!(verdict(&eth(MAC, ETHERTYPE_IPV4, &ipv4(IP))), Ok(()));
        assert_eq!(verdict(&eth(MAC, ETHERTYPE_ARP, &arp(MAC, IP))), Ok(()));
        let echo = [128, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &echo),
            Ok(()),
            "ping6 from the link-local"
        );
        assert_eq!(
            v6(IP6, NEXT_ICMPV6, &echo),
            Ok(()),
            "from the assigned address"
        );
        assert_eq!(v6(IP6, 6, &[0; 20]), Ok(()), "TCP");
        assert_eq!(
            v6(ll(), NEXT_UDP, &udp(546, 547)),
            Ok(()),
            "a DHCPv6 client"
        );
    }

    #[test]
    fn eui64_link_local_of_the_mac() {
        assert_eq!(
            POLICY.link_local(),
            "fe80::42:aff:fe00:2".parse::<Ipv6Addr>().unwrap()
        );
        let none = PortPolicy {
            ipv6: None,
            ..POLICY
        };
        assert!(none.owns_ipv6(none.link_local()) && !none.owns_ipv6(IP6));
        let slaac =
            crate::wire::ipv6::slaac_address(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), MAC);
        assert_eq!(slaac, "fd00::42:aff:fe00:2".parse::<Ipv6Addr>().unwrap());
        let with_slaac = PortPolicy {
            slaac: Some(slaac),
            ..POLICY
        };
        assert!(with_slaac.owns_ipv6(slaac) && !POLICY.owns_ipv6(slaac));
    }

    #[test]
    fn ipv6_sources_other_than_the_ports_are_refused() {
        let echo = [128, 0, 0, 0, 0, 1, 0, 1];
        let other_ll = link_local_eui64(OTHER);
        assert_eq!(v6(other_ll, NEXT_ICMPV6, &echo), Err(Violation::Ipv6Source));
        let other = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
        assert_eq!(v6(other, 6, &[0; 20]), Err(Violation::Ipv6Source));
        let none = PortPolicy {
            ipv6: None,
            ..POLICY
        };
        let frame = eth(MAC, ETHERTYPE_IPV6, &ipv6(IP6, 6, &[0; 20]));
        let info = parse(&frame, 1500).unwrap();
        assert_eq!(
            check(&none, &frame, &info),
            Err(Violation::Ipv6Source),
            "no address assigned"
        );
        // `::` only for DAD probes, MLD reports and router solicitations.
        let any = Ipv6Addr::UNSPECIFIED;
        assert_eq!(v6(any, NEXT_ICMPV6, &echo), Err(Violation::Ipv6Source));
        assert_eq!(
            v6(any, NEXT_UDP, &udp(546, 547)),
            Err(Violation::Ipv6Source)
        );
        assert_eq!(
            v6(any, NEXT_ICMPV6, &ns(ll(), &[])),
            Ok(()),
            "DAD of its link-local"
        );
        assert_eq!(
            v6(any, NEXT_ICMPV6, &ns(IP6, &[])),
            Ok(()),
            "DAD of its address"
        );
        let mut with_nonce = ns(ll(), &[]);
        with_nonce.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(
            v6(any, NEXT_ICMPV6, &with_nonce),
            Ok(()),
            "Linux's DAD nonce"
        );
        let mldv2 = [143, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(v6(any, NEXT_ICMPV6, &mldv2), Ok(()), "MLDv2 report");
        // A host with no address yet may solicit a router from `::` (RFC 4861 4.1).
        let rs = [133, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(v6(any, NEXT_ICMPV6, &rs), Ok(()), "Router Solicitation");
        assert_eq!(
            v6(any, NEXT_ICMPV6, &[131, 0, 0, 0]),
            Ok(()),
            "MLDv1 report"
        );
    }

    #[test]
    fn neighbor_advertisements_only_for_the_ports_addresses_and_mac() {
        let tll = |mac| [(OPT_TARGET_LL, mac)];
        assert_eq!(v6(ll(), NEXT_ICMPV6, &na(ll(), &tll(MAC))), Ok(()));
        assert_eq!(v6(ll(), NEXT_ICMPV6, &na(IP6, &[])), Ok(()), "no option");
        // The poisoning from the brief: a's NA for b's link-local, a's own MAC in it.
        let b_ll = link_local_eui64(OTHER);
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &na(b_ll, &tll(MAC))),
            Err(Violation::NeighborAdvertisement)
        );
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &na(ll(), &tll(OTHER))),
            Err(Violation::NeighborAdvertisement),
            "its own address, another's MAC"
        );
        // Every target link-layer option counts, not only the first one a kernel reads.
        let two = [(OPT_TARGET_LL, MAC), (OPT_TARGET_LL, OTHER)];
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &na(ll(), &two)),
            Err(Violation::NeighborAdvertisement)
        );
        assert_eq!(
            v6(Ipv6Addr::UNSPECIFIED, NEXT_ICMPV6, &na(ll(), &[])),
            Err(Violation::Ipv6Source)
        );
    }

    #[test]
    fn solicitations_name_the_ports_mac_and_probe_its_own_addresses() {
        let b_ll = link_local_eui64(OTHER);
        let sll = |mac| [(OPT_SOURCE_LL, mac)];
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &ns(b_ll, &sll(MAC))),
            Ok(()),
            "asks for b"
        );
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &ns(b_ll, &sll(OTHER))),
            Err(Violation::NeighborSolicitation)
        );
        let any = Ipv6Addr::UNSPECIFIED;
        assert_eq!(
            v6(any, NEXT_ICMPV6, &ns(b_ll, &[])),
            Err(Violation::NeighborSolicitation),
            "a DAD probe for b's address would fail b's DAD"
        );
        assert_eq!(
            v6(any, NEXT_ICMPV6, &ns(ll(), &sll(MAC))),
            Err(Violation::NeighborSolicitation),
            "a probe carries no source link-layer option"
        );
        let rs = |lls: &[(u8, MacAddr)]| ndp(TYPE_ROUTER_SOLICITATION, [0; 4], &[], lls);
        assert_eq!(v6(ll(), NEXT_ICMPV6, &rs(&sll(MAC))), Ok(()), "RS allowed");
        assert_eq!(v6(ll(), NEXT_ICMPV6, &rs(&[])), Ok(()));
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &rs(&sll(OTHER))),
            Err(Violation::NeighborSolicitation)
        );
    }

    #[test]
    fn router_messages_and_dhcpv6_servers_are_refused() {
        let mut ra_ok = vec![TYPE_ROUTER_ADVERTISEMENT, 0, 0, 0, 64, 0, 0x07, 0x08];
        ra_ok.extend_from_slice(&[0; 8]); // reachable time, retransmission timer
        ra_ok.extend_from_slice(&[OPT_SOURCE_LL, 1]);
        ra_ok.extend_from_slice(&MAC.0);
        let mut ra = ra_ok.clone();
        ra.extend_from_slice(&[OPT_SOURCE_LL, 0]);
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &ra_ok),
            Err(Violation::RouterAdvertisement)
        );
        assert_eq!(
            v6(ll(), NEXT_ICMPV6, &ra),
            Err(Violation::Ipv6Malformed),
            "zero-length option"
        );
        let redirect = ndp(TYPE_REDIRECT, [0; 4], &[ll(), IP6], &[]);
        assert_eq!(v6(ll(), NEXT_ICMPV6, &redirect), Err(Violation::Redirect));
        assert_eq!(
            v6(ll(), NEXT_UDP, &udp(547, 546)),
            Err(Violation::Dhcpv6Server),
            "advertise/reply"
        );
        assert_eq!(
            v6(ll(), NEXT_UDP, &udp(547, 547)),
            Err(Violation::Dhcpv6Server),
            "relay"
        );
        assert_eq!(
            v6(ll(), NEXT_UDP, &udp(40000, 546)),
            Err(Violation::Dhcpv6Server)
        );
        assert_eq!(
            v6(ll(), NEXT_UDP, &udp(40000, 53)),
            Ok(()),
            "positive control"
        );
    }

    #[test]
    fn malformed_ipv6_is_refused() {
        let frame = |l3: &[u8]| verdict(&eth(MAC, ETHERTYPE_IPV6, l3));
        let good = ipv6(ll(), NEXT_ICMPV6, &na(ll(), &[]));
        assert_eq!(frame(&good), Ok(()));
        assert_eq!(
            frame(&good[..39]),
            Err(Violation::Ipv6Malformed),
            "short header"
        );
        let mut p = good.clone();
        p[0] = 0x40;
        assert_eq!(frame(&p), Err(Violation::Ipv6Malformed), "version 4");
        let mut p = good.clone();
        p[5] += 1;
        assert_eq!(
            frame(&p),
            Err(Violation::Ipv6Malformed),
            "payload length beyond"
        );
        // A bad chain: destination options claiming more than the packet holds.
        let mut dst_opts = vec![NEXT_ICMPV6, 3, 1, 4, 0, 0, 0, 0];
        dst_opts.extend_from_slice(&na(ll(), &[]));
        assert_eq!(
            frame(&ipv6(ll(), 60, &dst_opts)),
            Err(Violation::Ipv6Malformed)
        );
        dst_opts[1] = 0;
        assert_eq!(
            frame(&ipv6(ll(), 60, &dst_opts)),
            Ok(()),
            "the same chain, well formed"
        );
        // RA guard evasion by extension headers: the RA is found behind them.
        let mut hidden = vec![NEXT_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        let mut ra = vec![TYPE_ROUTER_ADVERTISEMENT, 0, 0, 0, 64, 0, 0x07, 0x08];
        ra.extend_from_slice(&[0; 8]);
        hidden.extend_from_slice(&ra);
        assert_eq!(
            frame(&ipv6(ll(), 60, &hidden)),
            Err(Violation::RouterAdvertisement)
        );
        // ... or by fragmenting it: fragmented NDP is refused whole.
        let mut frag = vec![NEXT_ICMPV6, 0, 0, 1, 0, 0, 0, 7];
        frag.extend_from_slice(&ra);
        assert_eq!(frame(&ipv6(ll(), 44, &frag)), Err(Violation::Ipv6Malformed));
        let mut frag_na = vec![NEXT_ICMPV6, 0, 0, 1, 0, 0, 0, 7];
        frag_na.extend_from_slice(&na(ll(), &[]));
        assert_eq!(
            frame(&ipv6(ll(), 44, &frag_na)),
            Err(Violation::Ipv6Malformed)
        );
        // A later fragment has no header to read; its first fragment was judged.
        let later = [NEXT_ICMPV6, 0, 0, 0x10, 0, 0, 0, 7, 1, 2, 3, 4];
        assert_eq!(frame(&ipv6(ll(), 44, &later)), Ok(()));
        assert_eq!(
            frame(&ipv6(Ipv6Addr::UNSPECIFIED, 44, &later)),
            Err(Violation::Ipv6Source)
        );
        // Truncated upper-layer headers.
        assert_eq!(
            frame(&ipv6(ll(), NEXT_ICMPV6, &[136, 0])),
            Err(Violation::Ipv6Malformed)
        );
        assert_eq!(
            frame(&ipv6(ll(), NEXT_UDP, &[2, 35, 2])),
            Err(Violation::Ipv6Malformed)
        );
        let short_na = &na(ll(), &[])[..20];
        assert_eq!(
            frame(&ipv6(ll(), NEXT_ICMPV6, short_na)),
            Err(Violation::Ipv6Malformed)
        );
        let mut zero_opt = na(ll(), &[(OPT_TARGET_LL, MAC)]);
        zero_opt[25] = 0;
        assert_eq!(
            frame(&ipv6(ll(), NEXT_ICMPV6, &zero_opt)),
            Err(Violation::Ipv6Malformed)
        );
    }

    #[test]
    fn every_violation_has_its_own_index_and_name() {
        for (i, v) in Violation::ALL.iter().enumerate() {
            assert_eq!(v.index(), i);
            assert!(!v.explain().is_empty());
        }
        let mut names: Vec<_> = Violation::ALL.iter().map(|v| v.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Violation::COUNT);
    }

    #[test]
    fn spoofed_sources_are_refused() {
        assert_eq!(
            verdict(&eth(OTHER, ETHERTYPE_IPV4, &ipv4(IP))),
            Err(Violation::SourceMac)
        );
        assert_eq!(
            verdict(&eth(OTHER, 0x86dd, &[0x60; 40])),
            Err(Violation::SourceMac)
        );
        let other_ip = Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &ipv4(other_ip))),
            Err(Violation::Ipv4Source)
        );
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &ipv4(Ipv4Addr::UNSPECIFIED))),
            Err(Violation::Ipv4Source),
            "0.0.0.0 only for a DHCP client's message"
        );
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_ARP, &arp(MAC, other_ip))),
            Err(Violation::ArpSender),
            "ARP poisoning of another's address"
        );
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_ARP, &arp(OTHER, IP))),
            Err(Violation::ArpSender)
        );
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_VLAN, &[0, 1, 8, 0])),
            Err(Violation::Tagged)
        );
    }

    /// An IPv4/UDP packet from `src`, ports `sport` → `dport`, to the broadcast address.
    fn udp4(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&[255; 4]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    #[test]
    fn dhcp_clients_may_send_from_0_0_0_0_and_servers_are_refused() {
        let any = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &udp4(any, 68, 67))),
            Ok(())
        );
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &udp4(IP, 68, 67))),
            Ok(())
        );
        // Only the client's ports from 0.0.0.0.
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &udp4(any, 68, 53))),
            Err(Violation::Ipv4Source)
        );
        let mut fragment = udp4(any, 68, 67);
        fragment[6] = 0x20;
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &fragment)),
            Err(Violation::Ipv4Source)
        );
        // A server's OFFER or ACK, from the port's own address: refused.
        for (sport, dport) in [(67, 68), (67, 5000), (5000, 68)] {
            assert_eq!(
                verdict(&eth(MAC, ETHERTYPE_IPV4, &udp4(IP, sport, dport))),
                Err(Violation::DhcpServer),
                "{sport} -> {dport}"
            );
        }
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &udp4(IP, 5000, 53))),
            Ok(())
        );
        // From 0.0.0.0 too (a server's ports are not a client's).
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_IPV4, &udp4(any, 67, 68))),
            Err(Violation::Ipv4Source)
        );
    }

    #[test]
    fn arp_probes_for_the_ports_own_address_pass() {
        let mut probe = arp(MAC, Ipv4Addr::UNSPECIFIED);
        probe[24..28].copy_from_slice(&IP.octets());
        assert_eq!(verdict(&eth(MAC, ETHERTYPE_ARP, &probe)), Ok(()));
        // A probe for another's address could make it give its address up.
        assert_eq!(
            verdict(&eth(MAC, ETHERTYPE_ARP, &arp(MAC, Ipv4Addr::UNSPECIFIED))),
            Err(Violation::ArpSender)
        );
    }

    #[test]
    fn truncated_headers_are_refused_not_read_past() {
        let mut short = eth(MAC, ETHERTYPE_IPV4, &ipv4(IP));
        short.truncate(VNET_HDR_LEN + ETH_HDR_LEN + 14);
        assert_eq!(verdict(&short), Err(Violation::Ipv4Source));
        let mut short = eth(MAC, ETHERTYPE_ARP, &arp(MAC, IP));
        short.truncate(VNET_HDR_LEN + ETH_HDR_LEN + 17);
        assert_eq!(verdict(&short), Err(Violation::ArpSender));
        let mut v6 = eth(MAC, ETHERTYPE_IPV4, &ipv4(IP));
        v6[VNET_HDR_LEN + ETH_HDR_LEN] = 0x65;
        assert_eq!(verdict(&v6), Err(Violation::Ipv4Source), "not version 4");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = crate::test_rng::XorShift(0x05ee_d5ec);
        let arp_base = eth(MAC, ETHERTYPE_ARP, &arp(MAC, IP));
        let mut hidden = vec![NEXT_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        hidden.extend_from_slice(&na(ll(), &[(OPT_TARGET_LL, MAC)]));
        let v6_base = eth(MAC, ETHERTYPE_IPV6, &ipv6(ll(), 60, &hidden));
        for i in 0..40_000 {
            let base = if i % 2 == 0 { &arp_base } else { &v6_base };
            let mut f = base.clone();
            let len = rng.below(f.len() + 1);
            f.truncate(len);
            for _ in 0..rng.below(4) {
                if !f.is_empty() {
                    let i = rng.below(f.len());
                    f[i] = rng.next() as u8;
                }
            }
            check_arbitrary_frame(&f);
        }
        for _ in 0..20_000 {
            let mut f = na(ll(), &[(OPT_TARGET_LL, MAC)]);
            f.insert(0, rng.next() as u8);
            let len = rng.below(f.len() + 1);
            f.truncate(len);
            if !f.is_empty() {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
            check_arbitrary_ipv6(&f);
        }
    }

    #[test]
    fn the_ipv6_fuzz_body_reaches_the_ndp_checks() {
        // Wrapped as the fuzz body wraps it, an NA for the port's own address is a frame the
        // policy lets through: the fuzzer starts from messages that reach the NDP checks.
        let mut own = vec![1];
        own.extend_from_slice(&na(ll(), &[(OPT_TARGET_LL, MAC)]));
        check_arbitrary_ipv6(&own);
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        frame.extend_from_slice(&MAC.0);
        frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        frame.extend_from_slice(&ipv6(ll(), NEXT_ICMPV6, &own[1..]));
        let info = parse(&frame, 1500).unwrap();
        let none = PortPolicy {
            ipv6: None,
            ..POLICY
        };
        assert_eq!(check(&none, &frame, &info), Ok(()));
    }
}
