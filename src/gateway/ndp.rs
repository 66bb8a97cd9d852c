//! The ICMPv6 the gateway answers itself: Neighbour Advertisements for its addresses, echo
//! replies from them, and Destination Unreachable for what it cannot carry, built by hand into
//! a reused buffer.
//!
//! Not smoltcp's: its Neighbour Advertisements carry the Solicited flag alone, and a host whose
//! default router answers a reachability probe without the Router flag removes its default
//! route (RFC 4861 section 7.2.5; Linux does). Both are small enough to write out.

use std::net::Ipv6Addr;

use crate::offload::checksum::{fold, pseudo_header_v6, sum};
use crate::wire::{ETH_HDR_LEN, MacAddr, ethertype};

pub const IPV6_HDR_LEN: usize = 40;
pub const PROTO_ICMPV6: u8 = 58;
/// Where the ICMPv6 message of a frame this module builds starts.
pub const ICMP_AT: usize = ETH_HDR_LEN + IPV6_HDR_LEN;

pub const DST_UNREACHABLE: u8 = 1;
/// Destination Unreachable code: communication administratively prohibited (RFC 4443 section
/// 3.1). Linux makes it a hard error (EACCES), so a connect() fails at once, as a TCP RST
/// makes it fail on IPv4, and the client moves on to an IPv4 address.
pub const ADMIN_PROHIBITED: u8 = 1;
/// Destination Unreachable's code for a port nothing listens on.
pub const PORT_UNREACHABLE: u8 = 4;
/// Error messages carry as much of the packet that caused them as fits in the minimum IPv6
/// MTU (RFC 4443 section 2.4 (c)).
const MIN_MTU: usize = 1280;
/// ICMPv6 errors sent per second at most (RFC 4443 section 2.4 (f) asks for a limit).
const ERRORS_PER_SECOND: u32 = 100;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;

/// Neighbour Advertisement flags (RFC 4861 section 4.4).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// Option types (RFC 4861 section 4.6).
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;

pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The link-local address of `mac` (modified EUI-64, RFC 4291 appendix A).
pub use crate::wire::ipv6::link_local_eui64 as link_local;

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX, RFC 4291 section 2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address an IPv6 multicast address maps to (33:33 and its low 32 bits).
pub fn multicast_mac(ip: Ipv6Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Start a frame carrying ICMPv6 in `out` (cleared): Ethernet and IPv6 headers, the payload
/// length left for [`finish_icmpv6`].
pub fn begin_icmpv6(
    out: &mut Vec<u8>,
    (src_mac, dst_mac): (MacAddr, MacAddr),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    hop_limit: u8,
) {
    out.clear();
    out.extend_from_slice(&dst_mac.0);
    out.extend_from_slice(&src_mac.0);
    out.extend_from_slice(&ethertype::IPV6.to_be_bytes());
    out.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class, no flow label
    out.extend_from_slice(&[0, 0, PROTO_ICMPV6, hop_limit]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

/// Fill in the IPv6 payload length and the ICMPv6 checksum of the frame [`begin_icmpv6`]
/// started, once its message is written.
pub fn finish_icmpv6(out: &mut [u8]) {
    if out.len() < ICMP_AT + 4 {
        return;
    }
    let len = out.len() - ICMP_AT;
    let at = ETH_HDR_LEN + 4;
    out[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&out[ETH_HDR_LEN + 8..ETH_HDR_LEN + 24]);
    dst.copy_from_slice(&out[ETH_HDR_LEN + 24..ETH_HDR_LEN + 40]);
    out[ICMP_AT + 2..ICMP_AT + 4].fill(0);
    let pseudo = pseudo_header_v6(&src, &dst, PROTO_ICMPV6, len as u32);
    let checksum = !fold(sum(pseudo, &out[ICMP_AT..]));
    out[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&checksum.to_be_bytes());
}

/// The gateway's Neighbour Advertisement for its address `target`, asked by `asker` (`asker_mac`)
/// in a Neighbour Solicitation: Router, Solicited and Override set, with the target link-layer
/// option. A solicitation from the unspecified address (duplicate address detection of our
/// address) is answered to all nodes, without Solicited (RFC 4861 section 7.2.4).
pub fn neighbor_advert(
    out: &mut Vec<u8>,
    gateway_mac: MacAddr,
    target: Ipv6Addr,
    (asker, asker_mac): (Ipv6Addr, MacAddr),
) {
    let (dst, dst_mac, flags) = if asker.is_unspecified() {
        (ALL_NODES, multicast_mac(ALL_NODES), NA_ROUTER | NA_OVERRIDE)
    } else {
        (asker, asker_mac, NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)
    };
    begin_icmpv6(out, (gateway_mac, dst_mac), (target, dst), 255);
    out.extend_from_slice(&[NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
    out.extend_from_slice(&target.octets());
    out.extend_from_slice(&[OPT_TARGET_LL, 1]);
    out.extend_from_slice(&gateway_mac.0);
    finish_icmpv6(out);
}

/// The echo reply to an echo request `request` (its ICMPv6 message: type, code, checksum, id,
/// sequence, data) that `asker` sent to the gateway's address `ours`: same id, sequence and data.
pub fn echo_reply(
    out: &mut Vec<u8>,
    gateway_mac: MacAddr,
    ours: Ipv6Addr,
    (asker, asker_mac): (Ipv6Addr, MacAddr),
    request: &[u8],
) {
    begin_icmpv6(out, (gateway_mac, asker_mac), (ours, asker), 64);
    out.extend_from_slice(&[ECHO_REPLY, 0, 0, 0]);
    out.extend_from_slice(request.get(4..).unwrap_or_default());
    finish_icmpv6(out);
}

/// Destination Unreachable (`code`: administratively prohibited, port unreachable) from `from`
/// to `asker`, quoting
/// `invoking`, the IPv6 packet it refuses (header onwards), cut to the minimum MTU.
pub fn unreachable(
    out: &mut Vec<u8>,
    gateway_mac: MacAddr,
    (from, (asker, asker_mac)): (Ipv6Addr, (Ipv6Addr, MacAddr)),
    invoking: &[u8],
    code: u8,
) {
    begin_icmpv6(out, (gateway_mac, asker_mac), (from, asker), 64);
    out.extend_from_slice(&[DST_UNREACHABLE, code, 0, 0, 0, 0, 0, 0]);
    let room = MIN_MTU - IPV6_HDR_LEN - 8;
    out.extend_from_slice(&invoking[..invoking.len().min(room)]);
    finish_icmpv6(out);
}

/// A cap on ICMPv6 errors per second, so that no sandbox can make the gateway send a flood.
pub struct ErrorLimit {
    window: std::time::Instant,
    sent: u32,
}

impl ErrorLimit {
    pub fn new(now: std::time::Instant) -> Self {
        ErrorLimit {
            window: now,
            sent: 0,
        }
    }

    /// May one more error go now?
    pub fn allow(&mut self, now: std::time::Instant) -> bool {
        if now.duration_since(self.window) >= std::time::Duration::from_secs(1) {
            self.window = now;
            self.sent = 0;
        }
        if self.sent >= ERRORS_PER_SECOND {
            return false;
        }
        self.sent += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{
        EthernetFrame, Icmpv6Packet, Icmpv6Repr, Ipv6Packet, NdiscNeighborFlags, NdiscRepr,
    };

    const GW: MacAddr = MacAddr([2, 0x42, 0xac, 0x12, 0, 1]);
    const SB: MacAddr = MacAddr([2, 0x42, 0xac, 0x12, 0, 2]);

    #[test]
    fn link_local_and_solicited_node_addresses() {
        assert_eq!(
            link_local(GW),
            "fe80::42:acff:fe12:1".parse::<Ipv6Addr>().unwrap()
        );
        let ip: Ipv6Addr = "fd00:1:2::abcd:ef01".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ffcd:ef01".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            MacAddr([0x33, 0x33, 0xff, 0xcd, 0xef, 0x01])
        );
    }

    #[test]
    fn advert_to_an_unspecified_asker_goes_to_all_nodes_unsolicited() {
        let target: Ipv6Addr = "fd00::1".parse().unwrap();
        let mut out = Vec::new();
        neighbor_advert(&mut out, GW, target, (Ipv6Addr::UNSPECIFIED, SB));
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(eth.dst_addr().0, [0x33, 0x33, 0, 0, 0, 1]);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.dst_addr(), ip.hop_limit()), (ALL_NODES, 255));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        match NdiscRepr::parse(&icmp).unwrap() {
            NdiscRepr::NeighborAdvert { flags, .. } => {
                assert_eq!(
                    flags,
                    NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn echo_reply_keeps_id_sequence_and_data() {
        let ours: Ipv6Addr = "fd00::1".parse().unwrap();
        let asker: Ipv6Addr = "fd00::2".parse().unwrap();
        let request = [ECHO_REQUEST, 0, 0xaa, 0xbb, 0, 7, 0, 9, b'h', b'i'];
        let mut out = Vec::new();
        echo_reply(&mut out, GW, ours, (asker, SB), &request);
        let ip = Ipv6Packet::new_checked(&out[ETH_HDR_LEN..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv6Repr::parse(
            &ip.src_addr(),
            &ip.dst_addr(),
            &icmp,
            &smoltcp::phy::ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: b"hi"
            }
        );
        // A request cut short (no id and sequence) gives an empty but well-formed reply.
        echo_reply(&mut out, GW, ours, (asker, SB), &request[..2]);
        assert_eq!(out.len(), ICMP_AT + 4);
    }

    #[test]
    fn unreachable_quotes_the_packet_within_the_minimum_mtu_and_is_rate_limited() {
        let ours: Ipv6Addr = "fd00::1".parse().unwrap();
        let asker: Ipv6Addr = "fd00::2".parse().unwrap();
        let invoking = vec![0x60; 3000];
        let mut out = Vec::new();
        unreachable(
            &mut out,
            GW,
            (ours, (asker, SB)),
            &invoking,
            ADMIN_PROHIBITED,
        );
        assert_eq!(out.len() - ETH_HDR_LEN, MIN_MTU);
        let ip = Ipv6Packet::new_checked(&out[ETH_HDR_LEN..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!((ip.payload()[0], icmp.msg_code()), (1, 1));
        assert_eq!(&ip.payload()[8..], &invoking[..MIN_MTU - 48]);
        let now = std::time::Instant::now();
        let mut limit = ErrorLimit::new(now);
        let sent = (0..1000).filter(|_| limit.allow(now)).count();
        assert_eq!(sent, ERRORS_PER_SECOND as usize);
        assert!(limit.allow(now + std::time::Duration::from_secs(1)));
    }
}
