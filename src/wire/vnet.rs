//! `struct virtio_net_hdr_v1`: what a TAP (with IFF_VNET_HDR) puts before every frame.

use super::ethernet::{ETH_HDR_LEN, VLAN_TAG_LEN};

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), set on every TAP with TUNSETVNETHDRSZ.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame a TAP may hand us: a 64 KiB GSO super-frame plus headers (virtio-net,
/// Ethernet, one VLAN tag).
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + ETH_HDR_LEN + VLAN_TAG_LEN + 65536;
/// TAP queues tapnet asks for at most (the kernel allows 256); the datapath polls no more.
pub const MAX_TAP_QUEUES: usize = 64;

pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
pub const VIRTIO_NET_HDR_F_RSC_INFO: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr_v1`, little-endian as the kernel writes it on x86 and arm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Write the header into the first [`VNET_HDR_LEN`] bytes of `out`, which must hold them.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        out[10..12].copy_from_slice(&0u16.to_le_bytes());
    }

    pub fn is_gso(&self) -> bool {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE
    }

    /// The checks the kernel's `virtio_net_hdr_to_skb` would fail a write with, done up front so
    /// a bad header is counted on the port that sent it rather than on the one we forward to.
    pub fn is_valid_for(&self, eth_len: usize) -> bool {
        let known_flags =
            VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_RSC_INFO;
        if self.flags & !known_flags != 0 {
            return false;
        }
        match self.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => {}
            VIRTIO_NET_HDR_GSO_TCPV4
            | VIRTIO_NET_HDR_GSO_UDP
            | VIRTIO_NET_HDR_GSO_TCPV6
            | VIRTIO_NET_HDR_GSO_UDP_L4 => {
                if self.gso_size == 0 {
                    return false;
                }
            }
            _ => return false,
        }
        if self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            let end = self.csum_start as usize + self.csum_offset as usize + 2;
            if end > eth_len {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_round_trips() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 74,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.write(&mut b);
        assert_eq!(VirtioNetHdr::parse(&b), Some(h));
        assert_eq!(VirtioNetHdr::parse(&b[..VNET_HDR_LEN - 1]), None);
        assert!(h.is_gso() && h.is_valid_for(74));
    }

    #[test]
    fn validity_follows_the_kernel() {
        let ok = VirtioNetHdr::default();
        assert!(ok.is_valid_for(14));
        let unknown_flag = VirtioNetHdr { flags: 8, ..ok };
        assert!(!unknown_flag.is_valid_for(100));
        let no_size = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            ..ok
        };
        assert!(!no_size.is_valid_for(100));
        let csum_beyond = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 58,
            csum_offset: 6,
            ..ok
        };
        assert!(!csum_beyond.is_valid_for(65) && csum_beyond.is_valid_for(66));
    }
}
