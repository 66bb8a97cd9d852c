//! Parsing of what a TAP port hands us: a virtio-net header followed by an Ethernet frame.
//! Everything here works on borrowed bytes and allocates nothing: it runs once per frame.

use std::fmt;
use std::str::FromStr;

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), set on every TAP with TUNSETVNETHDRSZ.
pub const VNET_HDR_LEN: usize = 12;
pub const ETH_HDR_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
/// Largest frame a TAP may hand us: a 64 KiB GSO super-frame plus headers.
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + ETH_HDR_LEN + VLAN_TAG_LEN + 65536;

pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
const VIRTIO_NET_HDR_F_RSC_INFO: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group bit set: broadcast and multicast both flood.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    /// Docker's rule: `02:42` followed by the four bytes of the endpoint's IPv4 address.
    pub fn from_ipv4(ip: std::net::Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts
                .next()
                .ok_or_else(|| format!("malformed MAC address {s:?}"))?;
            if part.len() != 2 {
                return Err(format!("malformed MAC address {s:?}"));
            }
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| format!("malformed MAC address {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("malformed MAC address {s:?}"));
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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
        if b.len() < VNET_HDR_LEN {
            return None;
        }
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
    fn is_valid_for(&self, eth_len: usize) -> bool {
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
    let eth_hdr =
        etherparse::Ethernet2HeaderSlice::from_slice(eth).map_err(|_| DropReason::Runt)?;
    let src = MacAddr(eth_hdr.source());
    if src.is_multicast() || src.is_zero() {
        return Err(DropReason::BadSourceMac);
    }
    let ethertype = eth_hdr.ether_type().0;
    let tag_room = if ethertype == 0x8100 { VLAN_TAG_LEN } else { 0 };
    if !vnet.is_gso() && eth.len() > ETH_HDR_LEN + tag_room + mtu {
        return Err(DropReason::Oversize);
    }
    Ok(FrameInfo {
        dst: MacAddr(eth_hdr.destination()),
        src,
        ethertype,
        vnet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn mac_text_and_docker_rule() {
        let m = MacAddr::from_ipv4("172.17.0.2".parse().unwrap());
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02:42:ac:11:00:02".parse::<MacAddr>(), Ok(m));
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:01".parse::<MacAddr>().is_err());
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
    }
}
