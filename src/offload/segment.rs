//! Software GSO: split a TCP (TSO) or UDP (USO) super-frame from a TAP into wire-size frames with
//! complete checksums, as Linux's `tcp_gso_segment`/`__udp_gso_segment` would, for consumers that
//! cannot take super-frames. Header offsets come from parsing the headers, never from `hdr_len`,
//! which the kernel fills with `skb_headlen` and is only a hint.

use super::OffloadError;
use super::checksum::{checksum, complete_checksum, fold, sum};
use crate::wire::ethernet::VLAN_TAG_LEN;
use crate::wire::ipv4::{Ipv4Error, PROTO_TCP as IPPROTO_TCP, PROTO_UDP as IPPROTO_UDP};
use crate::wire::ipv6::HEADER_LEN as IPV6_HDR;
use crate::wire::tcp::{
    CHECKSUM_OFFSET as TCP_CSUM_OFFSET, FLAG_CWR as TCP_CWR, FLAG_FIN as TCP_FIN,
    FLAG_PSH as TCP_PSH, TcpError,
};
use crate::wire::udp::{CHECKSUM_OFFSET as UDP_CSUM_OFFSET, HEADER_LEN as UDP_HDR};
use crate::wire::vnet::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
};
use crate::wire::{
    ETH_HDR_LEN, Ethernet, Ipv4Packet, Ipv6Packet, TcpSegment, UdpDatagram, VNET_HDR_LEN,
    VirtioNetHdr, VlanTag, ethertype,
};

/// Largest buffer [`Segmenter::segment`] emits: virtio-net header, Ethernet header, one VLAN tag
/// and the largest IP packet a 16-bit length field can describe.
pub const MAX_SEGMENT_LEN: usize = VNET_HDR_LEN + ETH_HDR_LEN + VLAN_TAG_LEN + 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ip {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn protocol(self) -> u8 {
        match self {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        }
    }
    fn csum_offset(self) -> usize {
        match self {
            Transport::Tcp => TCP_CSUM_OFFSET,
            Transport::Udp => UDP_CSUM_OFFSET,
        }
    }
}

/// Where the headers of a super-frame are, as offsets into the Ethernet frame.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ip: Ip,
    transport: Transport,
    l3: usize,
    l4: usize,
    payload: usize,
    /// End of the IP packet; anything after it (Ethernet padding) is dropped.
    end: usize,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Splits GSO super-frames. Owns the one buffer every segment is built in, so segmenting
/// allocates nothing; keep one per datapath thread.
pub struct Segmenter {
    scratch: Box<[u8]>,
}

impl Default for Segmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Segmenter {
    pub fn new() -> Self {
        Segmenter {
            scratch: vec![0u8; MAX_SEGMENT_LEN].into_boxed_slice(),
        }
    }

    /// Split `buf` (12-byte virtio-net header + Ethernet frame, as read from a TAP) into frames
    /// of at most `gso_size` bytes of payload each and call `emit` once per frame, in order.
    /// Every emitted buffer starts with an all-zero virtio-net header (no flags, GSO none) and
    /// carries complete IP and L4 checksums, so it can be written to a TAP as is or stripped of
    /// its first [`VNET_HDR_LEN`] bytes. A frame that is not GSO is emitted once, with a
    /// `NEEDS_CSUM` checksum completed. Returns the number of frames emitted. Everything is
    /// checked before the first `emit`, so an error means nothing was emitted. Bytes after the
    /// IP packet (Ethernet padding) are dropped from GSO frames; their checksums are computed
    /// from scratch whether or not `NEEDS_CSUM` is set.
    pub fn segment(
        &mut self,
        buf: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        if buf.len() < VNET_HDR_LEN + ETH_HDR_LEN {
            return Err(OffloadError::Runt);
        }
        let (vnet, frame) = buf.split_at(VNET_HDR_LEN);
        let hdr = VirtioNetHdr::parse(vnet).ok_or(OffloadError::Runt)?;
        if !hdr.is_gso() {
            return self.pass_through(buf, &hdr, emit);
        }
        let layout = parse_layout(frame, &hdr)?;
        self.split(frame, usize::from(hdr.gso_size), &layout, emit)
    }

    fn pass_through(
        &mut self,
        buf: &[u8],
        hdr: &VirtioNetHdr,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        if buf.len() > MAX_SEGMENT_LEN {
            return Err(OffloadError::TooLong(buf.len()));
        }
        // Already what we would produce: skip the copy.
        if buf[..VNET_HDR_LEN].iter().all(|&b| b == 0) {
            emit(buf);
            return Ok(1);
        }
        let out = &mut self.scratch[..buf.len()];
        out[..VNET_HDR_LEN].fill(0);
        out[VNET_HDR_LEN..].copy_from_slice(&buf[VNET_HDR_LEN..]);
        complete_checksum(&mut out[VNET_HDR_LEN..], hdr)?;
        emit(out);
        Ok(1)
    }

    fn split(
        &mut self,
        frame: &[u8],
        mss: usize,
        layout: &Layout,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let hdrs = layout.payload;
        let payload = &frame[hdrs..layout.end];
        let largest = VNET_HDR_LEN + hdrs + payload.len().min(mss);
        if largest > MAX_SEGMENT_LEN {
            return Err(OffloadError::TooLong(largest));
        }

        let out = &mut *self.scratch;
        out[..VNET_HDR_LEN].fill(0);
        out[VNET_HDR_LEN..VNET_HDR_LEN + hdrs].copy_from_slice(&frame[..hdrs]);
        let l3 = VNET_HDR_LEN + layout.l3;
        let l4 = VNET_HDR_LEN + layout.l4;
        let data = VNET_HDR_LEN + hdrs;
        let l4_hdr_len = layout.payload - layout.l4;
        let ip_hdr_len = layout.l4 - layout.l3;
        let csum_field = l4 + layout.transport.csum_offset();

        // What stays the same in every segment: the addresses in the pseudo-header, the original
        // IPv4 identification, TCP sequence number and flags.
        let addr_sum = match layout.ip {
            Ip::V4 => sum(0, &frame[layout.l3 + 12..layout.l3 + 20]),
            Ip::V6 => sum(0, &frame[layout.l3 + 8..layout.l3 + IPV6_HDR]),
        } + u64::from(layout.transport.protocol());
        // `parse_layout` checked both headers: the views cannot be refused here.
        let ip_id =
            Ipv4Packet::new_checked(&frame[layout.l3..layout.l4]).map_or(0, |ip| ip.ident());
        let (seq, tcp_flags) = match layout.transport {
            Transport::Tcp => TcpSegment::new_checked(&frame[layout.l4..layout.payload])
                .map_or((0, 0), |t| (t.seq(), t.flags())),
            Transport::Udp => (0, 0),
        };

        let count = payload.len().div_ceil(mss).max(1);
        for i in 0..count {
            let start = i * mss;
            let chunk = &payload[start..(start + mss).min(payload.len())];
            let seg_end = data + chunk.len();
            out[data..seg_end].copy_from_slice(chunk);
            // Both fit 16 bits: a segment is never longer than the packet it was cut from.
            let l4_len = l4_hdr_len + chunk.len();

            match layout.ip {
                Ip::V4 => {
                    if let Ok(mut ip) = Ipv4Packet::new_checked(&mut out[l3..l4]) {
                        ip.set_total_len((ip_hdr_len + l4_len) as u16);
                        ip.set_ident(ip_id.wrapping_add(i as u16));
                        ip.set_checksum(0);
                        let c = checksum(ip.as_bytes());
                        ip.set_checksum(c);
                    }
                }
                Ip::V6 => put16(out, l3 + 4, l4_len as u16),
            }
            match layout.transport {
                Transport::Tcp => {
                    let mut flags = tcp_flags;
                    if i + 1 < count {
                        flags &= !(TCP_FIN | TCP_PSH);
                    }
                    if i > 0 {
                        flags &= !TCP_CWR;
                    }
                    if let Ok(mut tcp) = TcpSegment::new_checked(&mut out[l4..seg_end]) {
                        tcp.set_seq(seq.wrapping_add(start as u32));
                        tcp.set_flags(flags);
                    }
                }
                Transport::Udp => {
                    if let Ok(mut udp) = UdpDatagram::new_checked(&mut out[l4..seg_end]) {
                        udp.set_len_field(l4_len as u16);
                    }
                }
            }
            put16(out, csum_field, 0);
            let mut c = !fold(addr_sum + l4_len as u64 + sum(0, &out[l4..seg_end]));
            if c == 0 && layout.transport == Transport::Udp {
                c = 0xffff; // zero means "no checksum" in UDP
            }
            put16(out, csum_field, c);
            emit(&out[..seg_end]);
        }
        Ok(count)
    }
}

/// Find and check the headers of a GSO super-frame (`frame` without the virtio-net header).
fn parse_layout(frame: &[u8], hdr: &VirtioNetHdr) -> Result<Layout, OffloadError> {
    let (want_ip, transport) = match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_TCPV4 => (Some(Ip::V4), Transport::Tcp),
        VIRTIO_NET_HDR_GSO_TCPV6 => (Some(Ip::V6), Transport::Tcp),
        VIRTIO_NET_HDR_GSO_UDP_L4 => (None, Transport::Udp),
        VIRTIO_NET_HDR_GSO_UDP => {
            return Err(OffloadError::Unsupported(
                "UFO (GSO_UDP), which needs IP fragmentation",
            ));
        }
        _ => return Err(OffloadError::UnknownGsoType(hdr.gso_type)),
    };
    if hdr.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    if usize::from(hdr.hdr_len) > frame.len() {
        return Err(OffloadError::BadLength(
            "hdr_len beyond the end of the frame",
        ));
    }

    let (ethertype, l3) = link_layer(frame)?;
    let ip = match ethertype {
        ethertype::IPV4 => Ip::V4,
        ethertype::IPV6 => Ip::V6,
        ethertype::VLAN | ethertype::QINQ => {
            return Err(OffloadError::Unsupported("stacked VLAN tags"));
        }
        _ => {
            return Err(OffloadError::Unsupported(
                "GSO frame that is neither IPv4 nor IPv6",
            ));
        }
    };
    if want_ip.is_some_and(|w| w != ip) {
        return Err(OffloadError::Malformed(
            "GSO type does not match the IP version",
        ));
    }
    let (l4, end, protocol) = match ip {
        Ip::V4 => ipv4(frame, l3)?,
        Ip::V6 => ipv6(frame, l3)?,
    };
    if protocol != transport.protocol() {
        return Err(if ip == Ip::V6 && is_ipv6_extension(protocol) {
            OffloadError::Unsupported("IPv6 extension headers")
        } else {
            OffloadError::Malformed("IP protocol does not match the GSO type")
        });
    }
    let segment = &frame[l4..end];
    let l4_hdr_len = match transport {
        Transport::Tcp => TcpSegment::new_checked(segment)
            .and_then(|tcp| tcp.checked_header_len())
            .map_err(|e| match e {
                TcpError::Truncated => OffloadError::Truncated("TCP"),
                TcpError::DataOffset => OffloadError::Malformed("TCP data offset below 5"),
                TcpError::OptionsTruncated => OffloadError::Truncated("TCP options"),
            })?,
        Transport::Udp => {
            UdpDatagram::new_checked(segment).map_err(|_| OffloadError::Truncated("UDP"))?;
            UDP_HDR
        }
    };
    // The kernel points NEEDS_CSUM at the L4 checksum of a GSO frame; anything else means we
    // misread the frame or it was forged.
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
        && (usize::from(hdr.csum_start) != l4
            || usize::from(hdr.csum_offset) != transport.csum_offset())
    {
        return Err(OffloadError::BadChecksumOffsets {
            start: hdr.csum_start,
            offset: hdr.csum_offset,
            len: frame.len(),
        });
    }
    Ok(Layout {
        ip,
        transport,
        l3,
        l4,
        payload: l4 + l4_hdr_len,
        end,
    })
}

/// Ethertype of the payload and where it starts, past at most one 802.1Q tag.
fn link_layer(frame: &[u8]) -> Result<(u16, usize), OffloadError> {
    let eth = Ethernet::new_checked(frame).map_err(|_| OffloadError::Runt)?;
    if eth.ethertype() != ethertype::VLAN {
        return Ok((eth.ethertype(), ETH_HDR_LEN));
    }
    let tag = VlanTag::new_checked(eth.payload()).map_err(|_| OffloadError::Truncated("802.1Q"))?;
    Ok((tag.ethertype(), ETH_HDR_LEN + VLAN_TAG_LEN))
}

/// (L4 offset, end of packet, protocol) of the IPv4 packet at `l3`.
fn ipv4(frame: &[u8], l3: usize) -> Result<(usize, usize, u8), OffloadError> {
    let ip = Ipv4Packet::new_checked(&frame[l3..]).map_err(ipv4_error)?;
    let (start, end) = ip.payload_range().map_err(ipv4_error)?;
    if ip.is_fragment() {
        return Err(OffloadError::Unsupported("GSO of an IPv4 fragment"));
    }
    Ok((l3 + start, l3 + end, ip.protocol()))
}

fn ipv4_error(e: Ipv4Error) -> OffloadError {
    match e {
        Ipv4Error::Truncated => OffloadError::Truncated("IPv4"),
        Ipv4Error::Version => OffloadError::Malformed("IPv4 version field"),
        Ipv4Error::HeaderLen => OffloadError::Malformed("IPv4 IHL below 5"),
        Ipv4Error::OptionsTruncated => OffloadError::Truncated("IPv4 options"),
        Ipv4Error::TotalLenShort => {
            OffloadError::BadLength("IPv4 total length shorter than its header")
        }
        Ipv4Error::TotalLenBeyond => {
            OffloadError::BadLength("IPv4 total length beyond the end of the frame")
        }
    }
}

/// (L4 offset, end of packet, next header) of the IPv6 packet at `l3`.
fn ipv6(frame: &[u8], l3: usize) -> Result<(usize, usize, u8), OffloadError> {
    let ip = Ipv6Packet::new_checked(&frame[l3..]).map_err(|_| OffloadError::Truncated("IPv6"))?;
    ip.check_version()
        .map_err(|_| OffloadError::Malformed("IPv6 version field"))?;
    if ip.payload_len() == 0 {
        return Err(OffloadError::Unsupported(
            "IPv6 jumbogram (payload length 0)",
        ));
    }
    let (start, end) = ip
        .payload_range()
        .map_err(|_| OffloadError::BadLength("IPv6 payload length beyond the end of the frame"))?;
    Ok((l3 + start, l3 + end, ip.next_header()))
}

/// Next-header values that are IPv6 extension headers rather than a transport.
fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

/// The body of the `segment` fuzz target, shared with the unit tests that run it on stable:
/// any bytes through segmentation and checksum completion, checking what comes out.
#[doc(hidden)]
pub fn check_arbitrary_frame(seg: &mut Segmenter, data: &[u8]) {
    let _ = seg.segment(data, &mut |s| {
        assert!(s.len() >= VNET_HDR_LEN + ETH_HDR_LEN);
        assert!(s.len() <= MAX_SEGMENT_LEN);
        assert!(s[..VNET_HDR_LEN].iter().all(|&b| b == 0));
    });
    if let Some(hdr) = VirtioNetHdr::parse(data) {
        let mut frame = data[VNET_HDR_LEN..].to_vec();
        let _ = super::checksum::complete_checksum(&mut frame, &hdr);
        assert_eq!(frame.len(), data.len() - VNET_HDR_LEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet::VIRTIO_NET_HDR_GSO_NONE;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Header, Ipv6Header, NetHeaders, PacketBuilder, PacketHeaders,
        TcpHeader, TcpOptionElement, TransportHeader,
    };

    const SRC4: [u8; 4] = [172, 18, 0, 2];
    const DST4: [u8; 4] = [172, 18, 0, 3];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
    const SEQ: u32 = 0xffff_f000; // wraps within the first super-frame
    const IP_ID: u16 = 0xfff0; // wraps too

    /// What a super-frame looks like; the defaults are a kernel TSO frame with timestamps.
    #[derive(Clone, Copy)]
    struct Spec {
        v6: bool,
        udp: bool,
        vlan: bool,
        ip_options: bool,
        payload: usize,
        gso_size: u16,
        fin: bool,
        psh: bool,
        cwr: bool,
        ecn: bool,
    }

    const TCP4: Spec = Spec {
        v6: false,
        udp: false,
        vlan: false,
        ip_options: false,
        payload: 64000,
        gso_size: 1448,
        fin: true,
        psh: true,
        cwr: true,
        ecn: false,
    };

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn tcp_header(spec: &Spec) -> TcpHeader {
        let mut tcp = TcpHeader::new(40000, 5201, SEQ, 502);
        tcp.ack = true;
        tcp.acknowledgment_number = 0x1234_5678;
        tcp.fin = spec.fin;
        tcp.psh = spec.psh;
        tcp.cwr = spec.cwr;
        tcp.ece = spec.ecn;
        tcp.set_options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(111, 222),
        ])
        .unwrap();
        tcp
    }

    /// Build the super-frame as the kernel hands it to us: virtio-net header with NEEDS_CSUM
    /// pointing at the L4 checksum, which holds only the (unfolded-complement) pseudo-header sum.
    fn super_frame(spec: &Spec, payload: &[u8]) -> Vec<u8> {
        let ip = if spec.v6 {
            IpHeaders::Ipv6(
                Ipv6Header {
                    hop_limit: 64,
                    source: SRC6,
                    destination: DST6,
                    ..Default::default()
                },
                Default::default(),
            )
        } else {
            let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, SRC4, DST4).unwrap();
            h.identification = IP_ID;
            h.dont_fragment = true;
            if spec.ip_options {
                h.options = [1u8, 1, 1, 1, 1, 1, 1, 0].into();
            }
            IpHeaders::Ipv4(h, Default::default())
        };
        let builder = PacketBuilder::ethernet2([2, 0x42, 0, 0, 0, 2], [2, 0x42, 0, 0, 0, 3]).ip(ip);
        let mut f = vec![0u8; VNET_HDR_LEN];
        if spec.udp {
            builder.udp(4000, 5000).write(&mut f, payload).unwrap();
        } else {
            builder
                .tcp_header(tcp_header(spec))
                .write(&mut f, payload)
                .unwrap();
        }
        if spec.vlan {
            f.splice(
                VNET_HDR_LEN + 12..VNET_HDR_LEN + 12,
                [0x81, 0x00, 0x20, 0x64],
            );
        }
        let l2 = ETH_HDR_LEN + if spec.vlan { VLAN_TAG_LEN } else { 0 };
        let ip_len = if spec.v6 {
            40
        } else if spec.ip_options {
            28
        } else {
            20
        };
        let l4 = l2 + ip_len;
        let eth_len = f.len() - VNET_HDR_LEN;
        let l4_len = (eth_len - l4) as u32;
        let (proto, csum_offset, l4_hdr) = if spec.udp { (17, 6, 8) } else { (6, 16, 32) };
        let pseudo = if spec.v6 {
            super::super::checksum::pseudo_header_v6(&SRC6, &DST6, proto, l4_len)
        } else {
            super::super::checksum::pseudo_header_v4(SRC4, DST4, proto, l4_len as u16)
        };
        let field = VNET_HDR_LEN + l4 + csum_offset;
        put16(&mut f, field, fold(pseudo));
        let gso = match (spec.udp, spec.v6) {
            (true, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            (false, false) => VIRTIO_NET_HDR_GSO_TCPV4,
            (false, true) => VIRTIO_NET_HDR_GSO_TCPV6,
        };
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: gso | if spec.ecn { VIRTIO_NET_HDR_GSO_ECN } else { 0 },
            hdr_len: (l4 + l4_hdr) as u16,
            gso_size: spec.gso_size,
            csum_start: l4 as u16,
            csum_offset: csum_offset as u16,
        }
        .write(&mut f);
        f
    }

    fn run(seg: &mut Segmenter, buf: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut out = Vec::new();
        let n = seg.segment(buf, &mut |s| out.push(s.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// Check every segment with etherparse's own parser and checksum code, and return the
    /// concatenated payloads.
    fn check_segments(spec: &Spec, segments: &[Vec<u8>]) -> Vec<u8> {
        let mss = usize::from(spec.gso_size);
        let expected = spec.payload.div_ceil(mss).max(1);
        assert_eq!(segments.len(), expected, "segment count");
        let mut data = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == segments.len();
            assert!(seg.len() <= MAX_SEGMENT_LEN);
            assert_eq!(
                &seg[..VNET_HDR_LEN],
                &[0u8; VNET_HDR_LEN],
                "clean vnet header"
            );
            let eth = &seg[VNET_HDR_LEN..];
            let p = PacketHeaders::from_ethernet_slice(eth).unwrap();
            assert_eq!(p.vlan().is_some(), spec.vlan);
            let l2 = ETH_HDR_LEN + if spec.vlan { VLAN_TAG_LEN } else { 0 };
            let payload = p.payload.slice();
            if last {
                assert!(payload.len() <= mss);
                assert_eq!(payload.len(), spec.payload - i * mss);
            } else {
                assert_eq!(payload.len(), mss);
            }
            let ip = p.net.unwrap();
            match &ip {
                NetHeaders::Ipv4(h, _) => {
                    assert!(!spec.v6);
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 csum");
                    assert_eq!(usize::from(h.total_len), eth.len() - l2);
                    assert_eq!(h.identification, IP_ID.wrapping_add(i as u16));
                    assert!(h.dont_fragment);
                    assert_eq!(h.options.len(), if spec.ip_options { 8 } else { 0 });
                }
                NetHeaders::Ipv6(h, _) => {
                    assert!(spec.v6);
                    assert_eq!(usize::from(h.payload_length), eth.len() - l2 - 40);
                }
                NetHeaders::Arp(_) => panic!("ARP"),
            }
            match p.transport.unwrap() {
                TransportHeader::Tcp(t) => {
                    assert!(!spec.udp);
                    let want = match &ip {
                        NetHeaders::Ipv4(h, _) => t.calc_checksum_ipv4(h, payload).unwrap(),
                        NetHeaders::Ipv6(h, _) => t.calc_checksum_ipv6(h, payload).unwrap(),
                        NetHeaders::Arp(_) => unreachable!(),
                    };
                    assert_eq!(t.checksum, want, "TCP checksum of segment {i}");
                    assert_eq!(t.sequence_number, SEQ.wrapping_add((i * mss) as u32));
                    assert_eq!(t.acknowledgment_number, 0x1234_5678);
                    assert!(t.ack);
                    assert_eq!(t.fin, spec.fin && last, "FIN on segment {i}");
                    assert_eq!(t.psh, spec.psh && last, "PSH on segment {i}");
                    assert_eq!(t.cwr, spec.cwr && first, "CWR on segment {i}");
                    assert_eq!(t.ece, spec.ecn);
                    assert_eq!(t.options, tcp_header(spec).options);
                }
                TransportHeader::Udp(u) => {
                    assert!(spec.udp);
                    assert_eq!(usize::from(u.length), 8 + payload.len());
                    let want = match &ip {
                        NetHeaders::Ipv4(h, _) => u.calc_checksum_ipv4(h, payload).unwrap(),
                        NetHeaders::Ipv6(h, _) => u.calc_checksum_ipv6(h, payload).unwrap(),
                        NetHeaders::Arp(_) => unreachable!(),
                    };
                    assert_eq!(u.checksum, want, "UDP checksum of segment {i}");
                    assert_eq!((u.source_port, u.destination_port), (4000, 5000));
                }
                other => panic!("unexpected transport {other:?}"),
            }
            data.extend_from_slice(payload);
        }
        data
    }

    fn round_trip(spec: Spec) {
        let payload = pattern(spec.payload);
        let buf = super_frame(&spec, &payload);
        let segments = run(&mut Segmenter::new(), &buf).unwrap();
        assert_eq!(check_segments(&spec, &segments), payload);
    }

    #[test]
    fn tcpv4_super_frame() {
        round_trip(TCP4);
    }

    #[test]
    fn tcpv4_with_ip_options_and_vlan() {
        round_trip(Spec {
            ip_options: true,
            vlan: true,
            ..TCP4
        });
    }

    #[test]
    fn tcpv4_without_fin_psh_cwr_keeps_them_clear() {
        round_trip(Spec {
            fin: false,
            psh: false,
            cwr: false,
            ..TCP4
        });
    }

    #[test]
    fn tcpv4_ecn_bit_in_gso_type() {
        round_trip(Spec { ecn: true, ..TCP4 });
    }

    #[test]
    fn tcpv6_super_frame() {
        round_trip(Spec { v6: true, ..TCP4 });
    }

    #[test]
    fn tcpv6_with_vlan_and_ecn() {
        round_trip(Spec {
            v6: true,
            vlan: true,
            ecn: true,
            gso_size: 1428,
            ..TCP4
        });
    }

    #[test]
    fn udpv4_uso_super_frame() {
        round_trip(Spec {
            udp: true,
            gso_size: 1472,
            ..TCP4
        });
    }

    #[test]
    fn udpv6_uso_super_frame_with_vlan() {
        round_trip(Spec {
            udp: true,
            v6: true,
            vlan: true,
            gso_size: 1452,
            payload: 63_001,
            ..TCP4
        });
    }

    #[test]
    fn segment_boundaries() {
        for (payload, gso_size) in [
            (64000, 1000),
            (1448, 1448),
            (1000, 1448),
            (1449, 1448),
            (0, 1448),
            (7, 1),
            (3, 65535),
        ] {
            for udp in [false, true] {
                round_trip(Spec {
                    payload,
                    gso_size,
                    udp,
                    ..TCP4
                });
            }
        }
    }

    #[test]
    fn udp_zero_checksum_is_sent_as_ffff() {
        // Search payloads until one segment's checksum computes to zero.
        let spec = Spec {
            udp: true,
            payload: 2,
            gso_size: 2,
            ..TCP4
        };
        let mut seg = Segmenter::new();
        for x in 0..=u16::MAX {
            let buf = super_frame(&spec, &x.to_be_bytes());
            let out = run(&mut seg, &buf).unwrap();
            let l4 = VNET_HDR_LEN + ETH_HDR_LEN + 20;
            let c = u16::from_be_bytes([out[0][l4 + 6], out[0][l4 + 7]]);
            assert_ne!(c, 0);
            if c == 0xffff {
                check_segments(&spec, &out);
                return;
            }
        }
        panic!("no payload gave a zero checksum");
    }

    #[test]
    fn non_gso_frame_passes_through_with_checksum_completed() {
        let spec = Spec {
            payload: 1000,
            gso_size: 1448,
            ..TCP4
        };
        let mut buf = super_frame(&spec, &pattern(1000));
        buf[1] = VIRTIO_NET_HDR_GSO_NONE;
        buf[4] = 0;
        buf[5] = 0;
        let out = run(&mut Segmenter::new(), &buf).unwrap();
        assert_eq!(out.len(), 1);
        check_segments(&spec, &out);
        // The completed frame equals the input but for the header and the checksum field.
        let field = VNET_HDR_LEN + ETH_HDR_LEN + 20 + 16;
        assert_eq!(out[0][VNET_HDR_LEN..field], buf[VNET_HDR_LEN..field]);
        assert_eq!(out[0][field + 2..], buf[field + 2..]);
    }

    #[test]
    fn clean_non_gso_frame_is_emitted_without_copy() {
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(&[0xff; 6]);
        buf.extend_from_slice(&[2, 0x42, 0, 0, 0, 2, 0x08, 0x06]);
        buf.resize(VNET_HDR_LEN + 42, 0);
        let mut seen = None;
        let n = Segmenter::new()
            .segment(&buf, &mut |s| seen = Some((s.as_ptr(), s.len())))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(seen, Some((buf.as_ptr(), buf.len())));
    }

    fn expect_err(buf: &[u8], want: OffloadError) {
        let mut emitted = 0;
        let got = Segmenter::new().segment(buf, &mut |_| emitted += 1);
        assert_eq!(got, Err(want));
        assert_eq!(emitted, 0, "nothing emitted on error");
        assert!(!want.to_string().is_empty());
    }

    fn small(spec: Spec) -> Vec<u8> {
        super_frame(
            &Spec {
                payload: 3000,
                ..spec
            },
            &pattern(3000),
        )
    }

    #[test]
    fn rejects_bad_gso_headers() {
        let good = small(TCP4);
        let mut b = good.clone();
        b[1] = VIRTIO_NET_HDR_GSO_UDP;
        assert!(matches!(
            Segmenter::new().segment(&b, &mut |_| {}),
            Err(OffloadError::Unsupported(_))
        ));
        b[1] = 9;
        expect_err(&b, OffloadError::UnknownGsoType(9));
        b[1] = 0x82;
        expect_err(&b, OffloadError::UnknownGsoType(0x82));
        let mut b = good.clone();
        b[4] = 0;
        b[5] = 0;
        expect_err(&b, OffloadError::ZeroGsoSize);
        let mut b = good.clone();
        b[2..4].copy_from_slice(&((good.len() - VNET_HDR_LEN + 1) as u16).to_le_bytes());
        expect_err(
            &b,
            OffloadError::BadLength("hdr_len beyond the end of the frame"),
        );
        // csum_start not at the TCP header, csum_offset not at its checksum.
        let mut b = good.clone();
        b[6] = 35;
        assert!(matches!(
            Segmenter::new().segment(&b, &mut |_| {}),
            Err(OffloadError::BadChecksumOffsets { start: 35, .. })
        ));
        let mut b = good.clone();
        b[8] = 6;
        assert!(matches!(
            Segmenter::new().segment(&b, &mut |_| {}),
            Err(OffloadError::BadChecksumOffsets { offset: 6, .. })
        ));
        // TCPV6 on an IPv4 packet, TCPV4 on UDP.
        let mut b = good.clone();
        b[1] = VIRTIO_NET_HDR_GSO_TCPV6;
        expect_err(
            &b,
            OffloadError::Malformed("GSO type does not match the IP version"),
        );
        let udp = small(Spec { udp: true, ..TCP4 });
        let mut b = udp.clone();
        b[1] = VIRTIO_NET_HDR_GSO_TCPV4;
        expect_err(
            &b,
            OffloadError::Malformed("IP protocol does not match the GSO type"),
        );
    }

    #[test]
    fn rejects_bad_ip_and_l4_headers() {
        let good = small(TCP4);
        let ip = VNET_HDR_LEN + ETH_HDR_LEN;
        let tcp = ip + 20;
        let cases: [(usize, u8, OffloadError); 6] = [
            (ip, 0x44, OffloadError::Malformed("IPv4 IHL below 5")),
            (ip, 0x65, OffloadError::Malformed("IPv4 version field")),
            (
                ip + 2,
                0xff,
                OffloadError::BadLength("IPv4 total length beyond the end of the frame"),
            ),
            (
                ip + 6,
                0x60,
                OffloadError::Unsupported("GSO of an IPv4 fragment"),
            ),
            (
                tcp + 12,
                0x40,
                OffloadError::Malformed("TCP data offset below 5"),
            ),
            (
                ip - 2,
                0x86,
                OffloadError::Unsupported("GSO frame that is neither IPv4 nor IPv6"),
            ),
        ];
        for (at, value, want) in cases {
            let mut b = good.clone();
            b[at] = value;
            expect_err(&b, want);
        }
        // Total length shorter than the header.
        let mut b = good.clone();
        b[ip + 2] = 0;
        b[ip + 3] = 19;
        expect_err(
            &b,
            OffloadError::BadLength("IPv4 total length shorter than its header"),
        );
        // Total length covering only part of the TCP header.
        b[ip + 3] = 30;
        expect_err(&b, OffloadError::Truncated("TCP"));
        // TCP options running past the end of the packet.
        b[ip + 3] = 50;
        expect_err(&b, OffloadError::Truncated("TCP options"));
        // IPv4 options running past the end of the frame.
        let mut b = good[..ip + 30].to_vec();
        b[ip] = 0x4f;
        b[2] = 0;
        b[3] = 0;
        expect_err(&b, OffloadError::Truncated("IPv4 options"));
        // Stacked VLAN tags.
        let mut b = small(Spec { vlan: true, ..TCP4 });
        b[VNET_HDR_LEN + 16] = 0x81;
        b[VNET_HDR_LEN + 17] = 0x00;
        expect_err(&b, OffloadError::Unsupported("stacked VLAN tags"));
        // IPv6: an extension header, a jumbogram, a payload length past the end.
        let v6 = small(Spec { v6: true, ..TCP4 });
        let mut b = v6.clone();
        b[ip + 6] = 0; // hop-by-hop options
        expect_err(&b, OffloadError::Unsupported("IPv6 extension headers"));
        let mut b = v6.clone();
        b[ip + 4] = 0;
        b[ip + 5] = 0;
        expect_err(
            &b,
            OffloadError::Unsupported("IPv6 jumbogram (payload length 0)"),
        );
        let mut b = v6.clone();
        b[ip + 4] = 0xff;
        expect_err(
            &b,
            OffloadError::BadLength("IPv6 payload length beyond the end of the frame"),
        );
        let mut b = v6;
        b[ip] = 0x45;
        expect_err(&b, OffloadError::Malformed("IPv6 version field"));
    }

    #[test]
    fn rejects_every_truncation_of_the_headers() {
        for spec in [
            TCP4,
            Spec {
                v6: true,
                vlan: true,
                ..TCP4
            },
            Spec { udp: true, ..TCP4 },
        ] {
            let good = small(spec);
            let hdrs = usize::from(VirtioNetHdr::parse(&good).unwrap().hdr_len);
            for len in 0..VNET_HDR_LEN + hdrs {
                let mut b = good[..len].to_vec();
                if len >= VNET_HDR_LEN {
                    b[2] = 0; // keep hdr_len from being the first complaint
                    b[3] = 0;
                }
                assert!(
                    Segmenter::new()
                        .segment(&b, &mut |_| panic!("emitted"))
                        .is_err(),
                    "length {len}"
                );
            }
            // Cutting into the payload leaves the IP length pointing past the end.
            let cut = &good[..good.len() - 1];
            assert!(matches!(
                Segmenter::new().segment(cut, &mut |_| {}),
                Err(OffloadError::BadLength(_))
            ));
        }
        expect_err(&[0u8; VNET_HDR_LEN + 13], OffloadError::Runt);
    }

    #[test]
    fn trailing_ethernet_padding_is_dropped() {
        let spec = Spec {
            payload: 3000,
            ..TCP4
        };
        let payload = pattern(3000);
        let mut b = super_frame(&spec, &payload);
        b.extend_from_slice(&[0xee; 6]);
        let out = run(&mut Segmenter::new(), &b).unwrap();
        assert_eq!(check_segments(&spec, &out), payload);
    }

    #[test]
    fn rejects_ipv6_segments_larger_than_64k() {
        let spec = Spec {
            v6: true,
            udp: true,
            payload: 65535 - 8,
            gso_size: 65535,
            ..TCP4
        };
        let b = super_frame(&spec, &pattern(spec.payload));
        expect_err(
            &b,
            OffloadError::TooLong(VNET_HDR_LEN + ETH_HDR_LEN + 40 + 65535),
        );
        // The same packet cut in two fits.
        let b = super_frame(
            &Spec {
                gso_size: 40000,
                ..spec
            },
            &pattern(spec.payload),
        );
        assert_eq!(run(&mut Segmenter::new(), &b).unwrap().len(), 2);
    }

    #[test]
    fn one_segmenter_is_reused_across_frames() {
        let mut seg = Segmenter::new();
        for spec in [
            TCP4,
            Spec {
                v6: true,
                vlan: true,
                ..TCP4
            },
            Spec { udp: true, ..TCP4 },
            TCP4,
        ] {
            let payload = pattern(spec.payload);
            let out = run(&mut seg, &super_frame(&spec, &payload)).unwrap();
            assert_eq!(check_segments(&spec, &out), payload);
        }
    }

    use crate::test_rng::XorShift as Rng;

    fn fuzz_one(seg: &mut Segmenter, data: &[u8]) {
        check_arbitrary_frame(seg, data);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seg = Segmenter::new();
        for _ in 0..4000 {
            let len = rng.below(300);
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Make half of them look like GSO frames so parsing gets past the first checks.
            if len > 40 && rng.next() & 1 == 0 {
                data[1] = [1, 3, 4, 5, 0x81, 0][rng.below(6)];
                data[4] = 1 + rng.below(200) as u8;
                data[5] = 0;
                data[2] = 0;
                data[3] = 0;
                data[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14]
                    .copy_from_slice(&[[0x08, 0x00], [0x86, 0xdd], [0x81, 0x00]][rng.below(3)]);
            }
            fuzz_one(&mut seg, &data);
        }
    }

    #[test]
    fn mutated_super_frames_never_panic() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut seg = Segmenter::new();
        let specs = [
            TCP4,
            Spec {
                v6: true,
                vlan: true,
                ..TCP4
            },
            Spec { udp: true, ..TCP4 },
            Spec {
                udp: true,
                v6: true,
                ip_options: true,
                ..TCP4
            },
            Spec {
                ip_options: true,
                vlan: true,
                ..TCP4
            },
        ];
        let bases: Vec<Vec<u8>> = specs
            .iter()
            .map(|s| {
                super_frame(
                    &Spec {
                        payload: 600,
                        gso_size: 100,
                        ..*s
                    },
                    &pattern(600),
                )
            })
            .collect();
        for _ in 0..4000 {
            let mut data = bases[rng.below(bases.len())].clone();
            for _ in 0..1 + rng.below(4) {
                // Mostly the headers, where the parser looks.
                let at = rng.below(VNET_HDR_LEN + 80).min(data.len() - 1);
                data[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                data.truncate(rng.below(data.len() + 1));
            }
            fuzz_one(&mut seg, &data);
        }
    }
}
