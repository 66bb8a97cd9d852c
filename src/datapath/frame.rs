//! Parsing of what a TAP port hands us: a virtio-net header followed by an Ethernet frame.
//! Everything here works on borrowed bytes and allocates nothing: it runs once per frame.

use crate::wire::ethernet::VLAN_TAG_LEN;
use crate::wire::{ETH_HDR_LEN, Ethernet, MacAddr, VNET_HDR_LEN, VirtioNetHdr, ethertype};

/// Why a frame was dropped at ingress. Each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a virtio-net header plus an Ethernet header.
    Runt,
    /// A virtio-net header the kernel would refuse.
    BadVnetHeader,
    /// Source MAC is multicast or zero: no station can own it.
    BadSourceMac,
    /// Larger than the network's MTU and not a GSO super-frame.
    Oversize,
}

/// What the switch needs to know about a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    pub vnet: VirtioNetHdr,
}

/// Parse and validate `buf` (virtio-net header + Ethernet frame) against the network's MTU.
pub fn parse(buf: &[u8], mtu: usize) -> Result<FrameInfo, DropReason> {
    if buf.len() < VNET_HDR_LEN + ETH_HDR_LEN {
        return Err(DropReason::Runt);
    }
    let (hdr, eth) = buf.split_at(VNET_HDR_LEN);
    let vnet = VirtioNetHdr::parse(hdr).ok_or(DropReason::Runt)?;
    if !vnet.is_valid_for(eth.len()) {
        return Err(DropReason::BadVnetHeader);
    }
    let eth_hdr = Ethernet::new_checked(eth).map_err(|_| DropReason::Runt)?;
    let src = eth_hdr.src();
    if src.is_multicast() || src.is_zero() {
        return Err(DropReason::BadSourceMac);
    }
    let ethertype = eth_hdr.ethertype();
    let tag_room = if ethertype == ethertype::VLAN {
        VLAN_TAG_LEN
    } else {
        0
    };
    if !vnet.is_gso() && eth.len() > ETH_HDR_LEN + tag_room + mtu {
        return Err(DropReason::Oversize);
    }
    Ok(FrameInfo {
        dst: eth_hdr.dst(),
        src,
        ethertype,
        vnet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};

    fn frame(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
        let mut v = vec![0u8; VNET_HDR_LEN];
        v.extend_from_slice(&dst);
        v.extend_from_slice(&src);
        v.extend_from_slice(&[0x08, 0x00]);
        v.resize(v.len() + payload, 0xab);
        v
    }

    const A: [u8; 6] = [2, 0x42, 172, 18, 0, 2];
    const B: [u8; 6] = [2, 0x42, 172, 18, 0, 3];

    #[test]
    fn parses_addresses_and_ethertype() {
        let info = parse(&frame(B, A, 46), 1500).unwrap();
        assert_eq!(info.src, MacAddr(A));
        assert_eq!(info.dst, MacAddr(B));
        assert_eq!(info.ethertype, 0x0800);
    }

    #[test]
    fn rejects_runts() {
        assert_eq!(parse(&[0u8; 3], 1500), Err(DropReason::Runt));
        let f = frame(B, A, 0);
        assert_eq!(parse(&f[..f.len() - 1], 1500), Err(DropReason::Runt));
        assert!(parse(&f, 1500).is_ok());
    }

    #[test]
    fn rejects_group_and_zero_source() {
        assert_eq!(
            parse(&frame(B, [0xff; 6], 46), 1500),
            Err(DropReason::BadSourceMac)
        );
        assert_eq!(
            parse(&frame(B, [0x01, 0, 0x5e, 0, 0, 1], 46), 1500),
            Err(DropReason::BadSourceMac)
        );
        assert_eq!(
            parse(&frame(B, [0; 6], 46), 1500),
            Err(DropReason::BadSourceMac)
        );
    }

    #[test]
    fn enforces_mtu_except_for_gso() {
        assert!(parse(&frame(B, A, 1500), 1500).is_ok());
        assert_eq!(parse(&frame(B, A, 1501), 1500), Err(DropReason::Oversize));
        let mut gso = frame(B, A, 9000);
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
        .write(&mut gso);
        assert!(parse(&gso, 1500).is_ok());
    }

    #[test]
    fn rejects_bad_vnet_headers() {
        let mut f = frame(B, A, 46);
        f[1] = 9; // unknown gso type
        assert_eq!(parse(&f, 1500), Err(DropReason::BadVnetHeader));
        let mut f = frame(B, A, 46);
        f[1] = VIRTIO_NET_HDR_GSO_TCPV4; // gso without a segment size
        assert_eq!(parse(&f, 1500), Err(DropReason::BadVnetHeader));
        let mut f = frame(B, A, 46);
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 58,
            csum_offset: 6,
            ..Default::default()
        }
        .write(&mut f);
        assert_eq!(parse(&f, 1500), Err(DropReason::BadVnetHeader));
    }
}
