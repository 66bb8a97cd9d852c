//! VXLAN (RFC 7348) as pure functions on bytes: the 8-byte header, decapsulation checks and the
//! UDP source port a flow gets. No I/O here, so every function is unit-tested and fuzzed.
//!
//! ```text
//!  0               1               2               3
//!  |R|R|R|R|I|R|R|R|            Reserved (24 bits)                |
//!  |                VNI (24 bits)                 | Reserved (8)  |
//! ```

use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};
pub use crate::wire::vxlan::{DEFAULT_PORT, FLAG_VNI, HEADER_LEN, MAX_VNI, header};
use crate::wire::{ETH_HDR_LEN, Ethernet, Ipv4Packet, Ipv6Packet, VxlanPacket, ethertype};

/// Outer IPv4 + UDP + VXLAN + inner Ethernet: what an underlay MTU loses to the overlay.
pub const OVERHEAD: u32 = 20 + 8 + HEADER_LEN as u32 + 14;
/// The same over an IPv6 underlay: its header is 20 bytes longer.
pub const OVERHEAD6: u32 = 40 + 8 + HEADER_LEN as u32 + 14;

/// What an underlay MTU loses to the overlay, by the family of the VTEPs' addresses.
pub fn overhead(ipv6_underlay: bool) -> u32 {
    if ipv6_underlay { OVERHEAD6 } else { OVERHEAD }
}
/// Source ports of encapsulated flows, as Linux picks them (`ip_local_port_range`'s default).
pub const SOURCE_PORTS: (u16, u16) = (32768, 60999);

/// Why a received VXLAN packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapError {
    /// Shorter than a VXLAN header plus an Ethernet header.
    Runt,
    /// The I flag is clear, or a flag this VTEP does not implement is set (as Linux drops them).
    BadFlags,
}

/// Check a VXLAN packet (the UDP payload) and split it into its VNI and inner Ethernet frame.
/// Reserved fields are ignored on receipt, as the RFC says; the inner frame is checked by the
/// caller with `frame::parse`.
pub fn decap(packet: &[u8]) -> Result<(u32, &[u8]), DecapError> {
    let vxlan = VxlanPacket::new_checked(packet).map_err(|_| DecapError::Runt)?;
    if vxlan.payload().len() < ETH_HDR_LEN {
        return Err(DecapError::Runt);
    }
    // Flags are the first 8 bits; the remaining 24 are reserved (Linux's GBP/GPE extensions
    // live there and are not implemented, so their flag bits are refused with the rest).
    if vxlan.flags() != FLAG_VNI {
        return Err(DecapError::BadFlags);
    }
    Ok((vxlan.vni(), vxlan.payload()))
}

/// The UDP source port of an encapsulated frame: a hash of the inner flow (MACs, ethertype and,
/// for IPv4 and IPv6, addresses, protocol and TCP/UDP ports), mapped into [`SOURCE_PORTS`] the
/// way Linux's `udp_flow_src_port` does, so underlay ECMP spreads flows and keeps each in order.
pub fn source_port(frame: &[u8]) -> u16 {
    let mut h = Fnv::new();
    let Ok(eth) = Ethernet::new_checked(frame) else {
        h.feed(frame);
        return scale(h.finish());
    };
    h.feed(&frame[..ETH_HDR_LEN]);
    let ip = eth.payload();
    let l4 = match (eth.ethertype(), Ipv4Packet::new_checked(ip)) {
        // Any version: the hash only needs the bytes where IPv4 keeps addresses and protocol.
        (ethertype::IPV4, Ok(v4)) => {
            h.feed(v4.addr_bytes());
            h.feed(&[v4.protocol()]);
            let ihl = v4.header_len();
            // A fragment after the first has no ports.
            (v4.is_first_fragment() && ihl >= 20).then(|| (v4.protocol(), ip.get(ihl..)))
        }
        (ethertype::IPV6, _) => match Ipv6Packet::new_checked(ip) {
            Ok(v6) => {
                h.feed(v6.addr_bytes());
                match v6.upper_layer() {
                    // Past the extension headers to the ports; a later fragment has none.
                    Ok(up) => {
                        h.feed(&[up.protocol]);
                        (!up.later_fragment).then(|| (up.protocol, ip.get(up.offset..)))
                    }
                    // A chain the view refuses still hashes one flow to one port.
                    Err(_) => {
                        h.feed(&[v6.next_header()]);
                        None
                    }
                }
            }
            Err(_) => None,
        },
        _ => None,
    };
    if let Some((PROTO_TCP | PROTO_UDP, Some(ports))) = l4
        && ports.len() >= 4
    {
        h.feed(&ports[0..4]);
    }
    scale(h.finish())
}

/// Map a hash onto the source port range, without division.
fn scale(hash: u64) -> u16 {
    let (lo, hi) = SOURCE_PORTS;
    let folded = (hash ^ (hash >> 32)) as u32;
    let span = u64::from(hi - lo) + 1;
    lo + ((u64::from(folded) * span) >> 32) as u16
}

/// FNV-1a: cheap and no table, with a final mix: FNV alone carries a change in the last bytes
/// fed only into the hash's low and top bits, so flows that differ in their last port (one
/// server's replies to one client's connections) would all get one source port.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit.
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// The body of the fuzz target, here so unit tests run it too: any bytes decapsulate or are
/// refused, never panic, and a frame that decapsulates re-encapsulates to the same bytes
/// (reserved fields zeroed).
pub fn check_arbitrary_packet(data: &[u8]) {
    if let Ok((vni, inner)) = decap(data) {
        assert!(vni <= MAX_VNI);
        assert_eq!(inner.len(), data.len() - HEADER_LEN);
        let hdr = header(vni);
        let mut again = hdr.to_vec();
        again.extend_from_slice(inner);
        assert_eq!(decap(&again), Ok((vni, inner)));
        let port = source_port(inner);
        assert!((SOURCE_PORTS.0..=SOURCE_PORTS.1).contains(&port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[0..6].copy_from_slice(&[2, 0x42, 10, 0, 0, 3]);
        f[6..12].copy_from_slice(&[2, 0x42, 10, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 3]);
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        f
    }

    #[test]
    fn header_is_rfc_7348() {
        assert_eq!(header(0x123456), [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(header(1), [0x08, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn decap_checks_flags_and_length_and_ignores_reserved_fields() {
        let inner = frame(1);
        let mut p = header(42).to_vec();
        p.extend_from_slice(&inner);
        assert_eq!(decap(&p), Ok((42, &inner[..])));
        p[1] = 0xff;
        p[7] = 0xff;
        assert_eq!(decap(&p), Ok((42, &inner[..])), "reserved bits are ignored");
        p[0] = 0x00;
        assert_eq!(decap(&p), Err(DecapError::BadFlags));
        p[0] = 0x88; // GBP, not implemented
        assert_eq!(decap(&p), Err(DecapError::BadFlags));
        assert_eq!(decap(&p[..HEADER_LEN + 13]), Err(DecapError::Runt));
        assert_eq!(decap(&[]), Err(DecapError::Runt));
    }

    #[test]
    fn source_port_follows_the_flow_and_stays_in_range() {
        let a = source_port(&frame(1000));
        assert_eq!(a, source_port(&frame(1000)), "one flow, one port");
        let ports: std::collections::HashSet<u16> =
            (0..64).map(|p| source_port(&frame(2000 + p))).collect();
        assert!(ports.len() > 32, "flows spread: {}", ports.len());
        for p in ports {
            assert!((SOURCE_PORTS.0..=SOURCE_PORTS.1).contains(&p));
        }
        for len in 0..40 {
            let p = source_port(&frame(7)[..len]);
            assert!((SOURCE_PORTS.0..=SOURCE_PORTS.1).contains(&p));
        }
    }

    /// The replies of one server to one client's connections differ only in the destination
    /// port, the client's ephemeral ports in steps of 2 (Linux's `connect`): the last bytes
    /// the hash takes. They must still leave through different sockets of the VTEP
    /// (`overlay_tx` picks one by the port modulo its socket count), or every such flow
    /// reaches one worker of the receiving VTEP.
    #[test]
    fn flows_that_differ_only_in_the_last_port_spread_over_sockets() {
        const SOCKETS: u16 = 32;
        let to = |dst_port: u16| {
            let mut f = frame(5201);
            f[36..38].copy_from_slice(&dst_port.to_be_bytes());
            f
        };
        for base in [40000u16, 45678, 60000] {
            let ports: std::collections::HashSet<u16> =
                (0..16).map(|i| source_port(&to(base + 2 * i))).collect();
            assert!(
                ports.len() >= 15,
                "from {base}: {} source ports",
                ports.len()
            );
            let sockets: std::collections::HashSet<u16> =
                ports.iter().map(|p| p % SOCKETS).collect();
            // 16 flows over 32 sockets at random reach about 12.5 of them.
            assert!(sockets.len() >= 8, "from {base}: {} sockets", sockets.len());
        }
    }

    /// A UDP-over-IPv6 frame fd00::2 -> fd00::3 from `src_port`.
    fn frame6(src_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[0..6].copy_from_slice(&[2, 0x42, 10, 0, 0, 3]);
        f[6..12].copy_from_slice(&[2, 0x42, 10, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[20] = 17;
        f[21] = 64;
        f[22] = 0xfd;
        f[37] = 2;
        f[38] = 0xfd;
        f[53] = 3;
        f[54..56].copy_from_slice(&src_port.to_be_bytes());
        f[56..58].copy_from_slice(&53u16.to_be_bytes());
        f
    }

    #[test]
    fn ipv6_flows_hash_by_addresses_and_ports() {
        let a = source_port(&frame6(1000));
        assert_eq!(a, source_port(&frame6(1000)), "one flow, one port");
        let ports: std::collections::HashSet<u16> =
            (0..64).map(|p| source_port(&frame6(2000 + p))).collect();
        assert!(
            ports.len() > 32,
            "IPv6 flows spread by port: {}",
            ports.len()
        );
        // Another destination address is another flow.
        let mut other = frame6(1000);
        other[53] = 4;
        assert_ne!(source_port(&other), a);
        // The hop limit and payload length are not part of the flow.
        let mut hop = frame6(1000);
        hop[21] = 1;
        hop[19] = 8;
        assert_eq!(source_port(&hop), a);
        for len in 0..frame6(1).len() {
            let p = source_port(&frame6(7)[..len]);
            assert!((SOURCE_PORTS.0..=SOURCE_PORTS.1).contains(&p));
        }
        assert_eq!(overhead(true), 70);
        assert_eq!(overhead(false), 50);
    }

    #[test]
    fn arbitrary_packets_never_panic() {
        let mut rng = crate::test_rng::XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 200];
        for i in 0..20_000 {
            let len = i % buf.len();
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            if i % 2 == 0 && len > 0 {
                buf[0] = FLAG_VNI;
            }
            check_arbitrary_packet(&buf[..len]);
        }
    }
}
