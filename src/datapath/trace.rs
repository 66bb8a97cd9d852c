//! Pure pieces of `tapnet trace`: the probe frame a trace imagines (for the gateway's
//! classifier), and a one-line summary of a real frame (for `--live`). Nothing here touches
//! the switch; `switch::peek` gives the decision without learning.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::wire::icmpv6::{Icmpv6, Ndp};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::ipv6::{NEXT_ICMPV6, NEXT_TCP, NEXT_UDP};
use crate::wire::{Ethernet, Ipv4Packet, Ipv6Packet, MacAddr, TcpSegment, UdpDatagram, ethertype};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "icmp" => Ok(Proto::Icmp),
            _ => Err(format!("unknown protocol {s:?} (known: tcp, udp, icmp)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// An Ethernet frame (no virtio-net header) such as the trace describes: IPv4 with a TCP SYN,
/// a UDP datagram or an ICMP echo request when addresses are known; an experimental-ethertype
/// frame otherwise.
pub fn probe_frame(
    (src, dst): (MacAddr, MacAddr),
    ips: Option<(Ipv4Addr, Ipv4Addr)>,
    proto: Proto,
    dport: u16,
) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    let Some((from, to)) = ips else {
        out.extend_from_slice(&dst.0);
        out.extend_from_slice(&src.0);
        out.extend_from_slice(&ethertype::EXPERIMENTAL.to_be_bytes());
        out.resize(60, 0);
        return out;
    };
    let ip = PacketBuilder::ethernet2(src.0, dst.0).ipv4(from.octets(), to.octets(), 64);
    let built = match proto {
        Proto::Tcp => ip.tcp(40000, dport, 1, 65535).syn().write(&mut out, &[]),
        Proto::Udp => ip.udp(40000, dport).write(&mut out, &[0u8; 8]),
        Proto::Icmp => ip.icmpv4_echo_request(1, 1).write(&mut out, &[0u8; 8]),
    };
    if built.is_err() {
        out.clear();
    }
    out
}

/// The IPv6 counterpart of [`probe_frame`]: a TCP SYN, a UDP datagram or an ICMPv6 echo
/// request from `from` to `to`.
pub fn probe_frame6(
    (src, dst): (MacAddr, MacAddr),
    (from, to): (Ipv6Addr, Ipv6Addr),
    proto: Proto,
    dport: u16,
) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let mut out = Vec::new();
    let ip = PacketBuilder::ethernet2(src.0, dst.0).ipv6(from.octets(), to.octets(), 64);
    let built = match proto {
        Proto::Tcp => ip.tcp(40000, dport, 1, 65535).syn().write(&mut out, &[]),
        Proto::Udp => ip.udp(40000, dport).write(&mut out, &[0u8; 8]),
        Proto::Icmp => ip.icmpv6_echo_request(1, 1).write(&mut out, &[0u8; 8]),
    };
    if built.is_err() {
        out.clear();
    }
    out
}

/// What `trace --live` shows of a real frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameSummary {
    pub src: String,
    pub dst: String,
    pub ethertype: u16,
    pub proto: Option<String>,
    pub src_ip: Option<Ipv4Addr>,
    pub dst_ip: Option<Ipv4Addr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub len: usize,
    /// IPv6 source and destination (`src_ip` and `dst_ip` are IPv4's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip6: Option<Ipv6Addr>,
    /// What an ICMPv6 message is: `neighbor-advertisement fe80::1`, `echo-request`, `type 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp6: Option<String>,
}

/// Summarise an Ethernet frame (untrusted bytes from a sandbox; fuzzed). Short or odd frames
/// give what could be read.
pub fn summarize(eth: &[u8]) -> FrameSummary {
    let mut s = FrameSummary {
        len: eth.len(),
        ..Default::default()
    };
    let Ok(frame) = Ethernet::new_checked(eth) else {
        return s;
    };
    s.dst = frame.dst().to_string();
    s.src = frame.src().to_string();
    s.ethertype = frame.ethertype();
    match s.ethertype {
        ethertype::ARP => s.proto = Some("arp".into()),
        ethertype::IPV6 => summarize_ipv6(frame.payload(), &mut s),
        ethertype::IPV4 => {
            let Ok(ip) = Ipv4Packet::new_checked(frame.payload()) else {
                return s;
            };
            if ip.check_version().is_err() {
                return s;
            }
            s.src_ip = Some(ip.src());
            s.dst_ip = Some(ip.dst());
            let l4 = ip.rest().unwrap_or(&[]);
            let (name, ports) = match ip.protocol() {
                PROTO_ICMP => ("icmp", None),
                PROTO_TCP => (
                    "tcp",
                    TcpSegment::new_checked(l4)
                        .ok()
                        .map(|t| (t.src_port(), t.dst_port())),
                ),
                PROTO_UDP => (
                    "udp",
                    UdpDatagram::new_checked(l4)
                        .ok()
                        .map(|u| (u.src_port(), u.dst_port())),
                ),
                _ => ("ip", None),
            };
            s.proto = Some(name.into());
            s.sport = ports.map(|p| p.0);
            s.dport = ports.map(|p| p.1);
        }
        _ => {}
    }
    s
}

/// The IPv6 part of [`summarize`]: addresses, the upper layer behind the extension headers,
/// ports, and what an ICMPv6 message is.
fn summarize_ipv6(l3: &[u8], s: &mut FrameSummary) {
    s.proto = Some("ipv6".into());
    let Ok(ip) = Ipv6Packet::new_checked(l3) else {
        return;
    };
    if ip.check_version().is_err() {
        return;
    }
    s.src_ip6 = Some(ip.src());
    s.dst_ip6 = Some(ip.dst());
    let Ok(up) = ip.upper_layer() else {
        return;
    };
    let l4 = l3.get(up.offset..).unwrap_or(&[]);
    if up.later_fragment {
        return;
    }
    match up.protocol {
        NEXT_TCP => {
            s.proto = Some("tcp".into());
            if let Ok(t) = TcpSegment::new_checked(l4) {
                (s.sport, s.dport) = (Some(t.src_port()), Some(t.dst_port()));
            }
        }
        NEXT_UDP => {
            s.proto = Some("udp".into());
            if let Ok(u) = UdpDatagram::new_checked(l4) {
                (s.sport, s.dport) = (Some(u.src_port()), Some(u.dst_port()));
            }
        }
        NEXT_ICMPV6 => {
            s.proto = Some("icmpv6".into());
            if let Ok(icmp) = Icmpv6::new_checked(l4) {
                s.icmp6 = Some(icmpv6_kind(&icmp));
            }
        }
        _ => {}
    }
}

fn icmpv6_kind(icmp: &Icmpv6<'_>) -> String {
    use crate::wire::icmpv6::{
        TYPE_ECHO_REPLY, TYPE_ECHO_REQUEST, TYPE_MLD_DONE, TYPE_MLD_QUERY, TYPE_MLD_REPORT,
        TYPE_MLDV2_REPORT,
    };
    match Ndp::parse(icmp) {
        Ok(Some(Ndp::RouterSolicitation { .. })) => "router-solicitation".into(),
        Ok(Some(Ndp::RouterAdvertisement { .. })) => "router-advertisement".into(),
        Ok(Some(Ndp::NeighborSolicitation { target, .. })) => {
            format!("neighbor-solicitation {target}")
        }
        Ok(Some(Ndp::NeighborAdvertisement { target, .. })) => {
            format!("neighbor-advertisement {target}")
        }
        Ok(Some(Ndp::Redirect { target, .. })) => format!("redirect via {target}"),
        Err(_) => format!("malformed type {}", icmp.msg_type()),
        Ok(None) => match icmp.msg_type() {
            TYPE_ECHO_REQUEST => "echo-request".into(),
            TYPE_ECHO_REPLY => "echo-reply".into(),
            TYPE_MLD_QUERY => "mld-query".into(),
            TYPE_MLD_REPORT | TYPE_MLDV2_REPORT => "mld-report".into(),
            TYPE_MLD_DONE => "mld-done".into(),
            t => format!("type {t}"),
        },
    }
}

impl FrameSummary {
    /// `02:42:.. > 02:42:.. tcp 10.0.0.2:40000 > 10.0.0.3:80 (74 bytes)`.
    pub fn line(&self) -> String {
        let addr = |ip: Option<Ipv4Addr>, port: Option<u16>| match (ip, port) {
            (Some(ip), Some(p)) => format!("{ip}:{p}"),
            (Some(ip), None) => ip.to_string(),
            _ => String::new(),
        };
        let addr6 = |ip: Ipv6Addr, port: Option<u16>| match port {
            Some(p) => format!("[{ip}]:{p}"),
            None => ip.to_string(),
        };
        let l3 = match (self.src_ip, self.dst_ip, self.src_ip6, self.dst_ip6) {
            (Some(_), Some(_), _, _) => format!(
                " {} > {}",
                addr(self.src_ip, self.sport),
                addr(self.dst_ip, self.dport)
            ),
            (_, _, Some(src), Some(dst)) => {
                format!(" {} > {}", addr6(src, self.sport), addr6(dst, self.dport))
            }
            _ => String::new(),
        };
        let l3 = match &self.icmp6 {
            Some(kind) => format!("{l3} {kind}"),
            None => l3,
        };
        let proto = self
            .proto
            .clone()
            .unwrap_or_else(|| format!("ethertype 0x{:04x}", self.ethertype));
        format!(
            "{} > {} {proto}{l3} ({} bytes)",
            self.src, self.dst, self.len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 2]);
    const B: MacAddr = MacAddr([2, 0x42, 10, 0, 0, 3]);

    #[test]
    fn probe_frames_summarize_back() {
        let ips = Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)));
        let tcp = summarize(&probe_frame((A, B), ips, Proto::Tcp, 80));
        assert_eq!(tcp.proto.as_deref(), Some("tcp"));
        assert_eq!(tcp.dport, Some(80));
        assert_eq!(tcp.src, A.to_string());
        assert_eq!(
            tcp.line(),
            "02:42:0a:00:00:02 > 02:42:0a:00:00:03 tcp 10.0.0.2:40000 > 10.0.0.3:80 (54 bytes)"
        );
        let icmp = summarize(&probe_frame((A, B), ips, Proto::Icmp, 0));
        assert_eq!(icmp.proto.as_deref(), Some("icmp"));
        assert_eq!(icmp.dport, None);
        let raw = summarize(&probe_frame((A, B), None, Proto::Udp, 53));
        assert_eq!(raw.ethertype, 0x88b5);
        assert!(raw.line().contains("ethertype 0x88b5"));
    }

    #[test]
    fn ipv6_probe_frames_summarize_back() {
        let ips: (Ipv6Addr, Ipv6Addr) = (
            "fd00:42::2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        let tcp = summarize(&probe_frame6((A, B), ips, Proto::Tcp, 443));
        assert_eq!(
            (tcp.proto.as_deref(), tcp.dport, tcp.dst_ip6),
            (Some("tcp"), Some(443), Some(ips.1))
        );
        let udp = summarize(&probe_frame6((A, B), ips, Proto::Udp, 53));
        assert_eq!((udp.proto.as_deref(), udp.dport), (Some("udp"), Some(53)));
        let icmp = summarize(&probe_frame6((A, B), ips, Proto::Icmp, 0));
        assert_eq!(icmp.icmp6.as_deref(), Some("echo-request"));
        assert_eq!(
            icmp.line(),
            "02:42:0a:00:00:02 > 02:42:0a:00:00:03 icmpv6 fd00:42::2 > 2001:db8::1 echo-request \
             (70 bytes)"
        );
    }

    #[test]
    fn ipv6_and_ndp_are_summarized() {
        use etherparse::{Icmpv6Type, PacketBuilder, icmpv6::NeighborAdvertisementHeader};
        let src: [u8; 16] = "fe80::42:aff:fe00:2".parse::<Ipv6Addr>().unwrap().octets();
        let dst: [u8; 16] = "ff02::1".parse::<Ipv6Addr>().unwrap().octets();
        let mut na = Vec::new();
        let body = [src, [0; 16]].concat();
        PacketBuilder::ethernet2(A.0, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(src, dst, 255)
            .icmpv6(Icmpv6Type::NeighborAdvertisement(
                NeighborAdvertisementHeader::from_bytes([0x20, 0, 0, 0]),
            ))
            .write(&mut na, &body[..16])
            .unwrap();
        let s = summarize(&na);
        assert_eq!(s.proto.as_deref(), Some("icmpv6"));
        assert_eq!(
            s.line(),
            "02:42:0a:00:00:02 > 33:33:00:00:00:01 icmpv6 fe80::42:aff:fe00:2 > ff02::1 \
             neighbor-advertisement fe80::42:aff:fe00:2 (78 bytes)"
        );
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(A.0, B.0)
            .ipv6(src, dst, 64)
            .udp(547, 546)
            .write(&mut udp, b"x")
            .unwrap();
        let s = summarize(&udp);
        assert_eq!(
            (s.proto.as_deref(), s.sport, s.dport),
            (Some("udp"), Some(547), Some(546))
        );
        assert!(
            s.line()
                .contains("[fe80::42:aff:fe00:2]:547 > [ff02::1]:546"),
            "{}",
            s.line()
        );
        // An IPv4 summary's JSON has no IPv6 keys: old readers see what they saw.
        let v4 =
            serde_json::to_value(summarize(&probe_frame((A, B), None, Proto::Udp, 53))).unwrap();
        assert!(v4.get("src_ip6").is_none() && v4.get("icmp6").is_none());
    }

    #[test]
    fn summarize_survives_any_bytes() {
        let mut rng = crate::test_rng::XorShift(0x1234_5678);
        let base = probe_frame(
            (A, B),
            Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3))),
            Proto::Udp,
            53,
        );
        // An NS from :: behind a hop-by-hop header, as a DAD probe with MLD's router alert.
        let mut v6 = vec![0x33, 0x33, 0xff, 0, 0, 2];
        v6.extend_from_slice(&A.0);
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 0, 255]);
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2]);
        v6.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
        v6.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        v6.extend_from_slice(&[
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 10, 0xff, 0xfe, 0, 0, 2,
        ]);
        assert!(
            summarize(&v6)
                .line()
                .contains("neighbor-solicitation fe80::42:aff:fe00:2")
        );
        for i in 0..10_000 {
            let mut f = if i % 2 == 0 { base.clone() } else { v6.clone() };
            f.truncate(rng.below(f.len() + 1));
            if !f.is_empty() {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
            let _ = summarize(&f).line();
        }
        assert_eq!(summarize(&[]).len, 0);
        assert_eq!(Proto::parse("TCP"), Ok(Proto::Tcp));
        assert!(Proto::parse("sctp").is_err());
    }
}
