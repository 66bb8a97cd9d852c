//! ARP packets (RFC 826). Only Ethernet/IPv4 ARP means anything to tapnet; the view reads any
//! 28-byte packet and says whether it is that kind.

use std::net::Ipv4Addr;

use super::mac::MacAddr;

/// An Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// Hardware type Ethernet, protocol IPv4, address lengths 6 and 4.
const ETHERNET_IPV4: [u8; 6] = [0, 1, 8, 0, 6, 4];

/// Shorter than an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

#[derive(Clone, Copy, Debug)]
pub struct ArpPacket<'a> {
    b: &'a [u8; PACKET_LEN],
}

fn ipv4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn mac(b: &[u8], at: usize) -> MacAddr {
    MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

impl<'a> ArpPacket<'a> {
    /// Any packet of at least [`PACKET_LEN`] bytes (Ethernet padding may follow).
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Truncated> {
        let b = bytes.first_chunk::<PACKET_LEN>().ok_or(Truncated)?;
        Ok(ArpPacket { b })
    }
    /// Hardware type Ethernet, protocol IPv4, lengths 6 and 4: the only addresses these
    /// accessors read correctly.
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.b[..6] == ETHERNET_IPV4
    }
    pub fn operation(&self) -> u16 {
        u16::from_be_bytes([self.b[6], self.b[7]])
    }
    pub fn is_request(&self) -> bool {
        self.is_ethernet_ipv4() && self.operation() == OP_REQUEST
    }
    pub fn sender_mac(&self) -> MacAddr {
        mac(self.b, 8)
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        ipv4(self.b, 14)
    }
    pub fn target_mac(&self) -> MacAddr {
        mac(self.b, 18)
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        ipv4(self.b, 24)
    }
}

/// The Ethernet/IPv4 ARP packet of `op` from (`sender_mac`, `sender_ip`) to (`target_mac`,
/// `target_ip`).
pub fn packet(
    op: u16,
    (sender_mac, sender_ip): (MacAddr, Ipv4Addr),
    (target_mac, target_ip): (MacAddr, Ipv4Addr),
) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[..6].copy_from_slice(&ETHERNET_IPV4);
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(&sender_mac.0);
    p[14..18].copy_from_slice(&sender_ip.octets());
    p[18..24].copy_from_slice(&target_mac.0);
    p[24..28].copy_from_slice(&target_ip.octets());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType};

    const SB: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
    const SB_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn request_matches_etherparse() {
        let p = packet(OP_REQUEST, (SB, SB_IP), (MacAddr::default(), GW_IP));
        let v = ArpPacket::new_checked(&p).unwrap();
        assert!(v.is_ethernet_ipv4() && v.is_request());
        assert_eq!((v.sender_mac(), v.sender_ip()), (SB, SB_IP));
        assert_eq!((v.target_mac(), v.target_ip()), (MacAddr::default(), GW_IP));
        let e = ArpPacketSlice::from_slice(&p).unwrap();
        assert_eq!(e.hw_addr_type(), ArpHardwareId::ETHERNET);
        assert_eq!(e.proto_addr_type(), EtherType::IPV4);
        assert_eq!(e.operation(), ArpOperation::REQUEST);
        assert_eq!(e.sender_hw_addr(), &SB.0);
        assert_eq!(e.target_protocol_addr(), &GW_IP.octets());
    }

    #[test]
    fn truncated_and_other_kinds() {
        let p = packet(OP_REPLY, (SB, SB_IP), (SB, GW_IP));
        for len in 0..PACKET_LEN {
            assert_eq!(ArpPacket::new_checked(&p[..len]).err(), Some(Truncated));
        }
        let v = ArpPacket::new_checked(&p).unwrap();
        assert!(!v.is_request() && v.operation() == OP_REPLY);
        let mut other = p;
        other[5] = 16; // IPv6-sized protocol addresses
        let v = ArpPacket::new_checked(&other).unwrap();
        assert!(!v.is_ethernet_ipv4() && !v.is_request());
        let mut padded = p.to_vec();
        padded.extend_from_slice(&[0; 18]);
        assert!(ArpPacket::new_checked(&padded).is_ok());
    }
}
