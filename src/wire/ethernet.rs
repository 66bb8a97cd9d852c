//! Ethernet II frames, with 802.1Q and 802.1ad (QinQ) tags.

use super::ethertype;
use super::mac::MacAddr;

/// Destination, source, EtherType.
pub const HEADER_LEN: usize = 14;
/// [`HEADER_LEN`] under the name the rest of the data plane knows it by.
pub const ETH_HDR_LEN: usize = HEADER_LEN;
/// One 802.1Q or 802.1ad tag: TPID (the outer EtherType) is in the header before it; the tag
/// holds the TCI and the next EtherType.
pub const VLAN_TAG_LEN: usize = 4;
/// Tags [`Ethernet::inner`] looks through: QinQ's service and customer tags.
pub const MAX_TAGS: usize = 2;

/// Shorter than the header it should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

/// An Ethernet frame of at least [`HEADER_LEN`] bytes.
#[derive(Clone, Copy, Debug)]
pub struct Ethernet<'a> {
    b: &'a [u8; HEADER_LEN],
    rest: &'a [u8],
}

impl<'a> Ethernet<'a> {
    pub fn new_checked(frame: &'a [u8]) -> Result<Self, Truncated> {
        let (head, rest) = frame.split_first_chunk::<HEADER_LEN>().ok_or(Truncated)?;
        Ok(Ethernet { b: head, rest })
    }
    pub fn dst(&self) -> MacAddr {
        MacAddr([
            self.b[0], self.b[1], self.b[2], self.b[3], self.b[4], self.b[5],
        ])
    }
    pub fn src(&self) -> MacAddr {
        MacAddr([
            self.b[6], self.b[7], self.b[8], self.b[9], self.b[10], self.b[11],
        ])
    }
    /// The outer EtherType (a TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.b[12], self.b[13]])
    }
    /// Everything after the outer EtherType: a VLAN tag or the L3 packet.
    pub fn payload(&self) -> &'a [u8] {
        self.rest
    }
    /// The first VLAN tag, when the outer EtherType announces one.
    pub fn tag(&self) -> Result<Option<VlanTag<'a>>, Truncated> {
        if !ethertype::is_vlan_tag(self.ethertype()) {
            return Ok(None);
        }
        VlanTag::new_checked(self.rest).map(Some)
    }
    /// The EtherType past at most [`MAX_TAGS`] VLAN tags and the offset of the payload it
    /// describes; the EtherType is a TPID still when more tags follow.
    pub fn inner(&self) -> Result<(u16, usize), Truncated> {
        let mut ethertype = self.ethertype();
        let mut at = HEADER_LEN;
        let mut rest = self.rest;
        for _ in 0..MAX_TAGS {
            if !ethertype::is_vlan_tag(ethertype) {
                break;
            }
            let tag = VlanTag::new_checked(rest)?;
            ethertype = tag.ethertype();
            at += VLAN_TAG_LEN;
            rest = tag.payload();
        }
        Ok((ethertype, at))
    }
}

/// One VLAN tag: TCI and the EtherType after it.
#[derive(Clone, Copy, Debug)]
pub struct VlanTag<'a> {
    b: &'a [u8; VLAN_TAG_LEN],
    rest: &'a [u8],
}

impl<'a> VlanTag<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Truncated> {
        let (head, rest) = bytes.split_first_chunk::<VLAN_TAG_LEN>().ok_or(Truncated)?;
        Ok(VlanTag { b: head, rest })
    }
    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        u16::from_be_bytes([self.b[0], self.b[1]]) & 0x0fff
    }
    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        self.b[0] >> 5
    }
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.b[2], self.b[3]])
    }
    pub fn payload(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[(u16, u16)], ethertype: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0x42, 10, 0, 0, 2]);
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.resize(f.len() + payload, 0xab);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[], ethertype::IPV4, 46);
        let e = Ethernet::new_checked(&f).unwrap();
        assert_eq!(e.dst(), MacAddr::BROADCAST);
        assert_eq!(e.src(), MacAddr([2, 0x42, 10, 0, 0, 2]));
        assert_eq!(e.ethertype(), ethertype::IPV4);
        assert_eq!(e.payload().len(), 46);
        assert!(e.tag().unwrap().is_none());
        assert_eq!(e.inner(), Ok((ethertype::IPV4, HEADER_LEN)));
        let ep = etherparse::Ethernet2HeaderSlice::from_slice(&f).unwrap();
        assert_eq!((e.dst().0, e.src().0), (ep.destination(), ep.source()));
        assert_eq!(e.ethertype(), ep.ether_type().0);
    }

    #[test]
    fn truncated() {
        let f = frame(&[], ethertype::IPV4, 0);
        for len in 0..HEADER_LEN {
            assert_eq!(Ethernet::new_checked(&f[..len]).err(), Some(Truncated));
        }
        assert!(Ethernet::new_checked(&f).is_ok());
    }

    #[test]
    fn one_8021q_tag() {
        let f = frame(&[(ethertype::VLAN, 0xa00c)], ethertype::EXPERIMENTAL, 28);
        let e = Ethernet::new_checked(&f).unwrap();
        let tag = e.tag().unwrap().unwrap();
        assert_eq!(
            (tag.vid(), tag.pcp(), tag.ethertype()),
            (12, 5, ethertype::EXPERIMENTAL)
        );
        assert_eq!(tag.payload().len(), 28);
        assert_eq!(e.inner(), Ok((ethertype::EXPERIMENTAL, 18)));
        let ep = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::LinkExtSlice::Vlan(v)) = ep.link_exts.first() else {
            panic!("etherparse sees no tag")
        };
        assert_eq!(v.vlan_identifier().value(), tag.vid());
    }

    #[test]
    fn qinq_and_too_many_tags() {
        let f = frame(
            &[(ethertype::QINQ, 7), (ethertype::VLAN, 9)],
            ethertype::IPV6,
            40,
        );
        let e = Ethernet::new_checked(&f).unwrap();
        assert_eq!(e.tag().unwrap().unwrap().vid(), 7);
        assert_eq!(e.inner(), Ok((ethertype::IPV6, 22)));
        let three = frame(
            &[
                (ethertype::QINQ, 7),
                (ethertype::VLAN, 9),
                (ethertype::VLAN, 1),
            ],
            ethertype::IPV4,
            20,
        );
        let e = Ethernet::new_checked(&three).unwrap();
        assert_eq!(
            e.inner(),
            Ok((ethertype::VLAN, 22)),
            "a third tag is left to the caller"
        );
    }

    #[test]
    fn truncated_tags() {
        let f = frame(&[(ethertype::VLAN, 1)], ethertype::IPV4, 0);
        for len in HEADER_LEN..f.len() {
            let e = Ethernet::new_checked(&f[..len]).unwrap();
            assert_eq!(e.tag().err(), Some(Truncated));
            assert_eq!(e.inner(), Err(Truncated));
        }
        let f = frame(
            &[(ethertype::QINQ, 1), (ethertype::VLAN, 2)],
            ethertype::IPV4,
            0,
        );
        let e = Ethernet::new_checked(&f[..f.len() - 1]).unwrap();
        assert!(e.tag().unwrap().is_some());
        assert_eq!(e.inner(), Err(Truncated));
    }
}
