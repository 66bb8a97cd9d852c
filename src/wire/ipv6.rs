//! IPv6 headers. [`Ipv6Packet::new_checked`] guarantees the fixed 40 bytes, so every field
//! accessor is total; the payload and the upper-layer header behind the extension headers come
//! from accessors that check the length fields first and say which one is wrong. Also the
//! pseudo-header checksum of ICMPv6, UDP and TCP over IPv6, and the EUI-64 link-local address.

use std::net::Ipv6Addr;

use super::mac::MacAddr;

/// The fixed header; extension headers follow it.
pub const HEADER_LEN: usize = 40;
pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_AUTH: u8 = 51;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;
/// Extension headers [`Ipv6Packet::upper_layer`] walks before it gives up: a real packet has
/// a few; a longer chain is an attempt to hide the upper layer (RFC 7112).
pub const MAX_EXT_HEADERS: usize = 8;
const FRAGMENT_LEN: usize = 8;

/// Which check an IPv6 header failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Error {
    /// Shorter than the fixed header.
    Truncated,
    /// The version field is not 6.
    Version,
    /// Payload length beyond the end of the buffer.
    PayloadLenBeyond,
    /// An extension header runs past the payload.
    ExtTruncated,
    /// A hop-by-hop header anywhere but first.
    HopByHopNotFirst,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    TooManyExtHeaders,
}

/// The header after the extension headers, as [`Ipv6Packet::upper_layer`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// Its protocol number (`NEXT_TCP`, `NEXT_ICMPV6`, ...; `NEXT_NONE` for none).
    pub protocol: u8,
    /// Its offset from the start of the IPv6 header.
    pub offset: usize,
    /// A fragment header was on the way.
    pub fragmented: bool,
    /// ... and its offset was not zero: the upper-layer header is in another fragment.
    pub later_fragment: bool,
}

/// A view of an IPv6 packet over `T` (`&[u8]`, or `&mut [u8]` for edits in place).
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buf: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr(b: &[u8; HEADER_LEN], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks only that the fixed header is there; the version is checked by
    /// [`Self::check_version`] and by every accessor of the payload.
    pub fn new_checked(buf: T) -> Result<Self, Ipv6Error> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(Ipv6Error::Truncated);
        }
        Ok(Ipv6Packet { buf })
    }

    fn fixed(&self) -> &[u8; HEADER_LEN] {
        match self.buf.as_ref().first_chunk::<HEADER_LEN>() {
            Some(h) => h,
            None => unreachable!("Ipv6Packet shorter than its fixed header"),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn version(&self) -> u8 {
        self.fixed()[0] >> 4
    }
    pub fn check_version(&self) -> Result<(), Ipv6Error> {
        if self.version() == 6 {
            Ok(())
        } else {
            Err(Ipv6Error::Version)
        }
    }
    pub fn traffic_class(&self) -> u8 {
        let b = self.fixed();
        (b[0] << 4) | (b[1] >> 4)
    }
    pub fn flow_label(&self) -> u32 {
        let b = self.fixed();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    /// The payload length field: extension headers and upper layer (not checked).
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.fixed(), 4))
    }
    pub fn next_header(&self) -> u8 {
        self.fixed()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.fixed()[7]
    }
    pub fn src(&self) -> Ipv6Addr {
        addr(self.fixed(), 8)
    }
    pub fn dst(&self) -> Ipv6Addr {
        addr(self.fixed(), 24)
    }
    /// Source and destination, as the pseudo-header and flow hashes read them.
    pub fn addr_bytes(&self) -> &[u8] {
        &self.fixed()[8..40]
    }

    /// Version 6 and a payload length within the buffer: the payload's range (bytes past it
    /// are Ethernet padding).
    pub fn payload_range(&self) -> Result<(usize, usize), Ipv6Error> {
        self.check_version()?;
        let end = HEADER_LEN + self.payload_len();
        if end > self.buf.as_ref().len() {
            return Err(Ipv6Error::PayloadLenBeyond);
        }
        Ok((HEADER_LEN, end))
    }

    /// Extension headers and upper layer, bounded by the payload length.
    pub fn payload(&self) -> Result<&[u8], Ipv6Error> {
        let (start, end) = self.payload_range()?;
        Ok(&self.buf.as_ref()[start..end])
    }

    /// Walk the hop-by-hop, routing, fragment, destination options and authentication headers
    /// to the upper layer. Every header must lie within the payload, hop-by-hop only first,
    /// at most [`MAX_EXT_HEADERS`] of them.
    pub fn upper_layer(&self) -> Result<UpperLayer, Ipv6Error> {
        let (_, end) = self.payload_range()?;
        let b = &self.buf.as_ref()[..end];
        let mut up = UpperLayer {
            protocol: self.next_header(),
            offset: HEADER_LEN,
            fragmented: false,
            later_fragment: false,
        };
        for n in 0..=MAX_EXT_HEADERS {
            let len = match up.protocol {
                NEXT_HOP_BY_HOP if n > 0 => return Err(Ipv6Error::HopByHopNotFirst),
                NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                    let hdr_len = b.get(up.offset + 1).ok_or(Ipv6Error::ExtTruncated)?;
                    (usize::from(*hdr_len) + 1) * 8
                }
                NEXT_AUTH => {
                    let hdr_len = b.get(up.offset + 1).ok_or(Ipv6Error::ExtTruncated)?;
                    (usize::from(*hdr_len) + 2) * 4
                }
                NEXT_FRAGMENT => FRAGMENT_LEN,
                _ => return Ok(up),
            };
            if n == MAX_EXT_HEADERS {
                break;
            }
            let header = b
                .get(up.offset..up.offset + len)
                .ok_or(Ipv6Error::ExtTruncated)?;
            if up.protocol == NEXT_FRAGMENT {
                up.fragmented = true;
                // Fragment offset: the high 13 bits of bytes 2..4.
                up.later_fragment |= be16(header, 2) & 0xfff8 != 0;
            }
            up.protocol = header[0];
            up.offset += len;
        }
        Err(Ipv6Error::TooManyExtHeaders)
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        self.buf.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buf.as_mut()[7] = hops;
    }
    /// The payload, bounded by the payload length, for edits in place.
    pub fn payload_mut(&mut self) -> Result<&mut [u8], Ipv6Error> {
        let (start, end) = self.payload_range()?;
        Ok(&mut self.buf.as_mut()[start..end])
    }
}

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte padded).
fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of an upper-layer message over IPv6 (ICMPv6, UDP, TCP: RFC 8200 8.1): the
/// pseudo-header of `src`, `dst`, the message's length and `next_header`, then `message`.
/// Computed with the checksum field zeroed it is the value to write (UDP writes 0xffff for 0);
/// over a message that carries a correct checksum it is 0.
pub fn checksum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, message: &[u8]) -> u16 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc += message.len() as u64;
    acc += u64::from(next_header);
    !fold(sum(acc, message))
}

/// The address SLAAC forms from a /64 `prefix` and a MAC: the prefix's upper 64 bits and the
/// MAC's EUI-64 interface identifier.
pub fn slaac_address(prefix: Ipv6Addr, mac: MacAddr) -> Ipv6Addr {
    let iid = u128::from(link_local_eui64(mac)) & u128::from(u64::MAX);
    Ipv6Addr::from((u128::from(prefix) & !u128::from(u64::MAX)) | iid)
}

/// The link-local address a kernel derives from `mac` with EUI-64 (`addr_gen_mode` 0):
/// fe80::/64, the MAC's universal/local bit flipped and ff:fe in the middle (RFC 4291 App. A).
pub fn link_local_eui64(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpNumber, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
    };

    const SRC: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 0xac, 0xff, 0xfe, 0x12, 0, 2,
    ];
    const DST: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn udp_packet(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv6(SRC, DST, 255)
            .udp(546, 547)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// `upper` (protocol, bytes) behind the extension headers `exts`, each `(kind, bytes)`.
    fn with_exts(exts: &[(u8, Vec<u8>)], upper: (u8, &[u8])) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (_, bytes)) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map_or(upper.0, |e| e.0);
            let mut h = bytes.clone();
            h[0] = next;
            body.extend_from_slice(&h);
        }
        body.extend_from_slice(upper.1);
        let first = exts.first().map_or(upper.0, |e| e.0);
        let h = Ipv6Header {
            traffic_class: 0xb8,
            flow_label: 0x12345.try_into().unwrap(),
            payload_length: body.len() as u16,
            next_header: IpNumber(first),
            hop_limit: 64,
            source: SRC,
            destination: DST,
        };
        let mut out = h.to_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn opts(kind: u8) -> (u8, Vec<u8>) {
        let raw = Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap();
        (kind, raw.to_bytes().to_vec())
    }

    fn fragment(offset: u16) -> (u8, Vec<u8>) {
        let f = Ipv6FragmentHeader::new(IpNumber(0), offset.try_into().unwrap(), true, 7);
        (NEXT_FRAGMENT, f.to_bytes().to_vec())
    }

    #[test]
    fn fields_match_etherparse() {
        let p = with_exts(&[], (NEXT_UDP, &[0; 12]));
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        let (e, _) = Ipv6Header::from_slice(&p).unwrap();
        assert_eq!(v.version(), 6);
        assert_eq!(v.traffic_class(), e.traffic_class);
        assert_eq!(v.flow_label(), e.flow_label.value());
        assert_eq!(v.payload_len(), usize::from(e.payload_length));
        assert_eq!(v.next_header(), e.next_header.0);
        assert_eq!(v.hop_limit(), e.hop_limit);
        assert_eq!(v.src().octets(), e.source);
        assert_eq!(v.dst().octets(), e.destination);
        assert_eq!(v.addr_bytes(), &p[8..40]);
        assert_eq!(v.payload_range(), Ok((40, 52)));
        let udp = udp_packet(b"hi");
        let v = Ipv6Packet::new_checked(&udp[..]).unwrap();
        assert_eq!(v.payload().unwrap().len(), 10);
    }

    #[test]
    fn extension_walk_matches_etherparse() {
        let chains = [
            vec![],
            vec![opts(NEXT_HOP_BY_HOP)],
            vec![opts(NEXT_HOP_BY_HOP), opts(NEXT_DEST_OPTS), fragment(0)],
            vec![opts(NEXT_ROUTING), fragment(0), opts(NEXT_DEST_OPTS)],
        ];
        for exts in &chains {
            let p = with_exts(exts, (NEXT_ICMPV6, &[134, 0, 0, 0]));
            let v = Ipv6Packet::new_checked(&p[..]).unwrap();
            let up = v.upper_layer().unwrap();
            let payload = &p[40..];
            let (e, next, rest) = Ipv6Extensions::from_slice(IpNumber(p[6]), payload).unwrap();
            assert_eq!(up.protocol, next.0);
            assert_eq!(up.offset, p.len() - rest.len());
            assert_eq!(up.fragmented, e.fragment.is_some());
            assert!(!up.later_fragment);
            assert_eq!(p[up.offset], 134);
        }
        let p = with_exts(&[fragment(1)], (NEXT_ICMPV6, &[0; 8]));
        let up = Ipv6Packet::new_checked(&p[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert!(up.fragmented && up.later_fragment);
        // Authentication header: (len + 2) * 4 bytes.
        let p = with_exts(
            &[(
                NEXT_AUTH,
                vec![
                    0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            )],
            (NEXT_UDP, &[0; 8]),
        );
        let up = Ipv6Packet::new_checked(&p[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!((up.protocol, up.offset), (NEXT_UDP, 64));
    }

    #[test]
    fn bad_chains_each_named() {
        let walk = |p: &[u8]| Ipv6Packet::new_checked(p).unwrap().upper_layer();
        let p = with_exts(
            &[opts(NEXT_DEST_OPTS), opts(NEXT_HOP_BY_HOP)],
            (NEXT_UDP, &[]),
        );
        assert_eq!(walk(&p), Err(Ipv6Error::HopByHopNotFirst));
        let many: Vec<_> = (0..=MAX_EXT_HEADERS)
            .map(|_| opts(NEXT_DEST_OPTS))
            .collect();
        let p = with_exts(&many, (NEXT_UDP, &[]));
        assert_eq!(walk(&p), Err(Ipv6Error::TooManyExtHeaders));
        let enough: Vec<_> = (0..MAX_EXT_HEADERS).map(|_| opts(NEXT_DEST_OPTS)).collect();
        assert!(walk(&with_exts(&enough, (NEXT_UDP, &[]))).is_ok());
        // The options header claims 16 bytes; 8 are there.
        let mut p = with_exts(&[opts(NEXT_DEST_OPTS)], (NEXT_UDP, &[]));
        p[41] = 1;
        assert_eq!(walk(&p), Err(Ipv6Error::ExtTruncated));
        // Bytes past the payload length do not count.
        let mut p = with_exts(&[opts(NEXT_DEST_OPTS)], (NEXT_UDP, &[]));
        p[5] = 4;
        assert_eq!(walk(&p), Err(Ipv6Error::ExtTruncated));
        p[5] = 0;
        assert_eq!(
            walk(&p),
            Err(Ipv6Error::ExtTruncated),
            "no room for the next-header byte"
        );
        let mut p = with_exts(&[], (NEXT_UDP, &[0; 8]));
        p[5] = 9;
        assert_eq!(walk(&p), Err(Ipv6Error::PayloadLenBeyond));
        assert!(
            Ipv6Header::from_slice(&p).is_ok() && etherparse::Ipv6Slice::from_slice(&p).is_err()
        );
        p[0] = 0x40;
        assert_eq!(walk(&p), Err(Ipv6Error::Version));
        for len in 0..HEADER_LEN {
            assert_eq!(
                Ipv6Packet::new_checked(&p[..len]).err(),
                Some(Ipv6Error::Truncated)
            );
        }
        // No next header: the walk ends there.
        let p = with_exts(&[opts(NEXT_DEST_OPTS)], (NEXT_NONE, &[]));
        assert_eq!(walk(&p).map(|u| u.protocol), Ok(NEXT_NONE));
    }

    #[test]
    fn checksum_matches_etherparse() {
        let p = udp_packet(b"solicit");
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        let udp = v.payload().unwrap();
        // A correct checksum sums to zero; with the field zeroed it is the field's value.
        assert_eq!(checksum(v.src(), v.dst(), NEXT_UDP, udp), 0);
        let mut zeroed = udp.to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(
            checksum(v.src(), v.dst(), NEXT_UDP, &zeroed).to_be_bytes(),
            [udp[6], udp[7]]
        );
        // ICMPv6 (odd length) against etherparse's.
        let mut out = Vec::new();
        PacketBuilder::ipv6(SRC, DST, 255)
            .icmpv6_echo_request(7, 1)
            .write(&mut out, b"abc")
            .unwrap();
        let v = Ipv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(
            checksum(v.src(), v.dst(), NEXT_ICMPV6, v.payload().unwrap()),
            0
        );
    }

    #[test]
    fn eui64_link_local() {
        let ll = link_local_eui64(MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x02]));
        assert_eq!(ll, "fe80::42:acff:fe12:2".parse::<Ipv6Addr>().unwrap());
        let ll = link_local_eui64(MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]));
        assert_eq!(ll, "fe80::5054:ff:feab:cdef".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn edits_in_place() {
        let mut p = udp_packet(b"abc");
        let mut v = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        v.set_payload_len(10);
        v.set_hop_limit(1);
        v.payload_mut().unwrap()[0] = 0xaa;
        assert_eq!((&p[4..6], p[7], p[40]), (&[0u8, 10][..], 1, 0xaa));
    }
}
