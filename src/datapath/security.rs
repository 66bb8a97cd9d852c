//! Port security: a sandbox's port may only send as the station tapnet made it, with the MAC
//! and IPv4 address of its endpoint. Checked on every frame from such a port, on borrowed bytes,
//! allocating nothing: the Ethernet source, and for ARP the sender's hardware and protocol
//! addresses, for IPv4 the source address. IPv6 and other protocols are checked by their
//! Ethernet source only (tapnet gives sandboxes no IPv6 address; their link-local one derives
//! from the MAC). VLAN-tagged frames are refused: a sandbox's port is untagged.
//! The gateway's port has no policy, nor has any port of a network with `port_security=off`.

use std::net::Ipv4Addr;

use super::frame::FrameInfo;
use crate::wire::ethertype::{
    ARP as ETHERTYPE_ARP, IPV4 as ETHERTYPE_IPV4, QINQ as ETHERTYPE_QINQ, VLAN as ETHERTYPE_VLAN,
};
use crate::wire::{ArpPacket, ETH_HDR_LEN, Ipv4Packet, MacAddr, VNET_HDR_LEN};

/// What a port may send as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
}

/// Why a frame broke its port's policy.
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
}

/// Check `frame` (virtio-net header included, already accepted by `frame::parse`) against
/// `policy`.
pub fn check(policy: &PortPolicy, frame: &[u8], info: &FrameInfo) -> Result<(), Violation> {
    if info.src != policy.mac {
        return Err(Violation::SourceMac);
    }
    let l3 = frame.get(VNET_HDR_LEN + ETH_HDR_LEN..).unwrap_or(&[]);
    match info.ethertype {
        ETHERTYPE_IPV4 => match Ipv4Packet::new_checked(l3) {
            Ok(ip) if ip.version() == 4 && ip.src() == policy.ipv4 => Ok(()),
            _ => Err(Violation::Ipv4Source),
        },
        ETHERTYPE_ARP => match ArpPacket::new_checked(l3) {
            Ok(arp)
                if arp.is_ethernet_ipv4()
                    && arp.sender_mac() == policy.mac
                    && arp.sender_ip() == policy.ipv4 =>
            {
                Ok(())
            }
            _ => Err(Violation::ArpSender),
        },
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => Err(Violation::Tagged),
        _ => Ok(()),
    }
}

/// Fuzz body: any bytes `frame::parse` accepts are checked without panicking, and a frame that
/// passes really carries the policy's MAC (and its address, for IPv4 and ARP).
pub fn check_arbitrary_frame(data: &[u8]) {
    let policy = PortPolicy {
        mac: MacAddr([2, 0x42, 10, 0, 0, 2]),
        ipv4: Ipv4Addr::new(10, 0, 0, 2),
    };
    let Ok(info) = super::frame::parse(data, 1500) else {
        return;
    };
    if check(&policy, data, &info).is_ok() {
        assert_eq!(info.src, policy.mac);
        let l3 = &data[VNET_HDR_LEN + ETH_HDR_LEN..];
        match info.ethertype {
            ETHERTYPE_IPV4 => assert_eq!(&l3[12..16], &policy.ipv4.octets()),
            ETHERTYPE_ARP => assert_eq!(&l3[14..18], &policy.ipv4.octets()),
            t => assert!(t != ETHERTYPE_VLAN && t != ETHERTYPE_QINQ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::frame::parse;

    const MAC: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
    const OTHER: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 3]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const POLICY: PortPolicy = PortPolicy { mac: MAC, ipv4: IP };

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

    fn verdict(frame: &[u8]) -> Result<(), Violation> {
        let info = parse(frame, 1500).expect("a well-formed frame");
        check(&POLICY, frame, &info)
    }

    #[test]
    fn the_assigned_station_passes() {
        assert_eq!(verdict(&eth(MAC, ETHERTYPE_IPV4, &ipv4(IP))), Ok(()));
        assert_eq!(verdict(&eth(MAC, ETHERTYPE_ARP, &arp(MAC, IP))), Ok(()));
        assert_eq!(verdict(&eth(MAC, 0x86dd, &[0x60; 40])), Ok(()), "IPv6");
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
            "no DHCP: 0.0.0.0 is not needed"
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
        let base = eth(MAC, ETHERTYPE_ARP, &arp(MAC, IP));
        for _ in 0..20_000 {
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
    }
}
