//! A userspace VTEP: one UDP address (the daemon's `--vtep`, or a network's `--opt vtep=`)
//! serving every overlay network bound to it, told apart by VNI. For the switch, each network's
//! VTEP is a port like the gateway: one end of a SOCK_SEQPACKET socketpair, with frames that
//! carry a virtio-net header. The encapsulation and decapsulation run in the datapath workers
//! themselves, not in a thread of the VTEP's:
//!
//! - Out (switch to wire): the worker that switched a frame to the VTEP port sends it
//!   (`Port::send` -> `OverlayNet::send`, `overlay_tx.rs`) through the VTEP's sending sockets,
//!   the UDP source port chosen by the inner flow's hash.
//! - In (wire to switch): every worker has a socket of its own on the address, the sockets an
//!   `SO_REUSEPORT` group, so the kernel hands each flow (by the sender's source port) to one
//!   worker, which decapsulates and switches it as a frame from the VTEP port
//!   (`overlay_rx.rs`).
//! - The socketpair carries only the answers to ARP and neighbour solicitations for remote
//!   addresses (below) back into the switch.
//!
//! Each network's peers and remote stations are a table the workers share
//! (`overlay_net.rs`), behind a read-write lock that is written only when a station is new,
//! moves or is refreshed.
//!
//! With a cluster store (`daemon --store`), the controller also hands each network the VTEPs of
//! the other hosts' endpoints (added to the static peers) and their MACs (a table of its own that
//! never ages and is looked up first), so frames to them go straight to their VTEP without a
//! flood; ARP requests and Neighbour Solicitations for their addresses are answered here, as
//! libnetwork's overlay does for ARP, and never cross the underlay.
//!
//! Either family on either side: the VTEP's address (and so its sockets and peers) may be IPv4
//! or IPv6, and the frames it carries IPv4 or IPv6. Neighbour Discovery's multicast (solicited-
//! node addresses) is flooded to the peers like ARP's broadcast; unicast replies are learned.
//!
//! The network's gateway is local on every host (an anycast gateway: same address and MAC on
//! each): frames from its MAC neither leave nor enter through the VTEP.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use super::Datapath;
use super::fdb::PortId;
use super::overlay_net::OverlayNet;
use super::overlay_rx::VtepRxShared;
use super::overlay_tx::VtepTx;
use crate::error::{Context, Result};
use crate::offload::checksum::{fold, pseudo_header_v6, sum as checksum_sum};
use crate::wire::{ArpPacket, ETH_HDR_LEN, Ethernet, MacAddr, arp, ethertype};

/// Socket buffers of the VTEP's UDP sockets.
const SOCKET_BUF: usize = 8 << 20;
/// Sockets that send, each on its own ephemeral port: the flow hash picks one.
const TX_SOCKETS: usize = 32;

/// Counters of one VTEP, relaxed atomics read by `network inspect`.
#[derive(Default, Debug)]
pub struct VtepStats {
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Runts and frames `frame::parse` refuses.
    pub rx_malformed: AtomicU64,
    /// Flags other than the I flag alone.
    pub rx_bad_flags: AtomicU64,
    /// A VNI no network of this VTEP has.
    pub rx_foreign_vni: AtomicU64,
    /// From an address that is no peer of the network.
    pub rx_unknown_peer: AtomicU64,
    /// Super-frames the segmenter refused, and sends the kernel refused.
    pub tx_dropped: AtomicU64,
    /// Received frames the switch port had no room for.
    pub rx_dropped: AtomicU64,
    /// ARP requests for remote addresses the cluster store knows, answered locally.
    pub arp_answered: AtomicU64,
    /// Neighbour Solicitations for remote IPv6 addresses the cluster store knows, answered
    /// locally.
    pub nd_answered: AtomicU64,
}

/// One remote station as `network inspect` shows it.
#[derive(Clone, Debug)]
pub struct RemoteRow {
    pub mac: MacAddr,
    pub vtep: SocketAddr,
    pub age_s: u64,
}

/// What the cluster store knows of a network's other hosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// VTEPs of the other hosts' endpoints: peers beside the static ones.
    pub peers: Vec<SocketAddr>,
    /// The other hosts' endpoints' MACs against their VTEPs.
    pub stations: HashMap<MacAddr, SocketAddr>,
    /// Their addresses' MACs: ARP for these is answered locally.
    pub addresses: HashMap<std::net::Ipv4Addr, MacAddr>,
    /// Their IPv6 addresses' MACs: Neighbour Solicitations for these are answered locally.
    pub addresses6: HashMap<Ipv6Addr, MacAddr>,
}

/// The ARP reply for `frame` (an Ethernet frame) when it is an ARP request for an address of
/// `table`; None for anything else (gratuitous ARP included).
pub fn proxy_arp(frame: &[u8], table: &HashMap<std::net::Ipv4Addr, MacAddr>) -> Option<[u8; 42]> {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() != ethertype::ARP {
        return None;
    }
    let req = ArpPacket::new_checked(eth.payload()).ok()?;
    if !req.is_request() || req.sender_ip() == req.target_ip() {
        return None;
    }
    let mac = *table.get(&req.target_ip())?;
    let mut r = [0u8; ETH_HDR_LEN + arp::PACKET_LEN];
    r[0..6].copy_from_slice(&req.sender_mac().0);
    r[6..12].copy_from_slice(&mac.0);
    r[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    r[ETH_HDR_LEN..].copy_from_slice(&arp::packet(
        arp::OP_REPLY,
        (mac, req.target_ip()),
        (req.sender_mac(), req.sender_ip()),
    ));
    Some(r)
}

/// Length of a Neighbour Advertisement with the target link-layer address option, framed.
pub const NA_FRAME_LEN: usize = ETH_HDR_LEN + IPV6_HDR_LEN + NA_LEN;
const IPV6_HDR_LEN: usize = 40;
/// ICMPv6 type, code, checksum, flags, target, and the 8-byte option.
const NA_LEN: usize = 4 + 4 + 16 + 8;
const PROTO_ICMPV6: u8 = 58;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;
/// Solicited and Override (RFC 4861 section 4.4); never Router: the answer is for a host.
const NA_SOLICITED_OVERRIDE: u8 = 0x60;
const OPT_TARGET_LL: u8 = 2;

/// The Neighbour Advertisement for `frame` (an Ethernet frame) when it is a Neighbour
/// Solicitation for an address of `table`, as the remote station would send it; None for
/// anything else. Checked as RFC 4861 section 7.1.1 asks (hop limit 255, code 0, a target
/// that is no multicast address) but the checksum: a bad one gets an answer the asker drops.
/// Duplicate address detection (from the unspecified address) is not answered: it is flooded
/// to the host that holds the address, which answers for itself.
pub fn proxy_ndp(frame: &[u8], table: &HashMap<Ipv6Addr, MacAddr>) -> Option<[u8; NA_FRAME_LEN]> {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() != ethertype::IPV6 {
        return None;
    }
    let ip = eth.payload();
    let icmp = ip.get(IPV6_HDR_LEN..)?;
    let payload_len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
    if ip[0] >> 4 != 6
        || ip[6] != PROTO_ICMPV6
        || ip[7] != 255
        || payload_len < 24
        || payload_len > icmp.len()
        || icmp[0] != NEIGHBOR_SOLICIT
        || icmp[1] != 0
    {
        return None;
    }
    let octets = |b: &[u8]| -> Option<[u8; 16]> { b.try_into().ok() };
    let asker = Ipv6Addr::from(octets(&ip[8..24])?);
    let target = Ipv6Addr::from(octets(&icmp[8..24])?);
    if asker.is_unspecified() || target.is_multicast() {
        return None;
    }
    let mac = *table.get(&target)?;
    let mut r = [0u8; NA_FRAME_LEN];
    r[0..6].copy_from_slice(&eth.src().0);
    r[6..12].copy_from_slice(&mac.0);
    r[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
    let v6 = &mut r[ETH_HDR_LEN..];
    v6[0] = 0x60;
    v6[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    v6[6] = PROTO_ICMPV6;
    v6[7] = 255;
    v6[8..24].copy_from_slice(&target.octets());
    v6[24..40].copy_from_slice(&asker.octets());
    let na = &mut v6[IPV6_HDR_LEN..];
    na[0] = NEIGHBOR_ADVERT;
    na[4] = NA_SOLICITED_OVERRIDE;
    na[8..24].copy_from_slice(&target.octets());
    na[24] = OPT_TARGET_LL;
    na[25] = 1;
    na[26..32].copy_from_slice(&mac.0);
    let pseudo = pseudo_header_v6(
        &target.octets(),
        &asker.octets(),
        PROTO_ICMPV6,
        NA_LEN as u32,
    );
    let sum = !fold(checksum_sum(pseudo, na));
    na[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(r)
}

/// The body of the `vtep_proxy` fuzz target, here so unit tests run it too: any frame a
/// sandbox may send is answered or not by the proxies, never a panic, and an answer goes to
/// the asker from the station asked for. The tables hold whatever address the frame asks for.
pub fn check_arbitrary_frame(frame: &[u8]) {
    let station = MacAddr([2, 0, 0, 0, 0, 0x99]);
    let mut v4 = HashMap::new();
    if let Some(t) = frame.get(38..42).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        v4.insert(std::net::Ipv4Addr::from(t), station);
    }
    if let Some(r) = proxy_arp(frame, &v4) {
        assert_eq!(&r[0..6], &frame[6..12]);
        assert_eq!(&r[6..12], &station.0);
    }
    let mut v6 = HashMap::new();
    if let Some(t) = frame.get(62..78).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        v6.insert(Ipv6Addr::from(t), station);
    }
    if let Some(r) = proxy_ndp(frame, &v6) {
        assert_eq!(&r[0..6], &frame[6..12]);
        assert_eq!(&r[6..12], &station.0);
        // The checksum holds: summed with it, the message folds to all ones.
        let pseudo = pseudo_header_v6(
            &octets16(&r[22..38]),
            &octets16(&r[38..54]),
            PROTO_ICMPV6,
            NA_LEN as u32,
        );
        assert_eq!(fold(checksum_sum(pseudo, &r[54..])), 0xffff);
    }
}

fn octets16(b: &[u8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    o
}

pub struct NetworkSpec {
    pub vni: u32,
    /// The VTEP's end of the network's switch port.
    pub fd: OwnedFd,
    pub peers: Vec<SocketAddr>,
    pub mtu: usize,
    pub aging: Duration,
    /// The network's anycast gateway: never carried between hosts.
    pub gateway_mac: Option<MacAddr>,
    /// Coalesce received TCP segments into super-frames (the network's TAPs take offloads).
    pub coalesce: bool,
}

/// The control plane's handle of a VTEP: its sockets live in the datapath workers, its
/// networks in a table they share. Dropping it closes the sockets.
pub struct Vtep {
    pub stats: Arc<VtepStats>,
    rx: Arc<VtepRxShared>,
    tx: Arc<VtepTx>,
    dp: Arc<Datapath>,
    /// The receiving sockets, bound but not yet polled: the workers get them with the first
    /// network, so a packet that arrives before it waits in the socket instead of being
    /// counted as of a foreign VNI.
    unpolled: std::sync::Mutex<Option<Vec<UdpSocket>>>,
}

impl Vtep {
    /// Bind `addr`: one receiving socket per datapath worker (an `SO_REUSEPORT` group, polled
    /// once a network is attached), and the sending sockets.
    pub fn start(addr: SocketAddr, dp: &Arc<Datapath>) -> Result<Vtep> {
        // A plain bind first: with SO_REUSEPORT alone, a second daemon of the same user on the
        // same address would join the group and take a share of the packets instead of
        // being refused. It also fixes the port when `addr` asks for any.
        let addr = UdpSocket::bind(addr)
            .and_then(|probe| probe.local_addr())
            .context(|| format!("bind VTEP {addr}"))?;
        let rx_sockets = (0..dp.threads())
            .map(|_| group_socket(addr))
            .collect::<Result<Vec<_>>>()?;
        let tx = (0..TX_SOCKETS)
            .map(|_| {
                let s = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
                    .context(|| format!("bind VTEP send socket on {}", addr.ip()))?;
                s.set_nonblocking(true)
                    .context(|| "VTEP send socket".into())?;
                if setsockopt(&s, sockopt::SndBufForce, &SOCKET_BUF).is_err() {
                    let _ = setsockopt(&s, sockopt::SndBuf, &SOCKET_BUF);
                }
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let stats = Arc::new(VtepStats::default());
        let rx = Arc::new(VtepRxShared::new(
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stats.clone(),
        ));
        Ok(Vtep {
            tx: Arc::new(VtepTx::new(tx, dp.threads(), stats.clone())),
            stats,
            rx,
            dp: dp.clone(),
            unpolled: std::sync::Mutex::new(Some(rx_sockets)),
        })
    }

    /// A network to carry: what its switch port sends through (`Datapath::add_overlay_port`).
    /// It receives once `attach`ed.
    pub fn network(&self, spec: NetworkSpec) -> Arc<OverlayNet> {
        Arc::new(OverlayNet::new(spec, self.tx.clone()))
    }

    /// Frames of `net` received from now on enter the switch through port `port`; with the
    /// first network, the workers start polling the VTEP's sockets.
    pub fn attach(&self, port: PortId, net: Arc<OverlayNet>) {
        self.rx.insert(port, net);
        let sockets = crate::guard::lock_or_stop(&self.unpolled, "a VTEP's sockets").take();
        if let Some(sockets) = sockets {
            self.dp.add_vtep(self.rx.clone(), sockets);
        }
    }

    /// Stop carrying network `vni` (its switch port is removed by the caller).
    pub fn remove_network(&self, vni: u32) {
        self.rx.remove(vni);
    }

    /// Does any network still use this VTEP?
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Replace what the cluster store says of network `vni`'s other hosts.
    pub fn set_cluster(&self, vni: u32, view: ClusterView) {
        if let Some((_, net)) = self.rx.get(vni) {
            net.set_cluster(view);
        }
    }

    /// The remote stations the network has learned.
    pub fn remotes(&self, vni: u32) -> Vec<RemoteRow> {
        self.rx
            .get(vni)
            .map(|(_, net)| net.remotes())
            .unwrap_or_default()
    }
}

impl Drop for Vtep {
    fn drop(&mut self) {
        self.dp.remove_vtep(self.rx.id);
    }
}

/// One socket of a VTEP's receiving group: `SO_REUSEPORT`, bound to `addr`, non-blocking,
/// with UDP_GRO and a large receive buffer where the kernel allows.
fn group_socket(addr: SocketAddr) -> Result<UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, socket};
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| format!("VTEP socket for {addr}"))?;
    setsockopt(&fd, sockopt::ReusePort, &true)
        .context(|| format!("SO_REUSEPORT on the VTEP socket for {addr}"))?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).context(|| format!("bind VTEP {addr}"))?;
    // Let the kernel hand over bursts of datagrams in one receive where it can (UDP_GRO);
    // without it each datagram comes alone, which works the same.
    let _ = setsockopt(&fd, sockopt::UdpGroSegment, &true);
    // Bursts of a whole super-frame's segments arrive at once: room for many of them.
    // FORCE passes rmem_max where the daemon may (root); the plain call is capped by it.
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUF).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUF);
    }
    Ok(UdpSocket::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let sha = [2, 0, 0, 0, 0, 1];
        let mut f = vec![0xff; 6];
        f.extend(sha);
        f.extend([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend(sha);
        f.extend(spa);
        f.extend([0; 6]);
        f.extend(tpa);
        f
    }

    #[test]
    fn arp_for_a_known_remote_address_is_answered_and_nothing_else() {
        let remote = MacAddr([2, 0, 0, 0, 0, 9]);
        let table = HashMap::from([(std::net::Ipv4Addr::new(10, 0, 0, 9), remote)]);
        let r = proxy_arp(&arp_request([10, 0, 0, 1], [10, 0, 0, 9]), &table).unwrap();
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 1], "to the asker");
        assert_eq!(&r[6..12], &remote.0);
        assert_eq!(&r[20..22], &[0, 2], "a reply");
        assert_eq!(&r[22..28], &remote.0, "sender is the remote station");
        assert_eq!(&r[28..32], &[10, 0, 0, 9]);
        assert_eq!(&r[38..42], &[10, 0, 0, 1]);
        // Unknown address, gratuitous ARP, a reply, a runt: not answered.
        assert!(proxy_arp(&arp_request([10, 0, 0, 1], [10, 0, 0, 8]), &table).is_none());
        assert!(proxy_arp(&arp_request([10, 0, 0, 9], [10, 0, 0, 9]), &table).is_none());
        let mut reply = arp_request([10, 0, 0, 1], [10, 0, 0, 9]);
        reply[21] = 2;
        assert!(proxy_arp(&reply, &table).is_none());
        assert!(proxy_arp(&reply[..30], &table).is_none());
    }

    /// A Neighbour Solicitation from fd00::1 (02:..:01) for `target`, to its solicited-node
    /// multicast address, with the source link-layer option.
    fn solicitation(asker: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let sha = [2, 0, 0, 0, 0, 1];
        let t = target.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
        f.extend(sha);
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend(asker.octets());
        f.extend(group.octets());
        f.extend([NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0]);
        f.extend(t);
        f.extend([1, 1]);
        f.extend(sha);
        f
    }

    #[test]
    fn a_solicitation_for_a_known_remote_address_is_answered_and_nothing_else() {
        let remote = MacAddr([2, 0, 0, 0, 0, 9]);
        let (asker, target) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let table = HashMap::from([(target, remote)]);
        let ns = solicitation(asker, target);
        let r = proxy_ndp(&ns, &table).unwrap();
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 1], "to the asker");
        assert_eq!(&r[6..12], &remote.0, "from the remote station");
        assert_eq!(&r[22..38], &target.octets(), "from the target address");
        assert_eq!(&r[38..54], &asker.octets(), "to the asker's address");
        assert_eq!(r[21], 255, "hop limit");
        assert_eq!(
            (r[54], r[58]),
            (NEIGHBOR_ADVERT, 0x60),
            "solicited, override"
        );
        assert_eq!(&r[62..78], &target.octets());
        assert_eq!(&r[78..80], &[OPT_TARGET_LL, 1]);
        assert_eq!(&r[80..86], &remote.0);
        check_arbitrary_frame(&ns);
        // Unknown target, duplicate address detection, a forwarded one (hop limit), a runt, an
        // advertisement: not answered.
        let other = solicitation(asker, "fd00::8".parse().unwrap());
        assert!(proxy_ndp(&other, &table).is_none());
        assert!(proxy_ndp(&solicitation(Ipv6Addr::UNSPECIFIED, target), &table).is_none());
        let mut hop = ns.clone();
        hop[21] = 254;
        assert!(proxy_ndp(&hop, &table).is_none());
        assert!(proxy_ndp(&ns[..70], &table).is_none());
        let mut na = ns.clone();
        na[54] = NEIGHBOR_ADVERT;
        assert!(proxy_ndp(&na, &table).is_none());
        // Nor an ARP request, nor by the ARP proxy.
        assert!(proxy_ndp(&arp_request([10, 0, 0, 1], [10, 0, 0, 9]), &table).is_none());
        assert!(proxy_arp(&ns, &HashMap::new()).is_none());
    }

    #[test]
    fn arbitrary_frames_never_panic_the_proxies() {
        let mut rng = crate::test_rng::XorShift(0x2545_f491_4f6c_dd1d);
        let seed = solicitation("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let mut buf = [0u8; 120];
        for i in 0..20_000 {
            let len = i % buf.len();
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            // Half of them start as a valid solicitation with some bytes changed.
            if i % 2 == 0 {
                let n = len.min(seed.len());
                buf[..n].copy_from_slice(&seed[..n]);
                let at = (rng.next() as usize) % len.max(1);
                if at < len {
                    buf[at] = rng.next() as u8;
                }
            }
            check_arbitrary_frame(&buf[..len]);
        }
    }
}
