//! IPv4 headers. [`Ipv4Packet::new_checked`] guarantees the fixed 20 bytes, so every field
//! accessor is total; the variable parts (options, payload) come from accessors that check the
//! length fields first and say which one is wrong.

use std::net::Ipv4Addr;

/// The fixed header, without options.
pub const MIN_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Which check an IPv4 header failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Shorter than the fixed header.
    Truncated,
    /// The version field is not 4.
    Version,
    /// IHL below 5.
    HeaderLen,
    /// The options run past the end of the buffer.
    OptionsTruncated,
    /// Total length shorter than the header.
    TotalLenShort,
    /// Total length beyond the end of the buffer.
    TotalLenBeyond,
}

/// A view of an IPv4 packet over `T` (`&[u8]`, or `&mut [u8]` for edits in place).
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buf: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks only that the fixed header is there; the version is the caller's to check
    /// ([`Self::check_version`]), as some readers (a flow hash) take any.
    pub fn new_checked(buf: T) -> Result<Self, Ipv4Error> {
        if buf.as_ref().len() < MIN_HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    fn fixed(&self) -> &[u8; MIN_HEADER_LEN] {
        let b = self.buf.as_ref();
        // The constructor checked the length: this split cannot fail.
        match b.first_chunk::<MIN_HEADER_LEN>() {
            Some(h) => h,
            None => unreachable!("Ipv4Packet shorter than its fixed header"),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn version(&self) -> u8 {
        self.fixed()[0] >> 4
    }
    pub fn check_version(&self) -> Result<(), Ipv4Error> {
        if self.version() == 4 {
            Ok(())
        } else {
            Err(Ipv4Error::Version)
        }
    }
    /// IHL in bytes, as the header says (not checked).
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[0] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.fixed(), 2))
    }
    pub fn ident(&self) -> u16 {
        be16(self.fixed(), 4)
    }
    /// Flags and fragment offset.
    pub fn frag_field(&self) -> u16 {
        be16(self.fixed(), 6)
    }
    /// More fragments follow or this is not the first: either way a fragment.
    pub fn is_fragment(&self) -> bool {
        self.frag_field() & 0x3fff != 0
    }
    /// The first fragment (or an unfragmented packet): the one that holds the L4 header.
    pub fn is_first_fragment(&self) -> bool {
        self.frag_field() & 0x1fff == 0
    }
    pub fn ttl(&self) -> u8 {
        self.fixed()[8]
    }
    pub fn protocol(&self) -> u8 {
        self.fixed()[9]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.fixed(), 10)
    }
    pub fn src_bytes(&self) -> [u8; 4] {
        let b = self.fixed();
        [b[12], b[13], b[14], b[15]]
    }
    pub fn dst_bytes(&self) -> [u8; 4] {
        let b = self.fixed();
        [b[16], b[17], b[18], b[19]]
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }
    /// Source and destination, as the pseudo-header and flow hashes read them.
    pub fn addr_bytes(&self) -> &[u8] {
        &self.fixed()[12..20]
    }

    /// Version 4 with a header (options included) that fits the buffer: its length.
    pub fn checked_header_len(&self) -> Result<usize, Ipv4Error> {
        self.check_version()?;
        let ihl = self.header_len();
        if ihl < MIN_HEADER_LEN {
            return Err(Ipv4Error::HeaderLen);
        }
        if ihl > self.buf.as_ref().len() {
            return Err(Ipv4Error::OptionsTruncated);
        }
        Ok(ihl)
    }

    /// [`Self::checked_header_len`], and a total length between the header's and the buffer's:
    /// the range of the L4 payload in the buffer (bytes past the total length are padding).
    pub fn payload_range(&self) -> Result<(usize, usize), Ipv4Error> {
        let ihl = self.checked_header_len()?;
        let total = self.total_len();
        if total < ihl {
            return Err(Ipv4Error::TotalLenShort);
        }
        if total > self.buf.as_ref().len() {
            return Err(Ipv4Error::TotalLenBeyond);
        }
        Ok((ihl, total))
    }

    /// Everything after the header, padding included, not bounded by the total length.
    pub fn rest(&self) -> Result<&[u8], Ipv4Error> {
        let ihl = self.checked_header_len()?;
        Ok(&self.buf.as_ref()[ihl..])
    }

    /// The L4 payload, bounded by the total length.
    pub fn payload(&self) -> Result<&[u8], Ipv4Error> {
        let (start, end) = self.payload_range()?;
        Ok(&self.buf.as_ref()[start..end])
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn fixed_mut(&mut self) -> &mut [u8; MIN_HEADER_LEN] {
        match self.buf.as_mut().first_chunk_mut::<MIN_HEADER_LEN>() {
            Some(h) => h,
            None => unreachable!("Ipv4Packet shorter than its fixed header"),
        }
    }
    pub fn set_total_len(&mut self, len: u16) {
        self.fixed_mut()[2..4].copy_from_slice(&len.to_be_bytes());
    }
    pub fn set_ident(&mut self, id: u16) {
        self.fixed_mut()[4..6].copy_from_slice(&id.to_be_bytes());
    }
    pub fn set_checksum(&mut self, c: u16) {
        self.fixed_mut()[10..12].copy_from_slice(&c.to_be_bytes());
    }
    /// The header with options (for checksumming), when [`Self::checked_header_len`] passes.
    pub fn header_mut(&mut self) -> Result<&mut [u8], Ipv4Error> {
        let ihl = self.checked_header_len()?;
        Ok(&mut self.buf.as_mut()[..ihl])
    }
    /// The L4 payload, bounded by the total length, for edits in place.
    pub fn payload_mut(&mut self) -> Result<&mut [u8], Ipv4Error> {
        let (start, end) = self.payload_range()?;
        Ok(&mut self.buf.as_mut()[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ipv4HeaderSlice, PacketBuilder};

    fn udp_packet(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 2], [192, 0, 2, 9], 64)
            .udp(5353, 53)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn fields_match_etherparse() {
        let p = udp_packet(b"hello");
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        let e = Ipv4HeaderSlice::from_slice(&p).unwrap();
        assert_eq!(v.version(), 4);
        assert_eq!(v.header_len(), usize::from(e.ihl()) * 4);
        assert_eq!(v.total_len(), usize::from(e.total_len()));
        assert_eq!(v.ident(), e.identification());
        assert_eq!(v.ttl(), e.ttl());
        assert_eq!(v.protocol(), e.protocol().0);
        assert_eq!(v.checksum(), e.header_checksum());
        assert_eq!((v.src(), v.dst()), (e.source_addr(), e.destination_addr()));
        assert_eq!(v.addr_bytes(), &p[12..20]);
        assert!(!v.is_fragment() && v.is_first_fragment());
        assert_eq!(v.payload_range(), Ok((20, 33)));
        assert_eq!(v.payload().unwrap().len(), 13);
    }

    #[test]
    fn truncated_fixed_header() {
        let p = udp_packet(b"");
        for len in 0..MIN_HEADER_LEN {
            assert_eq!(
                Ipv4Packet::new_checked(&p[..len]).err(),
                Some(Ipv4Error::Truncated)
            );
        }
    }

    #[test]
    fn bad_lengths_each_named() {
        let base = udp_packet(b"hello");
        let check = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut p = base.clone();
            edit(&mut p);
            Ipv4Packet::new_checked(p).unwrap().payload_range()
        };
        assert_eq!(check(&|p| p[0] = 0x65), Err(Ipv4Error::Version));
        assert_eq!(check(&|p| p[0] = 0x44), Err(Ipv4Error::HeaderLen));
        assert_eq!(check(&|p| p[0] = 0x4f), Err(Ipv4Error::OptionsTruncated));
        assert_eq!(
            check(&|p| p[2..4].copy_from_slice(&[0, 19])),
            Err(Ipv4Error::TotalLenShort)
        );
        assert_eq!(
            check(&|p| p[2..4].copy_from_slice(&[0, 34])),
            Err(Ipv4Error::TotalLenBeyond)
        );
        // Ethernet padding after the packet is not payload.
        assert_eq!(check(&|p| p.extend_from_slice(&[0; 6])), Ok((20, 33)));
        // `rest` does not look at the total length.
        let mut p = base.clone();
        p[2..4].copy_from_slice(&[0xff, 0xff]);
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.rest().unwrap().len(), 13);
        assert_eq!(v.payload().err(), Some(Ipv4Error::TotalLenBeyond));
        // Etherparse refuses what we refuse.
        for edit in [0x65u8, 0x44] {
            let mut p = base.clone();
            p[0] = edit;
            assert!(Ipv4HeaderSlice::from_slice(&p).is_err());
        }
    }

    #[test]
    fn fragments() {
        let mut p = udp_packet(b"x");
        p[6] = 0x20; // more fragments
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(v.is_fragment() && v.is_first_fragment());
        p[7] = 1;
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(v.is_fragment() && !v.is_first_fragment());
        p[6] = 0x40; // don't fragment only
        p[7] = 0;
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(!v.is_fragment());
    }

    #[test]
    fn edits_in_place() {
        let mut p = udp_packet(b"hello");
        let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        v.set_total_len(30);
        v.set_ident(0xbeef);
        v.set_checksum(0x1234);
        v.payload_mut().unwrap()[0] = 0xaa;
        assert_eq!(v.header_mut().unwrap().len(), 20);
        assert_eq!(&p[2..6], &[0, 30, 0xbe, 0xef]);
        assert_eq!(&p[10..12], &[0x12, 0x34]);
        assert_eq!(p[20], 0xaa);
    }
}
