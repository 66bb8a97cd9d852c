//! Pure pieces of `tapnet trace`: the probe frame a trace imagines (for the gateway's
//! classifier), and a one-line summary of a real frame (for `--live`). Nothing here touches
//! the switch; `switch::peek` gives the decision without learning.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::{Ethernet, Ipv4Packet, MacAddr, TcpSegment, UdpDatagram, ethertype};

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
        ethertype::IPV6 => s.proto = Some("ipv6".into()),
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

impl FrameSummary {
    /// `02:42:.. > 02:42:.. tcp 10.0.0.2:40000 > 10.0.0.3:80 (74 bytes)`.
    pub fn line(&self) -> String {
        let addr = |ip: Option<Ipv4Addr>, port: Option<u16>| match (ip, port) {
            (Some(ip), Some(p)) => format!("{ip}:{p}"),
            (Some(ip), None) => ip.to_string(),
            _ => String::new(),
        };
        let l3 = match (self.src_ip, self.dst_ip) {
            (Some(_), Some(_)) => format!(
                " {} > {}",
                addr(self.src_ip, self.sport),
                addr(self.dst_ip, self.dport)
            ),
            _ => String::new(),
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
    fn summarize_survives_any_bytes() {
        let mut rng = crate::test_rng::XorShift(0x1234_5678);
        let base = probe_frame(
            (A, B),
            Some((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3))),
            Proto::Udp,
            53,
        );
        for _ in 0..5000 {
            let mut f = base.clone();
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
